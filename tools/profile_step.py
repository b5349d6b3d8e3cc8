#!/usr/bin/env python3
"""Runs a few eager decode steps of a synthetic model, for a kernel profiler to attribute time:

    ncu --print-summary per-kernel --metrics gpu__time_duration.sum \\
        python tools/profile_step.py --shape llama3-8b --layers 2 --steps 3
"""
import argparse

import numpy as np

from decdec_rt import _core

ap = argparse.ArgumentParser()
ap.add_argument("--shape", default="llama3-8b")
ap.add_argument("--bits", type=int, default=3)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--context", type=int, default=512)
ap.add_argument("--steps", type=int, default=3)
ap.add_argument("--decdec", default="off")
ap.add_argument("--k-chunk", type=int, default=8)
ap.add_argument("--kinds", default="qkv,o,gate_up,down", help="kinds given --k-chunk (the others 0)")
ap.add_argument("--n-tb", type=int, default=0)
a = ap.parse_args()
eng = _core.Engine.synthetic(a.shape, bits=a.bits, with_residual=a.decdec != "off", n_layers=a.layers,
                             device="cuda", max_seq_len=a.context + a.steps + 8, graphs=False)
if a.decdec != "off":
    kinds = a.kinds.split(",")
    eng.set_decdec(a.decdec, [a.k_chunk if k in kinds else 0 for k in ("qkv", "o", "gate_up", "down")], 0,
                   [a.n_tb] * 4)
eng.forward(np.arange(a.context, dtype=np.int32) % 1000, False)
print(eng.decode_greedy(1, a.steps))
