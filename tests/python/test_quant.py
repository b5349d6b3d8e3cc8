"""decdec_rt.quant: quantization error bounds, numpy selection == C++ selection (bit for bit),
and the CPU backend's matmul (_core.cpu_matmul) == dequantize-then-matmul, DecDEC included."""
import time
import zlib

import numpy as np
import pytest

import decdec_rt
from decdec_rt import _core, quant
from decdec_rt.types import TType, is_lut, is_uniform, type_group

MATRIX_TYPES = [t for t in TType if t in (TType.F32, TType.F16, TType.BF16) or is_uniform(t) or is_lut(t)]
MODES = ["exact", "approx", "static", "random"]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


# ---- quantizers -----------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [32, 64, 128])
def test_uniform_error_bound(bits, group):
    W = _rng(bits, group).standard_normal((9, 300)).astype(np.float32)
    W[3] = 0.25                      # a constant row: zero range, no NaN
    W[4, :group] = -1.5              # a constant group
    codes, scale, mn = quant.quantize_uniform(W, bits, group)
    assert codes.dtype == np.uint8 and scale.dtype == np.float16 and mn.dtype == np.float16
    assert scale.shape == mn.shape == (9, -(-300 // group))
    assert int(codes.max()) < (1 << bits)
    W_deq = quant.dequantize_uniform(codes, scale, mn, group)
    assert np.all(np.isfinite(W_deq))
    assert np.array_equal(W_deq[3], np.full(300, np.float16(0.25), np.float32))
    s = np.repeat(scale.astype(np.float32), group, axis=1)[:, :300]
    # half a step, plus what fp16 rounding of min/scale can add at the top of the range
    bound = s / 2 + np.abs(W) * 2e-3 + 1e-6
    assert np.all(np.abs(W - W_deq) <= bound)


def test_lut_beats_per_row_uniform():
    W = _rng("lut").standard_t(4, size=(16, 512)).astype(np.float32)
    for bits in (3, 4):
        codes, lut = quant.quantize_lut(W, bits)
        assert lut.shape == (16, 1 << bits) and lut.dtype == np.float16
        assert np.all(np.diff(lut.astype(np.float32), axis=1) >= 0)
        W_deq = quant.dequantize_lut(codes, lut)
        # codes are the nearest entries of the fp16 table
        d = np.abs(W[:, :, None] - lut.astype(np.float32)[:, None, :])
        assert np.array_equal(np.take_along_axis(d, codes[:, :, None].astype(np.intp), 2)[:, :, 0], d.min(axis=2))
        c_u, s_u, m_u = quant.quantize_uniform(W, bits, 512)     # one group per row
        err_u = np.mean((W - quant.dequantize_uniform(c_u, s_u, m_u, 512)) ** 2)
        assert np.mean((W - W_deq) ** 2) < err_u


def test_lut_sample_weight_pulls_centroids():
    W = _rng("sw").standard_normal((4, 256)).astype(np.float32)
    sw = np.ones(256, np.float32)
    sw[:8] = 1e4                              # these channels must be reproduced almost exactly
    codes, lut = quant.quantize_lut(W, 3, sample_weight=sw)
    codes0, lut0 = quant.quantize_lut(W, 3)
    err = lambda c, l: np.abs(W[:, :8] - quant.dequantize_lut(c, l)[:, :8]).mean()  # noqa: E731
    assert err(codes, lut) < err(codes0, lut0)


def test_residual_quantization():
    R = (_rng("res").standard_normal((33, 200)) * 0.01).astype(np.float32)
    R[5] = 0
    codes, scale = quant.quantize_residual(R)
    assert codes.dtype == np.int8 and scale.dtype == np.float16 and scale.shape == (33,)
    assert np.abs(codes.astype(int)).max() <= 7
    assert scale[5] == 0 and np.all(codes[5] == 0)
    R_deq = quant.dequantize_residual(codes, scale)
    amax = np.abs(R).max(axis=1)
    # never worse than the plain max|r|/7 scale (one of the grid points)
    s1 = (amax / 7).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q1 = np.clip(np.where(s1[:, None] > 0, np.rint(R / s1[:, None]), 0), -7, 7)
    err1 = ((q1 * s1[:, None] - R) ** 2).sum(axis=1)
    assert np.all(((R_deq - R) ** 2).sum(axis=1) <= err1 * (1 + 1e-6))
    # the clipping ratio is in [0.5, 1]: error of unclipped entries at most half a step
    s = scale.astype(np.float32)[:, None]
    inside = np.abs(R) <= 7 * s
    assert np.all(np.abs(R_deq - R)[inside] <= (s / 2 * 1.0001 + 1e-9).repeat(200, 1)[inside])
    assert _rel(R_deq, R) < 0.15
    assert np.array_equal(quant.unpack_residual(quant.pack_residual(codes), 33, 200), codes)


def test_float_types_round_trip():
    W = _rng("f").standard_normal((3, 50)).astype(np.float32)
    for t, tol in ((TType.F32, 0), (TType.F16, 1e-3), (TType.BF16, 8e-3)):
        buf, W_deq = quant.quantize(W, t)
        assert np.array_equal(W_deq, quant.dequantize(t, W.shape, buf))
        assert np.abs(W_deq - W).max() <= tol * np.abs(W).max()
    with pytest.raises(ValueError):
        quant.quantize(W, TType.RES4)


def test_conversion_is_fast():
    """SmolLM2-135M has 210 linears of ~0.5M weights: each must take well under a second."""
    W = _rng("fast").standard_normal((1536, 576)).astype(np.float32)
    t0 = time.perf_counter()
    _, W_deq = quant.quantize(W, TType.UQ3_G128)
    quant.quantize_residual(W - W_deq)
    assert time.perf_counter() - t0 < 2.0


# ---- selection ------------------------------------------------------------------------------
def _calib(d_in, key):
    X = _rng("calib", d_in, key).standard_normal((6, d_in)).astype(np.float32)
    return quant.calibrate_thresholds(X), quant.static_ranking(X)


def _xs(d_in):
    rng = _rng("x", d_in)
    yield "normal", rng.standard_normal(d_in).astype(np.float32)
    yield "ties", (rng.integers(-2, 3, size=d_in) * 0.5).astype(np.float32)
    x = (rng.integers(-2, 3, size=d_in) * 0.5).astype(np.float32)
    x[::3] = np.nan
    yield "nan", x


@pytest.mark.parametrize("d_in", [1, 100, 1024, 1500, 3000])
@pytest.mark.parametrize("mode", MODES)
def test_select_channels_numpy_matches_cpp(mode, d_in):
    thresholds, ranking = _calib(d_in, mode)
    for name, x in _xs(d_in):
        for k_chunk in (1, 4, 33, 512, 1024, 4000):
            for pos in (0, 9):
                kw = dict(thresholds=thresholds, ranking=ranking, seed=123, linear_id=40, pos=pos)
                want = _core.select_channels(mode, k_chunk, x, **kw)
                got = quant.select_channels(mode, k_chunk, x, **kw)
                assert got.dtype == np.int32 and want.dtype == np.int32
                assert np.array_equal(got, want), (name, k_chunk, pos)
                assert np.all(np.diff(got) > 0) and not np.any(np.isnan(x[got]))
                if name == "normal" and mode != "approx":
                    assert got.size == quant.total_k(k_chunk, d_in)


def test_select_exact_is_top_k_with_low_index_ties():
    x = np.array([1, -3, 3, 0.5, np.nan, -3], np.float32)
    assert list(quant.select_channels("exact", 400, x)) == [1, 2]    # chunk_k(400, 6) = 2
    assert list(_core.select_channels("exact", 400, x)) == [1, 2]
    assert quant.select_channels("off", 400, x).size == 0


def test_random_key_matches_splitmix():
    """mix64 against a pure-Python splitmix64 finaliser (wrapping at 2^64)."""
    M = (1 << 64) - 1

    def mix(z):
        z = (z + 0x9E3779B97F4A7C15) & M
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)
    for seed, lid, pos, i in [(0, 0, 0, 0), (2 ** 63 + 5, 209, 12345, 1023), (7, 3, 2 ** 40, 77)]:
        want = mix(mix(mix(seed ^ (lid << 32)) ^ pos) ^ i)
        assert int(quant.random_key(seed, lid, pos, np.array([i]))[0]) == want


def test_random_selection_depends_on_seed_position_and_linear():
    x = np.ones(1024, np.float32)
    base = quant.select_channels("random", 16, x, seed=1, linear_id=2, pos=3)
    for kw in (dict(seed=2, linear_id=2, pos=3), dict(seed=1, linear_id=3, pos=3), dict(seed=1, linear_id=2, pos=4)):
        assert not np.array_equal(base, quant.select_channels("random", 16, x, **kw))


def test_selection_needs_calibration():
    x = np.ones(64, np.float32)
    with pytest.raises(ValueError):
        quant.select_channels("approx", 8, x)
    with pytest.raises(ValueError):
        quant.select_channels("static", 8, x)
    with pytest.raises(ValueError):
        quant.select_channels("topk", 8, x)
    with pytest.raises(decdec_rt.Error):
        _core.select_channels("approx", 8, x)
    with pytest.raises(decdec_rt.Error):
        _core.select_channels("topk", 8, x)


def test_calibration_definitions():
    X = _rng("cal").standard_normal((5, 40)).astype(np.float32)
    t = quant.calibrate_thresholds(X)
    for i in range(40):
        assert t[i] == max(sorted(np.abs(X[n]), reverse=True)[i] for n in range(5))
    assert np.all(np.diff(t) <= 0)
    X = np.array([[1, -2, 2, 0], [1, 2, -2, 0]], np.float32)
    assert list(quant.static_ranking(X)) == [1, 2, 0, 3]    # ties: lowest index first


# ---- the CPU backend's matmul ---------------------------------------------------------------
@pytest.mark.parametrize("ttype", MATRIX_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", [(7, 45), (33, 200), (5, 1100)], ids=str)
def test_cpu_matmul_equals_dequantize_then_matmul(ttype, shape):
    d_out, d_in = shape
    rng = _rng(int(ttype), shape, "mm")
    W = rng.standard_normal(shape).astype(np.float32)
    buf, W_deq = quant.quantize(W, ttype)
    W_cpp = _core.dequantize(int(ttype), d_out, d_in, buf.tobytes())
    for T in (1, 4):
        x = rng.standard_normal((T, d_in)).astype(np.float32)
        y = _core.cpu_matmul(int(ttype), d_out, d_in, buf.tobytes(), x)
        assert y.shape == (T, d_out) and y.dtype == np.float32
        assert _rel(y, x.astype(np.float64) @ W_cpp.T.astype(np.float64)) <= 1e-5


def _linear_with_residual(shape, ttype=TType.UQ3_G128, key=0):
    rng = _rng(shape, key, "dd")
    W = rng.standard_normal(shape).astype(np.float32)
    buf, W_deq = quant.quantize(W, ttype)
    codes, scale = quant.quantize_residual(W - W_deq)
    X = rng.standard_normal((8, shape[1])).astype(np.float32)
    kw = dict(residual=quant.pack_residual(codes).tobytes(), residual_scale=scale,
              thresholds=quant.calibrate_thresholds(X), ranking=quant.static_ranking(X))
    return W, buf, W_deq, quant.dequantize_residual(codes, scale), kw


@pytest.mark.parametrize("shape", [(37, 1100), (64, 300), (9, 2048)], ids=str)
def test_decdec_exact_full_k_is_w_plus_r(shape):
    d_out, d_in = shape
    W, buf, W_deq, R_deq, kw = _linear_with_residual(shape)
    x = _rng(shape, "x").standard_normal((3, d_in)).astype(np.float32)
    y = _core.cpu_matmul(int(TType.UQ3_G128), d_out, d_in, buf.tobytes(), x, mode="exact", k_chunk=1024, **kw)
    ref = x.astype(np.float64) @ (W_deq.astype(np.float64) + R_deq).T
    assert _rel(y, ref) <= 1e-5
    # and compensation brings the output closer to the unquantized W x
    y0 = _core.cpu_matmul(int(TType.UQ3_G128), d_out, d_in, buf.tobytes(), x)
    exact = x.astype(np.float64) @ W.T
    assert _rel(y, exact) < _rel(y0, exact)


@pytest.mark.parametrize("mode", MODES)
def test_decdec_matmul_matches_numpy_selection(mode):
    d_out, d_in = 50, 1500
    W, buf, W_deq, R_deq, kw = _linear_with_residual((d_out, d_in), key=mode)
    x = _rng(mode, "x").standard_normal((5, d_in)).astype(np.float32)
    for k_chunk in (2, 16, 200):
        y = _core.cpu_matmul(int(TType.UQ3_G128), d_out, d_in, buf.tobytes(), x, mode=mode, k_chunk=k_chunk,
                             seed=5, linear_id=11, pos0=30, **kw)
        ref = x.astype(np.float64) @ W_deq.T.astype(np.float64)
        for t in range(5):
            S = quant.select_channels(mode, k_chunk, x[t], thresholds=kw["thresholds"], ranking=kw["ranking"],
                                      seed=5, linear_id=11, pos=30 + t)
            ref[t] += R_deq[:, S].astype(np.float64) @ x[t, S]
        assert _rel(y, ref) <= 1e-5, k_chunk
        # prefill == decode: each row equals a one-row call at its own position
        for t in (0, 4):
            y1 = _core.cpu_matmul(int(TType.UQ3_G128), d_out, d_in, buf.tobytes(), x[t:t + 1], mode=mode,
                                  k_chunk=k_chunk, seed=5, linear_id=11, pos0=30 + t, **kw)
            assert _rel(y1[0], y[t].astype(np.float64)) <= 1e-5   # GEMV vs tiled: fp32 sums in another order


def test_decdec_without_residual_raises():
    W = _rng("nores").standard_normal((8, 64)).astype(np.float32)
    buf, _ = quant.quantize(W, TType.UQ4_G32)
    x = np.ones((1, 64), np.float32)
    with pytest.raises(decdec_rt.Error, match="residual"):
        _core.cpu_matmul(int(TType.UQ4_G32), 8, 64, buf.tobytes(), x, mode="exact", k_chunk=8)
    with pytest.raises(decdec_rt.Error):
        _core.cpu_matmul(int(TType.UQ4_G32), 8, 64, buf.tobytes(), np.ones((1, 63), np.float32))
