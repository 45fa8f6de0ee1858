#!/usr/bin/env bash
# One world-model experiment of issue #14: train configs/experiments/wm-NAME.toml on a base run's dataset
# for MINUTES of wall-clock on 2 threads (keep the cores idle meanwhile), then score it with the held-out
# outcome check (the base run's held-out rollouts and real-frame classifiers) and the action-use check.
# Usage: scripts/wm_experiment.sh NAME MINUTES [BASE_RUN] [BIN]
# Output: runs/wm-NAME/ (model, metrics) and runs/wm-NAME/eval.json (the eval's JSON line).
set -euo pipefail
NAME="$1"; MIN="$2"; BASE="${3:-runs/base}"; BIN="${4:-./target/release/world4rl}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="runs/wm-$NAME"
"$BIN" --threads 2 train world-model --config "configs/experiments/wm-$NAME.toml" \
  --data "$BASE/dataset" --out "$OUT" --max-minutes "$MIN"
"$BIN" --threads 2 eval world-model --run "$OUT" --data "$BASE/dataset" --heldout "$BASE/heldout" \
  --classifiers "$BASE" --outcomes 100 --action-use 256 --max-rollouts 64 ${RESETS:+--resets $RESETS} \
  --json | tail -1 > "$OUT/eval.json"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
e = json.load(open(f"{out}/eval.json"))
done = json.load(open(f"{out}/world_model/done.json"))
s = done.get("record", done.get("summary", done))
print(f"{out}: steps {s.get('steps')} val {s.get('final_val_loss')}")
au = e.get("action_use") or {}
print(f"  action use ratio {au.get('ratio')}; mean PSNR h1..10 {sum(e['psnr'])/len(e['psnr']):.2f}")
for o in e.get("outcomes", []):
    a = o["agreement"]
    ci = a.get("auc_ci") or [None, None]
    resets = ", ".join(f"k={r['every']}: {r['auc']:.2f}" for r in a.get("auc_by_reset", []) if r.get("auc") is not None)
    print(f"  {o['task']}: real {a['real_success_rate']:.2f} imagined {a['imagined_success_rate']:.2f} AUC {a['auc']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] {resets}")
PY
