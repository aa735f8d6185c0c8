#!/usr/bin/env bash
# Runs schemathesis (`--checks all`) against a started single-node hub: against the
# instance's runtime API (its own document) with a workspace access token, then the hub's
# `/openapi.json` with an organization's admin key, a partner app's key (its routes) and
# with the operator key. Exits
# non-zero on any failure schemathesis reports.
#   deploy/schemathesis.sh              the CI budget (SCHEMATHESIS_EXAMPLES cases per
#                                       operation and phase, default 25)
#   SCHEMATHESIS_EXAMPLES=250 deploy/schemathesis.sh   the full budget (> 10,000 cases)
# Needs the debug binaries (`cargo build --workspace --bins`), Debian's python3 with venv
# (deploy/install-deps.sh) and PyPI: schemathesis is installed into
# .data/schemathesis-venv on first use.
# PostgreSQL is deploy/pg.sh's cluster of this clone, started on SCHEMATHESIS_PGPORT
# (default 5439) with a fresh database each run, and stopped at the end (so not beside
# deploy/run-single-node.sh, which runs the same cluster); the hub listens on
# SCHEMATHESIS_ADDR (default 127.0.0.1:18080).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
examples=${SCHEMATHESIS_EXAMPLES:-25}
addr=${SCHEMATHESIS_ADDR:-127.0.0.1:18080}
export PGPORT=${SCHEMATHESIS_PGPORT:-5439}
export PGDATABASE_NAME=admin_api_schemathesis
base=http://$addr
venv=$root/.data/schemathesis-venv
work=$(mktemp -d)
hub_pid=

cleanup() {
    local status=$?
    if [ -n "$hub_pid" ]; then
        kill -TERM "$hub_pid" 2>/dev/null || true
        wait "$hub_pid" 2>/dev/null || true
    fi
    deploy/pg.sh stop || true
    if [ "$status" -ne 0 ] && [ -f "$work/hub.log" ]; then
        echo "--- last lines of the hub's log ---" >&2
        tail -n 40 "$work/hub.log" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "schemathesis.sh: $*" >&2; exit 1; }

# schemathesis, pinned, in a venv of its own.
if [ ! -x "$venv/bin/schemathesis" ]; then
    mkdir -p "$root/.data"
    /usr/bin/python3 -m venv "$venv" || fail "python3 -m venv failed (run deploy/install-deps.sh)"
    "$venv/bin/pip" install -q 'schemathesis==4.32.*' || fail "pip could not install schemathesis"
fi

[ -x target/debug/hub ] || fail "target/debug/hub is missing: run cargo build --workspace --bins"

# A fresh database: each run starts from an empty log.
owner_url=$(deploy/pg.sh start)
PGPASSWORD=$(cat .data/pg-password) psql -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -q \
    -c "DROP DATABASE IF EXISTS $PGDATABASE_NAME WITH (FORCE)" -c "CREATE DATABASE $PGDATABASE_NAME" >/dev/null ||
    fail "PostgreSQL does not answer on port $PGPORT (is this clone's cluster already running on another port?)"
serving_url=$(deploy/pg.sh serving-url)
DATABASE_URL=$serving_url HUB_MIGRATION_DATABASE_URL=$owner_url target/debug/hub migrate >"$work/migrate.log" 2>&1 ||
    { cat "$work/migrate.log" >&2; fail "hub migrate failed"; }

operator_key=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)
DATABASE_URL=$serving_url \
    HUB_OPERATOR_KEY=$operator_key \
    HUB_MASTER_KEY=$(head -c 32 /dev/urandom | base64) \
    HUB_LISTEN_ADDR=$addr \
    HUB_RATE_LIMIT_PER_MINUTE=1000000 \
    HUB_AUTH_FAILURES_PER_MINUTE=1000000 \
    RUST_LOG=warn \
    target/debug/hub serve --single-node >"$work/hub.log" 2>&1 &
