#!/usr/bin/env bash
# One device call: the decode step's timeline (DDRT_STEP_STAMPS, tools/step_timeline.py) of each
# shape under each setting, side by side: per kind busy + gap per launch, and the attention's split
# and merge phases. Usage on the GPU machine:
#   STEP_ENVS="default|DDRT_ATTN_DEFER=0" STEP_SHAPES="llama3-8b smollm2-135m" bash tools/lab/step_ab.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh  # (also OUT and PYTHONUNBUFFERED)
gpu_build
IFS='|' read -r -a ENVS <<< "${STEP_ENVS:-default|DDRT_ATTN_DEFER=0}"
for shape in ${STEP_SHAPES:-llama3-8b smollm2-135m}; do
  for e in "${ENVS[@]}"; do
    [ $SECONDS -lt ${STEP_DEADLINE:-520} ] || { echo "== STEP_DEADLINE reached: $e $shape not run"; continue; }
    envs=$([ "$e" = default ] && echo "" || echo "$e")
    echo "== $e decdec-rt bench --shape $shape --bits 3 --prefill 16" | tee -a "$OUT/step_ab.log"
    env $envs DDRT_STEP_STAMPS=/tmp/step_ab.csv python3 -m decdec_rt bench --shape $shape --bits 3 --prefill 16 2>&1 \
      | grep -E "^  decode" | tee -a "$OUT/step_ab.log"
    python3 tools/step_timeline.py /tmp/step_ab.csv --launches 0 2>&1 | grep -E "^  (argmax|attn|down|gate_up|lm_head|o |qkv)" \
      | tee -a "$OUT/step_ab.log"
  done
done
echo "step A/B: $SECONDS s"
