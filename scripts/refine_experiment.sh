#!/usr/bin/env bash
# One refinement experiment of issue #14: PPO in a base run's frozen world model with a config's
# [refine] section and PPO seed SEED, then the refined policies' real success on the evaluation seeds.
# Usage: scripts/refine_experiment.sh CONFIG SEED [BASE_RUN] [BIN]
#   CONFIG    an experiment config whose models are those of BASE_RUN (only its [refine] may differ)
#   BASE_RUN  a run with its dataset, held-out rollouts, BC policies, world model and classifiers
#             (default runs/demo: `world4rl run` or the stages up to `reward`)
# Output: runs/<config name>-s<SEED>/ (links to the base run's models, refine/<task>/, eval.jsonl) and a
# line per task: BC and refined success over 200 episodes with 95 % Wilson intervals.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG SEED [BASE_RUN] [BIN]" >&2; exit 2
fi
CONFIG="$1"; SEED="$2"; BASE="${3:-runs/demo}"; BIN="${4:-./target/release/world4rl}"
[ -f "$CONFIG" ] || { echo "config $CONFIG not found" >&2; exit 2; }
case "$SEED" in ''|*[!0-9]*) echo "SEED must be a non-negative integer (got '$SEED')" >&2; exit 2 ;; esac
[ -d "$BASE" ] || { echo "base run $BASE not found: run the demo's stages up to reward into it first" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BASE="$(cd "$BASE" && pwd)"
OUT="runs/$(basename "$CONFIG" .toml)-s$SEED"
mkdir -p "$OUT"
for d in dataset heldout bc world_model reward; do
  [ -e "$BASE/$d" ] || { echo "$BASE/$d is missing: run the base stages first" >&2; exit 1; }
  [ -e "$OUT/$d" ] || ln -s "$BASE/$d" "$OUT/$d"
done
# the config with the PPO seed set in [refine.ppo] (experiment.seed unchanged, so nothing else moves)
grep -q '^\[refine\.ppo\]' "$CONFIG" || { echo "$CONFIG has no [refine.ppo] table" >&2; exit 1; }
sed "/^\[refine\.ppo\]/a seed = $SEED" "$CONFIG" > "$OUT/experiment.toml.tmp"
mv "$OUT/experiment.toml.tmp" "$OUT/experiment.toml"
TASKS=$(python3 -c 'import sys, tomllib; print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["experiment"]["tasks"]))' "$CONFIG")
: > "$OUT/eval.jsonl.tmp"
for T in $TASKS; do
  WORLD4RL_NO_PROGRESS=1 "$BIN" --threads 2 refine --config "$OUT/experiment.toml" --run "$OUT" --task "$T"
  for P in "$OUT/bc/$T/policy.safetensors" "$OUT/refine/$T/policy.safetensors"; do
    "$BIN" --threads 2 eval policy --policy "$P" --task "$T" --episodes 200 --json | tail -1 \
      | python3 -c 'import json, sys; d = json.load(sys.stdin); d["policy"], d["task"] = sys.argv[1], sys.argv[2]; print(json.dumps(d))' "$P" "$T" \
      >> "$OUT/eval.jsonl.tmp"
  done
done
mv "$OUT/eval.jsonl.tmp" "$OUT/eval.jsonl"
python3 - "$OUT/eval.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for bc, rf in zip(rows[0::2], rows[1::2]):
    def f(r):
        return f"{100 * r['success_rate']:.1f} % [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
    # the difference with its 95 % Newcombe interval (method 10), from the Wilson intervals `eval policy`
    # reported (as evaluate::newcombe_difference_interval does in the report)
    p1, p2 = bc["success_rate"], rf["success_rate"]
    (l1, u1), (l2, u2) = (bc["ci_low"], bc["ci_high"]), (rf["ci_low"], rf["ci_high"])
    lo = p2 - p1 - math.hypot(p2 - l2, u1 - p1)
    hi = p2 - p1 + math.hypot(u2 - p2, p1 - l1)
    print(f"{bc['task']}: BC {f(bc)} -> refined {f(rf)}: {100 * (p2 - p1):+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]")
PY
