#!/usr/bin/env bash
# The project's test command (README, .ci/run): builds the package with the ctest suite in one
# CMake tree (the CUDA backend too when nvcc is found), runs ctest, then pytest.
# GPU tests skip cleanly (ctest exit code 77, pytest skipif) on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD=build/tests
"$PY" -m pip install ${PIP_FLAGS:-} ".[test]" \
  -C build-dir="$BUILD" -C cmake.define.DECDEC_TESTS=ON ${DECDEC_CMAKE_ARGS:-}
ctest --test-dir "$BUILD" --output-on-failure -j2
# run pytest from outside the source tree so the installed package (with _core) is imported
cd tests && "$PY" -m pytest -q python "$@"
