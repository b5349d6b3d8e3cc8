"""Writer (and a small pure-Python reader) of the .ddrt model file: the numpy side of
docs/format.md. The C++ reader (decdec_rt._core.ModelFile) is the real one; read_ddrt() here
is for tests and debugging.

    w = DdrtWriter()
    w.add("model.dim", 576)                                   # I64
    w.add("tokenizer.tokens", ["<s>", "</s>", "a"])           # ARRAY of STRING
    w.add_array("output_norm.weight", np.ones(576, np.float32))
    w.add_tensor("blk.0.attn_q.weight", TType.UQ3_G128, (576, 576), packed_bytes)
    w.write("model.ddrt")
    update_metadata("model.ddrt", {"decdec.tune.x": "{...}"})   # no rewrite of the tensor data

Tensor data is referenced, not copied, until write(): do not modify it in between.
"""
from __future__ import annotations

import enum
import mmap
import os
import shutil
import struct
import zlib
from typing import Any

import numpy as np

from .types import TType, tensor_bytes

MAGIC = 0x54524444  # b"DDRT" read as a little-endian u32
VERSION = 1
DEFAULT_ALIGNMENT = 256
RESIDUAL_ALIGNMENT = 4096  # RES4 data starts at a multiple of this, counted from the file start
ALIGNMENT_KEY = "general.alignment"
MIN_ALIGNMENT, MAX_ALIGNMENT = 32, 65536
# Limits the C++ reader enforces (docs/format.md, "Limits"); the writer refuses what it would reject.
MAX_NAME_LEN = 4096
MAX_STRING_LEN = 1 << 30
MAX_ARRAY_COUNT = 1 << 30
MAX_DIMS = 4
MAX_DIM = 1 << 50

_CHUNK = 64 << 20  # bytes per write()/crc32() call when streaming tensor data
# Zero bytes the writer leaves between data_start and the first tensor, so that the metadata
# can grow later without moving any tensor data (update_metadata; docs/format.md section 10).
DEFAULT_HEADROOM = 16384


class ValueType(enum.IntEnum):
    """Metadata value types (GGUF's numbering)."""
    U8 = 0
    I8 = 1
    U16 = 2
    I16 = 3
    U32 = 4
    I32 = 5
    F32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    U64 = 10
    I64 = 11
    F64 = 12


V = ValueType
# little-endian numpy dtype of each fixed-size value type
_DTYPE = {V.U8: "<u1", V.I8: "<i1", V.U16: "<u2", V.I16: "<i2", V.U32: "<u4", V.I32: "<i4",
          V.F32: "<f4", V.BOOL: "<u1", V.U64: "<u8", V.I64: "<i8", V.F64: "<f8"}
_INT_RANGE = {V.U8: (0, 2**8 - 1), V.I8: (-2**7, 2**7 - 1), V.U16: (0, 2**16 - 1),
              V.I16: (-2**15, 2**15 - 1), V.U32: (0, 2**32 - 1), V.I32: (-2**31, 2**31 - 1),
              V.U64: (0, 2**64 - 1), V.I64: (-2**63, 2**63 - 1), V.BOOL: (0, 1)}
_FROM_NUMPY = {np.dtype(np.uint8): V.U8, np.dtype(np.int8): V.I8, np.dtype(np.uint16): V.U16,
               np.dtype(np.int16): V.I16, np.dtype(np.uint32): V.U32, np.dtype(np.int32): V.I32,
               np.dtype(np.uint64): V.U64, np.dtype(np.int64): V.I64, np.dtype(np.float32): V.F32,
               np.dtype(np.float64): V.F64, np.dtype(np.bool_): V.BOOL}
_ARRAY_TTYPE = {np.dtype(np.float32): TType.F32, np.dtype(np.float16): TType.F16,
                np.dtype(np.int32): TType.I32, np.dtype(np.uint8): TType.U8}


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def _pack_str(s: str, what: str, max_len: int = MAX_STRING_LEN) -> bytes:
    b = s.encode("utf-8")
    if len(b) > max_len:
        raise ValueError(f"{what}: {len(b)} bytes of UTF-8, the limit is {max_len}")
    return struct.pack("<Q", len(b)) + b


