#!/usr/bin/env bash
# One device call on DDRT_SEL_ALL (every compensation block selects every chunk itself): build,
# the DecDEC op tests on the GPU (bitwise against the default selection), a same-machine decode A/B
# at approx k_chunk 8 (tools/gpu_ab.sh, two rounds), the step timeline of the compensation per kind
# at k_chunk 1 both ways (tools/lab/comp_round.sh), the tuner at 2.5 % with it on, and queue_lab's
# zero-copy round trips. Each phase has a deadline in seconds after the script's start, so that the
# whole fits one call of ROUND_LIMIT s (default 590: a 600 s call); what did not run says so.
# Usage on the GPU machine: bash tools/lab/sel_all_round.sh
set -uo pipefail
L=${ROUND_LIMIT:-590}
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh
gpu_build
echo "== DecDEC op tests (decdec_twins, decdec_chunks, gemv_group)"
DDRT_TEST_ONLY=decdec_twins,decdec_chunks,gemv_group timeout 100 $BUILD/test_cuda_ops > "$OUT/sel_all_tests.log" 2>&1
echo "rc $?"; tail -3 "$OUT/sel_all_tests.log"
AB_DEADLINE=150 AB_SHAPES=llama3-8b AB_ARGS="--decdec approx --k-chunk 8" \
  bash tools/gpu_ab.sh default DDRT_SEL_ALL=1 2>&1 | tail -6
for e in "" "DDRT_SEL_ALL=1"; do
  [ $SECONDS -lt $((L - 160)) ] || { echo "== comp round '$e' not run (deadline)"; continue; }
  COMP_DEADLINE=70 COMP_ENV="$e" COMP_K="qkv=1 o=1 gate_up=1" COMP_LAB_ENV= bash tools/lab/comp_round.sh 2>&1 \
    | grep -v "^build:"
done
if [ $SECONDS -lt $((L - 90)) ]; then
  DDRT_SEL_ALL=1 STUDY_KNEE=0 timeout $((L - 30 - SECONDS)) bash tools/gpu_study.sh 0.025
else echo "== tuner not run (deadline)"; fi
if [ $SECONDS -lt $((L - 60)) ]; then
  nvcc -O3 -std=c++17 -arch=sm_90 -I tools/lab tools/lab/queue_lab.cu -o /tmp/queue_lab \
    && timeout $((L - SECONDS)) /tmp/queue_lab | tee "$OUT/queue_lab.txt"
else echo "== queue_lab not run (deadline)"; fi
echo "sel_all round: $SECONDS s"
