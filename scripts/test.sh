#!/usr/bin/env bash
# Command 2 of the README: install the test dependencies and run the whole suite.
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo build --workspace --all-targets --locked
# The pure cores must build without the IO edge (fuzz targets depend on that).
cargo check -p earshot --no-default-features --lib --locked
cargo nextest run --workspace --locked --no-fail-fast
