# ncu detail (stall reasons per source line) of one decode attention launch of profile_step.py.
# Usage on the GPU machine: bash tools/lab/ncu_attn.sh [shape]   (results in $OUT)
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ncu_attn}; mkdir -p $OUT
. tools/gpu_build.sh
gpu_build -C cmake.define.CMAKE_CUDA_FLAGS=-lineinfo
# launches: prefill (8 chunks of 64 x 2 layers) then 2 decode steps of 2 layers: SKIP 18 = the last step's first
ncu --clock-control none --cache-control none -k regex:${KERNEL:-attn_kernel} --launch-skip ${SKIP:-18} --launch-count 1 \
  --import-source yes --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
  --section SourceCounters --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio python3 tools/profile_step.py --shape ${1:-llama3-8b} --layers 2 --steps 2 > $OUT/ncu_attn.txt 2>&1
grep -E "attn_kernel|Duration|Registers|Achieved Occupancy|Warp Cycles Per Issued|Block Limit" $OUT/ncu_attn.txt | head -12
grep -E "stalled_" $OUT/ncu_attn.txt | sort -k3 -n -r | head -12
