#!/usr/bin/env bash
# Side-by-side time of one world-model training step (issue #41): world4rl (tch;
# crates/world4rl/examples/wm_bench.rs --train-only: the Eq. 7 loss, backward, gradient clipping,
# AdamW) against a PyTorch eager reference of the same U-Net and step in DIAMOND's style
# (scripts/bench/train_reference.py, whose networks are imagine_reference.py's). f32, CPU, both on
# the same libtorch (the .venv wheel), one denoiser pass per step, at two presets:
#   cpu  - the demo's world model: 32 px, channels [32,32,64,64], depth 1, attention at 4x4 (2.04 M)
#   wm64 - 64 px, channels [32,64,64,128], depth 2, no level attention (5.74 M)
#
# Run it on idle cores. The sides alternate and swap which goes first every round.
# Acceptance (issue #41): world4rl ms / PyTorch ms <= 0.8 at the same precision.
#
# Usage: bash scripts/bench/training.sh
#   environment (defaults): THREADS=2 BATCH=16 STEPS=10 WARM=2 ROUNDS=5 PRESETS="cpu wm64"
#   W4RL_ARGS adds flags to world4rl's side; WORLD4RL_MALLOC=system gives it glibc's allocator
#   defaults (what the reference runs with).
# Prints every round on stderr and, per preset, one JSON line on stdout: the median over rounds of
# each side's median step time, the ratio world4rl / PyTorch, each side's peak resident memory, the
# parameter counts and "pass".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
THREADS="${THREADS:-2}"; BATCH="${BATCH:-16}"; STEPS="${STEPS:-10}"; WARM="${WARM:-2}"
ROUNDS="${ROUNDS:-5}"; PRESETS="${PRESETS:-cpu wm64}"; W4RL_ARGS="${W4RL_ARGS:-}"
PY=.venv/bin/python
BIN=target/release/examples/wm_bench
cargo build --release --quiet -p world4rl --example wm_bench
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=scripts/bench/alternate.sh
source scripts/bench/alternate.sh

run_pytorch() {
  PRESET="$1" BATCH="$BATCH" THREADS="$THREADS" STEPS="$STEPS" WARM="$WARM" \
    "$PY" scripts/bench/train_reference.py | tail -n 1 >> "$TMP/$1.pytorch"
}
run_world4rl() {
  # wm64 is wm_bench's --spike configuration (64 px, [32,64,64,128], depth 2, no level attention)
  local shape=(--preset "$1")
  if [ "$1" = wm64 ]; then shape=(--spike); fi
  # shellcheck disable=SC2086 # W4RL_ARGS is a list of flags
  "$BIN" "${shape[@]}" --batch "$BATCH" --threads "$THREADS" --steps "$STEPS" --warmup "$WARM" \
    --train-only $W4RL_ARGS | tail -n 1 >> "$TMP/$1.world4rl"
}

for preset in $PRESETS; do
  alternate_rounds "$preset" train_step_ms_median
  "$PY" - "$preset" "$TMP/$preset.pytorch" "$TMP/$preset.world4rl" <<'PYEOF'
import json
import statistics
import sys

preset, py_path, rs_path = sys.argv[1:4]
py = [json.loads(line) for line in open(py_path) if line.strip()]
rs = [json.loads(line) for line in open(rs_path) if line.strip()]
py_ms = statistics.median(r["train_step_ms_median"] for r in py)
rs_ms = statistics.median(r["train_step_ms_median"] for r in rs)
ratio = rs_ms / py_ms
params_match = py[0]["params"] == rs[0]["params"]
print(
    json.dumps(
        {
            "preset": preset,
            "batch": rs[0]["batch"],
            "threads": rs[0]["threads"],
            "world4rl_malloc": rs[0]["malloc"],
            "rounds": len(rs),
            "pytorch_ms": round(py_ms, 2),
            "world4rl_ms": round(rs_ms, 2),
            "pytorch_ms_rounds": [round(r["train_step_ms_median"], 2) for r in py],
            "world4rl_ms_rounds": [round(r["train_step_ms_median"], 2) for r in rs],
            "ratio_world4rl_over_pytorch": round(ratio, 3),
            "pytorch_peak_rss_mib": round(max(r["peak_rss_mib"] for r in py)),
            "world4rl_peak_rss_mib": round(max(r["peak_rss_mib"] or 0 for r in rs)),
            "params_pytorch": py[0]["params"],
            "params_world4rl": rs[0]["params"],
            "params_match": params_match,
            "limit": 0.8,
            "pass": params_match and ratio <= 0.8,
        }
    )
)
PYEOF
done
