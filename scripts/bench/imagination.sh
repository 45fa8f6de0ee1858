#!/usr/bin/env bash
# Side-by-side time of one imagination step (issue #41): world4rl (tch, the policy acting, the world
# model sampling the next frames, the classifier judging them, through the imagined environment
# refinement uses: crates/world4rl/examples/imagine_bench.rs) against a PyTorch eager reference of
# the same networks written in DIAMOND's style, rolling buffers kept as tensors
# (scripts/bench/imagine_reference.py). Batch 32, f32, CPU, both on the same libtorch (the .venv
# wheel), at two presets:
#   cpu  - the demo's world model: 32 px, channels [32,32,64,64], depth 1, attention at 4x4, 2.04 M
#   wm64 - 64 px, channels [32,64,64,128], depth 2, no level attention, 5.74 M
# both with 2 Euler steps, a 32 px policy (0.22 M) and a 32 px classifier (0.11 M). Each side prints
# its parameter counts; a mismatch shows as "params_match": false.
#
# Run it on idle cores: libtorch's OpenMP threads collapse when the cores are shared, and a busy
# machine makes either side look arbitrarily slow. The sides alternate (and swap which one goes
# first every round) so that a drift hits both alike.
#
# Acceptance (issue #41): ratio = PyTorch ms / world4rl ms >= 2 at both presets (> 1 means world4rl
# is faster), with equal parameter counts.
#
# Usage: bash scripts/bench/imagination.sh
#   environment (defaults): THREADS=2 BATCH=32 STEPS=20 WARM=3 ROUNDS=3 PRESETS="cpu wm64"
#   W4RL_ARGS="--channels-last" adds flags to world4rl's side; WORLD4RL_MALLOC=system gives world4rl
#   glibc's allocator defaults (what the reference runs with), and GLIBC_TUNABLES (docs/speed.md) gives
#   both sides world4rl's allocator settings.
# Prints every round on stderr and, per preset, one JSON line on stdout: the median over rounds of
# each side's median step time, the ratio, transitions per second, the time split (policy, world
# model, classifier), each side's peak resident memory, the parameter counts and "pass".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
THREADS="${THREADS:-2}"; BATCH="${BATCH:-32}"; STEPS="${STEPS:-20}"; WARM="${WARM:-3}"
ROUNDS="${ROUNDS:-3}"; PRESETS="${PRESETS:-cpu wm64}"; W4RL_ARGS="${W4RL_ARGS:-}"
PY=.venv/bin/python
BIN=target/release/examples/imagine_bench
cargo build --release --quiet -p world4rl --example imagine_bench
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=scripts/bench/alternate.sh
source scripts/bench/alternate.sh

run_pytorch() {
  PRESET="$1" BATCH="$BATCH" THREADS="$THREADS" STEPS="$STEPS" WARM="$WARM" \
    "$PY" scripts/bench/imagine_reference.py | tail -n 1 >> "$TMP/$1.pytorch"
}
run_world4rl() {
  # shellcheck disable=SC2086 # W4RL_ARGS is a list of flags
  "$BIN" --preset "$1" --batch "$BATCH" --threads "$THREADS" --steps "$STEPS" --warmup "$WARM" \
    $W4RL_ARGS | tail -n 1 >> "$TMP/$1.world4rl"
}

for preset in $PRESETS; do
  alternate_rounds "$preset" imagine_step_ms_median
  "$PY" - "$preset" "$TMP/$preset.pytorch" "$TMP/$preset.world4rl" <<'EOF'
import json
import statistics
import sys

preset, py_path, rs_path = sys.argv[1:4]
py = [json.loads(line) for line in open(py_path) if line.strip()]
rs = [json.loads(line) for line in open(rs_path) if line.strip()]


def med(runs, key):
    return statistics.median(r[key] for r in runs)


py_ms, rs_ms = med(py, "imagine_step_ms_median"), med(rs, "imagine_step_ms_median")
batch = rs[0]["batch"]
ratio = py_ms / rs_ms
params_match = py[0]["params"] == rs[0]["params"]
split = ("policy_ms_median", "world_model_ms_median", "classifier_ms_median")
print(
    json.dumps(
        {
            "preset": preset,
            "batch": batch,
            "threads": rs[0]["threads"],
            "world4rl_channels_last": rs[0]["channels_last"],
            "world4rl_malloc": rs[0]["malloc"],
            "image_size": rs[0]["image_size"],
            "sampler_steps": rs[0]["sampler_steps"],
            "rounds": len(rs),
            "pytorch_ms": round(py_ms, 2),
            "world4rl_ms": round(rs_ms, 2),
            "pytorch_ms_rounds": [round(r["imagine_step_ms_median"], 2) for r in py],
            "world4rl_ms_rounds": [round(r["imagine_step_ms_median"], 2) for r in rs],
            "ratio": round(ratio, 3),
            "pytorch_transitions_per_sec": round(batch * 1e3 / py_ms, 1),
            "world4rl_transitions_per_sec": round(batch * 1e3 / rs_ms, 1),
            "pytorch_split_ms": {k: round(med(py, k), 2) for k in split},
            "world4rl_split_ms": {k: round(med(rs, k), 2) for k in split},
            "pytorch_peak_rss_mib": round(max(r["peak_rss_mib"] for r in py)),
            "world4rl_peak_rss_mib": round(max(r["peak_rss_mib"] or 0 for r in rs)),
            "params_pytorch": py[0]["params"],
            "params_world4rl": rs[0]["params"],
            "params_match": params_match,
            "limit": 2.0,
            "pass": params_match and ratio >= 2.0,
        }
    )
)
EOF
done
