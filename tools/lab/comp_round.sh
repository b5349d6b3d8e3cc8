#!/usr/bin/env bash
# One device call on the DecDEC compensation inside the fused GEMV: build, then the decode step's
# timeline (DDRT_STEP_STAMPS, tools/step_timeline.py: the compensation blocks' phases per kind)
# for each per-kind k_chunk setting in COMP_K, then the GEMV lab's DecDEC table
# (test_cuda_ops --bench-decdec) for each environment in COMP_LAB_ENV.
# Usage on the GPU machine: bash tools/lab/comp_round.sh
#   COMP_K="gate_up=1 down=1 down=8" COMP_ENV="" COMP_LAB_ENV="default|DDRT_COMP_SEG_ALIGN=1"
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh  # (also OUT and PYTHONUNBUFFERED)
gpu_build
for kc in ${COMP_K:-gate_up=1 down=1 down=8}; do
  [ $SECONDS -lt ${COMP_DEADLINE:-500} ] || { echo "== COMP_DEADLINE reached: $kc not run"; continue; }
  echo "== ${COMP_ENV:-} decdec-rt bench --decdec approx --k-chunk $kc" | tee -a "$OUT/comp_steps.log"
  env ${COMP_ENV:-} DDRT_STEP_STAMPS=/tmp/comp_step.csv python3 -m decdec_rt bench --shape llama3-8b --bits 3 \
    --prefill 16 --decdec approx --k-chunk "$kc" 2>&1 | grep decode | tee -a "$OUT/comp_steps.log"
  python3 tools/step_timeline.py /tmp/comp_step.csv --launches 0 > /tmp/comp_step.txt 2>&1
  grep -A8 "per kind" /tmp/comp_step.txt | grep -v "^block ends" | head -8 | tee -a "$OUT/comp_steps.log"
  grep -A8 "DecDEC compensation" /tmp/comp_step.txt | tee -a "$OUT/comp_steps.log"
done
IFS='|' read -r -a LABS <<< "${COMP_LAB_ENV-default|DDRT_COMP_SEG_ALIGN=1}"
for e in "${LABS[@]}"; do
  [ $SECONDS -lt ${COMP_DEADLINE:-500} ] || { echo "== COMP_DEADLINE reached: lab $e not run"; continue; }
  echo "== $e test_cuda_ops --bench-decdec" | tee -a "$OUT/comp_lab.log"
  [ "$e" = default ] && e=""
  env $e $BUILD/test_cuda_ops --bench-decdec 2>&1 | tee -a "$OUT/comp_lab.log" | tail -12
done
echo "comp round: $SECONDS s"
