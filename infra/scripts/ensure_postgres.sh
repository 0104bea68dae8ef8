#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl) are installed; install Debian's `postgresql`
# package if they are not. Idempotent: a machine that has them is left untouched.
#
# The tests start their own throwaway cluster from these binaries (tests/fixtures/database.py); no
# system cluster needs to run. Usage: infra/scripts/ensure_postgres.sh
set -euo pipefail

have_postgres() {
    compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
        || { command -v pg_ctl >/dev/null && command -v initdb >/dev/null; }
}

if have_postgres; then
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "ensure_postgres: no PostgreSQL binaries and no apt-get; install the PostgreSQL server yourself" >&2
    exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
${sudo[@]+"${sudo[@]}"} apt-get update -qq
${sudo[@]+"${sudo[@]}"} apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if ! have_postgres; then
    echo "ensure_postgres: installed the postgresql package but found no initdb/pg_ctl" >&2
    exit 1
fi
echo "ensure_postgres: installed $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
