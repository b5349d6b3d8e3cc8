# ncu detail of the fused GEMV (first uq3 4096x14336 launch of --bench-gemv) + the timeline lab.
# Usage on the GPU machine: bash tools/lab/ncu_gemv.sh  (results in $OUT)
set -x
OUT=${OUT:-/tmp/ncu_out}; mkdir -p $OUT
cmake -S . -B /tmp/bs -G Ninja -DDECDEC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DDECDEC_PYTHON=OFF \
  -DDECDEC_TESTS=ON -DCMAKE_CUDA_FLAGS=-lineinfo > /dev/null && cmake --build /tmp/bs -j16 --target test_cuda_ops > /dev/null || exit 1
/tmp/bs/test_cuda_ops --bench-stamps | tee $OUT/stamps.txt
ncu --clock-control none -k regex:gemv_tc --launch-skip ${SKIP:-30} --launch-count 1 --import-source yes \
  --section WarpStateStats --section SourceCounters --section InstructionStats \
  --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
  /tmp/bs/test_cuda_ops --bench-gemv > $OUT/ncu_detail.txt 2>&1
grep -E "stalled_|Executed Instructions|Issued Instructions" $OUT/ncu_detail.txt | sort -k3 -n -r | head -30
sed -n '/Source Counters/,$p' $OUT/ncu_detail.txt | head -80
