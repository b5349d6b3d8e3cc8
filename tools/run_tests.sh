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
  else
    echo "CUDA emulator tests skipped: no CUDA headers (build/emu_configure.log)"
  fi
fi
# run pytest from outside the source tree so the installed package (with _core) is imported
cd tests && "$PY" -m pytest -q python "$@"
