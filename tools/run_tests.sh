#!/usr/bin/env bash
# The project's test command (README, .ci/run): builds the package with the ctest suite in one
# CMake tree (the CUDA backend too when nvcc is found), runs ctest, then the CUDA op tests on the
# CPU emulator (tests/emu; a second, C++-only tree; where the CUDA headers are; DDRT_EMU_TESTS=0
# skips it), then pytest. GPU tests skip cleanly (ctest exit code 77, pytest skipif) on a machine
# without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD=build/tests
"$PY" -m pip install ${PIP_FLAGS:-} ".[test]" \
  -C build-dir="$BUILD" -C cmake.define.DECDEC_TESTS=ON ${DECDEC_CMAKE_ARGS:-}
ctest --test-dir "$BUILD" --output-on-failure -j2
if [ "${DDRT_EMU_TESTS:-1}" != 0 ]; then
  EMU=build/emu
  if cmake -S . -B "$EMU" -DDECDEC_CUDA_EMU=ON -DDECDEC_PYTHON=OFF -DDECDEC_TESTS=ON > build/emu_configure.log 2>&1; then
    cmake --build "$EMU" -j2 --target test_cuda_ops
    ctest --test-dir "$EMU" -R '^emu_' --output-on-failure -j2
    # the end-to-end CUDA pytest cases (logits and greedy decode vs the CPU, graphs, DecDEC modes)
    # on it: as built, with the off-by-default switches on, and with the defaults' twins (the
    # switches that measured faster, off) (the SmolLM2-sized ones: GPU only)
    "$PY" -m pip install -q ${PIP_FLAGS:-} --no-deps --upgrade --target "$EMU/py" . -C build-dir="$EMU/pybuild" \
      -C cmake.define.DECDEC_CUDA_EMU=ON -C cmake.define.DECDEC_TESTS=OFF
    for switches in "" "DDRT_TC_CHAIN=1 DDRT_ATTN_TILED=1 DDRT_COMP_CHUNKS=1 DDRT_L2_NEXT=1 DDRT_L2_PF_MB=-1 DDRT_ATTN_IDLE_EXIT=1 DDRT_GEMV_F_QUEUE=1 DDRT_SEL_FAST=1 DDRT_SEL_REUSE=0 DDRT_ATTN_PREFETCH=1 DDRT_I8_OWN=0 DDRT_TC_LOCAL=2 DDRT_TC_LOCAL_EXT=1 DDRT_TC_ONE=1" \
                    "DDRT_SWIGLU_PAIRS=0 DDRT_FENCE_SC=1 DDRT_ATTN_MERGE_PRE=0 DDRT_NORM_PARTS=1 DDRT_ATTN_DEFER=1" \
                    "DDRT_FUSE_NORM=0 DDRT_ATTN_PREFETCH=0 DDRT_ATTN_TILED=0 DDRT_GEMV_F_ROWS=1 DDRT_I8_LIMBS=3 DDRT_W_EVICT=0 DDRT_TC_EARLY=0 DDRT_REPLAY_N=0 DDRT_ATTN_WARPS=4 DDRT_GEMV_F_QUEUE=0 DDRT_ATTN_HEADS_INNER=0 DDRT_COMP_SEG_ALIGN=1 DDRT_ATTN_MERGE_PRE=1 DDRT_ATTN_DEFER=0 DDRT_COMP_XS=0"; do
      echo "CUDA pytest cases on the emulator${switches:+ with $switches}"
      (cd tests && env $switches PYTHONPATH="$OLDPWD/$EMU/py" "$PY" -m pytest -q python/test_cuda.py \
         -k "not smollm2_shape and not synthetic_bench")
    done
  else
    echo "CUDA emulator tests skipped: no CUDA headers (build/emu_configure.log)"
  fi
fi
# run pytest from outside the source tree so the installed package (with _core) is imported
cd tests && "$PY" -m pytest -q python "$@"