# ---- metadata values ----------------------------------------------------------------------------
def _infer_scalar(v) -> ValueType | None:
    if isinstance(v, (bool, np.bool_)):
        return V.BOOL
    if isinstance(v, (int, np.integer)):
        return V.I64 if int(v) < 2**63 else V.U64
    if isinstance(v, (float, np.floating)):
        return V.F64
    if isinstance(v, str):
        return V.STRING
    return None


def _infer_elem(values: list, key: str) -> ValueType:
    kinds = {_infer_scalar(x) for x in values}
    if not values:
        raise ValueError(f"metadata '{key}': empty list, pass vtype= to name the element type")
    if None in kinds:
        bad = next(x for x in values if _infer_scalar(x) is None)
        raise ValueError(f"metadata '{key}': list element of type {type(bad).__name__} is not supported")
    if len(kinds) == 1:
        return kinds.pop()
    if kinds <= {V.I64, V.U64}:
        return V.U64 if min(int(x) for x in values) >= 0 else V.I64
    if kinds <= {V.I64, V.U64, V.F64}:
        return V.F64
    raise ValueError(f"metadata '{key}': list mixes {sorted(k.name for k in kinds)}")


def _encode_scalar(vt: ValueType, v, key: str) -> bytes:
    if vt == V.STRING:
        if not isinstance(v, str):
            raise ValueError(f"metadata '{key}': STRING value must be str, got {type(v).__name__}")
        return _pack_str(v, f"metadata '{key}'")
    if vt in (V.F32, V.F64):
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_)):
            raise ValueError(f"metadata '{key}': {vt.name} value must be a number, got {type(v).__name__}")
        return np.array(float(v), _DTYPE[vt]).tobytes()
    if not isinstance(v, (int, np.integer, bool, np.bool_)):
        raise ValueError(f"metadata '{key}': {vt.name} value must be an integer, got {type(v).__name__}")
    lo, hi = _INT_RANGE[vt]
    if not lo <= int(v) <= hi:
        raise ValueError(f"metadata '{key}': {int(v)} does not fit {vt.name} [{lo}, {hi}]")
    return np.array(int(v), _DTYPE[vt]).tobytes()


def _encode_array(et: ValueType, values, key: str) -> bytes:
    if et == V.ARRAY:
        raise ValueError(f"metadata '{key}': nested arrays are not allowed")
    n = len(values)
    if n > MAX_ARRAY_COUNT:
        raise ValueError(f"metadata '{key}': {n} elements, the limit is {MAX_ARRAY_COUNT}")
    head = struct.pack("<IQ", int(et), n)
    if et == V.STRING:
        return head + b"".join(_encode_scalar(V.STRING, s, key) for s in values)
    if isinstance(values, (bytes, bytearray, memoryview)):
        values = np.frombuffer(values, np.int8 if et == V.I8 else np.uint8)
    if isinstance(values, np.ndarray) and _FROM_NUMPY.get(values.dtype) == et:
        return head + values.astype(_DTYPE[et], copy=False).tobytes()
    if et in (V.F32, V.F64):
        if any(isinstance(x, (bool, np.bool_, str)) for x in values):
            raise ValueError(f"metadata '{key}': {et.name} array elements must be numbers")
        return head + np.asarray(values, dtype=_DTYPE[et]).tobytes()
    arr = np.asarray([int(x) for x in values], dtype=object) if n else np.zeros(0, object)
    lo, hi = _INT_RANGE[et]
    if n and not (lo <= arr.min() and arr.max() <= hi):
        raise ValueError(f"metadata '{key}': values [{arr.min()}, {arr.max()}] do not fit {et.name} [{lo}, {hi}]")
    return head + arr.astype(_DTYPE[et]).tobytes()


