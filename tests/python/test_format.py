"""The .ddrt file: DdrtWriter (numpy) -> decdec_rt._core.ModelFile (C++) round trips, checksums,
and corrupted files raising decdec_rt.FormatError. Spec: docs/format.md."""
import os
import zlib

import numpy as np
import pytest

import decdec_rt
from decdec_rt import _core
from decdec_rt.ddrt import DdrtWriter, ValueType, read_ddrt
from decdec_rt.types import TType, is_float, tensor_bytes

V = ValueType

# (key, value, vtype, what the reader gives back)
SCALARS = [
    ("v.u8", 200, V.U8, 200),
    ("v.i8", -5, V.I8, -5),
    ("v.u16", 60000, V.U16, 60000),
    ("v.i16", -30000, V.I16, -30000),
    ("v.u32", 4_000_000_000, V.U32, 4_000_000_000),
    ("v.i32", -2_000_000_000, V.I32, -2_000_000_000),
    ("v.f32", 1.5, V.F32, 1.5),
    ("v.bool", True, V.BOOL, True),
    ("v.string", "héllo ▁wörld", V.STRING, "héllo ▁wörld"),
    ("v.u64", 2**64 - 1, V.U64, 2**64 - 1),
    ("v.i64", -(2**40), V.I64, -(2**40)),
    ("v.f64", 3.25, V.F64, 3.25),
]
ARRAYS = [
    ("a.u8", np.array([0, 1, 255], np.uint8), None, b"\x00\x01\xff"),
    ("a.i8", np.array([-128, 0, 127], np.int8), None, b"\x80\x00\x7f"),
    ("a.u16", [65535, 1], V.U16, [65535, 1]),
    ("a.i16", np.array([-32768, 2], np.int16), None, [-32768, 2]),
    ("a.u32", [4294967295], V.U32, [4294967295]),
    ("a.i32", np.array([-7, 7, 0], np.int32), None, [-7, 7, 0]),
    ("a.f32", np.array([0.25, -2.0], np.float32), None, [0.25, -2.0]),
    ("a.bool", [True, False, True], None, [True, False, True]),
    ("a.string", ["a", "", "▁the"], None, ["a", "", "▁the"]),
    ("a.u64", np.array([2**64 - 1, 3], np.uint64), None, [2**64 - 1, 3]),
    ("a.i64", [-(2**50), 4], None, [-(2**50), 4]),
    ("a.f64", [1e300, -0.5], None, [1e300, -0.5]),
    ("a.empty", [], V.STRING, []),
    ("a.i8_from_bytes", b"\xff\x01", V.I8, b"\xff\x01"),
]
INFERRED = [  # no vtype: the writer's inference
    ("i.bool", False, False),
    ("i.int", -3, -3),
    ("i.float", 0.1, 0.1),
    ("i.str", "x", "x"),
    ("i.bytes", b"\x00proto\xff", b"\x00proto\xff"),
    ("i.strs", ["<s>", "</s>"], ["<s>", "</s>"]),
    ("i.ints", [1, 2, 3], [1, 2, 3]),
    ("i.floats", [1.0, 2], [1.0, 2.0]),
]


def shape_for(t: TType):
    """A small shape that exercises partial blocks and groups for matrix types."""
    if t == TType.RES4:
        return (70, 33)  # [d_in, d_out], odd d_out
    if is_float(t) or t in (TType.I32, TType.U8):
        return (3, 5, 2)
    return (5, 200)  # d_in % 32 != 0, last group short


