"""Tensor type ids and sizes of the .ddrt format: the numpy mirror of cpp/layout.h.

Values are part of the file format (docs/format.md); tests/python/test_layout.py checks them
against the C++ definitions.
"""
from __future__ import annotations

import enum

BLOCK_CODES = 32   # codes per packed block
CHUNK = 1024       # DecDEC selection chunk along d_in
BUCKETS = 32       # DecDEC approximate top-k buckets
RES_ZERO = 8       # residual nibble offset (nibble = code + 8)
RES_MAX_CODE = 7   # residual codes are -7..7

# Linear slots inside a layer; linear_id = layer * 7 + slot (DecDEC random mode salt).
LINEAR_SLOTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# Which k_chunk kind each slot uses.
SLOT_KIND = {"attn_q": "qkv", "attn_k": "qkv", "attn_v": "qkv", "attn_output": "o",
             "ffn_gate": "gate_up", "ffn_up": "gate_up", "ffn_down": "down"}
KINDS = ("qkv", "o", "gate_up", "down")
# the KV cache element types (backend.h KvType) and their bytes per cached key / value element
KV_ELEM_BYTES = {"f16": 2, "f32": 4}
KV_CACHES = tuple(KV_ELEM_BYTES)  # ("f16", "f32"); the first is the default


class TType(enum.IntEnum):
    F32 = 0
    F16 = 1
    BF16 = 2
    I32 = 3
    U8 = 4
    UQ2_G32 = 16
    UQ2_G64 = 17
    UQ2_G128 = 18
    UQ3_G32 = 19
    UQ3_G64 = 20
    UQ3_G128 = 21
    UQ4_G32 = 22
    UQ4_G64 = 23
    UQ4_G128 = 24
    UQ8_G32 = 25
    UQ8_G64 = 26
    UQ8_G128 = 27
    LUT3 = 40
    LUT4 = 41
    RES4 = 48


_BITS = (2, 3, 4, 8)
_GROUPS = (32, 64, 128)


def is_uniform(t: int) -> bool:
    return 16 <= int(t) <= 27


def is_lut(t: int) -> bool:
    return int(t) in (TType.LUT3, TType.LUT4)


def is_float(t: int) -> bool:
    return int(t) in (TType.F32, TType.F16, TType.BF16)


def type_bits(t: int) -> int:
    if is_uniform(t):
        return _BITS[(int(t) - 16) // 3]
    return {TType.LUT3: 3, TType.LUT4: 4}.get(TType(int(t)), 0) if int(t) in TType._value2member_map_ else 0


def type_group(t: int) -> int:
    return _GROUPS[(int(t) - 16) % 3] if is_uniform(t) else 0


def uniform_type(bits: int, group: int) -> TType:
    if bits not in _BITS or group not in _GROUPS:
        raise ValueError(f"no uniform type for bits={bits}, group_size={group} "
                         f"(bits in {_BITS}, group_size in {_GROUPS})")
    return TType(16 + 3 * _BITS.index(bits) + _GROUPS.index(group))


def lut_type(bits: int) -> TType:
    if bits not in (3, 4):
        raise ValueError(f"non-uniform (LUT) types have 3 or 4 bits, not {bits}")
    return TType.LUT3 if bits == 3 else TType.LUT4


def block_bytes(bits: int) -> int:
    return 4 * bits


def n_blocks(d_in: int) -> int:
    return (d_in + BLOCK_CODES - 1) // BLOCK_CODES


def n_groups(d_in: int, group: int) -> int:
    return (d_in + group - 1) // group


def row_code_bytes(d_in: int, bits: int) -> int:
    return n_blocks(d_in) * block_bytes(bits)


def res_row_bytes(d_out: int) -> int:
    return (d_out + 1) // 2


def tensor_bytes(t: int, shape) -> int:
    """Bytes of a tensor of type t and shape (outermost first). Mirrors layout.h tensor_bytes."""
    shape = tuple(int(s) for s in shape)
    n = 1
    for s in shape:
        if s < 0:
            raise ValueError(f"negative dimension in shape {shape}")
        n *= s
    t = int(t)
    if t in (TType.F32, TType.I32):
        return 4 * n
    if t in (TType.F16, TType.BF16):
        return 2 * n
    if t == TType.U8:
        return n
    if len(shape) != 2:
        raise ValueError(f"type {t} needs a 2-D shape, got {shape}")
    rows, cols = shape
    if is_uniform(t):
        b, g = type_bits(t), type_group(t)
        return rows * row_code_bytes(cols, b) + 2 * 2 * rows * n_groups(cols, g)
    if is_lut(t):
        b = type_bits(t)
        return rows * row_code_bytes(cols, b) + 2 * rows * (1 << b)
    if t == TType.RES4:
        return rows * res_row_bytes(cols)
    raise ValueError(f"unknown tensor type id {t}")
