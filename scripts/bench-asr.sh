#!/usr/bin/env bash
# ASR benchmarks (BENCHMARKS.md, "Live transcription"): final latency, partial cadence,
# capacity, and word error rate streaming vs offline, on jfk.wav and a generated
# two-voice call at 16 kHz and as 8 kHz µ-law (the Twilio path). Every number comes
# from `earshot transcribe` (--realtime: the whole live path in-process, at real-time
# pace; --offline: one whole-file decode of the same model).
#
# REAL=1 runs the real-speech benchmark instead (issue 19's method): two-party calls
# built from real recordings (scripts/real_speech.py: Asterisk's telephone prompts for
# the rep, spontaneous and read speech from scripts/real-speech-corpus.sh for the
# customer), live WER against the ceiling (the same model decoding each turn alone),
# at 1 and $REAL_CONCURRENT concurrent calls, 16 kHz PCM and 8 kHz µ-law (Twilio).
#
# Usage: scripts/bench-asr.sh [MODELS...]   (default: tiny.en-q8_0, the shipped default; e.g. tiny.en base-q8_0)
# Env: CAPACITY="2 4 6 8" (concurrent calls for the capacity run, first model only),
#      OUT=target/bench-asr (results: *.jsonl per run, summary.md),
#      CAPACITY_ONLY=1 (skip the word-error runs).
set -euo pipefail
cd "$(dirname "$0")/.."
models=("${@:-tiny.en-q8_0}")
out=${OUT:-target/bench-asr}
capacity=${CAPACITY:-"2 4 6 8"}
mkdir -p "$out"
cargo build --release --locked -p earshot >/dev/null
bin=target/release/earshot
for m in "${models[@]}"; do "$bin" model fetch "$m" >/dev/null; done

if [ -n "${REAL:-}" ]; then
  command -v sox >/dev/null && command -v ffmpeg >/dev/null && [ -d /usr/share/asterisk/sounds/en_US_f_Allison ] ||
    $([ "$(id -u)" -eq 0 ] || echo sudo) apt-get install -y sox ffmpeg asterisk-core-sounds-en asterisk-core-sounds-en-wav
  export CORPUS=${CORPUS:-target/real-speech-corpus}
  [ -d "$CORPUS/mfa-tests" ] || OUT="$CORPUS" scripts/real-speech-corpus.sh
  rs=$out/real
  [ -f "$rs/calls.json" ] || CALLS=${REAL_CALLS:-4} python3 scripts/real_speech.py build "$rs"
  for m in "${models[@]}"; do
    mkdir -p "$rs/ceiling.$m" "$rs/ceiling8.$m"
    for f in "$rs"/turns/*.wav; do
      b=$(basename "$f" .wav)
      [ -s "$rs/ceiling.$m/$b.jsonl" ] || "$bin" transcribe --model "$m" "$f" --offline > "$rs/ceiling.$m/$b.jsonl" 2>/dev/null
      # The 8 kHz ceiling: the turn after the same µ-law round trip a Twilio fork makes.
      if [ ! -s "$rs/ceiling8.$m/$b.jsonl" ]; then
        sox "$f" -r 8000 -e u-law "$rs/turn8u.wav" && sox "$rs/turn8u.wav" -r 16000 -e signed -b 16 "$rs/turn8.wav"
        "$bin" transcribe --model "$m" "$rs/turn8.wav" --offline > "$rs/ceiling8.$m/$b.jsonl" 2>/dev/null
      fi
    done
    for spec in "pcm 1" "twilio 1" "pcm ${REAL_CONCURRENT:-4}" "twilio ${REAL_CONCURRENT:-4}"; do
      set -- $spec
      runs=()
      for call in "$rs"/call*.wav; do
        c=$(basename "$call" .wav)
        "$bin" transcribe --model "$m" "$call" --realtime --format "$1" --concurrent "$2" > "$rs/$c.$m.$1.$2.jsonl" 2>/dev/null
        runs+=("$rs/$c.$m.$1.$2.jsonl")
      done
      # Concurrent copies are rotated in time (src/cli/realtime.rs); the scorer puts each
      # copy's finals back in call order. Twilio runs are scored against the 8 kHz ceiling.
      ceiling="$rs/ceiling.$m"
      [ "$1" = twilio ] && ceiling="$rs/ceiling8.$m"
      echo "== $m $1 x$2: $(python3 scripts/real_speech.py score "$rs" "${runs[@]}" "$ceiling")"
      for r in "${runs[@]}"; do tail -n 1 "$r"; done
    done
  done
  exit 0
fi

call16=$out/call16.wav
[ -f "$call16" ] || scripts/make-sample-call.sh "$call16" 16000 >/dev/null
# The same call as a phone line carries it: 8 kHz µ-law, decoded back to 16-bit.
call8=$out/call8.wav
[ -f "$call8" ] || { sox "$call16" -r 8000 -e mu-law "$out/call8u.wav" && sox "$out/call8u.wav" -e signed -b 16 "$call8"; }
cp tests/fixtures/jfk.wav "$out/jfk.wav"

run() { # name model args...
  local name=$1 model=$2; shift 2
  "$bin" transcribe --model "$model" "$@" > "$out/$name.jsonl" 2> "$out/$name.log"
}
for m in "${models[@]}"; do
  [ -n "${CAPACITY_ONLY:-}" ] && break
  echo "== $m"
  run "jfk.$m.offline" "$m" "$out/jfk.wav" --offline
  run "jfk.$m.live" "$m" "$out/jfk.wav" --realtime --format pcm
  run "call16.$m.offline" "$m" "$call16" --offline
  run "call16.$m.live" "$m" "$call16" --realtime --format pcm
  run "call8.$m.offline" "$m" "$call8" --offline
  # The live 8 kHz run goes in as a Twilio fork: the server does the µ-law decoding.
  run "call8.$m.live" "$m" "$call16" --realtime --format twilio
done
m=${models[0]}
for n in $capacity; do
  echo "== capacity: $n concurrent two-party calls ($m, Twilio 8 kHz)"
  run "capacity.$n.$m" "$m" "$call16" --realtime --format twilio --concurrent "$n" --summary-only
done
if [ -z "${CAPACITY_ONLY:-}" ]; then
  python3 scripts/asr_report.py "$out" "${models[@]}" -- $capacity | tee "$out/summary.md"
else
  for n in $capacity; do tail -n 1 "$out/capacity.$n.$m.jsonl"; done
fi
