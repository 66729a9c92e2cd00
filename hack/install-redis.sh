#!/usr/bin/env bash
# Installs the distribution's redis-server, which the limit-store tests and the
# gateway benchmark run on loopback (a real Redis, not a Go fake). A no-op where it is
# installed already; needs root (or sudo) and the distribution's package mirror.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "redis-server is missing: install it (apt-get install redis-server)" >&2; exit 1; }
  sudo=sudo
fi
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
else
  echo "redis-server is missing and apt-get is not here: install Redis 6.2 or later" >&2
  exit 1
fi
# The package starts a system service on 6379; the tests start their own servers.
(command -v systemctl >/dev/null 2>&1 && $sudo systemctl disable --now redis-server >/dev/null 2>&1) || true
(command -v service >/dev/null 2>&1 && $sudo service redis-server stop >/dev/null 2>&1) || true
redis-server --version
