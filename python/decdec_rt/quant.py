"""Quantization, packed layouts and DecDEC channel selection in numpy: the mirror of
cpp/layout.h and cpp/decdec.h.

tests/python/test_layout.py and test_quant.py check the packers bit-exact against the C++
accessors and select_channels against the C++ selection. Everything is vectorized over rows
(no per-element Python loops): a SmolLM2-135M conversion takes seconds.

Shapes: a weight matrix W is [d_out, d_in] (y = W x); codes are u8 [d_out, d_in]; the DecDEC
residual is stored transposed, one row of ceil(d_out/2) bytes per input channel.
"""
from __future__ import annotations

import numpy as np

from .types import (BLOCK_CODES, BUCKETS, CHUNK, RES_MAX_CODE, RES_ZERO, TType, is_float, is_lut,
                    is_uniform, n_blocks, n_groups, tensor_bytes, type_bits, type_group)

_F16_MAX = 65504.0


def _as_bytes(buf) -> np.ndarray:
    """The raw bytes of bytes / memoryview / any numpy array, as u8 (no copy when possible)."""
    if isinstance(buf, (bytes, bytearray, memoryview)):
        return np.frombuffer(buf, np.uint8)
    return np.ascontiguousarray(buf).reshape(-1).view(np.uint8)