def encode_value(key: str, value, vtype: ValueType | int | None = None) -> bytes:
    """The bytes of a metadata value: u32 type + payload (docs/format.md).

    vtype names the scalar type of a scalar value and the ELEMENT type of a list, bytes or
    ndarray value (ARRAY or None infers it): bool->BOOL, int->I64, float->F64, str->STRING,
    bytes->U8 array, list[str/int/float]->STRING/I64/F64 array, 1-D ndarray->its dtype."""
    vt = None if vtype is None else ValueType(int(vtype))
    if isinstance(value, (list, tuple, bytes, bytearray, memoryview, np.ndarray)):
        if isinstance(value, np.ndarray):
            if value.ndim != 1:
                raise ValueError(f"metadata '{key}': arrays must be 1-D, got shape {value.shape}")
            et = _FROM_NUMPY.get(value.dtype)
            if et is None and vt in (None, V.ARRAY):
                raise ValueError(f"metadata '{key}': dtype {value.dtype} has no metadata type")
        elif isinstance(value, (bytes, bytearray, memoryview)):
            et = V.U8
        else:
            et = None if vt not in (None, V.ARRAY) else _infer_elem(list(value), key)
        if vt not in (None, V.ARRAY):
            et = vt
        return struct.pack("<I", int(V.ARRAY)) + _encode_array(et, value, key)
    if vt == V.ARRAY:
        raise ValueError(f"metadata '{key}': ARRAY needs a list, bytes or ndarray value")
    if vt is None:
        vt = _infer_scalar(value)
        if vt is None:
            raise ValueError(f"metadata '{key}': values of type {type(value).__name__} are not supported")
    return struct.pack("<I", int(vt)) + _encode_scalar(vt, value, key)


# ---- the writer ---------------------------------------------------------------------------------
class _Tensor:
    __slots__ = ("name", "ttype", "shape", "data", "offset", "crc")

    def __init__(self, name: str, ttype: TType, shape: tuple, data: memoryview):
        self.name, self.ttype, self.shape, self.data = name, ttype, shape, data
        self.offset = 0
        self.crc = 0

    def entry(self) -> bytes:
        """Its tensor-table entry (docs/format.md)."""
        return _table_entry(self.name, self.shape, self.ttype, self.offset, len(self.data), self.crc)


def _table_entry(name: str, shape: tuple, ttype: int, offset: int, size: int, crc: int) -> bytes:
    """One tensor-table entry (docs/format.md section 4)."""
    return (_pack_str(name, "tensor name", MAX_NAME_LEN) + struct.pack("<I", len(shape))
            + struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<IQQI", int(ttype), offset, size, crc))


def _check_key(key) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"metadata key must be a non-empty str, got {key!r}")
    if len(key.encode("utf-8")) > MAX_NAME_LEN:
        raise ValueError(f"metadata key '{key[:40]}...' is longer than {MAX_NAME_LEN} bytes")
    if key == ALIGNMENT_KEY:
        raise ValueError(f"'{ALIGNMENT_KEY}' is set by DdrtWriter(alignment=...)")


def _as_bytes_view(data, name: str) -> memoryview:
    """A flat, read-only byte view of bytes-like or ndarray data (no copy when contiguous)."""
    if isinstance(data, np.ndarray):
        if data.dtype.byteorder == ">":
            raise ValueError(f"tensor '{name}': big-endian dtype {data.dtype}; the file is little-endian")
        return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    if isinstance(data, (bytes, bytearray, memoryview)):
        mv = memoryview(data)
        if not mv.c_contiguous:
            raise ValueError(f"tensor '{name}': data is not contiguous")
        return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")
    raise ValueError(f"tensor '{name}': data must be bytes or a numpy array, got {type(data).__name__}")


