# ncu detail (stall reasons per source line) of one decode attention launch of profile_step.py.
# Usage on the GPU machine: bash tools/lab/ncu_attn.sh [shape]   (results in $OUT)
OUT=${OUT:-/tmp/ncu_attn}; mkdir -p $OUT
BUILD=/tmp/ddrt_build
python3 -m pip install -q --no-build-isolation --no-deps . -C build-dir=$BUILD -C cmake.define.DECDEC_CUDA=ON \
  -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 -C cmake.define.CMAKE_CUDA_FLAGS=-lineinfo > $OUT/build.log 2>&1 \
  || { tail -30 $OUT/build.log; exit 1; }
# launches: prefill (8 chunks of 64 x 2 layers) then 2 decode steps of 2 layers: SKIP 18 = the last step's first
ncu --clock-control none --cache-control none -k regex:${KERNEL:-attn_kernel} --launch-skip ${SKIP:-18} --launch-count 1 \
  --import-source yes --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
  --section SourceCounters --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio python3 tools/profile_step.py --shape ${1:-llama3-8b} --layers 2 --steps 2 > $OUT/ncu_attn.txt 2>&1
grep -E "attn_kernel|Duration|Registers|Achieved Occupancy|Warp Cycles Per Issued|Block Limit" $OUT/ncu_attn.txt | head -12
grep -E "stalled_" $OUT/ncu_attn.txt | sort -k3 -n -r | head -12
