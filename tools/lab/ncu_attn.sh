# ncu detail of one decode attention launch of profile_step.py: the summary sections, then the
# per-SASS-instruction stall samples (attn_sass.csv, ranked by tools/lab/ncu_source_top.py: which
# of q's loads, the dot products' shuffles, the block merge, the scratch stores and fence, or the
# merging block's loads hold the warps).
# Usage on the GPU machine: bash tools/lab/ncu_attn.sh [shape]   (results in $OUT)
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ncu_attn}; mkdir -p $OUT
. tools/gpu_build.sh
gpu_build -C cmake.define.CMAKE_CUDA_FLAGS=-lineinfo
# launches: prefill (8 chunks of 64 x 2 layers) then 2 decode steps of 2 layers: SKIP 18 = the last step's first
ncu --clock-control none --cache-control none -k regex:${KERNEL:-attn_kernel} --launch-skip ${SKIP:-18} --launch-count 1 \
  --import-source yes --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats \
  --section SourceCounters --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
  -o /tmp/ncu_attn_rep -f python3 tools/profile_step.py --shape ${1:-llama3-8b} --layers 2 --steps 2 > $OUT/ncu_run.txt 2>&1
ncu -i /tmp/ncu_attn_rep.ncu-rep --print-details all > $OUT/ncu_attn.txt 2>&1
ncu -i /tmp/ncu_attn_rep.ncu-rep --page source --csv --print-source sass > $OUT/attn_sass.csv 2>&1
python3 tools/lab/ncu_source_top.py $OUT/attn_sass.csv --top ${TOP:-30} > $OUT/attn_top.txt 2>&1; head -45 $OUT/attn_top.txt
grep -E "attn_kernel|Duration|Registers|Achieved Occupancy|Warp Cycles Per Issued|Block Limit" $OUT/ncu_attn.txt | head -12
grep -E "stalled_" $OUT/ncu_attn.txt | sort -k3 -n -r | head -12
