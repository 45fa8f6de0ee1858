#!/usr/bin/env bash
# World4RL on Meta-World, stage by stage (issue #40): every stage of `world4rl run configs/metaworld-cpu.toml`
# in the pipeline's order, each one resumable, plus the frame-size check: the success classifiers trained
# again at 64 px on the same data, right after the recipe's 32 px ones (held-out F1 of both in the logs and
# in RUN/reward/*/done.json and RUN-reward64/reward/*/done.json; the config beside it, RUN-reward64.toml).
#
#   bash scripts/setup-mujoco.sh && source third_party/mujoco.env
#   cargo build --release -p world4rl-cli --features mujoco
#   bash scripts/metaworld/stages.sh [CONFIG] [RUN]      # defaults: configs/metaworld-cpu.toml runs/metaworld-cpu
#
# Interrupted, it resumes where it stopped when run again with the same arguments.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
CFG="${1:-configs/metaworld-cpu.toml}"
RUN="${2:-runs/metaworld-cpu}"
BIN="${WORLD4RL:-./target/release/world4rl}"
THREADS="${THREADS:-2}"
[ -f third_party/mujoco.env ] || { echo "run bash scripts/setup-mujoco.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
source third_party/mujoco.env
stage() {
  echo "=== $(date -u +%H:%M:%S) stage $1"
  "$BIN" --threads "$THREADS" stage "$1" "$CFG" --out "$RUN"
}
for s in collect-expert bc collect-rollouts collect-heldout reward; do stage "$s"; done
echo "=== $(date -u +%H:%M:%S) classifiers at 64 px (frame-size check)"
python3 - "$CFG" "$RUN-reward64.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
new, n = re.subn(r"(\[reward\]\n(?:[^\[]*\n)?)image_size = 32", r"\1image_size = 64", text, count=1)
if n != 1:
    sys.exit("the config's [reward] section has no `image_size = 32` to change")
open(sys.argv[2], "w").write(new)
PY
"$BIN" --threads "$THREADS" train reward --config "$RUN-reward64.toml" --data "$RUN/dataset" --out "$RUN-reward64"
for s in bc-filtered world-model refine eval fidelity report refine-real eval report; do stage "$s"; done
echo "=== $(date -u +%H:%M:%S) done"
