#!/usr/bin/env bash
# One device call for a switch configuration that fails on the GPU (gpu_check's pytest_switches):
# build, then the failing tests with each switch of the set alone, then the whole set under
# compute-sanitizer memcheck (which names the kernel and the address of a bad access).
# Usage on the GPU machine:
#   SWITCHES="DDRT_A=1 DDRT_B=2" TESTS="python/test_cuda.py -k logits_cpu_vs_cuda" bash tools/lab/switch_bisect.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu_build.sh  # (also OUT and PYTHONUNBUFFERED)
gpu_build
TESTS=${TESTS:-python/test_cuda.py}
: > "$OUT/bisect.log"
for sw in ${SWITCHES:?SWITCHES: the failing set}; do
  (cd tests && env $sw python3 -m pytest -q -x $TESTS) >> "$OUT/bisect.log" 2>&1
  echo "$sw alone: rc=$? $(tail -1 "$OUT/bisect.log")"
done
(cd tests && env $SWITCHES python3 -m pytest -q -x $TESTS) >> "$OUT/bisect.log" 2>&1
echo "all together: rc=$? $(tail -1 "$OUT/bisect.log")"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ]; then
  (cd tests && env $SWITCHES "$SAN" --tool memcheck --print-limit 8 python3 -m pytest -q -x $TESTS) \
    > "$OUT/bisect_memcheck.log" 2>&1
  echo "memcheck, all together: rc=$?"
  grep -E "Invalid|at 0x|by thread|Address|ERROR SUMMARY|in .*kernel|Saved host backtrace" "$OUT/bisect_memcheck.log" | head -30
else
  echo "no compute-sanitizer"
fi
