#!/usr/bin/env bash
# The README demo: set up, build, and run the whole World4RL pipeline on the tabletop suite at the
# `cpu` preset (61 minutes on 2 idle AMD EPYC cores, 82.5 on 2 Intel Xeon cores without BF16; README, Status). The report lands in runs/tabletop-cpu/report.html.
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
