#!/usr/bin/env bash
# One device call for the x-queue question (docs/gemv.md, "x waits behind the copies queued ahead
# of it") and the knobs written without a GPU: tools/lab/queue_lab.cu (where one L2-hit load waits
# under copies in flight), then two same-machine decode A/Bs (tools/gpu_ab.sh, two rounds each):
#  1. both shapes: the lab knobs that reorder x's loads and the weight copies, the attention
#     merge's early loads, swiglu in the gate/up launch at every size, acq_rel counter fences;
#  2. smollm2-135m alone (launch-bound): swiglu in the gate/up launch where down would launch it,
#     fewer attention splits, the chain with the narrow grid (alone and with the swiglu pairs).
# Usage on the GPU machine: bash tools/lab/queue_round.sh   (QR_BUDGET: seconds for the whole
# script, default 560; AB_ARGS as tools/gpu_ab.sh, e.g. AB_ARGS="--decdec approx --k-chunk 8")
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
budget=${QR_BUDGET:-560}
nvcc -O3 -std=c++17 -arch=sm_90 tools/lab/queue_lab.cu -o /tmp/queue_lab && /tmp/queue_lab | tee "$OUT/queue_lab.txt"
echo "queue lab: $SECONDS s"
# (round 2 runs a list in reverse order, so a deadline would cut the first settings' second run:
# the lists are short, and the first leaves ~100 s to the second)
AB_SHAPES="llama3-8b smollm2-135m" AB_DEADLINE=$(( budget - SECONDS - 100 )) bash tools/gpu_ab.sh default \
  "DDRT_TC_PRE_L2=1 DDRT_TC_XFIRST=1" "DDRT_TC_XFIRST=1" "DDRT_TC_PRE_SPLIT=1" "DDRT_ATTN_MERGE_PRE=1" \
  "DDRT_SWIGLU_PAIRS=2" "DDRT_FENCE_SC=0"
cp "$OUT/ab.tsv" "$OUT/ab_both.tsv"
AB_SHAPES=smollm2-135m AB_DEADLINE=$(( budget - SECONDS )) bash tools/gpu_ab.sh default "DDRT_SWIGLU_PAIRS=1" \
  "DDRT_ATTN_BLOCKS=66" "DDRT_TC_CHAIN=2" "DDRT_TC_CHAIN=2 DDRT_SWIGLU_PAIRS=1"
