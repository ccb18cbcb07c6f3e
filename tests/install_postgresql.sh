#!/usr/bin/env bash
# PostgreSQL server for tests/test_hpo_postgres.py, from the distribution's packages (Debian/Ubuntu: apt-get).
# Idempotent: installs nothing when initdb is already under /usr/lib/postgresql/*/bin; prints where the binaries are.
set -euo pipefail

find_bin() {
    # the newest version's bin directory holding initdb (version sort: 9.6 < 15 < 16)
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$initdb" ] && dirname "$initdb"
}

bin=$(find_bin || true)
if [ -z "$bin" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install_postgresql.sh: no apt-get here; install the PostgreSQL server (initdb, pg_ctl) by hand" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo=sudo
    fi
    echo "install_postgresql.sh: installing the postgresql package (apt-get)"
    # quiet: apt's output is shown only when it fails
    if ! log=$($sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq 2>&1 &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql 2>&1); then
        echo "$log" >&2
        echo "install_postgresql.sh: apt-get could not install postgresql" >&2
        exit 1
    fi
    bin=$(find_bin || true)
    if [ -z "$bin" ]; then
        echo "install_postgresql.sh: the postgresql package is installed but no /usr/lib/postgresql/*/bin/initdb" >&2
        exit 1
    fi
fi
echo "PostgreSQL binaries: $bin ($("$bin/postgres" --version))"
