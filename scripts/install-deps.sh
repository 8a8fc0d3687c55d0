#!/usr/bin/env bash
# Installs what building, testing and the demo need on Debian 12, skipping whatever is already
# there: PostgreSQL 15 (server, contrib, hypopg), pgbouncer, Python's psycopg 3, asyncpg and
# SQLAlchemy 2 (the driver shapes of tests/tests/accuracy.rs), Debian's chromium and Python's
# playwright (the live-view test drives that chromium; playwright never downloads a browser of its
# own here), and the Rust components rustfmt and clippy. Safe to run again; needs root (or sudo)
# only when it installs.
set -euo pipefail

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql postgresql-contrib)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || missing+=(postgresql)
command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
[ -f /usr/share/postgresql/15/extension/hypopg.control ] || missing+=(postgresql-15-hypopg)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    sudo_if_needed apt-get update
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# pip_install MODULE REQUIREMENT: installs REQUIREMENT unless python3 can import MODULE.
pip_install() {
    if ! python3 -c "import $1" >/dev/null 2>&1; then
        echo "install-deps: installing $2"
        # Debian's own python3 refuses pip installs outside a venv unless told otherwise.
        python3 -m pip install --quiet "$2" ||
            python3 -m pip install --quiet --break-system-packages "$2"
    fi
}
pip_install psycopg "psycopg[binary]"
pip_install asyncpg asyncpg
pip_install sqlalchemy "sqlalchemy>=2"

if ! python3 -c 'import playwright' >/dev/null 2>&1; then
    echo "install-deps: installing playwright (it drives /usr/bin/chromium; no browser download)"
    python3 -m pip install --quiet playwright ||
        python3 -m pip install --quiet --break-system-packages playwright
fi

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if command -v rustup >/dev/null 2>&1; then
    installed="$(rustup component list --installed)"
    for component in rustfmt clippy; do
        if ! grep -q "^$component" <<<"$installed"; then
            echo "install-deps: adding rust component $component"
            rustup component add "$component"
        fi
    done
fi
