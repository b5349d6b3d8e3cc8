# Per-kernel times of one decode step (ncu, caches and clocks left alone, so small kernels read
# close to what they take in the graph), for the shapes given, plus the sum per token against the
# graph's ms/token from decdec-rt bench. Usage on the GPU machine:
#   bash tools/lab/step_kernels.sh ["llama3-8b smollm2-135m"]   (results in $OUT)
OUT=${OUT:-/tmp/step_out}; mkdir -p $OUT
BUILD=/tmp/ddrt_build
python3 -m pip install -q --no-build-isolation --no-deps . -C build-dir=$BUILD -C cmake.define.DECDEC_CUDA=ON -C cmake.define.DECDEC_TESTS=ON \
  -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
for shape in ${1:-llama3-8b smollm2-135m}; do
  # 2 layers, 1 profiled step after a warm one: the per-layer kernels appear twice per step
  ncu --cache-control none --clock-control none --launch-skip ${SKIP:-0} \
    --metrics gpu__time_duration.sum --csv --page raw \
    python3 tools/profile_step.py --shape $shape --layers 2 --steps 2 ${DECDEC_ARGS:-} > $OUT/ncu_$shape.csv 2>$OUT/ncu_$shape.err
  python3 tools/lab/step_table.py $OUT/ncu_$shape.csv "$shape" | tee $OUT/table_$shape.txt
done
