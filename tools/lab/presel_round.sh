#!/usr/bin/env bash
# One device call on the producer-side selection for down (DDRT_PRESEL): build; the op tests that
# touch it (presel, swiglu_pairs, decdec, decdec_twins) and the CUDA pytest; down's compensation
# phases on the step timeline for each k_chunk in PRESEL_K, with it and without; a same-machine
# A/B of decode with down compensating; the tuner at 2.5 %.
# Usage on the GPU machine: PRESEL_K="1 4 8" bash tools/lab/presel_round.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh  # (also OUT and PYTHONUNBUFFERED)
gpu_build
DDRT_TEST_ONLY=presel,swiglu_pairs,decdec,decdec_twins,attention $BUILD/test_cuda_ops > "$OUT/presel_ops.log" 2>&1
echo "op tests: rc=$? $(tail -1 "$OUT/presel_ops.log")"
(cd tests && python3 -m pytest -q -x python/test_cuda.py) > "$OUT/presel_pytest.log" 2>&1
echo "pytest test_cuda.py: rc=$? $(tail -1 "$OUT/presel_pytest.log")"
for k in ${PRESEL_K:-1 4 8}; do
  for env in "DDRT_PRESEL=1" ""; do
    echo "== ${env:-default} decdec-rt bench --decdec approx --k-chunk down=$k" | tee -a "$OUT/presel_steps.log"
    env $env DDRT_STEP_STAMPS=/tmp/presel_step.csv python3 -m decdec_rt bench --shape llama3-8b --bits 3 \
      --prefill 16 --decdec approx --k-chunk "down=$k" 2>&1 | grep decode | tee -a "$OUT/presel_steps.log"
    python3 tools/step_timeline.py /tmp/presel_step.csv --launches 0 > /tmp/presel_step.txt 2>&1
    grep -E "^  (gate_up|down) " /tmp/presel_step.txt | head -2 | tee -a "$OUT/presel_steps.log"
    grep -A8 "DecDEC compensation" /tmp/presel_step.txt | grep -E "kind|down" | tee -a "$OUT/presel_steps.log"
  done
done
[ "${PRESEL_AB:-1}" = 0 ] || AB_SHAPES=llama3-8b AB_ARGS="--decdec approx --k-chunk down=${PRESEL_AB_K:-4}" \
  AB_DEADLINE=${PRESEL_AB_DEADLINE:-200} bash tools/gpu_ab.sh default "DDRT_PRESEL=1" 2>&1 | tail -4
[ "${PRESEL_TUNE:-1}" = 0 ] || DDRT_PRESEL=1 python3 -m decdec_rt tune --shape llama3-8b --bits 3 --target 0.025 -q 2>&1 | tail -15
echo "presel round: $SECONDS s"
