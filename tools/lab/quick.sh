# A quick GPU round for GEMV work: build test_cuda_ops alone, run the GEMV correctness tests, then
# the timeline and GEMV labs. Usage on the GPU machine: bash tools/lab/quick.sh [extra test names]
OUT=${OUT:-/tmp/quick_out}; mkdir -p $OUT
cmake -S . -B /tmp/bs -G Ninja -DDECDEC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DDECDEC_PYTHON=OFF \
  -DDECDEC_TESTS=ON > /dev/null && cmake --build /tmp/bs -j16 --target test_cuda_ops > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
DDRT_TEST_ONLY=${TESTS:-gemv_tc,gemv_group,matmul,decdec} /tmp/bs/test_cuda_ops > $OUT/tests.log 2>&1
echo "tests rc=$?"; grep -E "FAIL|passed|failed" $OUT/tests.log | tail -8
/tmp/bs/test_cuda_ops --bench-stamps | tee $OUT/stamps.txt
${LAB:-/tmp/bs/test_cuda_ops --bench-gemv} > $OUT/lab.txt 2>&1; sed -n "/default/,\$p" $OUT/lab.txt | grep -E "uq|f16"
[ -n "$GROUPS_LAB" ] && /tmp/bs/test_cuda_ops --bench-groups 2>&1 | tail -5
