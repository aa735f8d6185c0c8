#!/usr/bin/env bash
# A local PostgreSQL server for the single-node product, with its data under .data/.
#   deploy/pg.sh start        initialize (first time) and start; prints the owning role's URL
#                             (for `hub migrate`, as HUB_MIGRATION_DATABASE_URL)
#   deploy/pg.sh serving-url  prints the serving role's URL (DATABASE_URL of `hub serve`)
#   deploy/pg.sh stop         stop it
# Two roles: `postgres` owns the schema and migrates it; the login role `admin_api_serve`
# (password in .data/pg-serve-password) gets from `hub migrate` only the rights serving
# needs, so the serving hub can neither rewrite the event log nor drop its triggers.
# Listens on 127.0.0.1:${PGPORT:-5433} with password authentication. As root, the server
# runs as the `postgres` user (initdb refuses root); when that user cannot enter the clone
# (a clone under root's 0700 home), the cluster lives under /var/lib/admin-api/ instead,
# in a directory named after the clone's path.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data=$root/.data
port=${PGPORT:-5433}
database=${PGDATABASE_NAME:-admin_api}
serve_role=admin_api_serve

pg_bin() {
    if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -x "$dir/$1" ] || { echo "$1 not found; run deploy/install-deps.sh" >&2; exit 1; }
    echo "$dir/$1"
}

# Where the cluster and its socket live: beside the clone's data when the server's user
# can reach it, else outside the clone.
cluster_dir() {
    if [ "$(id -u)" -ne 0 ] || runuser -u postgres -- test -x "$root" 2>/dev/null; then
        echo "$data"
    else
        echo "/var/lib/admin-api/$(printf '%s' "$root" | sha256sum | cut -c1-16)"
    fi
}
cluster=$(cluster_dir)
pgdata=$cluster/postgres
run=$cluster/run

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    mkdir -p "$data" "$run"
    chmod 700 "$data"
    [ "$cluster" = "$data" ] || echo "$root" > "$cluster/clone-path"
    if [ ! -f "$data/pg-password" ]; then
        (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$data/pg-password")
    fi
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$run"
        [ -d "$pgdata" ] || { mkdir -p "$pgdata"; chown postgres: "$pgdata"; }
        # The server reads the password file once, at initdb.
        install -o postgres -m 600 "$data/pg-password" "$run/pwfile"
        chmod 711 "$cluster"
    else
        mkdir -p "$pgdata"
        install -m 600 "$data/pg-password" "$run/pwfile"
    fi
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        as_owner "$(pg_bin initdb)" -D "$pgdata" -U postgres -E UTF8 \
            --auth=scram-sha-256 --pwfile="$run/pwfile" >"$data/initdb.log"
    fi
    rm -f "$run/pwfile"
    if ! as_owner "$(pg_bin pg_ctl)" -D "$pgdata" status >/dev/null 2>&1; then
        as_owner "$(pg_bin pg_ctl)" -D "$pgdata" -l "$run/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $run" start >/dev/null
    fi
    local password
    password=$(cat "$data/pg-password")
    export PGPASSWORD=$password
    if [ -z "$(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$database'")" ]; then
        psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE $database" >/dev/null
    fi
    if [ ! -f "$data/pg-serve-password" ]; then
        (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$data/pg-serve-password")
    fi
    if [ -z "$(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_roles WHERE rolname = '$serve_role'")" ]; then
        # On stdin, so the password shows in no process list.
        psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -q >/dev/null <<SQL
CREATE ROLE $serve_role LOGIN PASSWORD '$(cat "$data/pg-serve-password")';
SQL
    fi
    echo "postgres://postgres:$password@127.0.0.1:$port/$database"
}

serving_url() {
    [ -f "$data/pg-serve-password" ] || { echo "run deploy/pg.sh start first" >&2; exit 1; }
    echo "postgres://$serve_role:$(cat "$data/pg-serve-password")@127.0.0.1:$port/$database"
}

stop() {
    [ -f "$pgdata/PG_VERSION" ] || return 0
    as_owner "$(pg_bin pg_ctl)" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
    start) start ;;
    serving-url) serving_url ;;
    stop) stop ;;
    *) echo "usage: $0 start|serving-url|stop" >&2; exit 2 ;;
esac