class DdrtWriter:
    """Collects metadata and tensors, then writes one .ddrt file atomically (docs/format.md)."""

    def __init__(self, alignment: int = DEFAULT_ALIGNMENT, headroom: int = DEFAULT_HEADROOM):
        """headroom: zero bytes (rounded up to the alignment) kept before the first tensor, room
        for update_metadata() to grow the metadata in place."""
        a = int(alignment)
        if a < MIN_ALIGNMENT or a > MAX_ALIGNMENT or a & (a - 1):
            raise ValueError(f"alignment {alignment} is not a power of two in [{MIN_ALIGNMENT}, {MAX_ALIGNMENT}]")
        if isinstance(headroom, bool) or not isinstance(headroom, (int, np.integer)) or headroom < 0:
            raise ValueError(f"headroom must be an int >= 0, got {headroom!r}")
        self.alignment = a
        self.headroom = _align_up(int(headroom), a)
        self._kv: dict[str, bytes] = {ALIGNMENT_KEY: encode_value(ALIGNMENT_KEY, a, V.U32)}
        self._tensors: dict[str, _Tensor] = {}

    def add(self, key: str, value: Any, vtype: ValueType | int | None = None) -> None:
        """Adds metadata `key` = value. vtype: see encode_value (for lists: the element type)."""
        _check_key(key)
        if key in self._kv:
            raise ValueError(f"metadata key '{key}' added twice")
        self._kv[key] = encode_value(key, value, vtype)

    def add_tensor(self, name: str, ttype: int, shape, data) -> None:
        """Adds a tensor of raw packed bytes (cpp/layout.h); their size must equal
        types.tensor_bytes(ttype, shape)."""
        if not isinstance(name, str) or not name or len(name.encode("utf-8")) > MAX_NAME_LEN:
            raise ValueError(f"tensor name must be a non-empty str of at most {MAX_NAME_LEN} bytes, got {name!r}")
        if name in self._tensors:
            raise ValueError(f"tensor '{name}' added twice")
        try:
            t = TType(int(ttype))
        except ValueError:
            raise ValueError(f"tensor '{name}': unknown tensor type id {ttype}") from None
        shape = tuple(int(s) for s in shape)
        if not 1 <= len(shape) <= MAX_DIMS or any(not 1 <= s <= MAX_DIM for s in shape):
            raise ValueError(f"tensor '{name}': shape {shape} needs 1..{MAX_DIMS} dims, each in [1, 2^50]")
        need = tensor_bytes(t, shape)
        view = _as_bytes_view(data, name)
        if view.nbytes != need:
            raise ValueError(f"tensor '{name}': {view.nbytes} bytes, but type {t.name.lower()} "
                             f"shape {shape} needs {need}")
        self._tensors[name] = _Tensor(name, t, shape, view)

    def add_array(self, name: str, arr: np.ndarray) -> None:
        """Adds a numpy array as a tensor: float32->F32, float16->F16, int32->I32, uint8->U8."""
        arr = np.asarray(arr)
        t = _ARRAY_TTYPE.get(arr.dtype.newbyteorder("=") if arr.dtype.byteorder == ">" else arr.dtype)
        if t is None:
            raise ValueError(f"tensor '{name}': dtype {arr.dtype} is not one of float32, float16, int32, uint8")
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        self.add_tensor(name, t, arr.shape, arr)

    def _layout(self, table_start: int) -> tuple[int, list[_Tensor]]:
        """Assigns offsets: other tensors first in insertion order, then RES4 tensors at
        page-aligned file positions. Returns (data_start, tensors in data order)."""
        tensors = list(self._tensors.values())
        table_size = sum(len(t.entry()) for t in tensors)
        data_start = _align_up(table_start + table_size, self.alignment)
        page = max(self.alignment, RESIDUAL_ALIGNMENT)
        order = ([t for t in tensors if t.ttype != TType.RES4] + [t for t in tensors if t.ttype == TType.RES4])
        end = self.headroom
        for t in order:
            off = _align_up(end, self.alignment)
            if t.ttype == TType.RES4:
                off = _align_up(data_start + off, page) - data_start
            t.offset = off
            end = off + t.data.nbytes
        return data_start, order

    def write(self, path) -> None:
        """Writes the file: to path + ".tmp-<pid>", fsync, then renamed over path."""
        head = struct.pack("<IIQQ", MAGIC, VERSION, len(self._tensors), len(self._kv))
        kv = b"".join(_pack_str(k, "metadata key", MAX_NAME_LEN) + v for k, v in self._kv.items())
        table_start = len(head) + len(kv)
        data_start, order = self._layout(table_start)

        def fill(f):
            f.write(head)
            f.write(kv)
            f.write(b"".join(t.entry() for t in self._tensors.values()))  # crc filled in below
            for t in order:
                f.write(b"\0" * (data_start + t.offset - f.tell()))
                t.crc = 0
                for p in range(0, t.data.nbytes, _CHUNK):
                    chunk = t.data[p:p + _CHUNK]
                    t.crc = zlib.crc32(chunk, t.crc)
                    f.write(chunk)
            f.seek(table_start)
            f.write(b"".join(t.entry() for t in self._tensors.values()))

        _write_atomically(os.fspath(path), fill)


