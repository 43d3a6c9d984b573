#!/usr/bin/env bash
# Command 2 of the README: install the test dependencies and run the whole suite.
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Habits: one format (rustfmt.toml) and no clippy warnings, checked before the suite.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The pure cores must build without the IO edge (fuzz targets depend on that).
cargo check -p earshot --no-default-features --lib --locked
# nextest builds every test target and the `earshot` binary the integration tests run,
# in the test profile (a separate `cargo build` would compile everything twice).
cargo nextest run --workspace --locked --no-fail-fast
# Every network-facing parser's fuzz target is built and run briefly from its seeds
# (a crash fails the run); longer runs: scripts/fuzz.sh SECONDS.
scripts/fuzz.sh "${EARSHOT_FUZZ_SECONDS:-10}"
