#!/usr/bin/env bash
# Make sure a PostgreSQL server (initdb, pg_ctl, postgres) is installed, so the test suite can
# start its own throwaway cluster (tests/pgcluster.py). Quiet and idempotent when present.
# It never starts or depends on the system-wide cluster that Debian's package may create.
set -euo pipefail

have_initdb() {
    local candidate
    for candidate in /usr/lib/postgresql/*/bin/initdb; do
        [[ -x "$candidate" ]] && return 0
    done
    command -v initdb >/dev/null 2>&1
}

if have_initdb; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    cat >&2 <<'EOF'
ensure-postgres: no PostgreSQL server found (looked for initdb under /usr/lib/postgresql/*/bin and on PATH).
The test suite starts its own throwaway PostgreSQL cluster and needs the server binaries.
Install them, then run `make test` again:
    Debian/Ubuntu:  sudo apt-get install -y postgresql
    Fedora/RHEL:    sudo dnf install -y postgresql-server
    macOS:          brew install postgresql@15   (and put its bin/ on PATH)
EOF
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: no PostgreSQL server found and no apt-get to install it;" \
        "install a PostgreSQL server (initdb, pg_ctl, postgres) and put its bin/ on PATH." >&2
    exit 1
fi

echo "ensure-postgres: installing the PostgreSQL server (apt-get install postgresql)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null

if ! have_initdb; then
    echo "ensure-postgres: apt-get installed postgresql but initdb is still missing." >&2
    exit 1
fi
echo "ensure-postgres: installed." >&2
