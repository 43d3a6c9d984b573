#!/usr/bin/env bash
# Media-plane benchmark: N concurrent two-track calls at real-time pace against one
# `earshot serve` (release build, ASR off), load generator on the same machine.
# FORMAT: twilio (default), pcm, or siprec (SIPREC over UDP, two PCMU RTP streams per
# call; the SIP listener is switched on for the demo tenant from 127.0.0.1), or whip
# (WebRTC publishers: ICE + DTLS-SRTP + Opus 20 ms, one track per call, a publisher token).
# Usage: scripts/bench-media.sh CALLS [DURATION_S] [RAMP_S] [FORMAT]
# Writes target/bench/media-<format>-<calls>.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:?usage: bench-media.sh CALLS [DURATION_S] [RAMP_S] [FORMAT]}
duration=${2:-60}
ramp=${3:-20}
format=${4:-twilio}
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked -p earshot -p earshot-loadtest >/dev/null
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
# Stop the server (it drains; killed after 30 s) before removing its files.
stop() {
  [ -n "${pid:-}" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap 'stop; rm -rf "$work"' EXIT
wav="$work/call.wav"
scripts/make-sample-call.sh "$wav" 8000 >/dev/null
port=$((30000 + RANDOM % 20000))
ulimit -n 65536 2>/dev/null || true
sip_port=$((port + 1))
extra=()
if [ "$format" = siprec ]; then
  export EARSHOT__SIP__LISTEN=127.0.0.1:$sip_port EARSHOT__SIP__MAX_CALLS=100000 \
    EARSHOT__TENANTS__DEMO__SIP__ALLOW='["127.0.0.1"]'
  extra=(--sip "127.0.0.1:$sip_port")
fi
if [ "$format" = whip ]; then
  export EARSHOT__WHIP__ICE_IP=127.0.0.1 EARSHOT__WHIP__MAX_SESSIONS=100000
fi
EARSHOT__ASR__ENABLED=false EARSHOT__HTTP__LISTEN=127.0.0.1:$port EARSHOT__STORAGE__DIR="$work/data" EARSHOT__LIMITS__MAX_CALLS=100000 \
  EARSHOT__LOG__LEVEL=warn target/release/earshot serve --config config/earshot.toml 2>"$out/server.log" &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
token=demo
if [ "$format" = whip ]; then
  token=$(target/release/earshot token issue --config config/earshot.toml --tenant demo --sub loadtest --role publisher --ttl 2h)
fi
target/release/earshot-loadtest run --url "ws://127.0.0.1:$port" --format "$format" --calls "$calls" \
  --duration "$duration" --ramp "$ramp" --wav "$wav" --server-pid "$pid" \
  --out "$out/media-$format-$calls.json" --token "$token" --slo "${extra[@]}"
echo "disk used by recordings: $(du -sh "$work/data" | cut -f1)"
