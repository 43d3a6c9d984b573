#!/usr/bin/env bash
# Installs what the test suite drives for real: espeak-ng + sox (speech), promtool
# (metrics lint), openssl + curl (TLS test), cargo-nextest. Debian/Ubuntu; uses sudo
# when not root. Safe to run repeatedly.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v soxi >/dev/null || need+=(sox)
command -v promtool >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v unshare >/dev/null || need+=(util-linux)
command -v cc >/dev/null || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo-nextest >/dev/null; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
