#!/usr/bin/env bash
# Installs the real Lumberjack clients that tests/real_clients.rs and
# tests/clients/record-fixtures.sh drive, into target/clients/:
#   target/clients/lumberclient   go-lumber v2 client CLI (tests/clients/go)
#   target/clients/recorder       fixture recorder (tests/clients/recorder)
#   target/clients/filebeat       Elastic's Filebeat (tests/clients/filebeat, via filebeat.sh:
#                                 a link into its build cache ~/.cache/lumberd/filebeat)
#   target/clients/venv           Python venv with pylogbeat (tests/clients/python)
#   tests/clients/node/node_modules  lumberjack-client, lumberjack-protocol (npm ci)
# Idempotent and non-interactive; a step whose inputs have not changed is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/target/clients
mkdir -p "$OUT"

die() { echo "tests/clients/setup.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is required but not installed"; }
need go; need python3; need node; need npm

# stamp NAME FILES... : true when the inputs changed since the last successful build
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
changed() {
  local name=$1; shift
  local want; want=$(stamp_of "$@")
  [[ ! -f "$OUT/.$name.stamp" || "$(cat "$OUT/.$name.stamp")" != "$want" ]]
}
mark() { local name=$1; shift; stamp_of "$@" >"$OUT/.$name.stamp"; }

# --- Go: go-lumber client and recorder ---------------------------------------------
go_build() { # go_build NAME DIR
  local name=$1 dir=$2
  local inputs=("$dir"/go.mod "$dir"/go.sum "$dir"/*.go)
  if [[ -x "$OUT/$name" ]] && ! changed "$name" "${inputs[@]}"; then
    echo "setup: $name up to date"
    return
  fi
  echo "setup: building $name"
  (cd "$dir" && GOFLAGS=-mod=readonly go build -buildvcs=false -trimpath -o "$OUT/$name" .) \
    || die "go build of $dir failed (the Go module proxy must be reachable on a fresh machine)"
  mark "$name" "${inputs[@]}"
}
go_build lumberclient tests/clients/go
go_build recorder tests/clients/recorder

# --- Go: Elastic's Filebeat (github.com/elastic/beats/v7), cached across runs -------
bash tests/clients/filebeat.sh || die "building Filebeat failed"

# --- Python: pylogbeat in a venv ---------------------------------------------------
REQ=tests/clients/python/requirements.txt
if [[ -x "$OUT/venv/bin/python" ]] && ! changed venv "$REQ"; then
  echo "setup: python venv up to date"
else
  echo "setup: creating target/clients/venv"
  rm -rf "$OUT/venv"
  python3 -m venv "$OUT/venv" || die "python3 -m venv failed (install python3-venv)"
  "$OUT/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" \
    || die "pip install -r $REQ failed"
  "$OUT/venv/bin/python" -c "import pylogbeat" || die "pylogbeat does not import"
  mark venv "$REQ"
fi

# --- Node: lumberjack-client and lumberjack-protocol -------------------------------
NODE_DIR=tests/clients/node
if [[ -d "$NODE_DIR/node_modules/lumberjack-client" && -d "$NODE_DIR/node_modules/lumberjack-protocol" ]] \
   && ! changed node "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json"; then
  echo "setup: node_modules up to date"
else
  echo "setup: npm ci in $NODE_DIR"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $NODE_DIR failed"
  mark node "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json"
fi

echo "setup: clients ready in target/clients"
