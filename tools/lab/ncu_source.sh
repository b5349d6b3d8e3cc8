#!/usr/bin/env bash
# Per-instruction ncu detail of the fused GEMV (the first uq3 4096x14336 launch of --bench-gemv,
# DecDEC off): warp stall samples and shared-memory wavefronts per SASS instruction, as CSV (read
# here with tools/lab/ncu_source_top.py; ncu's per-CUDA-line view printed no metrics). Usage on the
# GPU machine: bash tools/lab/ncu_source.sh   (results in $OUT: sass.csv, summary.txt)
# Another kernel: KERNEL (ncu -k regex), BENCH (test_cuda_ops' argument), SKIP (launches skipped);
# the prefill GEMM's first uq3 4096x4096 two-limb launch (after its 2 warm-ups):
#   KERNEL=gemm_i8_kernel BENCH=--bench-gemm SKIP=2 bash tools/lab/ncu_source.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ncu_src}; mkdir -p "$OUT"
# BIN: a test_cuda_ops already built (gpu_check's $BUILD/test_cuda_ops: no line info, the SASS view
# still ranks instructions) instead of building one with -lineinfo in /tmp/bs; TAG names the outputs
BIN=${BIN:-}
if [ -z "$BIN" ]; then
  cmake -S . -B /tmp/bs -G Ninja -DDECDEC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DDECDEC_PYTHON=OFF \
    -DDECDEC_TESTS=ON -DCMAKE_CUDA_FLAGS=-lineinfo > /dev/null && cmake --build /tmp/bs -j16 --target test_cuda_ops > /dev/null \
    || exit 1
  BIN=/tmp/bs/test_cuda_ops
fi
TAG=${TAG:-}
ncu --clock-control none -k regex:${KERNEL:-gemv_tc} --launch-skip ${SKIP:-30} --launch-count 1 --import-source yes \
  --section SourceCounters --section WarpStateStats --section InstructionStats --section MemoryWorkloadAnalysis_Tables \
  --section ComputeWorkloadAnalysis --section Occupancy --section SpeedOfLight \
  -o /tmp/ncu_src_rep$TAG -f $BIN ${BENCH:---bench-gemv} > "$OUT/summary$TAG.txt" 2>&1
ncu -i /tmp/ncu_src_rep$TAG.ncu-rep --print-details all >> "$OUT/summary$TAG.txt" 2>&1
ncu -i /tmp/ncu_src_rep$TAG.ncu-rep --page source --csv --print-source sass > "$OUT/sass$TAG.csv" 2>&1
ls -la "$OUT"; head -c 1500 "$OUT/sass$TAG.csv"; echo; grep -i -A3 "excessive\|shared" "$OUT/summary$TAG.txt" | head -60
