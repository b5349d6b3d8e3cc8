#!/usr/bin/env bash
# compute-sanitizer over the CUDA tests, one device call: memcheck over test_cuda_ops and the GPU
# pytest cases, racecheck (shared-memory hazards) over test_cuda_ops. Each run has a time limit
# (the sanitizers slow kernels down many times); a run that hits it says so and proves nothing.
# Usage on the GPU machine: bash tools/gpu_sanitize.sh   (logs in $OUT or ./gpu_logs)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
. tools/gpu_build.sh
gpu_build
run() {  # name, limit in s, command...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc$([ $rc = 124 ] && echo ' (time limit: incomplete)')"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed|failed" "$OUT/$name.log" | tail -4
}
if [ "${MEMCHECK:-1}" != 0 ]; then  # MEMCHECK=0: racecheck alone
run memcheck_ops "${LIMIT_OPS:-260}" "$CS" --tool memcheck --leak-check full --error-exitcode 9 $BUILD/test_cuda_ops
run memcheck_py "${LIMIT_PY:-150}" bash -c "cd tests && '$CS' --tool memcheck --error-exitcode 9 python3 -m pytest -q -x python/test_cuda.py"
fi
# racecheck is far slower (the whole test_cuda_ops did not finish in 530 s on the H100): the tests
# of the kernels that share memory between threads, one run each, racecheck-sized (DDRT_TEST_RACE=1:
# gemm and decdec on a few small shapes; the full ones did not finish in 90 / 330 s)
# A test name may be a comma list (one run for several groups). RACE_PAR=1 starts the runs at once,
# each its own process on the one GPU (twenty-third session: thirteen at once, most done within
# 255 s), and prints their results in order when all have ended.
# name@i/n: shard i of n of a test that takes DDRT_TEST_SHARD (decdec, gemv_bulk)
race_one() {
  local name=${1%@*} shard=
  [ "$1" != "$name" ] && shard=${1#*@}
  run "racecheck_$(echo "$1" | tr ',@/' '__o')" "${LIMIT_RACE:-120}" env DDRT_TEST_ONLY=$name DDRT_TEST_SHARD=$shard \
    DDRT_TEST_RACE=1 "$CS" --tool racecheck --error-exitcode 9 $BUILD/test_cuda_ops
}
RACE_LIST=${RACE_TESTS:-gemv_group rmsnorm argmax attention gemm decdec fused_add_norm chain norm_parts decdec_chunks}
if [ "${RACE_PAR:-0}" = 1 ]; then
  for t in $RACE_LIST; do race_one "$t" > "$OUT/race_par_$(echo "$t" | tr ',@/' '__o').txt" 2>&1 & done
  wait
  for t in $RACE_LIST; do cat "$OUT/race_par_$(echo "$t" | tr ',@/' '__o').txt"; done
else
  for t in $RACE_LIST; do race_one "$t"; done
fi
