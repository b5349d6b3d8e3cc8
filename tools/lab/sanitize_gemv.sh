# compute-sanitizer over the fused GEMV's tests only (a cheaper round than tools/gpu_sanitize.sh):
# memcheck over the GEMV/matmul/DecDEC tests, racecheck over the group test (every DecDEC mode).
OUT=${OUT:-/tmp/san_out}; mkdir -p $OUT
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
cmake -S . -B /tmp/bs -G Ninja -DDECDEC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DDECDEC_PYTHON=OFF \
  -DDECDEC_TESTS=ON > /dev/null && cmake --build /tmp/bs -j16 --target test_cuda_ops > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
timeout ${LIMIT_MEM:-150} env DDRT_TEST_ONLY=gemv_tc,gemv_group,decdec $CS --tool memcheck --leak-check full \
  --error-exitcode 9 /tmp/bs/test_cuda_ops > $OUT/memcheck.log 2>&1; echo "memcheck rc=$?"
grep -E "ERROR SUMMARY|LEAK SUMMARY|passed|failed" $OUT/memcheck.log | tail -3
timeout ${LIMIT_RACE:-150} env DDRT_TEST_ONLY=gemv_group $CS --tool racecheck --error-exitcode 9 /tmp/bs/test_cuda_ops \
  > $OUT/racecheck.log 2>&1; echo "racecheck rc=$?"
grep -E "RACECHECK SUMMARY|passed|failed" $OUT/racecheck.log | tail -3
