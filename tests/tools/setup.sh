#!/usr/bin/env bash
# Installs the command-line tools the tests run besides the Beats clients, into
# target/tools/:
#   target/tools/promtool   Prometheus' promtool, from Debian's `prometheus` package
#                           (tests/admin.rs checks a live /metrics scrape with it)
# The package is downloaded and unpacked, not installed: no service is started and no
# root is needed once the package lists exist. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$PWD/target/tools
mkdir -p "$OUT"

die() { echo "tests/tools/setup.sh: $*" >&2; exit 1; }

if [[ -x "$OUT/promtool" ]] && "$OUT/promtool" --version >/dev/null 2>&1; then
  echo "setup: promtool up to date"
  exit 0
fi
command -v apt-get >/dev/null || die "apt-get is required to fetch Debian's prometheus package (promtool)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
  # A fresh machine may have no package lists yet.
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq >/dev/null || die "apt-get update failed"
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq >/dev/null || die "sudo apt-get update failed"
  fi
  apt-get download prometheus >/dev/null 2>&1 || die "apt-get download prometheus failed"
fi
dpkg-deb -x prometheus_*.deb root
install -m 0755 root/usr/bin/promtool "$OUT/promtool"
"$OUT/promtool" --version 2>&1 | head -1
