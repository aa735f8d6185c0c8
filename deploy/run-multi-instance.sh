#!/usr/bin/env bash
# An example self-hosted topology on this machine: PostgreSQL (deploy/pg.sh), a JetStream
# nats-server (deploy/nats/nats-server.conf: authenticated, each instance confined to its
# own subjects), one hub (with the relay) and two instances, "alpha" and "beta", each with
# its own database. All on loopback; data under .data/. Ctrl-C stops everything.
#
#   hub       http://127.0.0.1:8080   (HUB_LISTEN_ADDR)
#   alpha     http://127.0.0.1:8091
#   beta      http://127.0.0.1:8092
#   nats      nats://127.0.0.1:4222
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deploy/install-deps.sh
cargo build --release --locked -p hub -p instance

DATABASE_URL=$(deploy/pg.sh start)
export DATABASE_URL
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    deploy/pg.sh stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nats-server with the shipped configuration: a user for the hub, one per instance.
mkdir -p .data/nats/store
cp deploy/nats/nats-server.conf .data/nats/nats-server.conf
deploy/nats/users.sh .data/nats/passwords alpha beta > .data/nats/users.conf
chmod 600 .data/nats/users.conf
nats-server -c .data/nats/nats-server.conf -sd .data/nats/store -a 127.0.0.1 -p 4222 > .data/nats.log 2>&1 &
pids+=($!)
# The NATS URL of a user, with its password.
nats_url() {
    echo "nats://$1:$(cat ".data/nats/passwords/$1.password")@127.0.0.1:4222"
}

key_file=.data/operator-key
[ -f "$key_file" ] || (umask 077; head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 48 > "$key_file")
master_file=.data/master-key
[ -f "$master_file" ] || (umask 077; head -c 32 /dev/urandom | base64 > "$master_file")
HUB_OPERATOR_KEY=$(cat "$key_file")
HUB_MASTER_KEY=$(cat "$master_file")
export HUB_OPERATOR_KEY HUB_MASTER_KEY
export HUB_LISTEN_ADDR=${HUB_LISTEN_ADDR:-127.0.0.1:8080}

# Waits up to a minute for a process to answer 200 on a URL; says what failed otherwise.
wait_ready() {
    local name=$1 url=$2 pid=$3 log=$4
    for _ in $(seq 120); do
        curl -sf "$url" >/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$name exited before it was ready; the end of $log:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "$name did not answer $url within 60 s; the end of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
}

# The owner migrates and grants; the hub serves as the least-privileged role.
HUB_MIGRATION_DATABASE_URL=$DATABASE_URL DATABASE_URL=$(deploy/pg.sh serving-url) target/release/hub migrate
DATABASE_URL=$(deploy/pg.sh serving-url) NATS_URL=$(nats_url hub) target/release/hub serve > .data/hub.log 2>&1 &
pids+=($!)
wait_ready hub "http://$HUB_LISTEN_ADDR/readyz" "$!" .data/hub.log

base=${DATABASE_URL%/*}
port=8091
for name in alpha beta; do
    psql "$DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = 'instance_$name'" | grep -q 1 \
        || psql "$DATABASE_URL" -qc "CREATE DATABASE instance_$name"
    # Over NATS only: an instance needs neither HUB_URL nor the operator key.
    env -u HUB_OPERATOR_KEY INSTANCE_ID=$name INSTANCE_DATABASE_URL="$base/instance_$name" \
        INSTANCE_LISTEN_ADDR=127.0.0.1:$port NATS_URL="$(nats_url "$name")" \
        target/release/instance serve > ".data/instance-$name.log" 2>&1 &
    pids+=($!)
    wait_ready "instance $name" "http://127.0.0.1:$port/healthz" "$!" ".data/instance-$name.log"
    port=$((port + 1))
done

echo "hub on http://$HUB_LISTEN_ADDR, instances alpha (:8091) and beta (:8092); operator key in $key_file"
echo "Logs: .data/hub.log, .data/instance-alpha.log, .data/instance-beta.log, .data/nats.log"
echo "Ctrl-C stops everything."
wait -n "${pids[@]}"
