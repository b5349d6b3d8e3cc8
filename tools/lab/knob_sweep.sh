#!/usr/bin/env bash
# One device call that sweeps a kernel knob: builds test_cuda_ops alone (~15 s), then per value of
# the knob runs the DecDEC tests, the fused GEMV's timeline both ways (segment- and chunk-major
# compensation, every block's stamps read by tools/plot_stamps.py: the latest base blocks in the log,
# a PNG per value) and the DecDEC table. Usage on the GPU machine:
#   KNOB=DDRT_RS_PRE VALUES="0 1 2" bash tools/lab/knob_sweep.sh     (EXTRA: more env for every run)
#   KNOB=DDRT_TC_EARLY VALUES="0 1" GEMV_TABLE=1 DECDEC_TABLE=0 TESTS=gemv_tc,gemv_group,fused_add_norm \
#     bash tools/lab/knob_sweep.sh                                  (a base-path knob: the GEMV table)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/knob_out}; mkdir -p "$OUT"
cmake -S . -B /tmp/bs -G Ninja -DDECDEC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DDECDEC_PYTHON=OFF \
  -DDECDEC_TESTS=ON > /dev/null && cmake --build /tmp/bs -j16 --target test_cuda_ops > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
for v in ${VALUES:?}; do
  log="$OUT/${KNOB:?}_$v.log"
  echo "== $KNOB=$v ${EXTRA:-}" | tee "$log"
  env ${EXTRA:-} "$KNOB=$v" DDRT_TEST_ONLY=${TESTS:-decdec,decdec_chunks,gemv_group} /tmp/bs/test_cuda_ops >> "$log" 2>&1
  echo "tests rc=$?" | tee -a "$log"; grep -E "FAIL" "$log" | head -5
  for chunks in 0 1; do
    csv=/tmp/knob_stamps_${v}_$chunks.csv
    env ${EXTRA:-} "$KNOB=$v" DDRT_COMP_CHUNKS=$chunks DDRT_STAMPS_CSV=$csv /tmp/bs/test_cuda_ops --bench-stamps \
      > /tmp/knob_stamps.txt 2>&1
    echo "-- DDRT_COMP_CHUNKS=$chunks stamps" | tee -a "$log"; grep -E "x[0-9]+ +(0|2|8|16) |compensation blocks on" /tmp/knob_stamps.txt | tee -a "$log"
    # every block: the latest base blocks per case in the log, a drawing of the segment-major run
    python3 tools/plot_stamps.py $csv --late 3 $([ $chunks = 0 ] && echo --png "$OUT/stamps_${KNOB}_$v.png") >> "$log" 2>&1
  done
  [ "${DECDEC_TABLE:-1}" = 1 ] && env ${EXTRA:-} "$KNOB=$v" /tmp/bs/test_cuda_ops --bench-decdec 2>&1 | grep uq | tee -a "$log"
  # GEMV_TABLE=1: the GEMV lab's default kernels too (DecDEC off; a base-path knob's table)
  [ "${GEMV_TABLE:-0}" = 1 ] && env ${EXTRA:-} "$KNOB=$v" /tmp/bs/test_cuda_ops --bench-gemv 2>&1 | tee -a "$log" | tail -25
done
