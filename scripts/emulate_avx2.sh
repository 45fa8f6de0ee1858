#!/usr/bin/env bash
# Runs a command with libtorch's CPU kernels limited to AVX2, as on a CPU without AVX-512: ATen's
# vectorised operators (ATEN_CPU_CAPABILITY), oneDNN's convolutions (ONEDNN_MAX_CPU_ISA) and MKL's
# matrix products (MKL_ENABLE_INSTRUCTIONS). On an AVX-512 machine this shows how long a config takes,
# and what it trains, on an AVX2-only one. It cannot go the other way.
# Usage: scripts/emulate_avx2.sh COMMAND [ARGS...]
#   e.g. scripts/emulate_avx2.sh ./target/release/world4rl run configs/tabletop-cpu.toml --out runs/avx2
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2
fi
exec env ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 "$@"
