#!/usr/bin/env bash
# Installs what the product and its tests need and the machine lacks: PostgreSQL,
# nats-server, curl and jq (the README's example session), (for the tests' SMTP server)
# python3-aiosmtpd and (for deploy/schemathesis.sh's virtualenv) python3-venv, from Debian's
# packages.
# Safe to run again; does nothing when all is there.
set -euo pipefail

have_pg() {
    command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
have_pg || missing+=(postgresql)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v jq >/dev/null 2>&1 || missing+=(jq)
# The tests' SMTP server: Debian's aiosmtpd, for Debian's python3.
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust stable) is required: https://rustup.rs" >&2; exit 1; }

if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