hub_pid=$!
for _ in $(seq 60); do
    curl -sf "$base/readyz" >/dev/null && break
    kill -0 "$hub_pid" 2>/dev/null || fail "the hub exited"
    sleep 1
done
curl -sf "$base/readyz" >/dev/null || fail "the hub is not ready after 60 s"

# Organizations with a rate limit high enough for the run, each with an admin key.
api() { # method path key [body]
    curl -sS --fail-with-body -X "$1" "$base$2" -H "Authorization: Bearer $3" \
        -H 'Content-Type: application/json' ${4:+--data "$4"}
}
json() { /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
admin_of() { # organization name -> a key with every scope, its rate limit raised
    local org key
    org=$(api POST /v1/organizations "$operator_key" \
        "{\"name\":\"$1\",\"email\":\"st@example.com\",\"plan\":\"pro\",\"rate_limit_ceiling_per_minute\":1000000}" |
        json "['id']")
    key=$(api POST /v1/api-keys "$operator_key" \
        "{\"name\":\"$1 admin\",\"scopes\":[\"*\"],\"organization_id\":\"$org\"}" | json "['secret']")
    api PATCH /v1/settings "$key" '{"rate_limit_per_minute":1000000}' >/dev/null
    echo "$key"
}
admin_key=$(admin_of schemathesis)
settings_key=$(admin_of "schemathesis settings")
runtime_key=$(admin_of "schemathesis runtime")
workspace_id=$(api POST /v1/workspaces "$runtime_key" '{"name":"runtime"}' | json "['id']")
token=$(api POST "/v1/workspaces/$workspace_id/access-token" "$runtime_key" '{}' | json "['access_token']")
app_key=$(api POST /v1/apps "$operator_key" \
    '{"name":"schemathesis","kind":"source","contact_email":"st@example.com"}' | json "['secret']")

status=0
run() { # label config schema-url key report [schemathesis options]
    echo "=== schemathesis: $1 ($examples cases per operation and phase) ==="
    local label=$1 config=$2 url=$3 key=$4 report=$5
    shift 5
    # One worker: schemathesis's coverage phase is not thread-safe on every Python.
    "$venv/bin/schemathesis" --config-file "deploy/$config" --no-color run "$url" --checks all \
        -H "Authorization: Bearer $key" --max-examples "$examples" --workers 1 --seed 1 \
        --report junit --report-junit-path "$root/.data/schemathesis-$report.xml" "$@" || status=1
}
# In an order where no run changes what a later one needs: the runtime API before anything
# can archive its workspace; the admin key's own settings (its rate limit) last, with a key
# of their own.
run "instance runtime API, workspace token" schemathesis.toml "$base/v1/runtime/openapi.json" "$token" runtime
run "hub, admin key" schemathesis.toml "$base/openapi.json" "$admin_key" admin --exclude-operation-id update_settings \
    --exclude-checks use_after_free
# The partner routes take an app key only (every other key gets 403 there); they create
# nothing, so there are no links to follow: no stateful phase.
run "hub, partner app key" schemathesis.toml "$base/openapi.json" "$app_key" partner \
    --include-path-regex '^/v1/partner/' --phases examples,coverage,fuzzing
# `DELETE /v1/apps/{id}` revokes an app, which stays readable with status `revoked`
# (API.md): "deleted resource still available" does not hold for this run (the admin key's
# run neither: `DELETE /v1/api-keys/{id}` revokes a key the same way; the e2e tests check
# that a deleted workspace answers 404).
run "hub, operator key" schemathesis-operator.toml "$base/openapi.json" "$operator_key" operator \
    --exclude-checks use_after_free
# One operation alone has no links to follow: no stateful phase.
run "hub, admin key, PATCH /v1/settings" schemathesis.toml "$base/openapi.json" "$settings_key" settings \
    --include-operation-id update_settings --phases examples,coverage,fuzzing
[ "$status" -eq 0 ] || fail "schemathesis reported failures"
echo "schemathesis: no failures"
