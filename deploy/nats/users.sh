#!/usr/bin/env bash
# Writes the `authorization` block of deploy/nats/nats-server.conf to stdout: the hub user
# and one user per instance id given, from the templates beside this script.
#
#   deploy/nats/users.sh <password dir> <instance id>... > deploy/nats/users.conf
#
# Each user's password is read from `<password dir>/<user>.password` (created with 32
# random characters, mode 600, when missing), so the same directory gives each process its
# NATS_URL: `nats://<user>:$(cat <password dir>/<user>.password)@host:port`. The hubs' user
# is `hub`. Instance ids match [a-z0-9_-]{1,50}, as INSTANCE_ID does.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
dir=${1:?usage: users.sh <password dir> <instance id>...}
shift
mkdir -p "$dir"

password() {
    local file="$dir/$1.password"
    [ -f "$file" ] || (umask 077; head -c 64 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 > "$file")
    cat "$file"
}

user() {
    sed -e "s/@USER@/$2/g" -e "s/@PASSWORD@/$(password "$2")/g" "$here/$1"
}

echo "authorization {"
echo "  users = ["
user hub-user.conf.in hub
for id in "$@"; do
    if ! [[ $id =~ ^[a-z0-9_-]{1,50}$ ]] || [ "$id" = hub ]; then
        echo "users.sh: '$id' is not an instance id" >&2
        exit 1
    fi
    user instance-user.conf.in "$id"
done
echo "  ]"
echo "}"
