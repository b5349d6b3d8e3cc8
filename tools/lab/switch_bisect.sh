#!/usr/bin/env bash
# One device call for a switch configuration that fails on the GPU (gpu_check's pytest_switches,
# which runs this itself on a failure): build, then the failing tests with each switch of the set
# alone, then the whole set under compute-sanitizer memcheck (which names the kernel and the
# address of a bad access).
# Usage on the GPU machine:
#   SWITCHES="DDRT_A=1 DDRT_B=2" TESTS="python/test_cuda.py -k logits_cpu_vs_cuda" bash tools/lab/switch_bisect.sh
# BISECT_BUILD=0: the package is built already; BISECT_LOG / BISECT_MEMCHECK_LOG: where the pytest
# and memcheck output go (default $OUT/bisect.log, $OUT/bisect_memcheck.log).
set -uo pipefail
set -f  # (a test id such as test_x[tiny3] is not a glob)
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh  # (also OUT and PYTHONUNBUFFERED)
[ "${BISECT_BUILD:-1}" = 0 ] || gpu_build
TESTS=${TESTS:-python/test_cuda.py}
LOG=${BISECT_LOG:-$OUT/bisect.log}
MLOG=${BISECT_MEMCHECK_LOG:-$OUT/bisect_memcheck.log}
for sw in ${SWITCHES:?SWITCHES: the failing set}; do
  (cd tests && env $sw python3 -m pytest -q -x $TESTS) >> "$LOG" 2>&1
  echo "$sw alone: rc=$? $(tail -1 "$LOG")"
done
(cd tests && env $SWITCHES python3 -m pytest -q -x $TESTS) >> "$LOG" 2>&1
echo "all together: rc=$? $(tail -1 "$LOG")"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ]; then
  (cd tests && env $SWITCHES "$SAN" --tool memcheck --print-limit 8 python3 -m pytest -q -x $TESTS) > "$MLOG" 2>&1
  echo "memcheck, all together: rc=$?"
  grep -E "Invalid|at 0x|by thread|Address|is out of bounds|ERROR SUMMARY|in .*kernel|^=========     at " "$MLOG" | head -30
else
  echo "no compute-sanitizer"
fi
