"""numpy packers (decdec_rt.quant) vs the C++ layout.h accessors (_core.dequantize,
_core.residual_codes): bit-exact for every matrix type and odd shapes."""
import zlib

import numpy as np
import pytest

import decdec_rt  # noqa: F401  (registers the exception translation)
from decdec_rt import _core, quant
from decdec_rt.types import TType, is_lut, is_uniform, tensor_bytes, type_bits, type_group

MATRIX_TYPES = [t for t in TType if t in (TType.F32, TType.F16, TType.BF16) or is_uniform(t) or is_lut(t)]
SHAPES = [(1, 1), (3, 31), (5, 33), (2, 64), (7, 100), (4, 130), (3, 257)]


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@pytest.mark.parametrize("ttype", MATRIX_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_quantize_bytes_match_cpp_dequantize(ttype, shape):
    W = _rng(int(ttype), shape).standard_normal(shape).astype(np.float32)
    buf, W_deq = quant.quantize(W, ttype)
    assert buf.dtype == np.uint8 and buf.size == tensor_bytes(ttype, shape)
    cpp = _core.dequantize(int(ttype), shape[0], shape[1], buf.tobytes())
    assert cpp.shape == shape and cpp.dtype == np.float32
    # the float types involve no arithmetic; quantized ones only s * q + m (fp32)
    tol = 0 if ttype in (TType.F32, TType.F16, TType.BF16) else 1e-6
    np.testing.assert_allclose(cpp, quant.dequantize(ttype, shape, buf), rtol=tol, atol=tol)
    np.testing.assert_allclose(cpp, W_deq, rtol=tol, atol=tol)


@pytest.mark.parametrize("ttype", [t for t in MATRIX_TYPES if is_uniform(t) or is_lut(t)], ids=lambda t: t.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_codes_bit_exact(ttype, shape):
    """With identity tables (scale 1, min 0 / lut[k] = k) the C++ accessors return the codes."""
    d_out, d_in = shape
    bits = type_bits(ttype)
    codes = _rng(int(ttype), shape, "codes").integers(0, 1 << bits, size=shape).astype(np.uint8)
    if is_uniform(ttype):
        ng = -(-d_in // type_group(ttype))
        buf = quant.pack_uniform(codes, np.ones((d_out, ng), np.float16), np.zeros((d_out, ng), np.float16),
                                 bits, type_group(ttype))
        c2, s2, m2 = quant.unpack_uniform(buf, d_out, d_in, bits, type_group(ttype))
        assert np.all(s2 == 1) and np.all(m2 == 0)
    else:
        lut = np.tile(np.arange(1 << bits, dtype=np.float16), (d_out, 1))
        buf = quant.pack_lut(codes, lut, bits)
        c2, lut2 = quant.unpack_lut(buf, d_out, d_in, bits)
        assert np.array_equal(lut2, lut)
    assert buf.size == tensor_bytes(ttype, shape)
    assert np.array_equal(c2, codes)
    assert np.array_equal(_core.dequantize(int(ttype), d_out, d_in, buf.tobytes()), codes.astype(np.float32))


def test_block_layout_by_hand():
    """One 4-bit block: byte j = c[j] | c[j+16] << 4; one 3-bit block: low bits as 2-bit, high bits after."""
    c = np.arange(32, dtype=np.uint8)[None, :] % 16
    b = quant.pack_codes(c, 4)[0]
    assert list(b) == [int(c[0, j]) | int(c[0, j + 16]) << 4 for j in range(16)]
    c3 = (np.arange(32, dtype=np.uint8)[None, :] * 5) % 8
    b3 = quant.pack_codes(c3, 3)[0]
    for j in range(32):
        lo = (b3[j % 8] >> (2 * (j // 8))) & 3
        hi = (b3[8 + j // 8] >> (j % 8)) & 1
        assert lo | (hi << 2) == c3[0, j]


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (8, 3), (33, 64), (129, 17)], ids=str)
def test_residual_rows_match_cpp(shape):
    d_out, d_in = shape
    codes = _rng(shape, "res").integers(-7, 8, size=shape).astype(np.int8)
    rows = quant.pack_residual(codes)
    assert rows.shape == (d_in, (d_out + 1) // 2) and rows.dtype == np.uint8
    assert rows.size == tensor_bytes(TType.RES4, (d_in, d_out))
    assert np.array_equal(_core.residual_codes(rows.tobytes(), d_out, d_in), codes)
    assert np.array_equal(quant.unpack_residual(rows, d_out, d_in), codes)
    if d_out % 2:
        assert np.all(rows[:, -1] >> 4 == 8)   # a missing odd last element: nibble 8
    # byte p of row i = (c[2p] + 8) | (c[2p+1] + 8) << 4
    assert rows[0, 0] & 15 == codes[0, 0] + 8


def test_unpack_accepts_bytes_and_arrays():
    W = _rng("any").standard_normal((5, 70)).astype(np.float32)
    buf, _ = quant.quantize(W, TType.UQ3_G32)
    a = quant.dequantize(TType.UQ3_G32, (5, 70), buf)
    assert np.array_equal(a, quant.dequantize(TType.UQ3_G32, (5, 70), buf.tobytes()))
    with pytest.raises(ValueError):
        quant.dequantize(TType.UQ3_G32, (5, 70), buf[:-1])


def test_cpp_rejects_short_data():
    with pytest.raises(decdec_rt.Error):
        _core.dequantize(int(TType.UQ4_G32), 4, 64, b"\0" * 10)
    with pytest.raises(decdec_rt.Error):
        _core.dequantize(int(TType.RES4), 4, 64, b"\0" * 4096)
