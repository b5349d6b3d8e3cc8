#!/usr/bin/env python3
"""Write a random Llama-style .ddrt model (tests, benchmarks); see decdec_rt.tiny.

    python tools/make_tiny_model.py -o tiny.ddrt                       # 3-bit RTN, BPE, residuals
    python tools/make_tiny_model.py -o fp.ddrt --bits 16
    python tools/make_tiny_model.py -o s.ddrt --shape smollm2-135m --margin 4
"""
import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True, help="output .ddrt path")
    p.add_argument("--tokenizer", choices=["bpe", "spm"], default="bpe")
    p.add_argument("--bits", type=int, choices=[16, 4, 3], default=3)
    p.add_argument("--group-size", type=int, choices=[32, 64, 128], default=None,
                   help="uniform group size (default: 64 for tiny, 128 for smollm2-135m)")
    p.add_argument("--method", choices=["rtn", "nonuniform"], default="rtn")
    p.add_argument("--shape", choices=["tiny", "smollm2-135m"], default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-residual", action="store_true", help="omit DecDEC residuals/calibration")
    p.add_argument("--margin", type=float, default=1.0,
                   help="scale of the logits' spread (output norm weight), for clear greedy margins")
    args = p.parse_args(argv)
    from decdec_rt.tiny import make_tiny_model
    t0 = time.time()
    meta = make_tiny_model(args.output, tokenizer=args.tokenizer, bits=args.bits,
                           group_size=args.group_size, method=args.method, shape=args.shape,
                           seed=args.seed, residual=not args.no_residual, margin=args.margin)
    print(f"wrote {args.output}: {meta['general.name']}, {meta['model.n_layers']} layers, "
          f"dim {meta['model.dim']}, vocab {meta['model.n_vocab']}, "
          f"{meta['quant.bits']:.3f} bits/weight, {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
