#!/usr/bin/env bash
# One device call for the bulk ring (DDRT_TC_BULK=1, gemv_tc.cuh): build, the CUDA ctest cases
# (test_gemv_bulk: the bulk ring bitwise against the cp.async ring), the GPU pytest cases on the
# bulk ring, then the decode A/B of its settings (tools/gpu_ab.sh) and the step timeline of each.
# Usage on the GPU machine: bash tools/lab/bulk_round.sh ["SETTING" ...] (default: the bulk ring,
# and with every ring slot issued before the dependency wait). Logs in $OUT or ./gpu_logs.
# Any decode settings serve, e.g. the attention's: TESTS=attention PYTEST=0 STEP_SETTINGS="DDRT_ATTN_WARPS=8"
# bash tools/lab/bulk_round.sh "DDRT_ATTN_WARPS=8".
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
. tools/gpu_build.sh
gpu_build
if [ -n "${TESTS:-}" ]; then  # TESTS=misc,gemv_bulk: those test_cuda_ops groups instead of all of ctest (a short call)
  DDRT_TEST_ONLY=$TESTS timeout 120 $BUILD/test_cuda_ops > "$OUT/ctest.log" 2>&1
  echo "test_cuda_ops ($TESTS) rc=$?"; grep -E "FAIL|passed|failed|not tested" "$OUT/ctest.log" | tail -5
else
  timeout 200 ctest --test-dir $BUILD --output-on-failure -j4 > "$OUT/ctest.log" 2>&1
  echo "ctest rc=$?"; tail -8 "$OUT/ctest.log"; grep -E "gemv bulk|bulk ring" "$OUT/ctest.log" | head -5
fi
if [ "${PYTEST:-1}" != 0 ]; then  # PYTEST=0 skips it (a short call)
  (cd tests && DDRT_TC_BULK=1 timeout 120 python3 -m pytest -q -x python/test_cuda.py) > "$OUT/pytest_bulk.log" 2>&1
  echo "pytest DDRT_TC_BULK=1 rc=$?: $(tail -1 "$OUT/pytest_bulk.log")"
fi
settings=("$@")
[ ${#settings[@]} -eq 0 ] && settings=("DDRT_TC_BULK=1" "DDRT_TC_BULK=1 DDRT_TC_PRE=2")
AB_DEADLINE=${AB_DEADLINE:-200} AB_SHAPES=${AB_SHAPES:-llama3-8b smollm2-135m} bash tools/gpu_ab.sh default "${settings[@]}" 2>&1 | tail -$(( 6 + 2 * ${#settings[@]} ))
# STEPS=0 skips the timelines; STEP_SETTINGS="default|DDRT_X=1" picks which settings get one (all by default)
step_settings=(default "${settings[@]}")
[ -n "${STEP_SETTINGS:-}" ] && IFS='|' read -r -a step_settings <<< "$STEP_SETTINGS"
[ "${STEPS:-1}" = 0 ] || for s in "${step_settings[@]}"; do
  env_s=""; [ "$s" = default ] || env_s=$s
  echo "== timeline llama3-8b 3-bit: $s"
  env $env_s DDRT_STEP_STAMPS=/tmp/bulk_step.csv timeout 40 python3 -m decdec_rt bench --shape llama3-8b --bits 3 --prefill 16 2>&1 | grep -E "decode|memory"
  timeout 20 python3 tools/step_timeline.py /tmp/bulk_step.csv --launches 8 2>&1 | tail -9
done
