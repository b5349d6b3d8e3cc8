#!/usr/bin/env bash
# One device call: tools/lab/queue_lab.cu (where one L2-hit load waits under copies in flight: the
# table of docs/gemv.md, "x waits behind the copies queued ahead of it"), then a same-machine
# decode A/B (tools/gpu_ab.sh, two rounds) of the settings given, if any.
# Usage on the GPU machine: bash tools/lab/queue_round.sh ["SETTING" ...]   (AB_SHAPES, AB_ARGS,
# AB_DEADLINE as tools/gpu_ab.sh)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
nvcc -O3 -std=c++17 -arch=sm_90 tools/lab/queue_lab.cu -o /tmp/queue_lab && /tmp/queue_lab | tee "$OUT/queue_lab.txt"
echo "queue lab: $SECONDS s"
[ $# -eq 0 ] || AB_DEADLINE=${AB_DEADLINE:-480} bash tools/gpu_ab.sh default "$@"
