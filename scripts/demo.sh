#!/usr/bin/env bash
# Command 1 of the README: build Earshot, start it on the embedded default config
# (local storage, no Redis), replay a generated two-voice sample call into it, and
# show what it stored. Debian/Ubuntu with Rust installed.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing ${need[*]} (to synthesise the sample call)"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "==> building (release)"
cargo build --release --locked -p earshot
bin=target/release/earshot
mkdir -p data/demo-run
sample=data/demo-run/sample-call.wav
scripts/make-sample-call.sh "$sample" 8000
port=${EARSHOT_DEMO_PORT:-8080}
export EARSHOT__HTTP__LISTEN="127.0.0.1:$port"
echo "==> starting earshot serve on 127.0.0.1:$port (config/earshot.toml, storage ./data)"
"$bin" serve > data/demo-run/server.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat data/demo-run/server.log; exit 1; }
echo "==> replaying the sample call as a Twilio Media Streams fork (4x real time)"
"$bin" replay "$sample" --to "ws://127.0.0.1:$port" --format twilio --speed 4 --campaign demo --rep alex
echo "==> and as a raw PCM fork (jambonz/mod_audio_fork style)"
"$bin" replay "$sample" --to "ws://127.0.0.1:$port" --format pcm --rate 16000 --speed 4 --campaign demo-pcm --rep alex
kill -TERM $pid; wait $pid || true
trap - EXIT
echo
echo "==> stored calls (tenant demo):"
for id in $("$bin" calls list --tenant demo | tail -n 2); do
  dir=$(find data/demo -type d -name "$id")
  echo "  $id"
  echo "    recording: $dir/audio.wav"
  echo "    manifest:  $dir/manifest.json"
  "$bin" calls show "$id" | grep -E '"(source|outcome|duration_ms|frames_received)"' | sed 's/^/      /'
done
echo
echo "Metrics were at http://127.0.0.1:$port/metrics while it ran; server log: data/demo-run/server.log"
echo "Live transcription, coaching hints and the rep overlay arrive with the next features (see README)."
