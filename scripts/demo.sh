#!/usr/bin/env bash
# The README demo: set up, build, and run the whole World4RL pipeline on the tabletop suite at the
# `cpu` preset, read under the evaluation protocol (docs/evaluation.md; the README gives its stages'
# times). The report lands in runs/tabletop-cpu/report.html.
# Re-running resumes where it stopped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
CONFIG="${1:-configs/tabletop-cpu.toml}"
OUT="${2:-runs/$(basename "$CONFIG" .toml)}"
cargo build --release -p world4rl-cli
./target/release/world4rl run "$CONFIG" --out "$OUT"
echo "report: $OUT/report.html (and $OUT/report.md)"
