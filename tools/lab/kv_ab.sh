#!/usr/bin/env bash
# One short device call for the KV cache's element type: build, the CUDA op tests (f16 and f32
# caches against the CPU's) and the GPU pytest cases, then decode of the Llama-3-8B shape with the
# f16 cache (the default) and its f32 twin at contexts 512 and 4096.
#   bash tools/lab/kv_ab.sh            (ROWS="args|args": other bench rows; KV_DEADLINE=s: no row
#                                       starts past it, default 230)
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh
gpu_build
ctest --test-dir $BUILD -j4 --output-on-failure > "$OUT/ctest.log" 2>&1; echo "ctest rc=$?"; tail -3 "$OUT/ctest.log"
(cd tests && python3 -m pytest -q python/test_cuda.py) > "$OUT/pytest.log" 2>&1; echo "pytest rc=$?"; tail -2 "$OUT/pytest.log"
ROWS=${ROWS:-"--context 512|--context 512 --kv-cache f32|--context 4096|--context 4096 --kv-cache f32"}
IFS='|' read -r -a ROWS <<< "$ROWS"
for args in "${ROWS[@]}"; do
  [ $SECONDS -lt ${KV_DEADLINE:-230} ] || { echo "== KV_DEADLINE reached: $args not run"; continue; }
  echo "== decdec-rt bench --shape llama3-8b --bits 3 $args" | tee -a "$OUT/bench_e2e.log"
  python3 -m decdec_rt bench --shape llama3-8b --bits 3 $args 2>&1 | tee -a "$OUT/bench_e2e.log" | grep -E "decode|GB/s|prefill"
done
