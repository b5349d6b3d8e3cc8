#!/usr/bin/env python3
"""How persistent is DecDEC's channel selection from one decode token to the next, in a real model?

If the top-k channels of a linear's input at token t were mostly those of token t - 1 (or a fixed
calibration set), the compensation could fetch those residual rows over PCIe before the kernel's
dependency wait and keep only the misses after the selection. This measures the hit rate that
idea depends on: per linear kind and k_chunk, the share of token t's exact per-chunk top-k set
(|x| largest per 1024-chunk, as mode `exact`) that was in token t - 1's set, and in a static set
(the channels most often selected over the first half of the tokens, as a calibration would
choose). Inputs come from the numpy reference forward pass (ReferenceModel.collect_inputs) over
English prose (tools/extract_eval_text.py; needs the debian-reference-en package).

    python3 tools/lab/sel_persist.py MODEL.ddrt [--tokens 400] [--k 8 16 32]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import extract_eval_text as ext  # noqa: E402

import decdec_rt  # noqa: E402
from decdec_rt.reference import ReferenceModel  # noqa: E402

CHUNK = 1024


def chunk_k(k_chunk: int, n: int) -> int:
    """Channels selected in a chunk of n channels (cpp/decdec.h chunk_k)."""
    return 0 if k_chunk <= 0 or n <= 0 else min(max((k_chunk * n + CHUNK // 2) // CHUNK, 1), n)


def topk_sets(X: np.ndarray, k: int) -> list[set]:
    """Per token, the union over 1024-chunks of each chunk's chunk_k(k) largest |x| channels."""
    T, d = X.shape
    out = []
    for t in range(T):
        s = set()
        for c0 in range(0, d, CHUNK):
            a = np.abs(X[t, c0:c0 + CHUNK])
            kk = chunk_k(k, a.size)
            s.update((c0 + np.argpartition(-a, kk - 1)[:kk]).tolist())
        out.append(s)
    return out


def static_set(sets: list[set], d: int, k: int) -> set:
    freq = np.zeros(d)
    for s in sets:
        freq[list(s)] += 1
    out = set()
    for c0 in range(0, d, CHUNK):
        f = freq[c0:c0 + CHUNK]
        out.update((c0 + np.argsort(-f, kind="stable")[:chunk_k(k, f.size)]).tolist())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--k", type=int, nargs="+", default=[8, 16, 32])
    a = ap.parse_args(argv)
    _, ev = ext.extract()
    rt = decdec_rt.Runtime(a.model, device="cpu")
    ids = rt.tokenize(ev[:20 * a.tokens])[:a.tokens]
    xs = ReferenceModel(a.model, dtype=np.float32).collect_inputs([ids])
    res: dict = {}
    for name, X in xs.items():
        kind = name.split(".")[-1]
        T, d = X.shape
        for k in a.k:
            sets = topk_sets(X, k)
            stat = static_set(sets[:T // 2], d, k)
            prev = sum(len(sets[t] & sets[t - 1]) for t in range(T // 2 + 1, T))
            st = sum(len(sets[t] & stat) for t in range(T // 2 + 1, T))
            tot = sum(len(sets[t]) for t in range(T // 2 + 1, T))
            res.setdefault((kind, k), []).append((prev / tot, st / tot))
    print(f"{len(ids)} tokens; hit rates over the second half (per layer: mean, lowest layer)")
    print("| linear | k_chunk | previous token's set | lowest layer | static set | lowest layer |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for (kind, k), v in sorted(res.items()):
        r = 100 * np.array(v)
        print(f"| {kind} | {k} | {r[:, 0].mean():.1f} % | {r[:, 0].min():.1f} % | {r[:, 1].mean():.1f} % | {r[:, 1].min():.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
