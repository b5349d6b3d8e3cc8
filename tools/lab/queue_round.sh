#!/usr/bin/env bash
# One device call for the x-queue question (docs/gemv.md, "x waits behind the copies queued ahead
# of it"): tools/lab/queue_lab.cu (where one L2-hit load waits under copies in flight), then a
# same-machine decode A/B (tools/gpu_ab.sh, two rounds) of the lab knobs that reorder x's loads
# and the weight copies, of the attention merge's early loads, and of the gate/up launch writing
# swiglu (small models; every size), of fewer attention splits, and of acq_rel counter fences
# Usage on the GPU machine: bash tools/lab/queue_round.sh   (AB_SHAPES, AB_ARGS, AB_DEADLINE as
# tools/gpu_ab.sh; e.g. AB_SHAPES=llama3-8b AB_ARGS="--decdec approx --k-chunk 8" for DecDEC on)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
t0=$(date +%s)
nvcc -O3 -std=c++17 -arch=sm_90 tools/lab/queue_lab.cu -o /tmp/queue_lab && /tmp/queue_lab | tee "$OUT/queue_lab.txt"
echo "queue lab: $(( $(date +%s) - t0 )) s"
# (round 2 runs them in reverse order, so a deadline would cut the first ones' second run: keep the list short)
AB_DEADLINE=${AB_DEADLINE:-480} bash tools/gpu_ab.sh default "DDRT_SWIGLU_PAIRS=1" "DDRT_TC_PRE_L2=1 DDRT_TC_XFIRST=1" \
  "DDRT_TC_XFIRST=1" "DDRT_TC_PRE_SPLIT=1" "DDRT_ATTN_MERGE_PRE=1" "DDRT_ATTN_BLOCKS=66" "DDRT_SWIGLU_PAIRS=2" "DDRT_FENCE_SC=0"
