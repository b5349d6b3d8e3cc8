#!/usr/bin/env bash
# One device call for GEMV work: build (sm_90), the layout test, the CUDA op tests (DDRT_TEST_ONLY
# selects; empty: all), the GEMV and group lab, then decode benchmarks (BENCH: decdec-rt bench
# argument sets separated by ';', each optionally prefixed by environment assignments).
# Usage on the GPU machine: ONLY=gemv,gemv_group BENCH="--shape llama3-8b --bits 3" bash tools/lab/gemv_round.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
. tools/gpu_build.sh
gpu_build
$BUILD/test_cuda_layout 2>&1 | tail -3
[ -n "${ONLY:-}" ] && export DDRT_TEST_ONLY=$ONLY
$BUILD/test_cuda_ops > "$OUT/ops.log" 2>&1; echo "test_cuda_ops rc=$?"
grep -v "^  ok" "$OUT/ops.log" | tail -${FAILTAIL:-25}
if [ "${LAB:-1}" = 1 ]; then
  $BUILD/test_cuda_ops --bench-gemv > "$OUT/bench_gemv.log" 2>&1; tail -${LABTAIL:-14} "$OUT/bench_gemv.log"
  $BUILD/test_cuda_ops --bench-groups > "$OUT/bench_groups.log" 2>&1; tail -12 "$OUT/bench_groups.log"
fi
[ "${STAMPS:-0}" = 1 ] && $BUILD/test_cuda_ops --bench-stamps 2>&1 | head -24
IFS=';' read -ra SETS <<< "${BENCH:-}"
for s in "${SETS[@]}"; do
  [ -z "${s// }" ] && continue
  echo "== $s"
  vars=(); args=()
  for w in $s; do if [[ $w == *=* && $w != -* ]]; then vars+=("$w"); else args+=("$w"); fi; done
  env -u DDRT_TEST_ONLY "${vars[@]}" python3 -m decdec_rt bench "${args[@]}" 2>&1 | grep -iE "decode|prefill|error" | head -4
done
