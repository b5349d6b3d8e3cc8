"""Base quantizers of the converter (RTN, AWQ, non-uniform), the mixed-precision bit map and
the DecDEC residual. All numpy, vectorized over rows.

Shapes: W [d_out, d_in] (y = W x); X [n_tokens, d_in] calibration inputs of a linear.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .. import quant
from ..types import (LINEAR_SLOTS, TType, is_uniform, lut_type, tensor_bytes, type_bits, type_group,
                     uniform_type)

METHODS = ("rtn", "awq", "nonuniform")
AWQ_GRID = np.arange(20) / 20.0      # alpha in s = mean|x|^alpha (the AWQ paper's grid)


@dataclass
class QLinear:
    """One stored linear: packed data, what it dequantizes to, and its residual."""
    ttype: int
    data: np.ndarray                      # u8 layout.h bytes, or the f16 matrix for F16
    deq: np.ndarray                       # f32 [d_out, d_in]
    res_codes: np.ndarray | None = None   # i8 [d_out, d_in], -7..7
    res_scale: np.ndarray | None = None   # f16 [d_out]

    @property
    def stored_bits(self) -> int:
        return 8 * tensor_bytes(self.ttype, self.deq.shape)


def weight_type(method: str, bits: int, group: int) -> TType:
    if bits == 16:
        return TType.F16
    return lut_type(bits) if method == "nonuniform" else uniform_type(bits, group)


def quantize_linear(W: np.ndarray, ttype: int, sensitivity: np.ndarray | None = None,
                    residual: bool = True) -> QLinear:
    """Q(W) of type ttype (sensitivity [d_in]: k-means weights of LUT types), plus the residual
    R = W - deq(Q(W)) as 4-bit codes with per-output-channel scales."""
    if int(ttype) == TType.F16:
        W16 = W.astype(np.float16)
        return QLinear(int(ttype), W16, W16.astype(np.float32))
    buf, deq = quant.quantize(W, ttype, sample_weight=sensitivity)
    lin = QLinear(int(ttype), np.asarray(buf, np.uint8), np.asarray(deq, np.float32))
    if residual:
        lin.res_codes, lin.res_scale = quant.quantize_residual(W - lin.deq)
    return lin


def dequantized(W: np.ndarray, ttype: int) -> np.ndarray:
    """deq(Q(W)) without packing (what searches need)."""
    if is_uniform(ttype):
        b, g = type_bits(ttype), type_group(ttype)
        return quant.dequantize_uniform(*quant.quantize_uniform(W, b, g), g)
    return quant.quantize(W, ttype)[1]


# ---- AWQ ----------------------------------------------------------------------------------------
def awq_scale(Ws: list[np.ndarray], ttypes: list[int], X: np.ndarray, mean_abs: np.ndarray):
    """Per-input-channel scale s [d_in] for linears Ws sharing the input X [n, d_in]:
    s = mean|x|^alpha (normalised to geometric mid-range 1) for the alpha of the grid whose
    quantized outputs deq(Q(W s)) (x / s) are closest to W x over X. Returns (s, alpha)."""
    X = np.asarray(X, np.float32)
    ref = [X @ W.T for W in Ws]                                   # [n, d_out] each
    base = np.maximum(np.asarray(mean_abs, np.float64), 1e-8)
    best = (np.inf, None, 0.0)
    for alpha in AWQ_GRID:
        s = base ** alpha
        s = (s / np.sqrt(s.max() * s.min())).astype(np.float32)
        err = 0.0
        for W, t, y in zip(Ws, ttypes, ref):
            deq = dequantized(W * s[None, :], t)
            err += float(np.sum(((X / s[None, :]) @ deq.T - y) ** 2))
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


def awq_fold(weights: dict, layer: int, stats: dict, ttype_of, cfg, progress_cb=None) -> dict:
    """Searches and applies AWQ scales of one block in place of `weights` (the FP model):
    the linears' columns are multiplied by s and the op producing their input divided by it
    (attn_norm for q/k/v, v rows for attn_output, ffn_norm for gate/up, up rows for down), so
    the model's function is unchanged and the stored weights become Q(W s).
    Returns {linear name: alpha}."""
    p = f"blk.{layer}."
    alphas = {}

    def search(slots):
        names = [p + s for s in slots]
        st = stats[names[0]]
        return awq_scale([weights[n + ".weight"] for n in names], [ttype_of(n) for n in names],
                         st.sample, st.mean_abs)

    s, a = search(["attn_q", "attn_k", "attn_v"])
    for slot in ("attn_q", "attn_k", "attn_v"):
        weights[p + slot + ".weight"] = weights[p + slot + ".weight"] * s[None, :]
        alphas[p + slot] = a
    weights[p + "attn_norm.weight"] = weights[p + "attn_norm.weight"] / s

    s, a = _awq_o_scale(weights, p, stats, ttype_of, cfg)
    group, hd = cfg.n_heads // cfg.n_kv_heads, cfg.head_dim
    s_v = s.reshape(cfg.n_kv_heads, group, hd)[:, 0, :].reshape(-1)   # the scale of each v row
    weights[p + "attn_output.weight"] = weights[p + "attn_output.weight"] * s[None, :]
    weights[p + "attn_v.weight"] = weights[p + "attn_v.weight"] / s_v[:, None]
    alphas[p + "attn_output"] = a

    s, a = search(["ffn_gate", "ffn_up"])
    for slot in ("ffn_gate", "ffn_up"):
        weights[p + slot + ".weight"] = weights[p + slot + ".weight"] * s[None, :]
        alphas[p + slot] = a
    weights[p + "ffn_norm.weight"] = weights[p + "ffn_norm.weight"] / s

    s, a = search(["ffn_down"])
    weights[p + "ffn_down.weight"] = weights[p + "ffn_down.weight"] * s[None, :]
    weights[p + "ffn_up.weight"] = weights[p + "ffn_up.weight"] / s[:, None]
    alphas[p + "ffn_down"] = a
    return alphas


def _awq_o_scale(weights, p, stats, ttype_of, cfg):
    """attn_output's input channel h*hd + d comes from v row (h // group)*hd + d, so its scale
    must be equal over the query heads sharing a kv head (GQA): mean|x| is averaged over them."""
    st = stats[p + "attn_output"]
    group, hd = cfg.n_heads // cfg.n_kv_heads, cfg.head_dim
    m = st.mean_abs.reshape(cfg.n_kv_heads, group, hd).mean(axis=1, keepdims=True)
    m = np.broadcast_to(m, (cfg.n_kv_heads, group, hd)).reshape(-1)
    name = p + "attn_output"
    return awq_scale([weights[name + ".weight"]], [ttype_of(name)], st.sample, m)


# ---- mixed precision ----------------------------------------------------------------------------
def linear_names(n_layers: int) -> list[str]:
    return [f"blk.{i}.{slot}" for i in range(n_layers) for slot in LINEAR_SLOTS]


def read_bit_map(path: str, n_layers: int, default_bits: int) -> dict:
    """A JSON object of bits per linear ("blk.3.ffn_down"), per layer ("blk.3"), per slot
    ("ffn_down", all layers) or "default"; the most specific key wins. -> {linear name: bits}."""
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    if not isinstance(spec, dict):
        raise ValueError(f"bit map {path}: expected a JSON object of name -> bits")
    names = linear_names(n_layers)
    known = set(names) | {f"blk.{i}" for i in range(n_layers)} | set(LINEAR_SLOTS) | {"default"}
    for k, v in spec.items():
        if k not in known:
            raise ValueError(f"bit map {path}: unknown key {k!r} (a linear like 'blk.0.attn_q', "
                             "a layer like 'blk.0', a slot like 'ffn_down', or 'default')")
        if v not in (3, 4):
            raise ValueError(f"bit map {path}: {k!r} = {v!r}, bits must be 3 or 4")
    out = {}
    for n in names:
        layer, slot = n.rsplit(".", 1)
        out[n] = int(spec.get(n, spec.get(layer, spec.get(slot, spec.get("default", default_bits)))))
    return out


def auto_bit_map(weights: dict, stats: dict, avg_bits: float, method: str, group: int) -> dict:
    """Linears get bits floor(avg) or floor(avg)+1 so that the weight-averaged code bits equal
    avg_bits (to within one linear); the higher precision goes to the linears that lose the most
    output error per weight by dropping to the lower one: sum_i E[x_i^2] sum_o dW_oi^2, with
    dW the RTN error at each precision. -> {linear name: bits}."""
    lo = int(np.floor(avg_bits))
    if not 3 <= avg_bits <= 4:
        raise ValueError(f"--avg-bits {avg_bits}: must be between 3 and 4")
    hi = min(lo + 1, 4)
    gain, size = {}, {}
    for name, st in stats.items():
        W = weights[name + ".weight"]
        err = []
        for b in (lo, hi):
            deq = dequantized(W, uniform_type(b, group))
            err.append(float(((W - deq) ** 2).sum(axis=0) @ st.mean_sq))
        gain[name], size[name] = (err[0] - err[1]) / W.size, W.size
    total = sum(size.values())
    target = (avg_bits - lo) * total          # weights that get `hi` bits
    out, given = {}, 0
    for name in sorted(gain, key=lambda n: -gain[n]):
        take = given + size[name] / 2 <= target
        out[name] = hi if take else lo
        given += size[name] if take else 0
    return out
