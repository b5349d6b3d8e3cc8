"""An independent numpy forward pass of a .ddrt Llama-style model, written straight from the math.

It shares no code with the C++ engine: weights come from the file through _core.ModelFile and
quant.dequantize, and every step below is the textbook definition, evaluated in float64 by
default; keys and values are rounded to float16 where the engine's KV cache does that (its
default, kv_cache="f16"). Tests compare the runtime's logits against it; tools use it to
calibrate (capture).

    ref = ReferenceModel("model.ddrt")
    logits = ref.forward(ids)                                   # [T, n_vocab]
    logits = ref.forward(ids, decdec={"mode": "exact", "k_chunk": 64})
    logits = ref.forward(ids, kv_cache="f32")                   # keys/values not rounded to f16
    xs = ref.collect_inputs([ids1, ids2])                       # {linear name: [n_tok, d_in] f32}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .types import KINDS, LINEAR_SLOTS, SLOT_KIND, TType, is_float

# capture(linear_id, name, x): x = the linear's float32 input [T, d_in], name = "blk.{i}.attn_q"
CaptureFn = Callable[[int, str, np.ndarray], None]

KV_CACHES = ("f16", "f32")  # the engine's KV cache element types (backend.h KvType)


@dataclass(frozen=True)
class Config:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_vocab: int
    max_seq_len: int
    norm_eps: float
    rope_theta: float
    tied_embeddings: bool
    rope_scaling: dict | None  # llama3: factor, low_freq_factor, high_freq_factor, original_max_seq_len

    @classmethod
    def from_metadata(cls, meta: Mapping) -> "Config":
        def need(key):
            if key not in meta:
                raise ValueError(f"model metadata: missing key '{key}'")
            return meta[key]
        arch = meta.get("general.architecture", "llama")
        if arch != "llama":
            raise ValueError(f"general.architecture = {arch!r}: only 'llama' is supported")
        ints = {k: int(need(f"model.{k}")) for k in
                ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "n_vocab",
                 "max_seq_len")}
        scaling = None
        kind = meta.get("model.rope_scaling.type")
        if kind not in (None, "", "none"):
            if kind != "llama3":
                raise ValueError(f"model.rope_scaling.type = {kind!r}: only 'llama3' is supported")
            scaling = {k: float(need(f"model.rope_scaling.{k}")) for k in
                       ("factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len")}
        cfg = cls(**ints, norm_eps=float(need("model.norm_eps")),
                  rope_theta=float(need("model.rope_theta")),
                  tied_embeddings=bool(meta.get("model.tied_embeddings", False)),
                  rope_scaling=scaling)
        if cfg.n_heads % cfg.n_kv_heads or cfg.head_dim % 2:
            raise ValueError(f"model: n_heads ({cfg.n_heads}) must be a multiple of n_kv_heads "
                             f"({cfg.n_kv_heads}) and head_dim ({cfg.head_dim}) even")
        return cfg

    def linear_shape(self, slot: str) -> tuple[int, int]:
        """[d_out, d_in] of a linear slot."""
        q, kv = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        return {"attn_q": (q, self.dim), "attn_k": (kv, self.dim), "attn_v": (kv, self.dim),
                "attn_output": (self.dim, q), "ffn_gate": (self.hidden_dim, self.dim),
                "ffn_up": (self.hidden_dim, self.dim), "ffn_down": (self.dim, self.hidden_dim)}[slot]

    def weight_shapes(self) -> dict:
        """{tensor name: shape} of every weight a model of this config has (docs/model_keys.md)."""
        want = {"token_embd.weight": (self.n_vocab, self.dim), "output_norm.weight": (self.dim,)}
        if not self.tied_embeddings:
            want["output.weight"] = (self.n_vocab, self.dim)
        for i in range(self.n_layers):
            want[f"blk.{i}.attn_norm.weight"] = want[f"blk.{i}.ffn_norm.weight"] = (self.dim,)
            for slot in LINEAR_SLOTS:
                want[linear_name(i, slot) + ".weight"] = self.linear_shape(slot)
        return want


def rope_inv_freq(cfg: Config) -> np.ndarray:
    """inv_freq[i] = theta^(-2i/head_dim), i < head_dim/2, with Llama-3.1 scaling if configured.
    Returned as float32 (the angle is float32(pos) * inv_freq in float32)."""
    half = cfg.head_dim // 2
    inv = cfg.rope_theta ** (-2.0 * np.arange(half, dtype=np.float64) / cfg.head_dim)
    s = cfg.rope_scaling
    if s is not None:
        # wavelengths longer than old_len/low_freq_factor are slowed by `factor`, shorter than
        # old_len/high_freq_factor kept; in between interpolate linearly in old_len/wavelen.
        wavelen = 2.0 * np.pi / inv
        old_len, lo, hi, factor = (s["original_max_seq_len"], s["low_freq_factor"],
                                   s["high_freq_factor"], s["factor"])
        smooth = (old_len / wavelen - lo) / (hi - lo)
        mid = (1.0 - smooth) * inv / factor + smooth * inv
        inv = np.where(wavelen > old_len / lo, inv / factor,
                       np.where(wavelen < old_len / hi, inv, mid))
    return inv.astype(np.float32)


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x [T, dim] / sqrt(mean(x^2) + eps) * w [dim]"""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """[..., head_dim]: (x1, x2) -> (-x2, x1), halves of the last axis (HF order)."""
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def linear_name(layer: int, slot: str) -> str:
    return f"blk.{layer}.{slot}"


