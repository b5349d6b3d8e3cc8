#!/usr/bin/env bash
# Device calls for the fused GEMV's block-local merge (DDRT_TC_LOCAL, DDRT_TC_LOCAL_EXT, gemv_tc.cuh).
# Call 1 (the default): build, then at once racecheck placing the hazards its test showed
# (twenty-fourth session) — gemv_local's k-major launches alone and its block-local ones alone
# (DDRT_TEST_LOCAL_MODE), one of them with the threads and blocks of each hazard, gemv_group at
# DDRT_TC_LOCAL=0 and =2, gemv_bulk (the k-major bulk ring, whose barriers are invalidated since
# f6e96c5) — beside the plain test_cuda_ops and the GPU pytest (LOCAL_PLAIN=0 skips those).
# Call 2: LOCAL_RACE=0 LOCAL_PLAIN=0 LOCAL_AB=1: the decode A/B of default, DDRT_TC_LOCAL=2 and
# DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1 (3 bits on both shapes, then 4 bits on SmolLM2). Both
# together do not fit one 600 s call.
# One call for both, where device time is short (~520 s): LOCAL_AB=1 LOCAL_AB_ROUNDS=1 LOCAL_STAMPS=0.
# Usage on the GPU machine: bash tools/lab/local_round.sh   (logs in $OUT or ./gpu_logs)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
. tools/gpu_build.sh
gpu_build
# (at most 8 files come back from a device call: the hazard report and the plain runs' logs in
# $OUT, the other racecheck logs in /tmp/lr, their summary lines printed)
LR=/tmp/lr; mkdir -p "$LR"
race() {  # name, extra racecheck options, env assignments...
  local name=$1 extra=$2 log
  shift 2
  log=$LR/race_$name.log
  [ -n "$extra" ] && log=$OUT/race_$name.log
  env "$@" DDRT_TEST_RACE=1 timeout "${LIMIT_RACE:-170}" "$CS" --tool racecheck $extra $BUILD/test_cuda_ops \
    > "$log" 2>&1
  echo "== $name: rc=$? $(grep -E 'passed' "$log") $(grep -E 'RACECHECK SUMMARY' "$log")"
}
if [ "${LOCAL_RACE:-1}" = 1 ]; then
  race local_kmajor "" DDRT_TEST_ONLY=gemv_local DDRT_TEST_LOCAL_MODE=0 > "$LR/r1.txt" &
  race local_local "" DDRT_TEST_ONLY=gemv_local DDRT_TEST_LOCAL_MODE=1 > "$LR/r2.txt" &
  race local_detail "--racecheck-report hazard --print-limit 8" DDRT_TEST_ONLY=gemv_local > "$LR/r3.txt" &
  race group_off "" DDRT_TEST_ONLY=gemv_group DDRT_TC_LOCAL=0 > "$LR/r4.txt" &
  race group_local "" DDRT_TEST_ONLY=gemv_group,swiglu_pairs DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1 > "$LR/r5.txt" &
  # (gemv_bulk whole does not fit a call under racecheck: two of its seven shards)
  race bulk0 "" DDRT_TEST_ONLY=gemv_bulk DDRT_TEST_SHARD=0/7 > "$LR/r6.txt" &
  race bulk3 "" DDRT_TEST_ONLY=gemv_bulk DDRT_TEST_SHARD=3/7 > "$LR/r7.txt" &
fi
if [ "${LOCAL_PLAIN:-1}" = 1 ]; then
  timeout 240 $BUILD/test_cuda_ops > "$OUT/plain.log" 2>&1
  echo "== test_cuda_ops: rc=$? $(tail -1 "$OUT/plain.log")"
  (cd tests && timeout 150 python3 -m pytest -q -x python/test_cuda.py) > "$OUT/pytest.log" 2>&1
  echo "== GPU pytest: rc=$? $(tail -1 "$OUT/pytest.log")"
fi
wait
[ "${LOCAL_RACE:-1}" = 1 ] && cat "$LR"/r[1-7].txt
[ "${LOCAL_AB:-0}" = 1 ] || exit 0
# the compensation's timeline at the default (~40 s): the zero-copy rate over the gather phase
if [ "${LOCAL_STAMPS:-1}" = 1 ]; then
  timeout 90 $BUILD/test_cuda_ops --bench-stamps > "$OUT/stamps.log" 2>&1
  grep -E "^ *[0-9]+x[0-9]+ +[0-9]+ |zero-copy" "$OUT/stamps.log"
fi
# (the default's llama3-8b rows: the first since the local code left the default instances)
OUT=$OUT/ab3 AB_ROUNDS=${LOCAL_AB_ROUNDS:-2} AB_DEADLINE=290 bash tools/gpu_ab.sh default DDRT_TC_LOCAL=2 "DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1" 2>&1 | tail -5
OUT=$OUT/ab4 AB_BITS=4 AB_SHAPES=smollm2-135m AB_ROUNDS=${LOCAL_AB_ROUNDS:-2} AB_DEADLINE=120 bash tools/gpu_ab.sh default DDRT_TC_LOCAL=2 "DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1" 2>&1 | tail -5
