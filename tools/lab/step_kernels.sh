# Per-kernel times of one decode step (ncu, caches and clocks left alone, so small kernels read
# close to what they take in the graph), for the shapes given, plus the sum per token against the
# graph's ms/token from decdec-rt bench. Usage on the GPU machine:
#   bash tools/lab/step_kernels.sh ["llama3-8b smollm2-135m"]   (results in $OUT)
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/step_out}; mkdir -p $OUT
. tools/gpu_build.sh
gpu_build
for shape in ${1:-llama3-8b smollm2-135m}; do
  # 2 layers, 1 profiled step after a warm one: the per-layer kernels appear twice per step
  ncu --cache-control none --clock-control none --launch-skip ${SKIP:-0} \
    --metrics gpu__time_duration.sum --csv --page raw \
    python3 tools/profile_step.py --shape $shape --layers 2 --steps 2 ${DECDEC_ARGS:-} > $OUT/ncu_$shape.csv 2>$OUT/ncu_$shape.err
  python3 tools/lab/step_table.py $OUT/ncu_$shape.csv "$shape" | tee $OUT/table_$shape.txt
done
