#!/usr/bin/env python3
"""The DecDEC knee: decode slowdown vs k_chunk against the knee the bandwidths predict.

    python tools/decdec_knee.py --shape llama3-8b --bits 3 4 --out knee/          # on the GPU
    python tools/decdec_knee.py --device cpu --shape tiny --k-chunks 0 4 --out /tmp/k   # smoke run

Per bit width it builds ONE synthetic engine of the shape (random weights, residuals in pinned
host memory, decode graphs), prefills a context, and times greedy decode (ms/token) with DecDEC
off and at each k_chunk (same k on every linear kind). The runs are interleaved: every config is
timed between two base (off) runs, and its slowdown is taken against their mean, so that clock
and thermal drift cancel; the reported slowdown is the median over --reps rounds.

In the same run it measures the GPU's bandwidths (decdec_rt._core.measure_bandwidth) and gives
the predicted knee  k* = 1024 * (b_w / 4) * (BW_zero_copy / BW_hbm)  per bit width: the k_chunk
at which fetching k/1024 of the 4-bit residual over PCIe takes as long as streaming the b_w-bit
weights from HBM. It also measures the recall of the approximate (bucketed) selection against
exact top-k on the engine's own linear inputs: thresholds calibrated on --calib-tokens tokens
(as the converter does), recall on --recall-tokens other tokens.

Writes, in --out: knee.json (every number), knee.png (slowdown % vs k_chunk, one line per bit
width, dashed verticals at the predicted knees, the target as a horizontal line) and knee.md (the
tables for BENCHMARKS.md, with the command line and the GPU). On a device without CUDA the
bandwidth probe is skipped (recorded in the json) and no knee is predicted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import numpy as np

TARGET = 0.025   # the issue's slowdown target (2.5 %)
SLOT_NAMES = {0: "attn_q", 3: "attn_output", 4: "ffn_gate", 6: "ffn_down"}  # capture slots


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="llama3-8b", help="a synthetic shape (decdec_rt._core.synth_shapes())")
    p.add_argument("--bits", type=int, nargs="+", default=[3, 4], help="weight bit widths")
    p.add_argument("--k-chunks", type=int, nargs="+", default=[0, 1, 2, 4, 6, 8, 10, 12, 16, 24, 32],
                   help="k_chunk values (0: DecDEC off)")
    p.add_argument("--out", default="knee", help="output directory")
    p.add_argument("--device", default="cuda", help='"cuda", "cuda:N" or "cpu"')
    p.add_argument("--mode", default="approx", choices=["approx", "exact", "static", "random"],
                   help="DecDEC selection mode timed")
    p.add_argument("--n-tb", type=int, default=0, help="blocks given to the compensation (0: backend default)")
    p.add_argument("--group", type=int, default=128, help="quantization group size")
    p.add_argument("--context", type=int, default=512, help="tokens prefilled before decoding")
    p.add_argument("--n-decode", type=int, default=128, help="tokens decoded per timed run")
    p.add_argument("--reps", type=int, default=5, help="interleaved rounds (median taken)")
    p.add_argument("--calib-tokens", type=int, default=64, help="tokens the recall's thresholds are calibrated on")
    p.add_argument("--recall-tokens", type=int, default=16, help="tokens the recall is measured on")
    p.add_argument("--target", type=float, default=TARGET, help="slowdown target (fraction) drawn and used "
                   "for the measured knee")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.context < 2 or a.n_decode < 1 or a.reps < 1 or a.calib_tokens < 1 or a.recall_tokens < 1:
        p.error("--context must be >= 2; --n-decode, --reps, --calib-tokens, --recall-tokens >= 1")
    if any(k < 0 or k > 1024 for k in a.k_chunks):
        p.error("--k-chunks must be in 0..1024")
    a.k_chunks = sorted(set(a.k_chunks))
    return a


# ---- bandwidths and the knee model -------------------------------------------------------------
def probe_bandwidths(device: str):
    """(bandwidth dict, None) on a CUDA device, (None, reason) elsewhere."""
    from decdec_rt import _core
    from decdec_rt.bench import cuda_index
    idx = cuda_index(device)
    if idx is None:
        return None, f"device {device!r} is not a CUDA device: bandwidth probe skipped"
    return dict(_core.measure_bandwidth(idx)), None


def predicted_knee(bits: int, zero_copy_gbs: float, hbm_gbs: float) -> float:
    """k_chunk where the residual fetch (4-bit rows over PCIe) takes as long as the b_w-bit GEMV
    from HBM: k*/1024 = (b_w / 4) * (BW_zero_copy / BW_hbm)."""
    return 1024.0 * (bits / 4.0) * (zero_copy_gbs / hbm_gbs)


def measured_knee(rows: list, target: float):
    """The largest k_chunk > 0 before the first one whose median slowdown exceeds target (0 when
    the smallest already does; the k_chunk 0 row only shows the noise of the timing)."""
    best = 0
    for r in rows:
        if r["k_chunk"] == 0:
            continue
        if r["slowdown"] > target:
            break
        best = r["k_chunk"]
    return best


# ---- decode timing -----------------------------------------------------------------------------
def set_k(eng, mode: str, k: int, n_tb: int) -> None:
    eng.set_decdec("off" if k == 0 else mode, [k] * 4, 0, [n_tb] * 4)


def time_decode(eng, ids: np.ndarray, context: int, n_decode: int) -> float:
    """ms/token of greedy decode after a fresh prefill of `context` tokens (the first decode
    steps record the graph; only the later ones are timed)."""
    eng.reset()
    eng.forward(ids[:context - 1], False)
    eng.decode_greedy(int(ids[context - 1]), 4)
    eng.synchronize()
    t0 = time.perf_counter()
    eng.decode_greedy(1, n_decode)
    eng.synchronize()
    return 1000.0 * (time.perf_counter() - t0) / n_decode


def sweep(eng, ids, a, bar) -> tuple[list, float]:
    """Interleaved timing: per round, base, k_1, base, k_2, ..., k_n, base; each k's slowdown is
    against the mean of its two neighbouring base runs. Returns (rows, median base ms/token)."""
    ms = {k: [] for k in a.k_chunks}
    slow = {k: [] for k in a.k_chunks}
    bases = []
    for _ in range(a.reps):
        set_k(eng, a.mode, 0, a.n_tb)
        before = time_decode(eng, ids, a.context, a.n_decode)
        bases.append(before)
        bar.update(1)
        for k in a.k_chunks:
            set_k(eng, a.mode, k, a.n_tb)
            t = time_decode(eng, ids, a.context, a.n_decode)
            set_k(eng, a.mode, 0, a.n_tb)
            after = time_decode(eng, ids, a.context, a.n_decode)
            bases.append(after)
            ms[k].append(t)
            slow[k].append(t / (0.5 * (before + after)) - 1.0)
            before = after
            bar.update(2)
    rows = []
    for k in a.k_chunks:
        set_k(eng, a.mode, k, a.n_tb)
        med = statistics.median(ms[k])
        bpt = float(eng.decdec_bytes_per_token)
        rows.append({"k_chunk": k, "mode": eng.decdec_mode, "ms_per_token": med,
                     "slowdown": statistics.median(slow[k]), "slowdown_runs": slow[k], "ms_runs": ms[k],
                     "pcie_bytes_per_token": bpt, "pcie_gbs_token_avg": bpt / (med * 1e-3) / 1e9})
    set_k(eng, a.mode, 0, a.n_tb)
    return rows, statistics.median(bases)


# ---- recall of approx against exact --------------------------------------------------------------
def capture_inputs(eng, ids: np.ndarray, reduce=lambda x: np.array(x, np.float32)) -> dict:
    """{(layer, slot): reduce(x)} where x: f32 [T, d_in] is each linear input on ids (fresh context)."""
    out = {}

    def keep(layer, slot, x):
        out[(layer, slot)] = reduce(x)
    eng.reset()
    eng.forward_capture(np.asarray(ids, np.int32), keep)
    return out


def recall(eng, calib_ids, eval_ids, k_chunks, bar) -> dict:
    """{k: {kind: recall, ..., "all": recall}}: |approx ∩ exact| / |exact| pooled over the
    evaluation tokens and the linears of each kind; approx uses thresholds calibrated on calib_ids."""
    from decdec_rt import _core, quant
    from decdec_rt.types import SLOT_KIND
    thresholds = capture_inputs(eng, calib_ids, quant.calibrate_thresholds)  # {(layer, slot): f32 [d_in]}
    inputs = capture_inputs(eng, eval_ids)
    out = {}
    for k in k_chunks:
        hit, total = {}, {}
        for (layer, slot), X in inputs.items():
            kind = SLOT_KIND[SLOT_NAMES[slot]]
            for x in X:
                exact = _core.select_channels("exact", k, x)
                approx = _core.select_channels("approx", k, x, thresholds[(layer, slot)])
                hit[kind] = hit.get(kind, 0) + len(np.intersect1d(exact, approx, assume_unique=True))
                total[kind] = total.get(kind, 0) + len(exact)
        out[k] = {kind: hit[kind] / total[kind] for kind in total}
        out[k]["all"] = sum(hit.values()) / sum(total.values())
        bar.update(1)
    return out


# ---- one bit width ----------------------------------------------------------------------------
def study(bits: int, a, bw, bar) -> dict:
    from decdec_rt import _core
    max_seq = a.context + a.n_decode + 8 + max(a.calib_tokens, a.recall_tokens)
    t0 = time.perf_counter()
    eng = _core.Engine.synthetic(a.shape, bits=bits, group=a.group, with_residual=True, seed=a.seed,
                                 device=a.device, residual="host", graphs=True, max_seq_len=max_seq,
                                 max_batch=min(512, a.context))
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(a.seed)
    n_vocab = eng.config["n_vocab"]
    ids = rng.integers(0, n_vocab, a.context).astype(np.int32)
    rows, base_ms = sweep(eng, ids, a, bar)
    ks = [k for k in a.k_chunks if k > 0]
    rec = recall(eng, rng.integers(0, n_vocab, a.calib_tokens), rng.integers(0, n_vocab, a.recall_tokens), ks, bar)
    for r in rows:
        r["recall"] = rec.get(r["k_chunk"])
    pred = predicted_knee(bits, bw["zero_copy_gbs"], bw["hbm_read_gbs"]) if bw else None
    return {"bits": bits, "backend": eng.backend_name, "device_bytes": eng.device_bytes, "load_s": load_s,
            "base_ms_per_token": base_ms, "predicted_knee": pred,
            "measured_knee": measured_knee(rows, a.target), "rows": rows}


# ---- outputs ------------------------------------------------------------------------------------
def git_commit() -> str | None:
    """HEAD of this checkout, with "+dirty" when the tracked files differ from it (a copied tree,
    e.g. on a lent GPU machine, may carry a stale .git: then the commit alone would mislead)."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        run = lambda *cmd: subprocess.run(["git", *cmd], cwd=here, capture_output=True, text=True,
                                          timeout=10).stdout.strip()
        head = run("rev-parse", "--short", "HEAD")
        if not head:
            return None
        return head + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def plot(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, s in enumerate(res["studies"]):
        color = f"C{i}"
        ks = [r["k_chunk"] for r in s["rows"]]
        ax.plot(ks, [100 * r["slowdown"] for r in s["rows"]], "o-", color=color,
                label=f"{s['bits']}-bit (base {s['base_ms_per_token']:.3f} ms/token)")
        if s["predicted_knee"] is not None:
            ax.axvline(s["predicted_knee"], color=color, ls="--", lw=1,
                       label=f"{s['bits']}-bit predicted knee {s['predicted_knee']:.1f}")
    ax.axhline(100 * res["target"], color="gray", lw=1, label=f"target {100 * res['target']:.1f} %")
    ax.set_xlabel("k_chunk (channels per 1024)")
    ax.set_ylabel("decode slowdown vs DecDEC off (%)")
    ax.set_title(f"DecDEC knee: {res['shape']} on {res['gpu']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(v, spec: str, none: str = "–") -> str:
    return none if v is None else format(v, spec)


def markdown(res: dict) -> str:
    out = [f"Command: `{res['command']}`", "",
           f"GPU: {res['gpu']}; shape {res['shape']}, g{res['group']}, mode {res['mode']}, context "
           f"{res['context']}, {res['n_decode']} tokens per run, median of {res['reps']} interleaved rounds"
           f"{'; commit ' + res['commit'] if res.get('commit') else ''}.", ""]
    bw = res["bandwidth"]
    if bw:
        out += ["| bandwidth | GB/s |", "| --- | --- |",
                f"| HBM streaming read ({bw['hbm_bytes'] / 2**30:.0f} GiB) | {bw['hbm_read_gbs']:.0f} |",
                f"| zero-copy streaming read ({bw['zero_copy_bytes'] / 2**20:.0f} MiB pinned) | "
                f"{bw['zero_copy_gbs']:.1f} |",
                f"| zero-copy gather, {bw['gather_rows']} random {bw['gather_row_bytes'] // 1024} KB rows "
                f"({bw['zero_copy_gather_us']:.1f} µs) | {bw['zero_copy_gather_gbs']:.1f} |",
                f"| pinned H2D cudaMemcpy | {bw['h2d_memcpy_gbs']:.1f} |", ""]
    else:
        out += [f"Bandwidths: {res['bandwidth_skipped']}.", ""]
    studies = res["studies"]
    head = "| k_chunk | " + " | ".join(f"{s['bits']}-bit ms/token | {s['bits']}-bit slowdown | "
                                       f"{s['bits']}-bit recall" for s in studies) + " |"
    out += [head, "| --- " * (1 + 3 * len(studies)) + "|"]
    for i, k in enumerate(res["k_chunks"]):
        cells = []
        for s in studies:
            r = s["rows"][i]
            rec = f"{100 * r['recall']['all']:.1f} %" if r["recall"] else "–"
            cells += [f"{r['ms_per_token']:.3f}", f"{100 * r['slowdown']:+.1f} %", rec]
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    out += ["", f"| bits | predicted knee k* = 1024·(b_w/4)·(BW_zc/BW_hbm) | measured knee (last k_chunk "
                f"≤ {100 * res['target']:.1f} %) |", "| --- | --- | --- |"]
    for s in studies:
        out.append(f"| {s['bits']} | {fmt(s['predicted_knee'], '.1f')} | {fmt(s['measured_knee'], 'd')} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    from tqdm import tqdm
    a = parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    bw, skipped = probe_bandwidths(a.device)
    n_k = len(a.k_chunks)
    steps_per_bits = a.reps * (2 * n_k + 1) + sum(1 for k in a.k_chunks if k > 0)
    bar = tqdm(total=len(a.bits) * steps_per_bits, desc="knee", unit="run")
    studies = []
    for bits in a.bits:
        bar.set_description(f"knee {bits}-bit")
        studies.append(study(bits, a, bw, bar))
    bar.close()
    from decdec_rt import _core
    from decdec_rt.bench import cuda_index
    gpu = bw["gpu"] if bw else (_core.cuda_info() if cuda_index(a.device) is not None else
                                f"no GPU (device {a.device}, {platform.processor() or platform.machine()})")
    res = {"command": " ".join(shlex.quote(x) for x in ["python", "tools/decdec_knee.py"] +
                               (sys.argv[1:] if argv is None else list(argv))),
           "commit": git_commit(), "gpu": gpu, "device": a.device, "shape": a.shape, "group": a.group,
           "mode": a.mode, "n_tb": a.n_tb, "context": a.context, "n_decode": a.n_decode, "reps": a.reps,
           "calib_tokens": a.calib_tokens, "recall_tokens": a.recall_tokens, "target": a.target,
           "k_chunks": a.k_chunks, "bandwidth": bw, "bandwidth_skipped": skipped, "studies": studies}
    with open(os.path.join(a.out, "knee.json"), "w") as f:
        json.dump(res, f, indent=1, allow_nan=False)
    plot(res, os.path.join(a.out, "knee.png"))
    md = markdown(res)
    with open(os.path.join(a.out, "knee.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
