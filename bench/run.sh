#!/usr/bin/env bash
# Builds the release binaries the benchmarks start, then runs every benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
# The load tools of the write-path benchmark: wrk (HTTP) and pgbench (PostgreSQL's own
# commit rate: Debian's PostgreSQL server package has it; else postgresql-contrib).
have_pgbench() {
    command -v pgbench >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/pgbench' >/dev/null
}
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
have_pgbench || missing+=(postgresql-contrib)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --locked --workspace --bins
cargo bench --locked -p bench "$@"
