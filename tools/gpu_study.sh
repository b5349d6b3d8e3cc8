#!/usr/bin/env bash
# The DecDEC study on the GPU (issue 5 point 5), after tools/gpu_check.sh has built and installed
# the package on the same machine: the knee (decode slowdown vs k_chunk at 3 and 4 bits, next to
# the knee predicted from bandwidths measured in the same run, recall of approx vs exact), then the
# tuner's choice and its measured slowdown for targets 1 %, 2.5 %, 5 %, 10 % (Llama-3-8B shape,
# 3-bit). Outputs go to $OUT (or ./gpu_logs): knee/ (json, png, md) and tune_*.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ "${STUDY_KNEE:-1}" != 0 ]; then  # STUDY_KNEE=0: the tuner alone
  python3 tools/decdec_knee.py --shape llama3-8b --bits 3 4 --k-chunks 0 2 4 8 16 --reps 2 \
    --out "$OUT/knee" 2>&1 | grep -v "it/s" | tail -30
fi
python3 - "$OUT" "$@" <<'PY'
import json, sys, time
from decdec_rt import _core
from decdec_rt.tune import tune
out = sys.argv[1]
eng = _core.Engine.synthetic("llama3-8b", bits=3, with_residual=True, device="cuda", max_seq_len=1024,
                             residual="host", graphs=True)
for target in [float(t) for t in sys.argv[2:]] or (0.01, 0.025, 0.05, 0.10):
    t0 = time.perf_counter()
    r = tune(eng, target_slowdown=target, progress=False, time_budget=40.0)
    r["wall_s"] = time.perf_counter() - t0
    json.dump(r, open(f"{out}/tune_{target}.json", "w"), indent=1, default=str)
    print(f"target {target:.3f}: k_chunk {r['k_chunk']} n_tb {r['n_tb']} base {r['base_ms']:.3f} ms "
          f"tuned {r['tuned_ms']:.3f} ms slowdown {100 * r['measured_slowdown']:.2f} % in {r['wall_s']:.1f} s")
PY
