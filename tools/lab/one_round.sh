#!/usr/bin/env bash
# One device call (~260 s): does the block-local merge's loss at 3 bits come from the decode step
# alternating two instantiations of the fused GEMV (DDRT_TC_ONE, kernels.cuh)? Builds, checks that
# DDRT_TC_ONE and the block-local merge give the default's logits bit for bit
# (tools/lab/tokens_check.py), then the decode A/B on SmolLM2-135M at 3 and 4 bits and
# Llama-3-8B at 3 (one round).
# Usage on the GPU machine: bash tools/lab/one_round.sh   (logs in $OUT or ./gpu_logs)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
. tools/gpu_build.sh
gpu_build
# racecheck of gemv_local's k-major plans through the block-local instantiation alone (mode 2:
# hazards here put the cause in the instantiation's code, none in the block-local plans; mode 1,
# the block-local plans, raced in the twenty-sixth session), beside the logits check
DDRT_TEST_RACE=1 DDRT_TEST_ONLY=gemv_local DDRT_TEST_LOCAL_MODE=2 timeout 120 "$CS" --tool racecheck \
  --racecheck-report all --print-limit 12 $BUILD/test_cuda_ops > "$OUT/race_mode2.log" 2>&1 &
# and the block-local plans with no k-major launch between them (DDRT_TEST_LOCAL_ONLY): if the
# hazards go, they came from one launch's barrier bytes seen by the next of another layout
DDRT_TEST_RACE=1 DDRT_TEST_ONLY=gemv_local DDRT_TEST_LOCAL_MODE=1 DDRT_TEST_LOCAL_ONLY=1 timeout 120 "$CS" \
  --tool racecheck --racecheck-report all --print-limit 12 $BUILD/test_cuda_ops > "$OUT/race_local_only.log" 2>&1 &
# and mode 1 whole without programmatic dependent launch (DDRT_PDL=0: no two launches' blocks on
# an SM at once): if the hazards go, racecheck matched two overlapping launches' shared memory
DDRT_PDL=0 DDRT_TEST_RACE=1 DDRT_TEST_ONLY=gemv_local DDRT_TEST_LOCAL_MODE=1 timeout 120 "$CS" \
  --tool racecheck --racecheck-report all --print-limit 12 $BUILD/test_cuda_ops > "$OUT/race_nopdl.log" 2>&1 &
same=1
for b in 3 4; do
  ref=""
  for e in X=0 DDRT_TC_ONE=1 "DDRT_TC_ONE=1 DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1"; do
    line=$(env $e python3 tools/lab/tokens_check.py smollm2-135m $b 2>&1 | tail -1)
    echo "$b-bit $e: $line"
    h=$(echo "$line" | awk '{print $4}')
    [ -z "$ref" ] && ref=$h
    [ "$h" = "$ref" ] || same=0
  done
done
wait
[ $same = 1 ] || { echo "logits differ from the default's: no A/B"; exit 1; }
for r in mode2 local_only nopdl; do
  echo "== racecheck gemv_local $r: $(grep -E 'passed' "$OUT/race_$r.log") $(grep -E 'RACECHECK SUMMARY' "$OUT/race_$r.log")"
done
S=("DDRT_TC_ONE=1" "DDRT_TC_LOCAL=2" "DDRT_TC_ONE=1 DDRT_TC_LOCAL=2" "DDRT_TC_ONE=1 DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1")
for b in 3 4; do
  OUT=/tmp/ab$b AB_BITS=$b AB_SHAPES=smollm2-135m AB_ROUNDS=2 AB_DEADLINE=100 bash tools/gpu_ab.sh default "${S[@]}" 2>&1 | tail -7
done
OUT=/tmp/abl AB_SHAPES=llama3-8b AB_ROUNDS=1 AB_DEADLINE=60 bash tools/gpu_ab.sh default DDRT_TC_ONE=1 2>&1 | tail -3
