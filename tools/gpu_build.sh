# Sourced by the GPU scripts (gpu_check.sh, gpu_sanitize.sh, tools/lab/*.sh): BUILD, CS (compute-sanitizer), and
# gpu_build [extra pip -C options...], which builds and installs the package with CUDA (sm_90) and
# the tests into $BUILD, logs to $OUT/build.log, prints the build time, and exits on failure.
# Also, where the sourcing script has not: OUT (the logs' folder, made) and unbuffered Python output.
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
BUILD=/tmp/ddrt_build
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)  # the sanitizer runs
gpu_build() {
  local t0
  t0=$(date +%s)
  python3 -m pip install -q --no-build-isolation --no-deps . -C build-dir=$BUILD \
    -C cmake.define.DECDEC_TESTS=ON -C cmake.define.DECDEC_CUDA=ON \
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90 "$@" > "$OUT/build.log" 2>&1 \
    || { tail -50 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
}
