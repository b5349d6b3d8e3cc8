#!/usr/bin/env bash
# One device call for the fused GEMV's block-local merge (DDRT_TC_LOCAL, gemv_tc.cuh): build, then
# racecheck placing the hazards its test showed (twenty-fourth session) — gemv_local's k-major
# launches alone and its block-local ones alone (DDRT_TEST_LOCAL_MODE), gemv_group at
# DDRT_TC_LOCAL=0 and =2, one of them with the threads and blocks of each hazard — all at once,
# then (LOCAL_AB=0 skips it) the decode A/B of the merge's modes at 3 and 4 bits.
# Usage on the GPU machine: bash tools/lab/local_round.sh   (logs in $OUT or ./gpu_logs)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
. tools/gpu_build.sh
gpu_build
race() {  # name, extra racecheck options, env assignments...
  local name=$1 extra=$2
  shift 2
  env "$@" DDRT_TEST_RACE=1 timeout "${LIMIT_RACE:-90}" "$CS" --tool racecheck $extra $BUILD/test_cuda_ops \
    > "$OUT/race_$name.log" 2>&1
  echo "== $name: rc=$? $(grep -E 'passed' "$OUT/race_$name.log") $(grep -E 'RACECHECK SUMMARY' "$OUT/race_$name.log")"
}
race local_kmajor "" DDRT_TEST_ONLY=gemv_local DDRT_TEST_LOCAL_MODE=0 > "$OUT/r1.txt" &
race local_local "" DDRT_TEST_ONLY=gemv_local DDRT_TEST_LOCAL_MODE=1 > "$OUT/r2.txt" &
race local_detail "--racecheck-report hazard --print-limit 8" DDRT_TEST_ONLY=gemv_local DDRT_TEST_LOCAL_MODE=1 > "$OUT/r3.txt" &
race group_off "" DDRT_TEST_ONLY=gemv_group DDRT_TC_LOCAL=0 > "$OUT/r4.txt" &
race group_local "" DDRT_TEST_ONLY=gemv_group DDRT_TC_LOCAL=2 > "$OUT/r5.txt" &
wait
cat "$OUT"/r[1-5].txt
[ "${LOCAL_AB:-1}" = 0 ] && exit 0
# (the default's llama3-8b rows: this build's, the first since the local code left the default instances)
OUT=$OUT/ab3 AB_ROUNDS=2 AB_DEADLINE=250 bash tools/gpu_ab.sh default DDRT_TC_LOCAL=2 "DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1" 2>&1 | tail -5
OUT=$OUT/ab4 AB_BITS=4 AB_SHAPES=smollm2-135m AB_ROUNDS=2 AB_DEADLINE=120 bash tools/gpu_ab.sh default DDRT_TC_LOCAL=2 "DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1" 2>&1 | tail -5
