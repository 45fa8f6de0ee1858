#!/usr/bin/env bash
# The whole test suite: installs what is missing (idempotent), then runs every test of the workspace,
# and the Meta-World tests (parity with metaworld 3.1.1, experts, rendering, `world4rl run` at the tiny preset)
# with the `mujoco` feature.
# WORLD4RL_MUJOCO=0 skips the MuJoCo set-up and tests. The LeRobot interop tests need lerobot and ffmpeg,
# which the set-up installs (WORLD4RL_LEROBOT=1); the playground's browser test needs chromium and
# chromium-driver (WORLD4RL_BROWSER=1). The browser test saves its screenshot to target/test-artifacts/.
# Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export WORLD4RL_MUJOCO="${WORLD4RL_MUJOCO:-1}"
export WORLD4RL_LEROBOT="${WORLD4RL_LEROBOT:-1}"
export WORLD4RL_BROWSER="${WORLD4RL_BROWSER:-1}"
bash scripts/setup.sh
cargo fmt --all -- --check || { echo "[test] cargo fmt --check failed: run 'cargo fmt --all'" >&2; exit 1; }
# libtorch: one intra-op thread per test process thread, so parallel tests do not oversubscribe the cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export WORLD4RL_NO_PROGRESS=1
cargo test --workspace --release "$@"
if [ "$WORLD4RL_MUJOCO" = "1" ]; then
  # shellcheck disable=SC1091
  source third_party/mujoco.env
  cargo test --release -p w4rl-envs --features mujoco --lib \
    --test metaworld_parity --test metaworld_experts --test metaworld_env "$@"
  # `world4rl run` on Meta-World at the tiny preset (configs/metaworld-tiny.toml)
  cargo test --release -p world4rl-cli --features mujoco --test metaworld_pipeline "$@"
fi
