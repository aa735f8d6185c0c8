#!/usr/bin/env bash
# Runs every test: installs what is missing, builds the binaries the end-to-end tests
# start, then runs the whole suite (real PostgreSQL and nats-server, started by the tests).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deploy/install-deps.sh
cargo build --locked --workspace --bins
cargo test --locked --workspace "$@"
