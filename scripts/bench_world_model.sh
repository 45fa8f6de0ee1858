#!/usr/bin/env bash
# Side-by-side training-step time of the world model's U-Net (tch, crates/world4rl) and the PyTorch
# reference of the framework bake-off (scripts/bench/unet_reference.py), at the bake-off's reference
# configuration: channels [32,64,64,128], 2 res blocks per level, batch 32, 64x64, 4 context frames,
# f32, AdamW. Runs both ROUNDS times, alternating, and compares the best medians.
# Acceptance (issue 5): tch <= 1.1x PyTorch. Run it on an otherwise idle machine: libtorch's OpenMP
# threads collapse when the cores are shared.
# Usage: bash scripts/bench_world_model.sh [THREADS=2] [STEPS=7] [ROUNDS=2]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
THREADS="${THREADS:-2}"; STEPS="${STEPS:-7}"; ROUNDS="${ROUNDS:-2}"
cargo build --release --quiet -p world4rl --example wm_bench
best_py=""; best_rs=""
for r in $(seq "$ROUNDS"); do
  py=$(THREADS="$THREADS" STEPS="$STEPS" WARM=2 .venv/bin/python scripts/bench/unet_reference.py | sed -n 's/^TRAIN median \([0-9.]*\) ms.*/\1/p')
  rs=$(target/release/examples/wm_bench --spike --threads "$THREADS" --steps "$STEPS" --warmup 2 | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["train_step_ms_median"])')
  echo "round $r: pytorch ${py} ms, tch ${rs} ms" >&2
  best_py=$(.venv/bin/python -c "print(min(x for x in [$py, ${best_py:-1e18}]))")
  best_rs=$(.venv/bin/python -c "print(min(x for x in [$rs, ${best_rs:-1e18}]))")
done
ratio=$(.venv/bin/python -c "print(round($best_rs / $best_py, 3))")
echo "{\"threads\": $THREADS, \"pytorch_train_step_ms\": $best_py, \"tch_train_step_ms\": $best_rs, \"ratio\": $ratio, \"limit\": 1.1}"
