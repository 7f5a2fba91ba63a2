#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs build dependencies (idempotent),
# builds the binaries the end-to-end tests start, then runs every test with nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# The end-to-end tests spawn target/debug/modelgate: build it from this tree first.
cargo build --locked --bins
cargo nextest run --locked --workspace --no-fail-fast "$@"
