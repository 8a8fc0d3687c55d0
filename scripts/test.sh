#!/usr/bin/env bash
# The test suite: installs missing prerequisites, builds the qproxy binary the integration tests
# start, then runs every test of the workspace. Extra arguments go to `cargo test`.
#
# QPROXY_TEST_TARGET=direct runs the integration tests straight against PostgreSQL instead of
# through the proxy (to check the tests themselves).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

./scripts/install-deps.sh
cargo build -p qproxy
cargo test --workspace --no-fail-fast "$@"
