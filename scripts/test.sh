#!/usr/bin/env bash
# The whole test suite: installs what is missing (idempotent), then runs every test of the workspace.
# Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
cargo fmt --all -- --check || { echo "[test] cargo fmt --check failed: run 'cargo fmt --all'" >&2; exit 1; }
# Tests run with a fixed, small libtorch thread count so timings do not depend on the machine.
export WORLD4RL_TEST_THREADS="${WORLD4RL_TEST_THREADS:-2}"
cargo test --workspace --release "$@"
