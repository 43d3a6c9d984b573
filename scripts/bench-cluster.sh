#!/usr/bin/env bash
# Cross-node benchmark: a real redis-server and two `earshot serve` nodes (release
# build, ASR off, local storage each). N two-track PCM calls at real-time pace go to
# node A; node B receives every live event through Redis. Reports node B's
# earshot_cluster_event_delay_seconds (owner's wall_ts → B's hub) p50/p95, events/s,
# Redis CPU, and redis-benchmark's XADD rate for events of the measured size.
# Usage: scripts/bench-cluster.sh CALLS [DURATION_S]
# Writes target/bench/cluster-<calls>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:?usage: bench-cluster.sh CALLS [DURATION_S]}
duration=${2:-60}
command -v redis-server >/dev/null || { echo "redis-server is required (scripts/install-test-deps.sh)"; exit 1; }
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked -p earshot -p earshot-loadtest >/dev/null
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
base=$((30000 + RANDOM % 20000))
rport=$base; aport=$((base + 1)); bport=$((base + 2))
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
rpid=$!; pids+=("$rpid")
for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
node() { # name port
  EARSHOT__ASR__ENABLED=false EARSHOT__HTTP__LISTEN=127.0.0.1:$2 EARSHOT__STORAGE__DIR="$work/$1" \
  EARSHOT__LIMITS__MAX_CALLS=100000 EARSHOT__LOG__LEVEL=warn \
  EARSHOT__REDIS__URL=redis://127.0.0.1:$rport EARSHOT__REDIS__NODE_ID=$1 \
    target/release/earshot serve --config config/earshot.toml 2>"$out/cluster-$1.log" &
  pids+=("$!")
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && break; sleep 0.1; done
}
node node-a "$aport"
node node-b "$bport"
apid=${pids[1]}
wav="$work/call.wav"
scripts/make-sample-call.sh "$wav" 8000 >/dev/null
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
r0=$(cpu "$rpid"); t0=$(date +%s.%N)
target/release/earshot-loadtest run --url "ws://127.0.0.1:$aport" --format pcm --calls "$calls" \
  --duration "$duration" --ramp 10 --wav "$wav" --server-pid "$apid" \
  --out "$out/cluster-load-$calls.json" --token demo >/dev/null
sleep 3
r1=$(cpu "$rpid"); t1=$(date +%s.%N)
curl -sf "http://127.0.0.1:$bport/metrics" >"$work/b.prom"
curl -sf "http://127.0.0.1:$aport/metrics" >"$work/a.prom"
size=$(redis-cli -p "$rport" --raw XREVRANGE earshot:events + - COUNT 200 | awk 'length($0) > 100 { n++; s += length($0) } END { if (n) printf "%d", s / n; else print 400 }')
payload=$(head -c "$size" /dev/zero | tr '\0' 'x')
xadd=$(redis-benchmark -p "$rport" -n 200000 -P 16 -q XADD bench:events MAXLEN '~' 100000 '*' n node-a k e d "$payload" | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)
# What a reading node costs Redis: XREAD of 512 entries at a time, as the reader does.
xread=$(redis-benchmark -p "$rport" -n 20000 -q XREAD COUNT 512 STREAMS bench:events 0 | tr '\r' '\n' | grep -o '[0-9.]* requests per second' | tail -1)
python3 - "$work/a.prom" "$work/b.prom" "$calls" "$duration" "$r0" "$r1" "$t0" "$t1" "$size" "$xadd" "$out/cluster-$calls.md" "$xread" <<'PY'
import sys, re
a, b, calls, dur, r0, r1, t0, t1, size, xadd, outp, xread = sys.argv[1:]
w = float(xadd.split()[0]) if xadd else 0.0
r = float(xread.split()[0]) * 512 if xread else 0.0
def cap(n):
    # One Redis core: each event is appended once and read by each of the n nodes.
    return 1.0 / (1.0 / w + n / r) if w and r else 0.0
def read(p):
    return open(p).read().splitlines()
def val(lines, name, label=""):
    for l in lines:
        if l.startswith(name) and label in l and not l.startswith("#"):
            return float(l.split()[-1])
    return 0.0
B = read(b); A = read(a)
buckets = []
for l in B:
    m = re.match(r'earshot_cluster_event_delay_seconds_bucket\{le="([^"]+)"\} (\S+)', l)
    if m:
        buckets.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), float(m.group(2))))
total = buckets[-1][1] if buckets else 0
def q(p):
    want = total * p
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= want:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((want - prev_n) / max(n - prev_n, 1))
        prev_le, prev_n = le, n
    return 0
secs = float(t1) - float(t0)
published = val(A, "earshot_cluster_events_total", 'result="published"')
received = val(B, "earshot_cluster_events_total", 'result="received"')
lost = val(A, "earshot_cluster_events_total", 'result="dropped"') + val(A, "earshot_cluster_events_total", 'result="unpublished"')
rcpu = (float(r1) - float(r0)) / 100.0 / secs
md = f"""# Cross-node events: {calls} calls on node A, watched through node B ({dur} s)

| | |
|---|---|
| events published by A | {published:.0f} ({published / secs:.0f}/s) |
| events received by B | {received:.0f} |
| not published (dropped + Redis errors) | {lost:.0f} |
| delay owner → B's hub, p50 | {q(0.5) * 1000:.1f} ms |
| delay owner → B's hub, p95 | {q(0.95) * 1000:.1f} ms |
| Redis CPU | {rcpu * 100:.1f} % of one core |
| mean event size | {size} bytes |
| redis-benchmark XADD (pipelined 16, that size) | {w:.0f} events/s |
| redis-benchmark XREAD COUNT 512 (that size) | {r:.0f} entries/s |
| one Redis core's ceiling, 2 / 4 / 8 / 16 nodes | {cap(2):.0f} / {cap(4):.0f} / {cap(8):.0f} / {cap(16):.0f} events/s |
"""
open(outp, "w").write(md)
print(md)
PY
