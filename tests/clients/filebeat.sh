#!/usr/bin/env bash
# Builds Elastic's Filebeat from tests/clients/filebeat (the Go module
# github.com/elastic/beats/v7 at the version its go.mod requires; see
# tests/clients/README.md) and links it as target/clients/filebeat for tests/filebeat.rs
# and tests/clients/record-fixtures.sh. tests/clients/setup.sh calls it.
#
# The binary is cached in ${LUMBERD_CACHE:-~/.cache/lumberd}/filebeat/<key>/filebeat,
# where <key> hashes go.mod, go.sum, main.go and `go version`: a cold build takes about
# 4 minutes of CPU on 2 cores, so it is rebuilt only when one of those changes.
# Concurrent runs (several worktrees) are serialised by flock; a build goes to a temp
# dir inside the cache and is renamed into place, so a half-written binary is never used.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SRC=tests/clients/filebeat
OUT=$ROOT/target/clients
CACHE="${LUMBERD_CACHE:-$HOME/.cache/lumberd}/filebeat"

die() { echo "tests/clients/filebeat.sh: $*" >&2; exit 1; }
command -v go >/dev/null 2>&1 || die "go is required but not installed"
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is required"

version=$(sed -n 's/^require github.com\/elastic\/beats\/v7 v\(.*\)$/\1/p' "$SRC/go.mod")
[[ -n $version ]] || die "$SRC/go.mod does not require github.com/elastic/beats/v7"
key=$({ cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go"; go version; } | sha256sum | cut -c1-16)
bin=$CACHE/$key/filebeat
mkdir -p "$CACHE" "$OUT"

exec 9>"$CACHE/.lock"
flock 9
if [[ -x $bin ]] && "$bin" version 2>/dev/null | grep -q "^filebeat version $version "; then
  echo "setup: filebeat $version up to date ($bin)"
else
  echo "setup: building filebeat $version (github.com/elastic/beats/v7; ~4 min cold on 2 cores)"
  tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  start=$(date +%s)
  # -mod=mod: beats' module graph is resolved from go.mod with its replace directives
  # (the repository carries go.sum, so every download is verified against it).
  (cd "$SRC" && GOFLAGS=-mod=mod go build -buildvcs=false -trimpath -o "$tmp/filebeat" .) \
    || die "go build of $SRC failed (the Go module proxy must be reachable on a fresh machine)"
  got=$("$tmp/filebeat" version) || die "the built filebeat does not run"
  [[ $got == "filebeat version $version "* ]] || die "built '$got', expected filebeat $version"
  mkdir -p "$CACHE/$key"
  mv "$tmp/filebeat" "$bin"
  echo "setup: built $got in $(( $(date +%s) - start )) s -> $bin"
fi
ln -sfn "$bin" "$OUT/filebeat"
