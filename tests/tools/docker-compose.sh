#!/usr/bin/env bash
# Installs Debian's docker-compose package (1.29, Python) for `make compose-check`
# (deploy/compose/check.sh), which only runs `docker-compose config`: no Docker daemon is
# needed and none is started. Unlike promtool (tests/tools/setup.sh) it is installed,
# not unpacked, because it needs its Python dependencies. Idempotent.
set -euo pipefail
die() { echo "tests/tools/docker-compose.sh: $*" >&2; exit 1; }

if command -v docker-compose >/dev/null 2>&1 && docker-compose version --short >/dev/null 2>&1; then
  echo "setup: docker-compose $(docker-compose version --short) up to date"
  exit 0
fi
command -v apt-get >/dev/null || die "apt-get is required to install Debian's docker-compose"
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || die "not root and no sudo: install docker-compose by hand"
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
install() { "${SUDO[@]}" apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }
if ! install 2>/dev/null; then
  # A fresh machine may have no package lists yet.
  "${SUDO[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
  install || die "apt-get install docker-compose failed"
fi
echo "setup: docker-compose $(docker-compose version --short) installed"
