#!/usr/bin/env bash
# make helm-test: lint, render, validate and unit-test the chart, offline once its tools
# are cached. The tools are pinned and installed from the registries on first use into
# $LUMBERD_HELM_CACHE (default ~/.cache/lumberd/helm):
#   helm           go install helm.sh/helm/v3/cmd/helm (Go module proxy)
#   helm-unittest  built from its Go module, registered as a helm plugin there
#   chartcheck     helm/tools/chartcheck (Go): prometheus-operator types, PromQL, metric list
#   kubernetes-validate and its pinned dependencies (PyPI, helm/tools/requirements.txt) in
#                  a venv: the Kubernetes API schemas ship inside the package
# Every rule that fails is listed with its reason; the exit status is non-zero if any did.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.21.3
UNITTEST_VERSION=v1.1.2
K8S_VERSION=1.30.0
CHART=helm/lumberd
CACHE=${LUMBERD_HELM_CACHE:-$HOME/.cache/lumberd/helm}
OUT=target/helm
RELEASE=lumberd
NAMESPACE=lumberd-ci

failures=()
fail() { failures+=("$*"); echo "FAIL: $*" >&2; }
step() { echo "== $*"; }
die() { echo "helm/test.sh: $*" >&2; exit 1; }

for tool in go python3; do
  command -v "$tool" >/dev/null || die "$tool is required (helm and its tools are built with it)"
done
mkdir -p "$CACHE" "$OUT"

# --- tools ---------------------------------------------------------------------------
HELM=$CACHE/helm-$HELM_VERSION/helm
if [[ ! -x $HELM ]]; then
  step "installing helm $HELM_VERSION (go install, first run only: a few minutes)"
  tmp=$(mktemp -d "$CACHE/.helm.XXXXXX")
  # The release build's ldflags: its version, and the Kubernetes version of its client
  # libraries (1.36) as the default for `helm template`.
  k8s='-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=36'
  k8s+=' -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=36'
  GOBIN=$tmp go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION $k8s" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" || die "go install helm $HELM_VERSION failed"
  rm -rf "$CACHE/helm-$HELM_VERSION" && mv "$tmp" "$CACHE/helm-$HELM_VERSION"
fi

