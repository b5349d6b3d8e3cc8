"""Speed of a named model shape with random weights built in memory (no model file needed).

    decdec_rt.bench("llama3-8b", bits=3, device="cuda")   # or `decdec-rt bench --shape llama3-8b`
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from . import _core
from .errors import InvalidArgumentError
from .types import KV_ELEM_BYTES, LINEAR_SLOTS, tensor_bytes, uniform_type, TType

# HBM read bandwidth measured on the lent H100 (DESIGN.md §5): the "fraction of peak" base where
# nothing is measured (CPU runs). On a CUDA device bench() measures the GPU's own (peak_gbs=None).
PEAK_GBS = 3000.0
_measured_peak: dict = {}


def cuda_index(device: str) -> int | None:
    """The CUDA device index of "cuda" / "cuda:N", None for other devices."""
    if device == "cuda":
        return 0
    if device.startswith("cuda:"):
        return int(device.split(":", 1)[1])
    return None


def measured_peak_gbs(device: str) -> float | None:
    """HBM streaming-read GB/s of a CUDA device (the bandwidth probe, once per process), else None."""
    idx = cuda_index(device)
    if idx is None:
        return None
    if idx not in _measured_peak:
        try:
            _measured_peak[idx] = float(_core.measure_bandwidth(idx)["hbm_read_gbs"])
        except Exception:  # no 2 GiB free, no such device: no measured peak (the caller falls back)
            return None
    return _measured_peak[idx]


def _linear_shapes(c: dict):
    qd, kvd = c["n_heads"] * c["head_dim"], c["n_kv_heads"] * c["head_dim"]
    return {"attn_q": (qd, c["dim"]), "attn_k": (kvd, c["dim"]), "attn_v": (kvd, c["dim"]),
            "attn_output": (c["dim"], qd), "ffn_gate": (c["hidden_dim"], c["dim"]),
            "ffn_up": (c["hidden_dim"], c["dim"]), "ffn_down": (c["dim"], c["hidden_dim"])}


def bytes_per_token(c: dict, bits: int, group: int, context: int, kv_cache: str = "f16") -> dict:
    """Bytes one decode token reads: every linear's weights, the fp16 lm head, the KV cache of
    `context` positions (f16: 2 bytes per element, f32: 4)."""
    if kv_cache not in KV_ELEM_BYTES:
        raise InvalidArgumentError(f'kv_cache must be "f16" or "f32", got {kv_cache!r}')
    t = TType.F16 if bits == 16 else uniform_type(bits, group)
    shapes = _linear_shapes(c)
    linear = c["n_layers"] * sum(tensor_bytes(t, shapes[s]) for s in LINEAR_SLOTS)
    head = tensor_bytes(TType.F16, (c["n_vocab"], c["dim"]))
    kv = c["n_layers"] * 2 * context * c["n_kv_heads"] * c["head_dim"] * KV_ELEM_BYTES[kv_cache]
    return {"linear": linear, "head": head, "kv": kv, "total": linear + head + kv}


def bench(shape: str = "llama3-8b", bits: int = 3, device: str = "cuda", context: int = 512,
          n_decode: int = 128, prefill: int = 512, decdec: str = "off", k_chunk: int | dict = 8, n_tb: int | dict = 0,
          group: int = 128, residual: str = "host", graphs: bool = True, reps: int = 3,
          n_layers: int = 0, seed: int = 0, peak_gbs: float | None = None, kv_cache: str = "f16") -> dict:
    """Decode and prefill speed of a synthetic model of `shape` (see decdec_rt._core.synth_shapes()).

    Decode: greedy tokens after a `context`-token prompt (median of `reps` runs of `n_decode`).
    Prefill: one prompt of `prefill` tokens (median of `reps`). `peak_gbs` (the "fraction of peak"
    base): None measures the CUDA device's HBM read bandwidth, or takes PEAK_GBS on the CPU.
    kv_cache: the KV cache's element type, "f16" or "f32". Returns a dict of the numbers."""
    if shape not in _core.synth_shapes():
        raise InvalidArgumentError(f"unknown shape {shape!r}; known: {', '.join(_core.synth_shapes())}")
    if kv_cache not in KV_ELEM_BYTES:
        raise InvalidArgumentError(f'kv_cache must be "f16" or "f32", got {kv_cache!r}')
    if context < 1 or n_decode < 1 or prefill < 1 or reps < 1:
        raise InvalidArgumentError("context, n_decode, prefill and reps must be >= 1")
    with_res = decdec != "off"
    if peak_gbs is None:  # measured before the model takes the device's memory
        peak_gbs = measured_peak_gbs(device) or PEAK_GBS
    max_seq = max(context + n_decode + 8, prefill)
    t0 = time.perf_counter()
    eng = _core.Engine.synthetic(shape, bits=bits, group=group, with_residual=with_res, seed=seed,
                                 n_layers=n_layers, device=device, max_seq_len=max_seq, residual=residual,
                                 max_batch=min(512, max(prefill, 1)), graphs=graphs, kv_cache=kv_cache)
    load_s = time.perf_counter() - t0
    c = eng.config
    if with_res:
        from .runtime import _k_chunk_list
        eng.set_decdec(decdec, _k_chunk_list(k_chunk), 0, _k_chunk_list(n_tb, "n_tb"))
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, c["n_vocab"], max(prefill, context)).astype(np.int32)

    pre = []
    for _ in range(reps + 1):  # the first run warms up
        eng.reset()
        t0 = time.perf_counter()
        eng.forward(ids[:prefill], False)
        pre.append(prefill / (time.perf_counter() - t0))
    pre = pre[1:]

    dec = []
    for _ in range(reps):
        eng.reset()
        if context > 1:
            eng.forward(ids[:context - 1], False)
        eng.decode_greedy(int(ids[context - 1]), 4)  # records the decode graph (first time)
        eng.synchronize()
        t0 = time.perf_counter()
        eng.decode_greedy(1, n_decode)
        dec.append(n_decode / (time.perf_counter() - t0))
    tok_s = statistics.median(dec)
    b = bytes_per_token(c, bits, group, context + 4 + n_decode // 2, eng.kv_cache)
    gbs = b["total"] * tok_s / 1e9
    return {
        "shape": shape, "bits": bits, "group": group, "device": eng.backend_name,
        "decdec": eng.decdec_mode, "k_chunk": list(eng.decdec_k_chunk), "graphs": graphs,
        "kv_cache": eng.kv_cache, "context": context, "decode_tok_s": tok_s, "ms_per_token": 1000.0 / tok_s,
        "bytes_per_token": b["total"], "weight_bytes_per_token": b["linear"] + b["head"],
        "kv_bytes_per_token": b["kv"],
        "achieved_gbs": gbs, "fraction_of_peak": gbs / peak_gbs, "peak_gbs": peak_gbs,
        "roofline_tok_s": peak_gbs * 1e9 / b["total"],
        "prefill_tokens": prefill, "prefill_tok_s": statistics.median(pre),
        "device_bytes": eng.device_bytes, "load_s": load_s,
        "pcie_bytes_per_token": eng.decdec_bytes_per_token,
        "decdec_device_bytes": eng.decdec_device_bytes,
    }


def format_result(r: dict) -> str:
    return "\n".join([
        f"shape {r['shape']}  {r['bits']}-bit g{r['group']}  on {r['device']}  DecDEC {r['decdec']}"
        f"{' k_chunk ' + str(r['k_chunk']) if r['decdec'] != 'off' else ''}  graphs {'on' if r['graphs'] else 'off'}"
        f"  KV cache {r['kv_cache']}",
        f"  decode   {r['decode_tok_s']:9.1f} tok/s  {r['ms_per_token']:.3f} ms/token at context {r['context']}",
        f"           {r['achieved_gbs']:9.1f} GB/s = {100 * r['fraction_of_peak']:.1f}% of {r['peak_gbs']:.0f} GB/s"
        f"  (roofline {r['roofline_tok_s']:.0f} tok/s; {r['bytes_per_token'] / 1e9:.3f} GB/token)",
        f"  prefill  {r['prefill_tok_s']:9.1f} tok/s  ({r['prefill_tokens']} tokens)",
        f"  memory   {r['device_bytes'] / 2**30:9.2f} GiB on the device; DecDEC fetches "
        f"{r['pcie_bytes_per_token'] / 1e6:.2f} MB/token over PCIe; built in {r['load_s']:.1f} s",
        f"  DecDEC   {r['decdec_device_bytes'] / 1e3:9.1f} KB on the device "
        f"({100 * r['decdec_device_bytes'] / max(r['device_bytes'], 1):.4f} % of the device bytes)",
    ])
