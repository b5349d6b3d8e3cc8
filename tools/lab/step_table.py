#!/usr/bin/env python3
"""Prints the kernels of the last decode step in an ncu --csv --page raw log (tools/lab/step_kernels.sh):
the step is what follows the second-last argmax launch up to the last one."""
import csv
import re
import sys

rows = list(csv.reader(open(sys.argv[1], errors="replace")))
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols = rows[head]
name_c, t_c = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum")
unit = rows[head + 1][t_c]  # the units row
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(unit)
if scale is None:
    sys.exit(f"{sys.argv[1]}: unknown time unit {unit!r}")
ks = [(r[name_c], float(r[t_c].replace(",", "")) * scale) for r in rows[head + 2:] if len(r) > t_c and r[t_c]]
arg = [i for i, (n, _) in enumerate(ks) if "argmax" in n]
if len(arg) < 2:
    sys.exit(f"{sys.argv[1]}: fewer than 2 argmax launches ({len(ks)} kernels)")
step = ks[arg[-2] + 1: arg[-1] + 1]
print(f"== {sys.argv[2] if len(sys.argv) > 2 else ''}: last decode step, {len(step)} kernels, "
      f"{sum(t for _, t in step):.1f} us (ncu, one kernel at a time)")
for n, t in step:
    short = re.sub(r"[<(].*", "", n.replace("(anonymous namespace)::", "").replace("void ", ""))
    short = short.split("::")[-1][:60]
    print(f"  {t:8.2f} us  {short}")
