#!/usr/bin/env bash
# Runs a command with libtorch's CPU kernels limited to AVX2, as on a CPU without AVX-512: ATen's
# vectorised operators (ATEN_CPU_CAPABILITY), oneDNN's convolutions (ONEDNN_MAX_CPU_ISA) and MKL's
# matrix products (MKL_CBWR=COMPATIBLE: MKL's conditional numerical reproducibility mode, which takes
# the same code path on every CPU; MKL_ENABLE_INSTRUCTIONS and MKL_CBWR=AVX2 do nothing on AMD CPUs,
# so they are not used). The variables that are set are recorded in every stage's done.json (its
# `machine`), so a replicate run this way says so in the replication report. It cannot go the other
# way (AVX-512 kernels on an AVX2 CPU).
# Usage: scripts/emulate_avx2.sh COMMAND [ARGS...]
#   e.g. scripts/emulate_avx2.sh ./target/release/world4rl replicate configs/tabletop-cpu.toml --seeds 2 --out runs/rep
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2
fi
exec env ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE "$@"