def make_file(path, alignment=256, seed=0):
    """Every metadata type and every tensor type, random bytes; returns (metadata, tensor data)."""
    rng = np.random.default_rng(seed)
    w = DdrtWriter(alignment=alignment)
    meta = {"general.alignment": alignment}
    for key, value, vtype, back in SCALARS + ARRAYS:
        w.add(key, value, vtype)
        meta[key] = back
    for key, value, back in INFERRED:
        w.add(key, value)
        meta[key] = back
    data = {}
    for t in TType:
        shape = shape_for(t)
        b = rng.integers(0, 256, tensor_bytes(t, shape), dtype=np.uint8).tobytes()
        w.add_tensor(f"t.{t.name.lower()}", t, shape, b)
        data[f"t.{t.name.lower()}"] = (t, shape, b)
    w.write(path)
    return meta, data


@pytest.mark.parametrize("alignment", [32, 256, 8192])
def test_round_trip_every_type(tmp_path, alignment):
    path = tmp_path / "all.ddrt"
    meta, data = make_file(path, alignment)
    f = _core.ModelFile(str(path))
    assert f.version == 1
    assert f.alignment == alignment
    assert f.file_size == os.path.getsize(path)
    got = f.metadata
    assert set(got) == set(meta)
    for k, v in meta.items():
        assert got[k] == v, k
        assert type(got[k]) is type(v), k
    assert f.metadata == read_ddrt(path).metadata  # the Python reader agrees

    tensors = f.tensors
    assert [t["name"] for t in tensors] == list(data)  # table order = insertion order
    py = read_ddrt(path)
    for t in tensors:
        ttype, shape, b = data[t["name"]]
        assert t["type"] == int(ttype)
        assert t["type_name"] == ttype.name.lower()
        assert t["shape"] == shape
        assert t["size"] == len(b)
        assert t["crc32"] == zlib.crc32(b)
        assert t["offset"] % alignment == 0
        assert f.tensor_data(t["name"]) == b
        if ttype == TType.RES4:
            assert (py._data_start + t["offset"]) % 4096 == 0
    # tensors do not overlap
    spans = sorted((t["offset"], t["offset"] + t["size"]) for t in tensors)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_res4_placed_last_and_page_aligned(tmp_path):
    w = DdrtWriter()
    w.add_tensor("r1", TType.RES4, (3, 4), bytes(6))
    w.add_array("x", np.ones(10, np.float32))
    w.add_tensor("r2", TType.RES4, (5, 8), bytes(20))
    w.write(tmp_path / "r.ddrt")
    py = read_ddrt(tmp_path / "r.ddrt")
    off = {t["name"]: t["offset"] for t in py.tensors}
    assert off["x"] < off["r1"] < off["r2"]
    assert all((py._data_start + off[n]) % 4096 == 0 for n in ("r1", "r2"))
    _core.ModelFile(str(tmp_path / "r.ddrt"))


def test_add_array_dtypes(tmp_path):
    w = DdrtWriter()
    arrays = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3), "f16": np.full(4, 0.5, np.float16),
              "i32": np.array([[1, -2]], np.int32), "u8": np.arange(7, dtype=np.uint8),
              "big_endian": np.arange(3, dtype=">f4")}
    for name, a in arrays.items():
        w.add_array(name, a)
    with pytest.raises(ValueError):
        w.add_array("f64", np.zeros(3))
    w.write(tmp_path / "a.ddrt")
    f = _core.ModelFile(str(tmp_path / "a.ddrt"))
    types = {t["name"]: t["type_name"] for t in f.tensors}
    assert types == {"f32": "f32", "f16": "f16", "i32": "i32", "u8": "u8", "big_endian": "f32"}
    for name, a in arrays.items():
        back = np.frombuffer(f.tensor_data(name), a.dtype.newbyteorder("<")).reshape(a.shape)
        np.testing.assert_array_equal(back, a)


def test_large_tensor_checksum_matches_zlib(tmp_path):
    # larger than the C++ reader's 8 MiB parallel CRC pieces: their combination must equal zlib's
    b = np.random.default_rng(1).integers(0, 256, (9 << 20) + 5, dtype=np.uint8)
    w = DdrtWriter()
    w.add_tensor("big", TType.U8, b.shape, b)
    w.write(tmp_path / "big.ddrt")
    f = _core.ModelFile(str(tmp_path / "big.ddrt"))
    assert f.tensors[0]["crc32"] == zlib.crc32(b.tobytes())


