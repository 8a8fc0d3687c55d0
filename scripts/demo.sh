#!/usr/bin/env bash
# The main job, on a fresh Debian machine: installs what is missing, builds qproxy, and runs
# `qproxy demo`, which starts a throwaway PostgreSQL, loads a small blog schema, runs an app-like
# workload with real problems (and clean controls) through the proxy, and prints the report.
# Everything it starts is stopped and removed when it exits. Extra arguments go to `qproxy demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

./scripts/install-deps.sh
echo "==> building qproxy (release)" >&2
cargo build --quiet --release -p qproxy
exec "${CARGO_TARGET_DIR:-$PWD/target}/release/qproxy" demo "$@"
