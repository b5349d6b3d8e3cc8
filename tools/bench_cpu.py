#!/usr/bin/env python3
"""CPU decode/prefill speed on a model (default: a SmolLM2-135M-shaped random 3-bit model).

    python tools/bench_cpu.py [--model PATH] [--bits 3] [--prompt 128] [--gen 64] [--decdec approx --k-chunk 8]

Prints prefill tokens/s (one prompt of --prompt tokens) and decode tokens/s (--gen greedy steps),
medians over --reps runs. llama.cpp on the same 2-core machine: 229 tok/s prefill, 102 tok/s
decode for SmolLM2-135M Q4_1 (the issue's reference numbers)."""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import decdec_rt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a .ddrt file (default: build a smollm2-135m-shaped one)")
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--decdec", default="off")
    ap.add_argument("--k-chunk", type=int, default=8)
    a = ap.parse_args()
    path = a.model
    if path is None:
        from decdec_rt.tiny import make_tiny_model
        path = os.path.join(tempfile.gettempdir(), f"ddrt_bench_smollm2_{a.bits}bit.ddrt")
        if not os.path.exists(path):
            make_tiny_model(path, tokenizer="bpe", bits=a.bits, shape="smollm2-135m", seed=0)
    rt = decdec_rt.Runtime(path, device=a.device, n_threads=a.threads)
    if a.decdec != "off":
        rt.set_decdec(a.decdec, a.k_chunk)
    eng = rt._engine
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, rt.n_vocab, a.prompt).astype(np.int32)
    pre, dec = [], []
    for _ in range(a.reps):
        eng.reset()
        t0 = time.perf_counter()
        eng.forward(prompt, False)
        pre.append(a.prompt / (time.perf_counter() - t0))
        tok = np.array([1], np.int32)
        t0 = time.perf_counter()
        for _ in range(a.gen):
            logits = eng.forward(tok, False)
            tok[0] = int(np.argmax(logits))
        dec.append(a.gen / (time.perf_counter() - t0))
    c = rt.config
    print(f"model: {os.path.basename(path)} ({c['n_layers']} layers, dim {c['dim']}, vocab {c['n_vocab']}); "
          f"backend {rt.backend}; DecDEC {rt.decdec['mode']}")
    print(f"prefill {a.prompt} tokens: {statistics.median(pre):8.1f} tok/s")
    print(f"decode  {a.gen} tokens:  {statistics.median(dec):8.1f} tok/s")


if __name__ == "__main__":
    main()