def _write_atomically(path: str, fill, mode_of: str | None = None) -> None:
    """fill(f) writes the whole file into path + ".tmp-<pid>"; fsync, then renamed over path (a
    reader sees the old file or the new one, never a part). mode_of: copy its permissions."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        if mode_of is not None:
            shutil.copymode(mode_of, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- a small reader (tests, debugging) ----------------------------------------------------------
class DdrtFile:
    """What read_ddrt() returns: metadata as the C++ binding gives it (int/float/bool/str,
    bytes for U8/I8 arrays, list for other arrays), tensors as dicts, data() as a memoryview."""

    def __init__(self, version, alignment, metadata, tensors, buf, data_start):
        self.version, self.alignment, self.metadata, self.tensors = version, alignment, metadata, tensors
        self._buf, self._data_start = buf, data_start
        self._by_name = {t["name"]: t for t in tensors}

    def data(self, name: str) -> memoryview:
        t = self._by_name[name]
        start = self._data_start + t["offset"]
        return memoryview(self._buf)[start:start + t["size"]]


class _Reader:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.buf) - self.pos:
            raise ValueError(f"{what} at offset {self.pos}: needs {n} bytes, the file ends at {len(self.buf)}")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def skip(self, n: int, what: str) -> None:
        if n > len(self.buf) - self.pos:
            raise ValueError(f"{what} at offset {self.pos}: needs {n} bytes, the file ends at {len(self.buf)}")
        self.pos += n

    def skip_value(self, vt: int, what: str) -> None:
        """Moves past one value of type vt without decoding it."""
        vt = ValueType(vt)
        if vt == V.STRING:
            self.skip(self.num("<Q", what + " length"), what)
        elif vt == V.ARRAY:
            et, n = ValueType(self.num("<I", what)), self.num("<Q", what)
            if et == V.ARRAY:
                raise ValueError(f"{what} at offset {self.pos}: nested array")
            if et == V.STRING:
                for _ in range(n):
                    self.skip(self.num("<Q", what + " length"), what)
            else:
                self.skip(n * np.dtype(_DTYPE[et]).itemsize, what)
        else:
            self.skip(np.dtype(_DTYPE[vt]).itemsize, what)

    def num(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def str(self, what: str) -> str:
        n = self.num("<Q", what + " length")
        return bytes(self.take(n, what)).decode("utf-8")

    def value(self, vt: int, what: str):
        vt = ValueType(vt)
        if vt == V.STRING:
            return self.str(what)
        if vt == V.ARRAY:
            et, n = ValueType(self.num("<I", what)), self.num("<Q", what)
            if et in (V.U8, V.I8):
                return bytes(self.take(n, what))
            return [self.value(et, what) for _ in range(n)]
        x = np.frombuffer(self.take(np.dtype(_DTYPE[vt]).itemsize, what), _DTYPE[vt])[0]
        return bool(x) if vt == V.BOOL else float(x) if vt in (V.F32, V.F64) else int(x)


def read_ddrt(path, verify: bool = True) -> DdrtFile:
    """Parses a .ddrt file (light validation; the C++ reader is the strict one)."""
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
    r = _Reader(buf)
    magic, version, n_tensors, n_kv = (r.num("<I", "magic"), r.num("<I", "version"),
                                       r.num("<Q", "n_tensors"), r.num("<Q", "n_kv"))
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a version-{VERSION} .ddrt file (magic {magic:#x}, version {version})")
    meta = {}
    for _ in range(n_kv):
        key = r.str("key")
        meta[key] = r.value(r.num("<I", "value type"), key)
    tensors = []
    for _ in range(n_tensors):
        name = r.str("tensor name")
        n_dims = r.num("<I", name)
        shape = tuple(r.num("<Q", name) for _ in range(n_dims))
        ttype, offset, size, crc = (r.num("<I", name), r.num("<Q", name), r.num("<Q", name), r.num("<I", name))
        tensors.append(dict(name=name, type=ttype, type_name=TType(ttype).name.lower(), shape=shape,
                            offset=offset, size=size, crc32=crc))
    alignment = meta.get(ALIGNMENT_KEY, DEFAULT_ALIGNMENT)
    out = DdrtFile(version, alignment, meta, tensors, buf, _align_up(r.pos, alignment))
    for t in tensors:
        data = out.data(t["name"])
        if len(data) != t["size"] or t["size"] != tensor_bytes(t["type"], t["shape"]):
            raise ValueError(f"tensor '{t['name']}': size {t['size']} does not match its type/shape or the file")
        if verify and zlib.crc32(data) != t["crc32"]:
            raise ValueError(f"tensor '{t['name']}': checksum mismatch")
    return out


# ---- changing the metadata of a written file ------------------------------------------------------
class _Front:
    """The front of a file: metadata as raw value bytes (type + payload, file order), the tensor
    table with absolute file positions, and where the data starts."""

    def __init__(self, buf):
        r = _Reader(buf)
        magic, version, n_tensors, n_kv = (r.num("<I", "magic"), r.num("<I", "version"),
                                           r.num("<Q", "n_tensors"), r.num("<Q", "n_kv"))
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"not a version-{VERSION} .ddrt file (magic {magic:#x}, version {version})")
        self.kv: dict[str, bytes] = {}
        for _ in range(n_kv):
            key = r.str("key")
            start = r.pos
            r.skip_value(r.num("<I", "value type"), key)
            self.kv[key] = bytes(buf[start:r.pos])
        table_start = r.pos
        entries = []
        for _ in range(n_tensors):
            name = r.str("tensor name")
            shape = tuple(r.num("<Q", name) for _ in range(r.num("<I", name)))
            entries.append((name, shape, r.num("<I", name), r.num("<Q", name), r.num("<Q", name), r.num("<I", name)))
        self.table_len = r.pos - table_start
        self.table_end = r.pos
        self.alignment = DEFAULT_ALIGNMENT
        if ALIGNMENT_KEY in self.kv:
            a = _Reader(self.kv[ALIGNMENT_KEY])
            self.alignment = a.value(a.num("<I", ALIGNMENT_KEY), ALIGNMENT_KEY)
        a = self.alignment
        if not isinstance(a, int) or a < MIN_ALIGNMENT or a > MAX_ALIGNMENT or a & (a - 1):
            raise ValueError(f"{ALIGNMENT_KEY} = {a!r} is not a power of two in [{MIN_ALIGNMENT}, {MAX_ALIGNMENT}]")
        data_start = _align_up(self.table_end, self.alignment)
        # (name, shape, type, absolute file position, size, crc)
        self.tensors = [(n, sh, t, data_start + off, size, crc) for n, sh, t, off, size, crc in entries]
        self.data_end = max((t[3] + t[4] for t in self.tensors), default=data_start)
        if self.data_end > len(buf):
            raise ValueError(f"tensor data ends at byte {self.data_end}, after the end of the file ({len(buf)})")

    def data_start(self, kv: dict[str, bytes]) -> int:
        """data_start of a file with metadata `kv` and this tensor table."""
        kv_len = sum(8 + len(k.encode("utf-8")) + len(v) for k, v in kv.items())
        return _align_up(24 + kv_len + self.table_len, self.alignment)

    def region(self, kv: dict[str, bytes], shift: int = 0) -> bytes:
        """Header + metadata `kv` + the tensor table, every tensor moved by `shift` bytes in the file."""
        head = struct.pack("<IIQQ", MAGIC, VERSION, len(self.tensors), len(kv))
        kv_bytes = b"".join(_pack_str(k, "metadata key", MAX_NAME_LEN) + v for k, v in kv.items())
        data_start = self.data_start(kv)
        table = b"".join(_table_entry(n, sh, t, pos + shift - data_start, size, crc)
                         for n, sh, t, pos, size, crc in self.tensors)
        return head + kv_bytes + table


def update_metadata(path, values: dict, remove=(), vtypes: dict | None = None, progress: bool = False) -> str:
    """Sets the metadata keys in `values` (replaced where present, else added) and deletes those
    in `remove`, without rewriting the tensor data when the room before the first tensor (the
    writer's headroom, docs/format.md section 10) holds the new metadata: then only the changed
    bytes of the front are written, in one write, and fsync'd. Otherwise the whole file is
    streamed into path.tmp-<pid> with fresh headroom and renamed over path. vtypes: {key: vtype}
    (see encode_value). Returns "in-place" or "rewritten"."""
    path = os.fspath(path)
    encoded = {}
    for k, v in values.items():
        _check_key(k)
        encoded[k] = encode_value(k, v, (vtypes or {}).get(k))
    for k in remove:
        _check_key(k)
    with open(path, "r+b") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            front = _Front(buf)
            kv = {k: v for k, v in front.kv.items() if k not in remove}
            kv.update(encoded)  # replaced keys keep their place; new keys go last
            data_start = front.data_start(kv)
            first = min((t[3] for t in front.tensors), default=None)
            if first is not None and data_start <= first:
                region = front.region(kv)
                # zeros up to the new data_start and over what is left of the old table
                region += bytes(max(data_start, front.table_end) - len(region))
                _write_changed(f, buf, region)
                return "in-place"
            _rewrite(path, front, kv, buf, progress)
            return "rewritten"
        finally:
            buf.close()


def _write_changed(f, buf, region: bytes) -> None:
    """Writes the span of `region` that differs from the file's first len(region) bytes."""
    new = np.frombuffer(region, np.uint8)
    diff = np.flatnonzero(new != np.frombuffer(buf, np.uint8, len(region)))
    if diff.size:
        p, q = int(diff[0]), int(diff[-1]) + 1
        os.pwrite(f.fileno(), region[p:q], p)
        os.fsync(f.fileno())


def _rewrite(path: str, front: _Front, kv: dict[str, bytes], buf, progress: bool) -> None:
    """Streams the file with metadata `kv` and DEFAULT_HEADROOM before the first tensor. Tensors
    move by a multiple of max(alignment, 4096), so offsets stay aligned and RES4 page-aligned."""
    from tqdm import tqdm
    step = max(front.alignment, RESIDUAL_ALIGNMENT)
    first = min((t[3] for t in front.tensors), default=front.data_end)
    want = front.data_start(kv) + _align_up(DEFAULT_HEADROOM, front.alignment)
    shift = -((first - want) // step) * step  # the smallest multiple of step with first + shift >= want
    region = front.region(kv, shift)

    def fill(f):
        f.write(region)
        if front.tensors:
            f.write(bytes(first + shift - len(region)))
        with tqdm(total=front.data_end - first, desc="rewrite", unit="B", unit_scale=True,
                  disable=not progress) as bar:
            for p in range(first, front.data_end, _CHUNK):
                chunk = buf[p:min(p + _CHUNK, front.data_end)]
                f.write(chunk)
                bar.update(len(chunk))

    _write_atomically(path, fill, mode_of=path)
