#!/usr/bin/env bash
# Runs terrier's whole test suite. On a fresh Debian machine it first installs
# the real programs the end-to-end tests drive (redis-server and redis-cli,
# OpenSSH server and client, curl, tinyproxy for the agent's proxy tests,
# Python's prometheus_client parser for /metrics, headless Chromium for the
# dashboard, the pebble ACME test CA, iproute2 for the network-namespace
# black-hole test); everything else is built by cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || missing+=(python3-prometheus-client)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
command -v ip >/dev/null 2>&1 && command -v ss >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The agent tests run the real binaries; build them once up front.
cargo build --workspace --bins --quiet
exec cargo test --workspace "$@"