PLUGINS=$CACHE/plugins-$UNITTEST_VERSION
if [[ ! -x $PLUGINS/unittest/untt ]]; then
  step "installing helm-unittest $UNITTEST_VERSION (first run only)"
  # Its go.mod has a replace directive, which `go install module@version` refuses: build
  # it inside its downloaded module instead.
  dir=$(go mod download -json "github.com/helm-unittest/helm-unittest@$UNITTEST_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') ||
    die "go mod download helm-unittest $UNITTEST_VERSION failed"
  tmp=$(mktemp -d "$CACHE/.plugins.XXXXXX")
  mkdir -p "$tmp/unittest"
  (cd "$dir" && go build -trimpath -buildvcs=false -o "$tmp/unittest/untt" ./cmd/helm-unittest) ||
    die "building helm-unittest $UNITTEST_VERSION failed"
  cat > "$tmp/unittest/plugin.yaml" <<EOF
name: unittest
version: "${UNITTEST_VERSION#v}"
usage: unittest for helm charts
description: helm-unittest $UNITTEST_VERSION, built from its Go module by helm/test.sh
ignoreFlags: false
command: "\$HELM_PLUGIN_DIR/untt"
EOF
  rm -rf "$PLUGINS" && mv "$tmp" "$PLUGINS"
fi

VENV=$CACHE/venv-$(sha256sum helm/tools/requirements.txt | cut -c1-12)
if [[ ! -e $VENV/.installed ]]; then
  step "installing kubernetes-validate into $VENV (first run only)"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r helm/tools/requirements.txt ||
    die "pip install -r helm/tools/requirements.txt failed"
  touch "$VENV/.installed"
fi

CHARTCHECK=$CACHE/chartcheck
step "building helm/tools/chartcheck"
(cd helm/tools/chartcheck && go build -trimpath -buildvcs=false -o "$CHARTCHECK" .) ||
  die "building helm/tools/chartcheck failed"

# helm on its own config, cache and plugin dirs: nothing from the user's helm setup.
export HELM_CONFIG_HOME=$OUT/home/config HELM_CACHE_HOME=$OUT/home/cache \
  HELM_DATA_HOME=$OUT/home/data HELM_PLUGINS=$PLUGINS
echo "helm $("$HELM" version --template '{{.Version}}'), helm-unittest $UNITTEST_VERSION, $("$VENV/bin/python" -m pip show kubernetes-validate 2>/dev/null | sed -n 's/^Version: /kubernetes-validate /p'), Kubernetes schemas $K8S_VERSION"

# --- the chart's version is the crate's -------------------------------------------------
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
app_version=$(sed -n 's/^appVersion: "\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")
[[ $app_version == "$crate_version" ]] ||
  fail "Chart.yaml appVersion $app_version is not the crate version $crate_version (Cargo.toml)"

# --- every setting of config/lumberd.toml can be set through config.<section> -------------
# values.schema.json forbids unknown keys (a typo fails the install instead of being
# ignored), so a setting added to lumberd without its schema entry makes the chart reject
# it. The keys the chart renders itself from other values are listed with their source.
step "values.schema.json lists every setting of config/lumberd.toml"
python3 - "$CHART/values.schema.json" config/lumberd.toml <<'PY' || fail "values.schema.json is missing settings of config/lumberd.toml (see above)"
import json, sys, tomllib
schema = json.load(open(sys.argv[1]))["properties"]["config"]["properties"]
reference = tomllib.load(open(sys.argv[2], "rb"))
rendered_by_chart = {
    "server": {"listen": "ports.beats"},
    "tls": {"enabled": "tls.enabled", "client_auth": "tls.clientAuth", "client_ca": "tls.clientCaSecret"},
    "output": {"data_dir": "persistence", "elasticsearch": "elasticsearch.hosts",
               "username": "elasticsearch secret", "password": "elasticsearch secret",
               "api_key": "elasticsearch secret"},
    "admin": {"*": "ports.admin; the admin server's limits are lumberd's defaults"},
    "pipeline": {"*": "config.pipeline, raw TOML"},
    "spool": {"dir": "spool.enabled (<data dir>/spool)", "max_bytes": "spool.maxBytes",
              "segment_bytes": "spool.segmentBytes", "high_water": "spool.highWater",
              "memory_bytes": "lumberd's default (32 MiB), not rendered",
              "direct_io": "lumberd's default (true; it falls back by itself), not rendered"},
}
missing = []
for section, keys in reference.items():
    exempt = rendered_by_chart.get(section, {})
    if "*" in exempt:
        continue
    allowed = schema.get(section, {}).get("properties", {})
    missing += [f"config.{section}.{k}" for k in keys if k not in allowed and k not in exempt]
for key in missing:
    print(f"values.schema.json: {key} is a lumberd setting the chart's schema rejects", file=sys.stderr)
sys.exit(1 if missing else 0)
PY

# --- lint and render every ci values file -----------------------------------------------
rm -f "$OUT"/*.yaml
shopt -s nullglob
ci_files=("$CHART"/ci/*-values.yaml)
(( ${#ci_files[@]} >= 4 )) || fail "expected at least 4 files in $CHART/ci/, found ${#ci_files[@]}"
for values in "${ci_files[@]}"; do
  name=$(basename "$values" -values.yaml)
  step "lint and render: $name"
  "$HELM" lint --strict --kube-version "$K8S_VERSION" "$CHART" -f "$values" >"$OUT/$name.lint" 2>&1 ||
    { cat "$OUT/$name.lint" >&2; fail "helm lint --strict -f $values"; }
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$K8S_VERSION" \
    -f "$values" >"$OUT/$name.yaml" || fail "helm template -f $values"
done
rendered=("$OUT"/*.yaml)

# --- validate: Kubernetes schemas, then the operator's objects and the PromQL -------------
step "kubernetes-validate (strict, Kubernetes $K8S_VERSION)"
"$VENV/bin/python" helm/tools/validate.py "$K8S_VERSION" "${rendered[@]}" ||
  fail "rendered manifests do not validate against the Kubernetes $K8S_VERSION schemas"

step "chartcheck (ServiceMonitor/PrometheusRule types, PromQL, metric list)"
"$CHARTCHECK" -metrics "$CHART/metrics.txt" -dashboard "$CHART/dashboards/lumberd.json" "${rendered[@]}" ||
  fail "chartcheck found problems in the alerts, the dashboard or the monitoring objects"

# --- rules helm-unittest cannot state: across two renders, and against the Dockerfile -----
step "config checksum follows the config, and only the config"
checksum() {
  "$HELM" template "$RELEASE" "$CHART" --kube-version "$K8S_VERSION" -s templates/deployment.yaml "$@" |
    sed -n 's/^ *checksum\/config: *//p'
}
base=$(checksum)
[[ $base =~ ^[0-9a-f]{64}$ ]] || fail "checksum/config annotation missing or not a sha256: '$base'"
[[ $(checksum --set config.server.max_connections=100) != "$base" ]] ||
  fail "checksum/config did not change when config.server.max_connections changed"
[[ $(checksum --set-string config.pipeline='[pipeline]') != "$base" ]] ||
  fail "checksum/config did not change when config.pipeline changed"
[[ $(checksum --set replicaCount=5) == "$base" ]] ||
  fail "checksum/config changed with replicaCount, which is not configuration"

step "Dockerfile: non-root numeric user, pinned bases, paths the chart uses"
dockerfile=Dockerfile
user=$(sed -n 's/^USER[[:space:]]\+//p' "$dockerfile" | tail -1)
[[ $user =~ ^[0-9]+(:[0-9]+)?$ ]] || fail "Dockerfile: the last USER '$user' is not a numeric uid[:gid]"
[[ ${user%%:*} != 0 && -n $user ]] || fail "Dockerfile: the image runs as root"
chart_uid=$(sed -n '/^securityContext:/,/^[a-z]/s/^  runAsUser: //p' "$CHART/values.yaml")
[[ ${user%%:*} == "$chart_uid" ]] || fail "Dockerfile USER ${user%%:*} is not the chart's runAsUser $chart_uid"
while read -r image; do
  resolved=$image
  while [[ $resolved =~ \$\{([A-Za-z_]+)\} ]]; do
    var=${BASH_REMATCH[1]}
    val=$(sed -n "s/^ARG $var=//p" "$dockerfile" | head -1)
    [[ -n $val ]] || { fail "Dockerfile: FROM $image uses \${$var} without a default"; break; }
    resolved=${resolved//\$\{$var\}/$val}
  done
  [[ $resolved == *@sha256:* || $resolved =~ :[A-Za-z0-9._-]+$ ]] ||
    fail "Dockerfile: FROM $image has no tag (an implicit latest)"
  [[ $resolved != *:latest ]] || fail "Dockerfile: FROM $image is :latest"
done < <(sed -n 's/^FROM[[:space:]]\+\([^[:space:]]\+\).*/\1/p' "$dockerfile" | grep -v '^[a-z0-9_-]*$' || true)
entrypoint=$(sed -n 's/^ENTRYPOINT \["\([^"]*\)".*/\1/p' "$dockerfile")
chart_command=$("$HELM" template "$RELEASE" "$CHART" -s templates/deployment.yaml | sed -n 's/^ *command: \["\([^"]*\)"\]/\1/p')
[[ -n $entrypoint && $entrypoint == "$chart_command" ]] ||
  fail "Dockerfile ENTRYPOINT '$entrypoint' is not the chart's command '$chart_command'"
grep -q '^COPY .*--from=build .*/target/release/lumberd '"$entrypoint"'$' "$dockerfile" ||
  fail "Dockerfile: the release binary is not copied to $entrypoint"
grep -q '^COPY config/lumberd.toml /etc/lumberd/lumberd.toml$' "$dockerfile" ||
  fail "Dockerfile: config/lumberd.toml is not the image's /etc/lumberd/lumberd.toml"
grep -q 'cargo build --locked --release' "$dockerfile" || fail "Dockerfile: not cargo build --locked --release"
grep -q '^EXPOSE 5044 9600$' "$dockerfile" || fail "Dockerfile: EXPOSE 5044 9600 missing"
grep -q '^ENV LUMBERD_OUTPUT_DATA_DIR=/var/lib/lumberd/data$' "$dockerfile" ||
  fail "Dockerfile: the data dir is not /var/lib/lumberd/data, the chart's data volume"
# The builder must be new enough for every locked dependency's rust-version.
rust_arg=$(sed -n 's/^ARG RUST_VERSION=//p' "$dockerfile")
if command -v cargo >/dev/null; then
  need=$(cargo metadata --locked --format-version 1 2>/dev/null | python3 -c '
import json, sys
vs = [p["rust_version"] for p in json.load(sys.stdin)["packages"] if p.get("rust_version")]
print(max(vs, key=lambda v: tuple(int(x) for x in v.split("."))) if vs else "0")') ||
    need=""
  if [[ -n $need && -n $rust_arg ]]; then
    python3 -c 'import sys; a, b = (tuple(int(x) for x in v.split(".")[:2]) for v in sys.argv[1:]); sys.exit(a < b)' \
      "$rust_arg" "$need" || fail "Dockerfile RUST_VERSION $rust_arg is older than the $need a locked dependency needs"
  fi
fi

# --- lumberd itself reads every rendered configuration ------------------------------------
LUMBERD_BIN=${LUMBERD_BIN:-target/debug/lumberd}
if [[ -x $LUMBERD_BIN ]]; then
  step "lumberd check-config on every rendered lumberd.toml ($LUMBERD_BIN)"
  for values in "${ci_files[@]}"; do
    name=$(basename "$values" -values.yaml)
    # TLS and CA files exist only in the pod (mounted secrets): checked without them.
    "$HELM" template "$RELEASE" "$CHART" -s templates/configmap.yaml -f "$values" \
      --set tls.enabled=false --set elasticsearch.ca.existingSecret= |
      "$VENV/bin/python" -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(sys.stdin)["data"]["lumberd.toml"])' \
      >"$OUT/$name.toml"
    if ! env -i PATH="$PATH" "$LUMBERD_BIN" check-config "$OUT/$name.toml" >"$OUT/$name.check" 2>&1; then
      cat "$OUT/$name.check" >&2
      fail "lumberd check-config rejects the config rendered from $values"
    fi
  done
elif [[ -n ${LUMBERD_REQUIRE_CHECK_CONFIG:-} ]]; then
  fail "no lumberd binary at $LUMBERD_BIN to check the rendered configs with (cargo build)"
else
  echo "SKIP: lumberd check-config of the rendered configs: no $LUMBERD_BIN (cargo build first; make test does)"
fi

# --- unit tests -----------------------------------------------------------------------
step "helm unittest ($CHART/tests)"
"$HELM" unittest --color=false "$CHART" || fail "helm unittest: see the failed tests above"

if (( ${#failures[@]} )); then
  echo >&2
  echo "helm/test.sh: ${#failures[@]} rule(s) failed:" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "helm/test.sh: chart lint, render, validation, checks and unit tests passed (${#ci_files[@]} ci values files)"
