"""convert(): source checkpoint -> quantized .ddrt with DecDEC residuals and calibration.

    read (HF / GGUF) -> FP statistics on calibration text (AWQ, non-uniform, bit map)
    -> [AWQ: search and fold scales] -> quantize each linear -> residual R = W - deq(Q(W))
    -> calibrate thresholds and static ranking on the quantized model -> write (atomically)
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..reference import Config
from ..types import LINEAR_SLOTS, TType
from . import quantize as Q
from .calibrate import CALIB_WINDOW, calibration_windows, collect_stats
from .source import Source, load_source

DEFAULT_CALIB_TOKENS = 2048
AWQ_SAMPLE_TOKENS = 256


def default_calibration_text() -> str:
    """The short English prose built into decdec_rt (used when no --calib-text is given)."""
    from ..tiny import CORPUS
    return CORPUS


def _check_args(bits, group_size, method, bit_map, avg_bits):
    if bits not in (16, 4, 3):
        raise ValueError(f"--bits {bits}: expected 16, 4 or 3")
    if method not in Q.METHODS:
        raise ValueError(f"--method {method!r}: expected one of {', '.join(Q.METHODS)}")
    if group_size not in (32, 64, 128):
        raise ValueError(f"--group-size {group_size}: expected 32, 64 or 128")
    if bit_map is not None and avg_bits is not None:
        raise ValueError("give --bit-map or --avg-bits, not both")
    if bits == 16 and (bit_map is not None or avg_bits is not None):
        raise ValueError("--bits 16 stores unquantized weights: --bit-map/--avg-bits do not apply")


def convert(src: str | Source, out: str, bits: int = 3, group_size: int = 128, method: str = "rtn",
            bit_map: str | None = None, avg_bits: float | None = None, calib_text: str | None = None,
            residual: bool = True, calib_tokens: int = DEFAULT_CALIB_TOKENS,
            progress: bool = True) -> dict:
    """Writes `out`; returns a summary {seconds, bits, code_bits, method, ...}. `src` is a path
    (HF directory or .gguf) or an already loaded Source (its weights are not modified)."""
    _check_args(bits, group_size, method, bit_map, avg_bits)
    t0 = time.perf_counter()
    if not isinstance(src, Source):
        src = load_source(src, progress=progress)
    cfg = src.config
    weights = dict(src.weights)                        # name -> f32; AWQ replaces entries
    quantized = bits != 16
    linears = Q.linear_names(cfg.n_layers)
    with_res = quantized and residual

    windows, fp_stats = [], {}
    if quantized:
        from ..tokenizer import Tokenizer
        text = calib_text if calib_text is not None else default_calibration_text()
        ids = Tokenizer.from_metadata(src.meta).encode(text)
        windows = calibration_windows(ids, calib_tokens, min(CALIB_WINDOW, cfg.max_seq_len))
        if not windows:
            raise ValueError("calibration text is too short (needs at least 2 tokens)")
        if method != "rtn" or avg_bits is not None:
            fp16 = {n: Q.quantize_linear(weights[n + ".weight"], TType.F16, None, False) for n in linears}
            fp_stats = _engine_stats(out, src, cfg, weights, fp16, windows, progress, "FP statistics",
                                     AWQ_SAMPLE_TOKENS if method == "awq" else 0)

    bits_of = _bit_map(linears, bits, bit_map, avg_bits, weights, fp_stats, method, group_size, cfg)
    ttype_of = lambda name: Q.weight_type(method, bits_of[name], group_size)  # noqa: E731
    alphas = {}
    if method == "awq" and quantized:
        from tqdm import tqdm
        for i in tqdm(range(cfg.n_layers), desc="AWQ scales", unit="layer", disable=not progress):
            alphas.update(Q.awq_fold(weights, i, fp_stats, ttype_of, cfg))

    qlin = _quantize_all(weights, linears, ttype_of, fp_stats, method, with_res, progress)
    calib = {}
    if with_res:  # the quantized model itself, as the engine runs it
        calib = _engine_stats(out, src, cfg, weights, qlin, windows, progress, "DecDEC calibration")

    meta = _metadata(src, cfg, method, bits, group_size, bits_of, qlin, with_res, windows, quantized)
    _write(out, meta, weights, qlin, calib, cfg, progress)
    return {"seconds": time.perf_counter() - t0, "bits": meta["quant.bits"],
            "code_bits": meta.get("quant.code_bits", 16.0), "method": meta["quant.method"],
            "calib_tokens": meta.get("decdec.calib_tokens", 0), "awq_alpha": alphas, "path": out}


def _engine_stats(out, src, cfg, weights, qlin, windows, progress, desc, sample_tokens=0) -> dict:
    """Statistics of every linear's input over the calibration windows, from the engine running
    a temporary file of these weights (written next to `out`, removed afterwards)."""
    tmp = f"{out}.calib-{os.getpid()}.ddrt"
    try:
        _write(tmp, dict(src.meta), weights, qlin, {}, cfg, progress=False)
        return collect_stats(tmp, windows, sample_tokens=sample_tokens, progress=progress, desc=desc)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _bit_map(linears, bits, bit_map, avg_bits, weights, fp_stats, method, group, cfg) -> dict:
    if bit_map is not None:
        return Q.read_bit_map(bit_map, cfg.n_layers, bits)
    if avg_bits is not None:
        return Q.auto_bit_map(weights, fp_stats, float(avg_bits), method, group)
    return {n: bits for n in linears}


def _quantize_all(weights, linears, ttype_of, fp_stats, method, with_res, progress) -> dict:
    from tqdm import tqdm
    out = {}
    for name in tqdm(linears, desc="quantize", unit="linear", disable=not progress):
        sens = fp_stats[name].mean_sq if method == "nonuniform" and name in fp_stats else None
        out[name] = Q.quantize_linear(weights[name + ".weight"], ttype_of(name), sens, with_res)
    return out


def _metadata(src, cfg: Config, method, bits, group, bits_of, qlin, with_res, windows, quantized) -> dict:
    n_weights = sum(q.deq.size for q in qlin.values())
    code_bits = sum(bits_of[n] * q.deq.size for n, q in qlin.items()) / n_weights
    label = "f16" if not quantized else f"{method}-{code_bits:g}bit" + (
        f"-g{group}" if method != "nonuniform" else "")
    meta = {**src.meta, "general.name": f"{src.meta.get('general.name', 'model')} ({label})",
            "general.source": os.path.basename(os.path.normpath(src.origin)) if src.origin else "",
            "quant.method": method if quantized else "none",
            "quant.bits": sum(q.stored_bits for q in qlin.values()) / n_weights,
            "quant.group_size": group if quantized and method != "nonuniform" else 0,
            "decdec.residual": with_res}
    if quantized:
        meta["quant.code_bits"] = float(code_bits)
        meta["quant.linear_bits"] = np.array([bits_of[f"blk.{i}.{s}"] for i in range(cfg.n_layers)
                                              for s in LINEAR_SLOTS], np.int32)
    if with_res:
        meta["decdec.calib_tokens"] = int(sum(len(w) for w in windows))
    return meta


def _write(out, meta, weights, qlin, calib, cfg, progress):
    from ..ddrt import DdrtWriter
    from .. import quant
    w = DdrtWriter(alignment=256)
    for k, v in meta.items():
        if not (isinstance(v, list) and not v):     # an empty list has no element type: omit it
            w.add(k, v)
    w.add_array("token_embd.weight", weights["token_embd.weight"].astype(np.float16))
    for i in range(cfg.n_layers):
        for norm in ("attn_norm", "ffn_norm"):
            w.add_array(f"blk.{i}.{norm}.weight", weights[f"blk.{i}.{norm}.weight"].astype(np.float32))
        for slot in LINEAR_SLOTS:
            name = f"blk.{i}.{slot}"
            q = qlin[name]
            d_out, d_in = q.deq.shape
            if q.ttype == TType.F16:
                w.add_array(name + ".weight", q.data)
            else:
                w.add_tensor(name + ".weight", q.ttype, [d_out, d_in], q.data)
            if q.res_codes is not None and name in calib:
                w.add_tensor(name + ".residual", int(TType.RES4), [d_in, d_out], quant.pack_residual(q.res_codes))
                w.add_array(name + ".residual_scale", np.asarray(q.res_scale, np.float16))
                w.add_array(name + ".thresholds", np.asarray(calib[name].thresholds, np.float32))
                w.add_array(name + ".ranking", calib[name].ranking)
    w.add_array("output_norm.weight", weights["output_norm.weight"].astype(np.float32))
    if not cfg.tied_embeddings:
        w.add_array("output.weight", weights["output.weight"].astype(np.float16))
    w.write(out)
