#!/usr/bin/env bash
# Synthesises a short two-voice "sales call" with espeak-ng + sox:
# left = rep (en-us), right = customer (en-gb female), each padded with silence while
# the other talks. Usage: make-sample-call.sh OUT.wav [RATE]
set -euo pipefail
out=${1:?usage: make-sample-call.sh OUT.wav [RATE]}
rate=${2:-8000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() { espeak-ng -v "$1" -s 165 -w "$tmp/$2.raw.wav" "$3"; sox "$tmp/$2.raw.wav" -r "$rate" -c 1 -b 16 "$tmp/$2.wav"; }
say en-us r1 "Hi, this is Alex from Acme Cloud. This call is being recorded. Do you have a minute to talk about your phone system?"
say en-gb+f3 c1 "Sure. Right now we use Salesforce, and honestly it is too expensive."
say en-us r2 "I understand. Many teams moved from Salesforce because our plan includes live coaching at no extra cost. What matters most to you?"
say en-gb+f3 c2 "Reliability, and we need to decide by Friday."
# Build each side: own turns, silence for the other's turns.
len() { soxi -D "$1"; }
pad() { sox -n -r "$rate" -c 1 -b 16 "$tmp/$1.wav" trim 0 "$2"; }
gap=0.4
pad g "$gap"
pad s_c1 "$(len "$tmp/c1.wav")"; pad s_c2 "$(len "$tmp/c2.wav")"
pad s_r1 "$(len "$tmp/r1.wav")"; pad s_r2 "$(len "$tmp/r2.wav")"
sox "$tmp/r1.wav" "$tmp/g.wav" "$tmp/s_c1.wav" "$tmp/g.wav" "$tmp/r2.wav" "$tmp/g.wav" "$tmp/s_c2.wav" "$tmp/g.wav" "$tmp/rep.wav"
sox "$tmp/s_r1.wav" "$tmp/g.wav" "$tmp/c1.wav" "$tmp/g.wav" "$tmp/s_r2.wav" "$tmp/g.wav" "$tmp/c2.wav" "$tmp/g.wav" "$tmp/cust.wav"
sox -M "$tmp/rep.wav" "$tmp/cust.wav" "$out"
echo "$out: $(soxi -D "$out") s, $(soxi -c "$out") ch, $(soxi -r "$out") Hz"
