#!/usr/bin/env bash
# Runs the product on this machine in cloud single-node mode: installs what is missing,
# starts a local PostgreSQL (data under .data/), builds the hub and serves the Admin API
# on HUB_LISTEN_ADDR (default 127.0.0.1:8080). Ctrl-C stops the hub and PostgreSQL.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deploy/install-deps.sh
cargo build --release --locked -p hub

# Least privilege: the owning role migrates and grants; the hub serves as a role that can
# read and append to the event log but neither rewrite it nor drop its triggers.
owner_url=$(deploy/pg.sh start)
DATABASE_URL=$(deploy/pg.sh serving-url)
export DATABASE_URL
trap 'deploy/pg.sh stop' EXIT
trap 'exit 130' INT TERM
HUB_MIGRATION_DATABASE_URL=$owner_url target/release/hub migrate

key_file=.data/operator-key
if [ ! -f "$key_file" ]; then
    (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 48 > "$key_file")
    echo "Operator key (shown once; keep it safe, it is stored in $key_file):"
    echo "  $(cat "$key_file")"
fi
HUB_OPERATOR_KEY=$(cat "$key_file")
export HUB_OPERATOR_KEY
master_file=.data/master-key
[ -f "$master_file" ] || (umask 077; head -c 32 /dev/urandom | base64 > "$master_file")
HUB_MASTER_KEY=$(cat "$master_file")
export HUB_MASTER_KEY
export HUB_LISTEN_ADDR=${HUB_LISTEN_ADDR:-127.0.0.1:8080}

echo "Admin API on http://$HUB_LISTEN_ADDR (Ctrl-C to stop)"
target/release/hub serve --single-node &
hub=$!
trap 'kill -TERM $hub 2>/dev/null || true; wait $hub 2>/dev/null || true; deploy/pg.sh stop' EXIT
wait $hub
