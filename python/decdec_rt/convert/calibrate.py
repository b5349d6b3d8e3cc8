"""Calibration: run a model on calibration text and gather, per linear, statistics of its
inputs: mean |x| (AWQ scales, DecDEC static ranking), mean x^2 (non-uniform sensitivity, bit
map), the DecDEC bucket thresholds (max over tokens of the (i+1)-th largest |x|) and a strided
sample of the inputs (AWQ's grid search).

The forward pass is the runtime's own engine (CPU backend) on a model file: Engine.forward_capture
hands over each linear's input. Statistics are streamed window by window, so memory stays bounded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import _core, quant
from ..types import LINEAR_SLOTS

CALIB_WINDOW = 512
# linears that read the same input as another one of their block: their statistics are shared
_SAME_INPUT = {"attn_k": "attn_q", "attn_v": "attn_q", "ffn_up": "ffn_gate"}


@dataclass
class InputStats:
    d_in: int
    n: int = 0
    abs_sum: np.ndarray = None        # f64 [d_in]
    sq_sum: np.ndarray = None         # f64 [d_in]
    thresholds: np.ndarray = None     # f32 [d_in], running max of the sorted |x|
    samples: list = field(default_factory=list)   # f32 [n_i, d_in] pieces

    def add(self, x: np.ndarray, stride: int) -> None:
        if self.abs_sum is None:
            self.abs_sum, self.sq_sum = np.zeros(self.d_in), np.zeros(self.d_in)
            self.thresholds = np.zeros(self.d_in, np.float32)
        a = np.abs(x)
        self.n += x.shape[0]
        self.abs_sum += a.sum(axis=0, dtype=np.float64)
        self.sq_sum += (a.astype(np.float64) ** 2).sum(axis=0)
        self.thresholds = np.maximum(self.thresholds, quant.calibrate_thresholds(x))
        if stride > 0:
            self.samples.append(x[::stride].copy())

    @property
    def mean_abs(self) -> np.ndarray:
        return self.abs_sum / max(self.n, 1)

    @property
    def mean_sq(self) -> np.ndarray:
        return self.sq_sum / max(self.n, 1)

    @property
    def sample(self) -> np.ndarray:
        return np.concatenate(self.samples, axis=0)

    @property
    def ranking(self) -> np.ndarray:
        """Channels by mean |x|, descending (ties: lowest index), as quant.static_ranking."""
        return np.argsort(-self.mean_abs, kind="stable").astype(np.int32)


def calibration_windows(ids, n_tokens: int, window: int = CALIB_WINDOW) -> list:
    """Non-overlapping windows of `window` tokens covering the first n_tokens of ids (the last
    one may be shorter, but at least 2 tokens)."""
    ids = list(ids)[:n_tokens]
    out = [ids[s:s + window] for s in range(0, len(ids), window)]
    return [w for w in out if len(w) >= 2]


def collect_stats(path: str, windows: list, sample_tokens: int = 0, progress: bool = False,
                  desc: str = "calibrate", kv_cache: str = "f16") -> dict:
    """{linear name: InputStats} over `windows` (lists of ids), running the model file `path`
    with the engine (its KV cache of type `kv_cache`: the runtime's default, f16). sample_tokens
    > 0 keeps about that many input rows per linear, evenly strided."""
    from tqdm import tqdm
    eng = _core.Engine(path, device="cpu", verify_checksums=False,
                       max_seq_len=max(len(w) for w in windows), kv_cache=kv_cache)
    total = sum(len(w) for w in windows)
    stride = max(1, total // sample_tokens) if sample_tokens > 0 else 0
    stats: dict[str, InputStats] = {}

    def capture(layer, slot, x):
        name = f"blk.{layer}.{LINEAR_SLOTS[slot]}"
        stats.setdefault(name, InputStats(x.shape[1])).add(x, stride)
    bar = tqdm(total=total, desc=desc, unit="tok", disable=not progress)
    for w in windows:
        eng.reset()
        eng.forward_capture(np.asarray(w, np.int32), capture)
        bar.update(len(w))
    bar.close()
    for name in list(stats):
        layer, slot = name.rsplit(".", 1)
        for other, first in _SAME_INPUT.items():
            if first == slot:
                stats[f"{layer}.{other}"] = stats[name]
    return stats
