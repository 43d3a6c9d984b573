#!/usr/bin/env python3
"""Summarises scripts/bench-asr.sh runs: word error rate (streaming finals vs an
offline decode of the same model, against the known words), latency and cadence from
the --realtime summaries, and the capacity table. Usage: asr_report.py OUT MODELS... -- N..."""
import json
import re
import sys

# What was said (scripts/make-sample-call.sh, tests/fixtures/jfk.wav).
REFS = {
    "jfk": {"other": "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."},
    "call": {
        "rep": "Hi, this is Alex from Acme Cloud. This call is being recorded. Do you have a minute to talk about your phone system? "
        "I understand. Many teams moved from Globex because our plan includes live coaching at no extra cost. What matters most to you?",
        "customer": "Sure, but we already use Globex and honestly your price seems high. Reliability, and we need to decide by Friday.",
    },
}


def words(s):
    return re.sub(r"[^a-z0-9' ]", " ", s.lower().replace("-", " ")).split()


def wer(ref, hyp):
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)


def load(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]


def texts(lines, offline):
    out = {}
    for l in lines:
        if offline and l.get("type") == "offline":
            out[l["channel"]] = out.get(l["channel"], "") + " " + l["text"]
        if not offline and l.get("type") == "transcript.final":
            out.setdefault(l["channel"], []).append((l["start_ms"], l["text"]))
    if not offline:
        out = {k: " ".join(t for _, t in sorted(v)) for k, v in out.items()}
    return out


def score(ref, got):
    errs = n = 0
    for ch, r in ref.items():
        e, k = wer(r, got.get(ch, ""))
        errs, n = errs + e, n + k
    return errs / n


def main():
    args = sys.argv[1:]
    out = args[0]
    cut = args.index("--") if "--" in args else len(args)
    models, capacity = args[1:cut], args[cut + 1 :]
    print("| model | audio | WER offline | WER streaming | ratio | final p50 | final p95 | partial gap p50 / p95 |")
    print("|---|---|---|---|---|---|---|---|")
    for m in models:
        for audio, ref, label in [("jfk", REFS["jfk"], "jfk.wav 16 kHz"), ("call16", REFS["call"], "call 16 kHz PCM"), ("call8", REFS["call"], "call 8 kHz µ-law (Twilio)")]:
            off = score(ref, texts(load(f"{out}/{audio}.{m}.offline.jsonl"), True))
            live_lines = load(f"{out}/{audio}.{m}.live.jsonl")
            live = score(ref, texts(live_lines, False))
            s = [l for l in live_lines if l.get("type") == "summary"][0]
            ratio = f"{live / off:.2f}×" if off > 0 else ("1.00×" if live == 0 else "∞ (offline 0)")
            print(
                f"| {m} | {label} | {off:.1%} | {live:.1%} | {ratio} | {s['final_latency_ms_p50']} ms | "
                f"{s['final_latency_ms_p95']} ms | {s['partial_gap_ms_p50']} / {s['partial_gap_ms_p95']} ms |"
            )
    if capacity:
        m = models[0]
        print()
        print(f"Capacity ({m}, two-party calls over Twilio, 8 kHz µ-law, real time):")
        print()
        print("| concurrent calls | finals | final p50 | final p95 | final max | partial gap p95 | max load level | shed (s) | recogniser drops (s) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n in capacity:
            s = load(f"{out}/capacity.{n}.{m}.jsonl")[-1]
            print(
                f"| {n} | {s['finals']} | {s['final_latency_ms_p50']} ms | {s['final_latency_ms_p95']} ms | {s['final_latency_ms_max']} ms | "
                f"{s['partial_gap_ms_p95']} ms | {s['max_degrade_level']} | {s['shed_seconds']:.1f} | {s['recogniser_dropped_seconds']:.1f} |"
            )


if __name__ == "__main__":
    main()
