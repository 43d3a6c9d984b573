#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) with cargo-fuzz on the stable
# toolchain (RUSTC_BOOTSTRAP enables the sanitizer flags cargo-fuzz needs).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=4096
done
