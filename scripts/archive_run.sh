#!/usr/bin/env bash
# Keeps a finished run's record in a folder that can be committed: its config, its report and every
# stage's done.json (the choices on validation scenes, every test scene's outcome, the machine each
# stage ran on), at the same paths; no model, frame or episode. `world4rl replicate --report-only`
# reads such a folder as it reads the run, so replicates run on different machines (whose runs/ are
# gone) are pooled from the repository:
#   bash scripts/archive_run.sh runs/rep-s/seed-0 results/replicate/seed-0
#   world4rl replicate configs/experiments/replicate.toml --seeds 0 --out results/replicate --report-only
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 RUN DEST" >&2
  exit 2
fi
RUN="${1%/}"
DEST="${2%/}"
[ -d "$RUN" ] || { echo "$0: $RUN is not a run directory" >&2; exit 1; }
[ -f "$RUN/eval/done.json" ] || { echo "$0: $RUN has no eval/done.json: its evaluation has not finished" >&2; exit 1; }
mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
(cd "$RUN" && find . \( -name done.json -o -name config.toml -o -name report.md -o -name '*.svg' \) -type f -print0) |
  while IFS= read -r -d '' f; do
    mkdir -p "$TMP/$(dirname "$f")"
    cp -p "$RUN/$f" "$TMP/$f"
  done
# replace the folder only once the whole copy is there; the old one is removed after the swap
OLD="$DEST.old.$$"
mv "$DEST" "$OLD"
mv "$TMP" "$DEST"
trap - EXIT
rm -rf "$OLD"
echo "archived $(find "$DEST" -type f | wc -l) files ($(du -sh "$DEST" | cut -f1)) of $RUN in $DEST"
