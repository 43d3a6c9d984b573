#!/usr/bin/env bash
# Live coaching under load, measured as a rep's overlay sees it: `earshot serve` (release,
# ASR on, the demo tenant's playbook) and `earshot-loadtest run --scenario
# loadtest/scenarios/live-coaching.toml` with the generated sales call (a competitor and a
# price objection in it) and overlay clients holding a manager token. Reports transcript-final
# and hint latency after the words were spoken (p50/p95), plus the usual load figures.
# Usage: scripts/bench-live-load.sh (calls and duration: the scenario file)
# Writes target/bench/live-load.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked -p earshot -p earshot-loadtest >/dev/null
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
stop() {
  [ -n "${pid:-}" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
trap 'stop; rm -rf "$work"' EXIT
wav="$work/call.wav"
scripts/make-sample-call.sh "$wav" 16000 >/dev/null  # 16 kHz: from 8 kHz audio tiny.en misses "Salesforce"
port=$((30000 + RANDOM % 20000))
EARSHOT__ASR__ENABLED=true EARSHOT__HTTP__LISTEN=127.0.0.1:$port EARSHOT__STORAGE__DIR="$work/data" \
  EARSHOT__LOG__LEVEL=warn target/release/earshot serve --config config/earshot.toml 2>"$out/live-load-server.log" &
pid=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
manager=$(target/release/earshot token issue --config config/earshot.toml --tenant demo --sub bench --role manager --ttl 2h)
target/release/earshot-loadtest run --scenario loadtest/scenarios/live-coaching.toml --url "ws://127.0.0.1:$port" \
  --wav "$wav" --token demo --live-token "$manager" --server-pid "$pid" --out "$out/live-load.json"
