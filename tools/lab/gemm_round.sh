#!/usr/bin/env bash
# One short device call for the prefill GEMM: build, the op tests of the matmuls (gemm, gemm_group)
# against the CPU and between the kernels' twins, `--bench-gemm`, then prefill rows "env|bench args"
# separated by ';' (ROWS) until ROUND_DEADLINE s (default 400), then (NCU=1) the per-instruction ncu
# profile of KERNEL (default gemm_i8w_kernel) in $OUT/sass_w.csv, summary_w.txt.
#   ROWS="|--shape llama3-8b --bits 3;DDRT_I8_OWN=1|--shape llama3-8b --bits 3" bash tools/lab/gemm_round.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh
gpu_build
DDRT_TEST_ONLY=gemm,gemm_group timeout 200 $BUILD/test_cuda_ops > "$OUT/test_gemm.log" 2>&1; echo "gemm tests rc=$?"
grep -E "FAIL|passed" "$OUT/test_gemm.log" | head -12
timeout 150 $BUILD/test_cuda_ops --bench-gemm > "$OUT/bench_gemm.log" 2>&1; tail -9 "$OUT/bench_gemm.log"
IFS=';' read -r -a ROWS <<< "${ROWS:-|--shape llama3-8b --bits 3}"
for ab in "${ROWS[@]}"; do
  envs=${ab%%|*}; args=${ab#*|}
  [ $SECONDS -lt ${ROUND_DEADLINE:-400} ] || { echo "== ROUND_DEADLINE reached: $envs $args not run"; continue; }
  echo "== $envs decdec-rt bench $args" | tee -a "$OUT/bench_e2e.log"
  env $envs timeout 60 python3 -m decdec_rt bench $args 2>&1 | tee -a "$OUT/bench_e2e.log" | grep -E "decode|prefill"
done
if [ "${NCU:-0}" = 1 ] && [ $SECONDS -lt ${NCU_DEADLINE:-470} ]; then
  KERNEL=${KERNEL:-gemm_i8w_kernel} BENCH=--bench-gemm SKIP=2 BIN=$BUILD/test_cuda_ops TAG=_w timeout 110 \
    bash tools/lab/ncu_source.sh > "$OUT/ncu_run.log" 2>&1
  echo "ncu rc=$?"
  grep -iE "^ *Duration|Registers Per|Achieved Occ|Issue Slots Busy|Executed Ipc A" "$OUT/summary_w.txt" | head -10
fi