class ReferenceModel:
    """Dequantized weights held as `dtype` arrays; forward() evaluates a fresh context."""

    def __init__(self, path: str, dtype=np.float64):
        from . import _core
        mf = _core.ModelFile(str(path))
        meta = dict(mf.metadata)
        infos = {t["name"]: t for t in mf.tensors}
        arrays = {name: _load_tensor(mf, info) for name, info in infos.items()
                  if not name.endswith((".residual", ".residual_scale"))}
        residuals = {}
        for name in infos:
            if name.endswith(".residual"):
                lin = name[: -len(".residual")]
                residuals[lin] = _load_residual(mf, infos, lin)
        self._setup(meta, arrays, residuals, dtype)

    @classmethod
    def from_arrays(cls, meta: Mapping, arrays: Mapping[str, np.ndarray],
                    residuals: Mapping[str, np.ndarray] | None = None, dtype=np.float64):
        """From in-memory tensors: arrays[name] = dequantized float matrix / vector (thresholds
        f32, ranking i32), residuals[linear name] = R_deq [d_out, d_in]. No file needed."""
        self = cls.__new__(cls)
        self._setup(dict(meta), dict(arrays), dict(residuals or {}), dtype)
        return self

    def _setup(self, meta, arrays, residuals, dtype):
        self.meta = meta
        self.cfg = Config.from_metadata(meta)
        self.dtype = np.dtype(dtype)
        self.inv_freq = rope_inv_freq(self.cfg)  # f32 [head_dim/2]
        self.thresholds = {k[: -len(".thresholds")]: np.asarray(v, np.float32)
                           for k, v in arrays.items() if k.endswith(".thresholds")}
        self.ranking = {k[: -len(".ranking")]: np.asarray(v, np.int32)
                        for k, v in arrays.items() if k.endswith(".ranking")}
        self.w = {k: np.asarray(v, self.dtype) for k, v in arrays.items()
                  if k.endswith(".weight")}
        self.residuals = {k: np.asarray(v, self.dtype) for k, v in residuals.items()}
        self._check_shapes()

    def _check_shapes(self):
        for name, shape in self.cfg.weight_shapes().items():
            if name not in self.w:
                raise ValueError(f"model: tensor '{name}' missing")
            if tuple(self.w[name].shape) != shape:
                raise ValueError(f"model: tensor '{name}' has shape {tuple(self.w[name].shape)}, "
                                 f"expected {shape}")
        for lin, r in self.residuals.items():
            if r.shape != self.w[lin + ".weight"].shape:
                raise ValueError(f"model: residual of '{lin}' has shape {r.shape}")

    # ---- the forward pass ------------------------------------------------------------------
    def forward(self, ids, decdec: Mapping | None = None, capture: CaptureFn | None = None,
                logits: bool = True, kv_cache: str = "f16") -> np.ndarray:
        """logits [T, n_vocab] (dtype) for tokens ids at positions 0..T-1 of a fresh context.
        logits=False returns the final normalised hidden state [T, dim] instead. kv_cache: as the
        engine's KV cache, "f16" attends over keys (after rope) and values rounded to float16,
        "f32" over them as computed."""
        c = self.cfg
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache {kv_cache!r}: expected one of {KV_CACHES}")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        T = len(ids)
        if T == 0 or T > c.max_seq_len:
            raise ValueError(f"forward: need 1..{c.max_seq_len} tokens, got {T}")
        bad = ids[(ids < 0) | (ids >= c.n_vocab)]
        if len(bad):
            raise ValueError(f"forward: token id {int(bad[0])} outside [0, {c.n_vocab})")
        dd = _DecdecSpec.parse(decdec)
        cos, sin = self.rope_tables(T)                          # [T, head_dim] each
        x = self.w["token_embd.weight"][ids]                    # [T, dim] residual stream
        for i in range(c.n_layers):
            x = x + self._attention(i, rmsnorm(x, self.w[f"blk.{i}.attn_norm.weight"], c.norm_eps),
                                    cos, sin, dd, capture, kv_cache)
            x = x + self._ffn(i, rmsnorm(x, self.w[f"blk.{i}.ffn_norm.weight"], c.norm_eps),
                              dd, capture)
        h = rmsnorm(x, self.w["output_norm.weight"], c.norm_eps)  # [T, dim]
        if not logits:
            return h
        head = self.w["token_embd.weight" if c.tied_embeddings else "output.weight"]
        return h @ head.T                                       # [T, n_vocab]

    def rope_tables(self, T: int, pos0: int = 0):
        """cos, sin [T, head_dim] for positions pos0..pos0+T-1 (angles in float32)."""
        pos = np.arange(pos0, pos0 + T, dtype=np.float32)
        angle = pos[:, None] * self.inv_freq[None, :]           # f32 [T, head_dim/2]
        angle = np.concatenate([angle, angle], axis=1).astype(self.dtype)
        return np.cos(angle), np.sin(angle)

    def _attention(self, i, h, cos, sin, dd, capture, kv_cache):
        c = self.cfg
        T = h.shape[0]
        q = self.linear(i, "attn_q", h, dd, capture).reshape(T, c.n_heads, c.head_dim)
        k = self.linear(i, "attn_k", h, dd, capture).reshape(T, c.n_kv_heads, c.head_dim)
        v = self.linear(i, "attn_v", h, dd, capture).reshape(T, c.n_kv_heads, c.head_dim)
        q = q * cos[:, None] + rotate_half(q) * sin[:, None]
        k = k * cos[:, None] + rotate_half(k) * sin[:, None]
        if kv_cache == "f16":  # the cache stores float32 keys and values rounded to float16
            k = k.astype(np.float32).astype(np.float16).astype(self.dtype)
            v = v.astype(np.float32).astype(np.float16).astype(self.dtype)
        group = c.n_heads // c.n_kv_heads                       # query heads per kv head
        k = np.repeat(k, group, axis=1)                         # [T, n_heads, head_dim]
        v = np.repeat(v, group, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(c.head_dim)  # [n_heads, T, T]
        future = np.triu(np.ones((T, T), dtype=bool), k=1)      # s > t
        scores = np.where(future[None], -np.inf, scores)
        out = np.einsum("hts,shd->thd", softmax(scores), v)     # [T, n_heads, head_dim]
        return self.linear(i, "attn_output", out.reshape(T, c.n_heads * c.head_dim), dd, capture)

    def _ffn(self, i, h, dd, capture):
        gate = self.linear(i, "ffn_gate", h, dd, capture)      # [T, hidden_dim]
        up = self.linear(i, "ffn_up", h, dd, capture)
        return self.linear(i, "ffn_down", silu(gate) * up, dd, capture)

    def linear(self, layer: int, slot: str, x: np.ndarray, dd=None, capture=None) -> np.ndarray:
        """y [T, d_out] = x [T, d_in] W^T, plus the DecDEC term R[:, S_t] x[t, S_t] per row t
        (row t = position t) when dd is active."""
        name = linear_name(layer, slot)
        linear_id = 7 * layer + LINEAR_SLOTS.index(slot)
        if capture is not None:
            capture(linear_id, name, x.astype(np.float32))
        y = x @ self.w[name + ".weight"].T
        k_chunk = dd.k_chunk(slot) if dd is not None else 0
        if k_chunk <= 0:
            return y
        from . import quant
        if name not in self.residuals:
            raise ValueError(f"DecDEC: model has no residual for '{name}'")
        R = self.residuals[name]                                # [d_out, d_in]
        x32 = x.astype(np.float32)
        for t in range(x.shape[0]):
            S = quant.select_channels(dd.mode, k_chunk, x32[t], thresholds=self.thresholds.get(name),
                                      ranking=self.ranking.get(name), seed=dd.seed,
                                      linear_id=linear_id, pos=t)
            S = np.asarray(S, dtype=np.int64)
            y[t] += R[:, S] @ x[t, S]
        return y

    def collect_inputs(self, sequences, decdec=None, kv_cache: str = "f16") -> dict[str, np.ndarray]:
        """Each linear's float32 inputs over all tokens of `sequences`:
        {linear name: [n_tokens, d_in]} (for calibration)."""
        got: dict[str, list] = {}

        def cap(_lid, name, x):
            got.setdefault(name, []).append(x)
        for ids in sequences:
            self.forward(ids, decdec=decdec, capture=cap, logits=False, kv_cache=kv_cache)
        return {k: np.concatenate(v, axis=0) for k, v in got.items()}


@dataclass(frozen=True)
class _DecdecSpec:
    mode: str
    k_chunks: dict  # kind -> k_chunk
    seed: int

    @classmethod
    def parse(cls, d: Mapping | None):
        if d is None:
            return None
        mode = d.get("mode", "off")
        if mode not in ("off", "exact", "approx", "static", "random"):
            raise ValueError(f"DecDEC mode {mode!r}: expected off, exact, approx, static, random")
        kc = d.get("k_chunk", 0)
        if isinstance(kc, Mapping):
            unknown = set(kc) - set(KINDS)
            if unknown:
                raise ValueError(f"DecDEC k_chunk: unknown kinds {sorted(unknown)} (kinds: {KINDS})")
            k_chunks = {kind: int(kc.get(kind, 0)) for kind in KINDS}
        else:
            k_chunks = {kind: int(kc) for kind in KINDS}
        if mode == "off":
            return None
        return cls(mode, k_chunks, int(d.get("seed", 0)))

    def k_chunk(self, slot: str) -> int:
        return self.k_chunks[SLOT_KIND[slot]]


def _raw(mf, name) -> np.ndarray:
    return np.frombuffer(mf.tensor_data(name), dtype=np.uint8)


def _load_tensor(mf, info) -> np.ndarray:
    """A tensor as a float32 array (matrices dequantized), int32 for I32."""
    t, shape, buf = int(info["type"]), tuple(info["shape"]), _raw(mf, info["name"])
    if t == TType.I32:
        return buf.view(np.int32).reshape(shape)
    if t == TType.U8:
        return buf.reshape(shape)
    if is_float(t):
        return _float_values(t, buf).reshape(shape)
    from . import quant
    return np.asarray(quant.dequantize(t, shape, buf), np.float32).reshape(shape)


def _float_values(t, buf) -> np.ndarray:
    if t == TType.F32:
        return buf.view(np.float32)
    if t == TType.F16:
        return buf.view(np.float16).astype(np.float32)
    return (buf.view(np.uint16).astype(np.uint32) << 16).view(np.float32)  # bf16


def _load_residual(mf, infos, lin) -> np.ndarray:
    """R_deq [d_out, d_in] of linear `lin` from its RES4 codes and f16 scales."""
    from . import quant
    info = infos[lin + ".residual"]
    if lin + ".residual_scale" not in infos:
        raise ValueError(f"model: '{lin}.residual' has no '{lin}.residual_scale'")
    d_in, d_out = (int(s) for s in info["shape"])
    codes = quant.unpack_residual(_raw(mf, lin + ".residual"), d_out, d_in)
    scale = _raw(mf, lin + ".residual_scale").view(np.float16)
    return np.asarray(quant.dequantize_residual(codes, scale), np.float32)
