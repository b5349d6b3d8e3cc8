#!/usr/bin/env bash
# One short device call where little device time is left: build, ctest (the CUDA op tests against
# the CPU), the GPU pytest cases of test_cuda.py, the prefill GEMM bench (GEMM=0 skips it), then
# decode rows "env|bench args" separated by ';' (ROWS) until ROUND_DEADLINE s (default 330).
#   ROWS="|--shape llama3-8b --bits 3;DDRT_TC_PRE_SMALL=0|--shape llama3-8b --bits 3" bash tools/lab/short_round.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh
gpu_build
ctest --test-dir $BUILD -j4 --output-on-failure > "$OUT/ctest.log" 2>&1; echo "ctest rc=$?"
grep -E "tests passed|FAIL|Failed|passed, [0-9]+ failed" "$OUT/ctest.log" | head -20
(cd tests && python3 -m pytest -q python/test_cuda.py) > "$OUT/pytest.log" 2>&1; echo "pytest rc=$?"; tail -3 "$OUT/pytest.log"
[ "${GEMM:-1}" = 0 ] || { $BUILD/test_cuda_ops --bench-gemm > "$OUT/bench_gemm.log" 2>&1; tail -11 "$OUT/bench_gemm.log"; }
IFS=';' read -r -a ROWS <<< "${ROWS:-|--shape llama3-8b --bits 3}"
for ab in "${ROWS[@]}"; do
  envs=${ab%%|*}; args=${ab#*|}
  [ $SECONDS -lt ${ROUND_DEADLINE:-330} ] || { echo "== ROUND_DEADLINE reached: $envs $args not run"; continue; }
  echo "== $envs decdec-rt bench $args" | tee -a "$OUT/bench_e2e.log"
  env $envs python3 -m decdec_rt bench $args 2>&1 | tee -a "$OUT/bench_e2e.log" | grep -E "decode|prefill"
done
