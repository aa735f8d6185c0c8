#!/usr/bin/env bash
# Runs the README as a newcomer would: clones this repository under root's home (0700,
# which the `postgres` user cannot enter), runs the README's run command, then its example
# session as written, and checks that the runtime API answers 200 with the token it made.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
home=$(getent passwd "$(id -un)" | cut -d: -f6)
clone=$(mktemp -d "$home/readme-session.XXXXXX")
log=$clone.log
git clone -q "$repo" "$clone"
cd "$clone"

# The README's ```sh blocks, in order: 1 = the run command, 2 and 3 = the example session.
block() {
    awk -v want="$1" '/^```sh$/ { n++; inside = (n == want); next } /^```$/ { inside = 0 } inside' README.md
}
[ "$(block 1)" = "deploy/run-single-node.sh" ] || { echo "README: the first sh block is not the run command" >&2; exit 1; }

setsid bash -c "$(block 1)" > "$log" 2>&1 &
runner=$!
stop() {
    kill -TERM -- "-$runner" 2>/dev/null || true
    wait "$runner" 2>/dev/null || true
    # deploy/pg.sh keeps the cluster of a clone the `postgres` user cannot enter here.
    rm -rf "$clone" "$log" "/var/lib/admin-api/$(printf '%s' "$clone" | sha256sum | cut -c1-16)"
}
trap stop EXIT

# The first run builds the hub in release mode: allow 20 minutes (or README_SESSION_WAIT s).
wait_seconds=${README_SESSION_WAIT:-1200}
for _ in $(seq "$wait_seconds"); do
    curl -sf http://127.0.0.1:8080/readyz >/dev/null && break
    kill -0 "$runner" 2>/dev/null || { echo "the run command exited:" >&2; tail -n 30 "$log" >&2; exit 1; }
    sleep 1
done
curl -sf http://127.0.0.1:8080/readyz >/dev/null || { echo "not ready after $wait_seconds s:" >&2; tail -n 30 "$log" >&2; exit 1; }

session=$(printf '%s\n%s\n' "$(block 2)" "$(block 3)")
# The session as written, then one more look at the runtime API with the token it made.
bash -euo pipefail -c "$session"'
status=$(curl -s -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/v1/runtime/workspace)
echo "runtime API: $status"
[ "$status" = 200 ]'
echo "README session: ok"
