#!/usr/bin/env bash
# Same-machine A/B of decode switches in one device call: builds, then runs `decdec-rt bench`
# (decode only: --prefill 16) for each setting on each shape, two rounds (AB_ROUNDS) in alternating order
# (drift shows as a round-to-round difference), and prints a table last.
# Usage on the GPU machine: bash tools/gpu_ab.sh ["SETTING" ...]   (a setting: env assignments,
# or "default"); shapes from AB_SHAPES (default "llama3-8b smollm2-135m"), bits from AB_BITS (3).
# Logs in $OUT (the device tool brings them back) or ./gpu_logs.
# Code against code: AB_BASE=DIR builds the source tree in DIR (an older commit: here,
# `mkdir ab_base && git archive REV | tar -x -C ab_base`, `echo /ab_base/ >> .git/info/exclude`,
# then the device call carries "ab_base") beside this one, and the setting "base" (env assignments
# may follow: "base DDRT_X=1") runs it; its A/B rows then compare two builds on one machine.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_logs}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
. tools/gpu_build.sh
gpu_build
if [ -n "${AB_BASE:-}" ]; then
  t0=$(date +%s)
  (cd "$AB_BASE" && python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/ab_base_py . \
     -C build-dir=/tmp/ab_base_build -C cmake.define.DECDEC_CUDA=ON -C cmake.define.CMAKE_CUDA_ARCHITECTURES=90) \
    > "$OUT/build_base.log" 2>&1 || { tail -30 "$OUT/build_base.log"; exit 1; }
  echo "base build ($AB_BASE): $(( $(date +%s) - t0 )) s"
fi
settings=("$@")
[ ${#settings[@]} -eq 0 ] && settings=("default" "DDRT_FUSE_NORM=0" "DDRT_TC_CHAIN=1" "DDRT_FUSE_NORM=0 DDRT_TC_CHAIN=1"
                                       "DDRT_GEMV_F_ROWS=1" "DDRT_TC_PRE=0" "DDRT_TC_PRE=2"
                                       "DDRT_FUSE_SWIGLU=0" "DDRT_FUSE_SWIGLU=1" "DDRT_TC_BLOCKS_PER_SM=1"
                                       "DDRT_ATTN_BLOCKS=132" "DDRT_ATTN_BLOCKS=66" "DDRT_ATTN_PREFETCH=0")
# AB_ARGS: extra bench arguments, e.g. "--decdec approx --k-chunk 8" (with DDRT_COMP_CHUNKS=1 as a setting)
: > "$OUT/ab.tsv"
# a device call may run 600 s: no new run starts AB_DEADLINE s (default 550) after this script
# started (the build included), and the table below shows what ran
t_end=${AB_DEADLINE:-550}
# AB_ROUNDS (default 2): rounds, odd ones in the given order, even ones reversed
for ((round = 1; round <= ${AB_ROUNDS:-2}; round++)); do
  order=("${settings[@]}")
  if [ $((round % 2)) = 0 ]; then order=(); for ((i = ${#settings[@]} - 1; i >= 0; i--)); do order+=("${settings[i]}"); done; fi
  for s in "${order[@]}"; do
    for shape in ${AB_SHAPES:-llama3-8b smollm2-135m}; do
      [ $SECONDS -lt $t_end ] || { echo "AB_DEADLINE reached: $s $shape round $round not run"; continue; }
      envs=$([ "$s" = default ] && echo "" || echo "$s")
      [ "${s%% *}" = base ] && envs="PYTHONPATH=/tmp/ab_base_py ${s#base}"  # the AB_BASE build
      tok=$(env $envs python3 -m decdec_rt bench --shape $shape --bits ${AB_BITS:-3} --prefill 16 ${AB_ARGS:-} 2>&1 \
            | tee -a "$OUT/ab.log" | sed -n 's/^  decode *\([0-9.]*\) tok\/s.*/\1/p')
      printf '%s\t%s\t%s\t%s\n' "$round" "$s" "$shape" "${tok:-failed}" | tee -a "$OUT/ab.tsv"
    done
  done
done
python3 - "$OUT/ab.tsv" <<'PY'
import collections, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
shapes = list(dict.fromkeys(r[2] for r in rows))
cell = collections.defaultdict(list)
for rnd, s, shape, tok in rows:
    cell[(s, shape)].append(tok)
def mean(v):
    xs = [float(t) for t in v if t != "failed"]
    return sum(xs) / len(xs) if xs else None
def vs_default(s, sh):  # the mean over rounds against the default setting's, where both ran
    a, b = mean(cell[(s, sh)]), mean(cell[("default", sh)])
    return "" if s == "default" or a is None or b is None else f" ({100 * (a / b - 1):+.1f} %)"
n_rounds = max(int(r[0]) for r in rows)
rounds = " / ".join(str(i) for i in range(1, n_rounds + 1))
print("| setting | " + " | ".join(f"{sh} tok/s (round {rounds}, mean vs default)" for sh in shapes) + " |")
print("|---" * (len(shapes) + 1) + "|")
for s in dict.fromkeys(r[1] for r in rows):
    print(f"| {s} | " + " | ".join(" / ".join(cell[(s, sh)]) + vs_default(s, sh) for sh in shapes) + " |")
PY