def test_writer_rejects_bad_input():
    w = DdrtWriter()
    with pytest.raises(ValueError, match="needs 368"):
        w.add_tensor("q", TType.UQ3_G128, (4, 200), bytes(367))
    with pytest.raises(ValueError):
        w.add_tensor("q", 99, (4,), bytes(4))
    with pytest.raises(ValueError):
        w.add_tensor("q", TType.UQ4_G32, (64,), bytes(40))  # matrix type, 1-D shape
    with pytest.raises(ValueError):
        w.add_tensor("q", TType.F32, (1, 1, 1, 1, 1), bytes(4))
    with pytest.raises(ValueError):
        w.add_tensor("q", TType.F32, (0,), b"")
    w.add_tensor("q", TType.F32, (1,), bytes(4))
    with pytest.raises(ValueError):
        w.add_tensor("q", TType.F32, (1,), bytes(4))  # duplicate
    w.add("k", 1)
    for bad in [("k", 2, None), ("", 1, None), ("general.alignment", 64, None), ("x", 256, V.U8),
                ("x", -1, V.U32), ("x", [], None), ("x", [1, "a"], None), ("x", {"a": 1}, None),
                ("x", np.zeros((2, 2)), None), ("x", 1.5, V.I32), ("x", "s", V.F64)]:
        with pytest.raises(ValueError):
            w.add(*bad)
    for a in (0, 16, 100, 1 << 17):
        with pytest.raises(ValueError):
            DdrtWriter(alignment=a)


def test_write_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "m.ddrt"
    path.write_bytes(b"old junk")
    w = DdrtWriter()
    w.add("general.name", "m")
    w.write(path)
    assert _core.ModelFile(str(path)).metadata["general.name"] == "m"
    assert os.listdir(tmp_path) == ["m.ddrt"]  # no temp file left


def test_corrupted_checksum_raises_format_error(tmp_path):
    path = tmp_path / "c.ddrt"
    make_file(path)
    f = _core.ModelFile(str(path))
    t = f.tensors[3]
    start = read_ddrt(path)._data_start + t["offset"] + t["size"] // 2
    raw = bytearray(path.read_bytes())
    raw[start] ^= 0x40
    path.write_bytes(bytes(raw))
    with pytest.raises(decdec_rt.FormatError, match=rf"tensor 3 \('{t['name']}'\) crc32 at offset \d+"):
        _core.ModelFile(str(path))
    assert isinstance(decdec_rt.FormatError("x"), decdec_rt.Error)
    _core.ModelFile(str(path), verify_checksums=False)  # skipping verification opens it


@pytest.mark.parametrize("cut", [0, 3, 23, 100, 700, -1])
def test_truncated_file_raises_format_error(tmp_path, cut):
    path = tmp_path / "t.ddrt"
    make_file(path)
    raw = path.read_bytes()
    path.write_bytes(raw[:cut % len(raw)])
    with pytest.raises(decdec_rt.FormatError, match="at offset"):
        _core.ModelFile(str(path))


def test_bad_magic_and_missing_file(tmp_path):
    path = tmp_path / "g.ddrt"
    path.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(decdec_rt.FormatError, match="magic at offset 0"):
        _core.ModelFile(path)  # os.PathLike accepted
    with pytest.raises(FileNotFoundError, match="nope.ddrt"):
        _core.ModelFile(str(tmp_path / "nope.ddrt"))


def test_tensor_data_unknown_name(tmp_path):
    w = DdrtWriter()
    w.add_array("x", np.zeros(2, np.float32))
    w.write(tmp_path / "x.ddrt")
    f = _core.ModelFile(str(tmp_path / "x.ddrt"))
    with pytest.raises(KeyError):
        f.tensor_data("y")
