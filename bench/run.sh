#!/usr/bin/env bash
# Builds the release binaries the benchmarks start, then runs every benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
cargo build --release --locked --workspace --bins
cargo bench --locked -p bench "$@"
