#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) with cargo-fuzz on the stable
# toolchain (RUSTC_BOOTSTRAP enables the sanitizer flags cargo-fuzz needs).
# Each target starts from its committed seeds (fuzz/seeds/TARGET) and its local corpus
# (fuzz/corpus/TARGET, not committed). A crash fails the script and leaves the input
# in fuzz/artifacts/TARGET. CI runs it briefly (scripts/test.sh); longer runs are for
# sessions that touch a parser.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  dirs=("corpus/$t")
  if [ -d "seeds/$t" ]; then dirs+=("seeds/$t"); fi
  echo "fuzz: $t for ${secs}s"
  log="target/fuzz-$t.log"
  mkdir -p target
  if ! cargo fuzz run -O "$t" "${dirs[@]}" -- -max_total_time="$secs" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t failed (input kept in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units" "$log" || true
done
