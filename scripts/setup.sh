#!/usr/bin/env bash
# world4rl set-up: installs what the build needs, idempotently.
#  - a project-local Python venv (.venv) holding torch==2.13.0 (libtorch for tch 0.26) and safetensors/numpy
#    (for the Python loading example and the interop test);
#  - the .libtorch link that .cargo/config.toml points LIBTORCH at;
#  - with WORLD4RL_BROWSER=1, chromium and chromium-driver for the playground's browser test;
#  - with WORLD4RL_LEROBOT=1, lerobot and ffmpeg for the LeRobot interop tests (scripts/setup-lerobot.sh);
#  - with WORLD4RL_MUJOCO=1, MuJoCo and Meta-World (scripts/setup-mujoco.sh).
# Re-running it when everything is in place takes about a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TORCH_VERSION=2.13.0
PY="${PYTHON:-python3}"

say() { printf '[setup] %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install Rust (https://rustup.rs) and re-run"; exit 1
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version 2>&1)"
  "$PY" -m venv .venv
fi

have_torch() {
  .venv/bin/python - <<PYEOF 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("torch").split("+")[0] == "$TORCH_VERSION" else 1)
PYEOF
}
have_pkg() { .venv/bin/python -c "import $1" 2>/dev/null; }

if ! have_torch; then
  say "installing torch==$TORCH_VERSION into .venv (large download, once)"
  .venv/bin/pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
fi
if ! have_pkg safetensors || ! have_pkg numpy; then
  say "installing safetensors and numpy into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check safetensors numpy
fi

TORCH_DIR="$(.venv/bin/python -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null | tail -1)"
if [ ! -f "$TORCH_DIR/lib/libtorch_cpu.so" ]; then
  say "torch at '$TORCH_DIR' has no lib/libtorch_cpu.so; delete .venv and re-run"; exit 1
fi
if [ "$(readlink .libtorch 2>/dev/null)" != "$TORCH_DIR" ]; then
  ln -sfn "$TORCH_DIR" .libtorch
  say "linked .libtorch -> $TORCH_DIR"
fi

if [ "${WORLD4RL_BROWSER:-0}" = "1" ]; then
  bash "$ROOT/scripts/setup-browser.sh"
fi
if [ "${WORLD4RL_LEROBOT:-0}" = "1" ]; then
  bash "$ROOT/scripts/setup-lerobot.sh"
fi
if [ "${WORLD4RL_MUJOCO:-0}" = "1" ]; then
  bash "$ROOT/scripts/setup-mujoco.sh"
fi
say "ready"