def _check_matrix(W) -> np.ndarray:
    W = np.asarray(W, np.float32)
    if W.ndim != 2 or W.shape[0] == 0 or W.shape[1] == 0:
        raise ValueError(f"expected a non-empty 2-D weight matrix [d_out, d_in], got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("weight matrix has NaN or infinite values")
    return W


# ---- code blocks (layout.h) -----------------------------------------------------------------
def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """u8 codes [d_out, d_in] -> u8 [d_out, row_code_bytes(d_in, bits)] (blocks of 32 codes)."""
    codes = np.asarray(codes, np.uint8)
    d_out, d_in = codes.shape
    if codes.size and int(codes.max()) >= (1 << bits):
        raise ValueError(f"codes exceed {bits} bits")
    nb = n_blocks(d_in)
    c = np.zeros((d_out, nb * BLOCK_CODES), np.uint8)
    c[:, :d_in] = codes
    c = c.reshape(d_out, nb, BLOCK_CODES)
    if bits == 3:   # low 2 bits as b = 2; bit 2 of code j: bit j % 8 of byte 8 + j / 8
        lo = _pack_strided(c & 3, 2)
        hi = ((c >> 2).reshape(d_out, nb, 4, 8) << np.arange(8, dtype=np.uint8)).sum(axis=3, dtype=np.uint8)
        blocks = np.concatenate([lo, hi], axis=2)
    else:
        blocks = _pack_strided(c, bits)
    return blocks.reshape(d_out, nb * 4 * bits)


def _pack_strided(c: np.ndarray, bits: int) -> np.ndarray:
    """[.., 32] codes -> [.., 4*bits] bytes: code j in byte j % n at bit bits * (j / n)."""
    n = 4 * bits
    sub = c.reshape(c.shape[:-1] + (BLOCK_CODES // n, n)).astype(np.uint8)
    shifts = (bits * np.arange(BLOCK_CODES // n, dtype=np.uint8))[:, None]
    return (sub << shifts).sum(axis=-2, dtype=np.uint8)


def unpack_codes(data: np.ndarray, d_out: int, d_in: int, bits: int) -> np.ndarray:
    """u8 [d_out * row_code_bytes] -> codes u8 [d_out, d_in]."""
    nb = n_blocks(d_in)
    blk = _as_bytes(data)[:d_out * nb * 4 * bits].reshape(d_out, nb, 4 * bits)
    if bits == 3:
        lo = _unpack_strided(blk[:, :, :8], 2)
        hi = (blk[:, :, 8:12, None] >> np.arange(8, dtype=np.uint8)) & 1     # [.., 4, 8]
        c = lo | (hi.reshape(d_out, nb, BLOCK_CODES) << 2)
    else:
        c = _unpack_strided(blk, bits)
    return np.ascontiguousarray(c.reshape(d_out, nb * BLOCK_CODES)[:, :d_in])


def _unpack_strided(b: np.ndarray, bits: int) -> np.ndarray:
    n = 4 * bits
    shifts = (bits * np.arange(BLOCK_CODES // n, dtype=np.uint8))[:, None]
    c = (b[..., None, :] >> shifts) & np.uint8((1 << bits) - 1)              # [.., 32/n, n]
    return c.reshape(b.shape[:-1] + (BLOCK_CODES,))


# ---- uniform (UQ{b}_G{g}) -------------------------------------------------------------------
def _pad_groups(W: np.ndarray, group: int) -> np.ndarray:
    """[d_out, d_in] -> [d_out, ng, group], the short last group padded with its last value."""
    d_out, d_in = W.shape
    ng = n_groups(d_in, group)
    Wp = np.empty((d_out, ng * group), W.dtype)
    Wp[:, :d_in] = W
    Wp[:, d_in:] = W[:, -1:]
    return Wp.reshape(d_out, ng, group)


def _expand_groups(t: np.ndarray, d_in: int, group: int) -> np.ndarray:
    return np.repeat(t, group, axis=1)[:, :d_in]


def quantize_uniform(W, bits: int, group: int):
    """RTN asymmetric per group: scale = (max - min) / (2^b - 1), min = group min, both fp16;
    q = round((w - min) / scale) clipped, computed with the fp16-rounded scale and min.
    Returns codes u8 [d_out, d_in], scale f16 [d_out, ng], mn f16 [d_out, ng]."""
    W = _check_matrix(W)
    if np.abs(W).max() > _F16_MAX:
        raise ValueError("weights exceed the fp16 range: uniform scales/mins are stored as fp16")
    d_in = W.shape[1]
    Wg = _pad_groups(W, group)
    lo, hi = Wg.min(axis=2), Wg.max(axis=2)
    qmax = (1 << bits) - 1
    mn = lo.astype(np.float16)
    scale = ((hi - lo) / np.float32(qmax)).astype(np.float16)
    s32 = _expand_groups(scale.astype(np.float32), d_in, group)
    m32 = _expand_groups(mn.astype(np.float32), d_in, group)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint((W - m32) / s32)
    q = np.where(s32 > 0, q, 0)                 # zero range (or a scale below fp16's): code 0
    codes = np.clip(q, 0, qmax).astype(np.uint8)
    return codes, scale, mn


def dequantize_uniform(codes, scale, mn, group: int) -> np.ndarray:
    codes = np.asarray(codes)
    d_in = codes.shape[1]
    s = _expand_groups(np.asarray(scale, np.float16).astype(np.float32), d_in, group)
    m = _expand_groups(np.asarray(mn, np.float16).astype(np.float32), d_in, group)
    return s * codes.astype(np.float32) + m


def pack_uniform(codes, scale, mn, bits: int, group: int) -> np.ndarray:
    """The exact tensor bytes: codes section | scales f16 [d_out, ng] | mins f16 [d_out, ng]."""
    codes = np.asarray(codes, np.uint8)
    d_out, d_in = codes.shape
    ng = n_groups(d_in, group)
    scale, mn = np.asarray(scale, np.float16), np.asarray(mn, np.float16)
    if scale.shape != (d_out, ng) or mn.shape != (d_out, ng):
        raise ValueError(f"scale/mn must be [{d_out}, {ng}], got {scale.shape} and {mn.shape}")
    return np.concatenate([pack_codes(codes, bits).reshape(-1), _f16_bytes(scale), _f16_bytes(mn)])


def unpack_uniform(buf, d_out: int, d_in: int, bits: int, group: int):
    data = _as_bytes(buf)
    ng = n_groups(d_in, group)
    off = d_out * n_blocks(d_in) * 4 * bits
    scale = data[off:off + 2 * d_out * ng].view(np.float16).reshape(d_out, ng)
    mn = data[off + 2 * d_out * ng:off + 4 * d_out * ng].view(np.float16).reshape(d_out, ng)
    return unpack_codes(data, d_out, d_in, bits), scale.copy(), mn.copy()


def _f16_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype="<f2").reshape(-1).view(np.uint8)


# ---- non-uniform (LUT3, LUT4): per-row weighted 1-D k-means ---------------------------------
def _nearest(W: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of table[o] (ascending) for every W[o, i]; at an exact midpoint
    the lower index. Midpoints and comparisons in float64, which is exact for f32/f16 inputs."""
    t = np.asarray(table, np.float64)
    mids = (t[:, 1:] + t[:, :-1]) / 2                                        # [d_out, K-1]
    W64 = np.asarray(W, np.float64)
    codes = np.zeros(W.shape, np.uint8)
    for k in range(mids.shape[1]):
        codes += W64 > mids[:, k:k + 1]
    return codes


def quantize_lut(W, bits: int, sample_weight=None, iters: int = 20):
    """Per-row lookup table of 2^b fp16 values by weighted 1-D k-means (initialised at the row's
    quantiles); codes are the nearest entries of the fp16-rounded table.
    sample_weight: per-weight importance, broadcastable to W ([d_in] or [d_out, d_in]).
    Returns codes u8 [d_out, d_in], lut f16 [d_out, 2^b] (ascending)."""
    W = _check_matrix(W)
    if bits not in (3, 4):
        raise ValueError(f"LUT types have 3 or 4 bits, not {bits}")
    if np.abs(W).max() > _F16_MAX:
        raise ValueError("weights exceed the fp16 range: lookup tables are stored as fp16")
    K, (d_out, d_in) = 1 << bits, W.shape
    sw = np.ones_like(W) if sample_weight is None else np.broadcast_to(
        np.asarray(sample_weight, np.float32), W.shape)
    cent = np.quantile(W, (np.arange(K) + 0.5) / K, axis=1).T.astype(np.float32)   # [d_out, K]
    rows = np.arange(d_out)[:, None] * K
    for _ in range(iters):
        idx = (rows + _nearest(W, cent)).reshape(-1).astype(np.int64)
        wsum = np.bincount(idx, weights=sw.reshape(-1), minlength=d_out * K).reshape(d_out, K)
        xsum = np.bincount(idx, weights=(sw * W).reshape(-1), minlength=d_out * K).reshape(d_out, K)
        new = np.sort(np.where(wsum > 0, xsum / np.where(wsum > 0, wsum, 1), cent).astype(np.float32), axis=1)
        if np.array_equal(new, cent):
            break
        cent = new
    lut = cent.astype(np.float16)      # ascending (rounding is monotone)
    return _nearest(W, lut), lut


def dequantize_lut(codes, lut) -> np.ndarray:
    return np.take_along_axis(np.asarray(lut, np.float16).astype(np.float32),
                              np.asarray(codes).astype(np.intp), axis=1)


def pack_lut(codes, lut, bits: int) -> np.ndarray:
    """The exact tensor bytes: codes section | lut f16 [d_out, 2^b]."""
    codes, lut = np.asarray(codes, np.uint8), np.asarray(lut, np.float16)
    if lut.shape != (codes.shape[0], 1 << bits):
        raise ValueError(f"lut must be [{codes.shape[0]}, {1 << bits}], got {lut.shape}")
    return np.concatenate([pack_codes(codes, bits).reshape(-1), _f16_bytes(lut)])


def unpack_lut(buf, d_out: int, d_in: int, bits: int):
    data = _as_bytes(buf)
    off = d_out * n_blocks(d_in) * 4 * bits
    lut = data[off:off + 2 * d_out * (1 << bits)].view(np.float16).reshape(d_out, 1 << bits)
    return unpack_codes(data, d_out, d_in, bits), lut.copy()


# ---- DecDEC residual (RES4) -----------------------------------------------------------------
def quantize_residual(R, ratios=np.linspace(0.5, 1.0, 21)):
    """4-bit symmetric, one fp16 scale per output channel; the scale is the clipping ratio
    (times max|r| / 7) of lowest squared error. Returns codes i8 [d_out, d_in] in -7..7 and
    scale f16 [d_out]."""
    R = _check_matrix(R)
    amax = np.abs(R).max(axis=1)
    best_err = np.full(R.shape[0], np.inf)
    best_scale = np.zeros(R.shape[0], np.float16)
    for r in ratios:
        s = (amax * np.float32(r) / np.float32(RES_MAX_CODE)).astype(np.float16)
        q = _residual_codes(R, s)
        err = ((q * s.astype(np.float32)[:, None] - R) ** 2).sum(axis=1)
        better = err < best_err
        best_err, best_scale = np.where(better, err, best_err), np.where(better, s, best_scale)
    return _residual_codes(R, best_scale), best_scale


def _residual_codes(R: np.ndarray, scale: np.ndarray) -> np.ndarray:
    s = scale.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.rint(R / s), 0)
    return np.clip(q, -RES_MAX_CODE, RES_MAX_CODE).astype(np.int8)


def pack_residual(codes) -> np.ndarray:
    """codes i8 [d_out, d_in] -> u8 [d_in, ceil(d_out/2)]: byte p of row i holds
    (c[i][2p] + 8) | (c[i][2p+1] + 8) << 4; a missing odd last element is nibble 8."""
    codes = np.asarray(codes)
    if codes.size and np.abs(codes.astype(np.int16)).max() > RES_MAX_CODE:
        raise ValueError(f"residual codes must lie in -{RES_MAX_CODE}..{RES_MAX_CODE}")
    d_out, d_in = codes.shape
    nib = np.full((d_in, d_out + d_out % 2), RES_ZERO, np.uint8)
    nib[:, :d_out] = (codes.T.astype(np.int16) + RES_ZERO).astype(np.uint8)
    return nib[:, 0::2] | (nib[:, 1::2] << 4)


def unpack_residual(buf, d_out: int, d_in: int) -> np.ndarray:
    rows = _as_bytes(buf)[:d_in * ((d_out + 1) // 2)].reshape(d_in, (d_out + 1) // 2)
    nib = np.stack([rows & 15, rows >> 4], axis=2).reshape(d_in, -1)[:, :d_out]
    return np.ascontiguousarray((nib.astype(np.int16) - RES_ZERO).astype(np.int8).T)


def dequantize_residual(codes, scale) -> np.ndarray:
    return np.asarray(scale, np.float16).astype(np.float32)[:, None] * np.asarray(codes, np.float32)


# ---- any matrix type ------------------------------------------------------------------------
def dequantize(ttype, shape, buf) -> np.ndarray:
    """f32 [d_out, d_in] of a matrix tensor of type `ttype` stored in `buf` (layout.h)."""
    t = int(ttype)
    d_out, d_in = (int(s) for s in shape)
    data = _as_bytes(buf)
    if data.size < tensor_bytes(t, (d_out, d_in)):
        raise ValueError(f"buffer of {data.size} bytes is short of the {tensor_bytes(t, (d_out, d_in))} "
                         f"bytes of a {TType(t).name} [{d_out}, {d_in}] tensor")
    n = d_out * d_in
    if t == TType.F32:
        return data[:4 * n].view("<f4").astype(np.float32).reshape(d_out, d_in)
    if t == TType.F16:
        return data[:2 * n].view("<f2").astype(np.float32).reshape(d_out, d_in)
    if t == TType.BF16:
        return (data[:2 * n].view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(d_out, d_in)
    if is_uniform(t):
        g = type_group(t)
        return dequantize_uniform(*unpack_uniform(data, d_out, d_in, type_bits(t), g), g)
    if is_lut(t):
        return dequantize_lut(*unpack_lut(data, d_out, d_in, type_bits(t)))
    raise ValueError(f"tensor type {t} is not a matrix type")


def _to_bf16_bits(W: np.ndarray) -> np.ndarray:
    """Round to nearest even bf16 (finite inputs)."""
    u = W.astype(np.float32).view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def quantize(W, ttype, sample_weight=None):
    """(buf u8, W_deq f32 [d_out, d_in]) for any matrix type."""
    W = _check_matrix(W)
    t = int(ttype)
    if t == TType.F32:
        buf = np.ascontiguousarray(W, "<f4").reshape(-1).view(np.uint8)
    elif t == TType.F16:
        if np.abs(W).max() > _F16_MAX:
            raise ValueError("weights exceed the fp16 range")
        buf = _f16_bytes(W.astype(np.float16))
    elif t == TType.BF16:
        buf = _to_bf16_bits(W).astype("<u2").reshape(-1).view(np.uint8)
    elif is_uniform(t):
        b, g = type_bits(t), type_group(t)
        codes, scale, mn = quantize_uniform(W, b, g)
        return pack_uniform(codes, scale, mn, b, g), dequantize_uniform(codes, scale, mn, g)
    elif is_lut(t):
        codes, lut = quantize_lut(W, type_bits(t), sample_weight)
        return pack_lut(codes, lut, type_bits(t)), dequantize_lut(codes, lut)
    else:
        raise ValueError(f"tensor type {t} is not a matrix type")
    return buf, dequantize(t, W.shape, buf)


# ---- DecDEC selection (decdec.h) ------------------------------------------------------------
_MODES = ("off", "exact", "approx", "static", "random")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def chunk_k(k_chunk: int, length: int) -> int:
    if k_chunk <= 0 or length <= 0:
        return 0
    return int(min(max((k_chunk * length + CHUNK // 2) // CHUNK, 1), length))


def total_k(k_chunk: int, d_in: int) -> int:
    return sum(chunk_k(k_chunk, min(CHUNK, d_in - c0)) for c0 in range(0, d_in, CHUNK))


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def random_key(seed: int, linear_id: int, pos: int, i) -> np.ndarray:
    """decdec.h random_key for channel indices i (an array): uint64 keys of i's shape (at least 1-D)."""
    def u(v):  # a 1-element uint64 array (arrays wrap silently; numpy scalars warn)
        return np.array([int(v) & 0xFFFFFFFFFFFFFFFF], np.uint64)
    h = mix64(mix64(u(seed) ^ (u(linear_id & 0xFFFFFFFF) << np.uint64(32))) ^ u(pos))
    return mix64(h ^ np.atleast_1d(np.asarray(i, np.int64)).astype(np.uint64))


def approx_floors(thresholds: np.ndarray, d_in: int, k: int) -> np.ndarray:
    """float32 [32] bucket floors, the same float32 operations as decdec.h approx_floors."""
    f32 = np.float32
    a = f32(thresholds[0])
    b = f32(thresholds[min(max(k, 1), d_in) - 1])
    floors = np.empty(BUCKETS, np.float32)
    floors[0] = a
    for j in range(1, 16):
        floors[j] = a - (a - b) * (f32(j) / f32(15.0))
    for j in range(16, BUCKETS):
        floors[j] = b - b * (f32(j - 15) / f32(16.0))
    return floors


def approx_bucket(floors: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The smallest j with v >= floors[j]; BUCKETS for NaN."""
    ge = np.asarray(v, np.float32)[:, None] >= floors[None, :]
    return np.where(ge.any(axis=1), ge.argmax(axis=1), BUCKETS)


def select_channels(mode, k_chunk: int, x, thresholds=None, ranking=None, seed: int = 0,
                    linear_id: int = 0, pos: int = 0) -> np.ndarray:
    """DecDEC channel selection of decdec.h, bit for bit: ascending int32 channel indices.
    Per 1024-chunk, the chunk_k(k_chunk, len) non-NaN channels that come first under the mode's
    order (ties: lowest index). For approx the order is the bucket index, which takes whole
    buckets from the top and fills the rest from the boundary bucket in index order."""
    mode = mode if isinstance(mode, str) else _MODES[int(mode)]
    if mode not in _MODES:
        raise ValueError(f"unknown DecDEC mode {mode!r} (expected one of {', '.join(_MODES)})")
    x = np.asarray(x, np.float32).reshape(-1)
    d_in = x.size
    if mode == "off" or k_chunk <= 0 or d_in == 0:
        return np.zeros(0, np.int32)
    ax = np.abs(x)
    if mode == "approx":
        if thresholds is None:
            raise ValueError("DecDEC approx mode needs calibration thresholds")
        key = approx_bucket(approx_floors(np.asarray(thresholds, np.float32), d_in,
                                          total_k(k_chunk, d_in)), ax)
    elif mode == "exact":
        key = -ax
    elif mode == "static":
        if ranking is None:
            raise ValueError("DecDEC static mode needs a calibration ranking")
        key = np.empty(d_in, np.int64)
        key[np.asarray(ranking, np.int64)] = np.arange(d_in)
    else:
        key = random_key(seed, linear_id, pos, np.arange(d_in))
    out = []
    for c0 in range(0, d_in, CHUNK):
        idx = np.arange(c0, min(d_in, c0 + CHUNK))
        idx = idx[~np.isnan(x[idx])]
        order = np.argsort(key[idx], kind="stable")[:chunk_k(k_chunk, min(CHUNK, d_in - c0))]
        out.append(np.sort(idx[order]))
    return np.concatenate(out).astype(np.int32)


# ---- calibration ----------------------------------------------------------------------------
def calibrate_thresholds(X) -> np.ndarray:
    """t[i] = max over tokens of the (i+1)-th largest |x| of that token's vector. X: [n_tokens, d_in]."""
    A = np.abs(np.asarray(X, np.float32).reshape(-1, np.shape(X)[-1]))
    return (-np.sort(-A, axis=1)).max(axis=0).astype(np.float32)


def static_ranking(X) -> np.ndarray:
    """Channels by mean |x| over tokens, descending (ties: lowest index). X: [n_tokens, d_in]."""
    A = np.abs(np.asarray(X, np.float32).reshape(-1, np.shape(X)[-1]))
    return np.argsort(-A.mean(axis=0, dtype=np.float64), kind="stable").astype(np.int32)
