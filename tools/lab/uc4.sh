for uc in 2 4; do
cmake -S . -B /tmp/bs$uc -G Ninja -DDECDEC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DDECDEC_PYTHON=OFF -DDECDEC_TESTS=ON -DCMAKE_CUDA_FLAGS=-DDDRT_TC_UNIT_CHUNKS4=$uc > /dev/null && cmake --build /tmp/bs$uc -j16 --target test_cuda_ops > /dev/null 2>&1 || exit 1
done
for uc in 2 4; do echo "== 4-bit unit chunks $uc"; DDRT_TEST_ONLY=gemv_tc,gemv_group /tmp/bs$uc/test_cuda_ops 2>&1 | grep -E "FAIL|passed" | head -3; DDRT_LAB_GROUP=gate_up /tmp/bs$uc/test_cuda_ops --bench-groups 2>&1 | grep uq4; done
