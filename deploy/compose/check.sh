#!/usr/bin/env bash
# `make compose-check`: validates every compose file here offline, and has the programs
# the stack runs check the configurations it gives them.
#
#   deploy/compose/check.sh LUMBERD_BIN [FILEBEAT_BIN]
#
# For docker-compose.yml alone and with docker-compose.tls.yml over it:
# 1. `docker-compose config -q` (Debian's docker-compose; tests/tools/docker-compose.sh
#    installs it): the file against the compose schema, services, depends_on conditions,
#    volumes, variables.
# 2. `lumberd check-config` on the lumberd.toml mounted at /etc/lumberd/lumberd.toml, with
#    the LUMBERD_* environment the variant gives the container. Container paths in it are
#    mapped to the host files mounted there; the TLS variant's certificates are made by
#    tls/make-certs.sh in a temp dir, so the check reads real certificates and keys.
# 3. With FILEBEAT_BIN (the real Filebeat, tests/clients/filebeat.sh): `filebeat test
#    config` on the filebeat.yml mounted in the filebeat service, paths mapped the same way
#    (it opens the ssl files too).
set -euo pipefail
die() { echo "compose-check: $*" >&2; exit 1; }
LUMBERD=$(realpath "${1:?usage: check.sh LUMBERD_BIN [FILEBEAT_BIN]}") || die "no $1: cargo build --bins"
FILEBEAT=""
if [[ -n ${2:-} ]]; then FILEBEAT=$(realpath "$2") || die "no $2: tests/clients/setup.sh"; fi
cd "$(dirname "$0")"
command -v docker-compose >/dev/null || die "docker-compose is missing: run tests/tools/docker-compose.sh (make test-deps does)"
[[ -x $LUMBERD ]] || die "$LUMBERD is not executable (cargo build --bins)"
# docker-compose's own interpreter has PyYAML (a dependency of the package).
PY=$(head -1 "$(command -v docker-compose)" | sed 's/^#! *//')
"$PY" -c 'import yaml' 2>/dev/null || die "$PY cannot import yaml"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bash tls/make-certs.sh "$work/tls" >/dev/null
export LUMBERD_TLS_DIR=$work/tls

check_variant() { # check_variant NAME COMPOSE-FILES...
  local name=$1; shift
  local args=()
  for f in "$@"; do args+=(-f "$f"); done
  docker-compose "${args[@]}" config -q || die "$name: docker-compose config failed"
  docker-compose "${args[@]}" config >"$work/$name.yml"
  "$PY" - "$work/$name.yml" "$LUMBERD" "$FILEBEAT" "$work/$name" <<'PY' || die "$name: a configuration was refused"
import os, subprocess, sys, yaml

resolved, lumberd, filebeat, scratch = sys.argv[1:5]
services = yaml.safe_load(open(resolved))["services"]

def binds(service):
    """(host source, container target) of every bind mount, longest target first."""
    out = []
    for v in service.get("volumes", []):
        parts = v.split(":") if isinstance(v, str) else [v.get("source"), v.get("target")]
        if len(parts) >= 2 and parts[0] and parts[0].startswith("/"):
            out.append((parts[0], parts[1]))
    return sorted(out, key=lambda b: -len(b[1]))

def host_path(path, mounts):
    for src, tgt in mounts:
        if path == tgt or path.startswith(tgt.rstrip("/") + "/"):
            return src + path[len(tgt):]
    return path

def mapped_file(service, target):
    for src, tgt in binds(service):
        if tgt == target:
            return src
    sys.exit(f"no bind mount at {target}")

def run(what, cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    out = (p.stdout + p.stderr).strip()
    print(f"compose-check: {what}: {out.splitlines()[-1] if out else ''} (exit {p.returncode})")
    if p.returncode != 0:
        print(out, file=sys.stderr)
        sys.exit(1)

# lumberd: its config file and environment, container paths mapped to the host.
svc = services["lumberd"]
mounts = binds(svc)
env = {"PATH": os.environ["PATH"]}
for k, v in (svc.get("environment") or {}).items():
    if k.startswith("LUMBERD_"):
        env[k] = host_path(str(v), mounts)
config = mapped_file(svc, "/etc/lumberd/lumberd.toml")
run(f"lumberd check-config ({', '.join(sorted(k for k in env if k != 'PATH'))})",
    [lumberd, "check-config", config], env)

# filebeat: test config on the mounted filebeat.yml, container paths mapped.
if filebeat:
    svc = services["filebeat"]
    mounts = [b for b in binds(svc) if b[1] != "/logs"]
    text = open(mapped_file(svc, "/usr/share/filebeat/filebeat.yml")).read()
    for src, tgt in mounts:
        text = text.replace(tgt + "/", src + "/")
    os.makedirs(scratch + "/home", exist_ok=True)
    path = scratch + "/filebeat.yml"
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    run("filebeat test config", [filebeat, "test", "config", "-c", path,
        "--path.home", scratch + "/home", "--path.data", scratch + "/data"],
        {"PATH": os.environ["PATH"]})
PY
  echo "compose-check: $name ok"
}

check_variant plain docker-compose.yml
check_variant tls docker-compose.yml docker-compose.tls.yml
