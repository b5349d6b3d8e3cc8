// decdec_rt: the .ddrt reader (spec: docs/format.md).
//
// The file is mapped read-only and parsed with a bounds-checked cursor: every read first checks
// that its bytes lie inside the mapping, every length and count is checked against a fixed limit
// and against the bytes left before anything is allocated, and all offset arithmetic is done by
// subtraction so it cannot wrap. Errors read "<path>: <field> at offset <n>: <what is wrong>".
#include "model_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace ddrt {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .ddrt reader assumes a little-endian host");

// Limits the reader enforces (docs/format.md, "Limits").
constexpr uint64_t kMaxNameLen = 4096;                 // metadata keys and tensor names
constexpr uint64_t kMaxStringLen = uint64_t(1) << 30;  // string values, U8/I8 arrays (bytes)
constexpr uint64_t kMaxArrayCount = uint64_t(1) << 30; // elements of any array
constexpr uint64_t kMaxKv = uint64_t(1) << 20;
constexpr uint64_t kMaxTensors = uint64_t(1) << 20;
constexpr uint32_t kMaxDims = 4;
constexpr uint64_t kMaxDim = uint64_t(1) << 50;
constexpr uint32_t kMinAlignment = 32, kMaxAlignment = 65536;
constexpr const char* kAlignmentKey = "general.alignment";

const char* type_name(TensorType t) {
  switch (t) {
    case TensorType::F32: return "f32";
    case TensorType::F16: return "f16";
    case TensorType::BF16: return "bf16";
    case TensorType::I32: return "i32";
    case TensorType::U8: return "u8";
    case TensorType::UQ2_G32: return "uq2_g32";
    case TensorType::UQ2_G64: return "uq2_g64";
    case TensorType::UQ2_G128: return "uq2_g128";
    case TensorType::UQ3_G32: return "uq3_g32";
    case TensorType::UQ3_G64: return "uq3_g64";
    case TensorType::UQ3_G128: return "uq3_g128";
    case TensorType::UQ4_G32: return "uq4_g32";
    case TensorType::UQ4_G64: return "uq4_g64";
    case TensorType::UQ4_G128: return "uq4_g128";
    case TensorType::UQ8_G32: return "uq8_g32";
    case TensorType::UQ8_G64: return "uq8_g64";
    case TensorType::UQ8_G128: return "uq8_g128";
    case TensorType::LUT3: return "lut3";
    case TensorType::LUT4: return "lut4";
    case TensorType::RES4: return "res4";
  }
  return "unknown";
}

// ---- CRC-32 (zlib polynomial, reflected; equals Python's zlib.crc32) -------------------------
namespace {
constexpr uint32_t kCrcPoly = 0xEDB88320u;
constexpr int kSlices = 16;

struct CrcTables {
  uint32_t t[kSlices][256];  // t[k][b]: CRC of byte b followed by k zero bytes
  CrcTables() {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t c = b;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kCrcPoly : c >> 1;
      t[0][b] = c;
    }
    for (int k = 1; k < kSlices; ++k)
      for (int b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  }
};
const CrcTables& crc_tables() {
  static const CrcTables tables;
  return tables;
}

// Polynomial product a*b mod P, both in the reflected representation (bit 31 = x^0).
uint32_t crc_multmod(uint32_t a, uint32_t b) {
  uint32_t p = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) p ^= b;
    b = (b & 1) ? (b >> 1) ^ kCrcPoly : b >> 1;
  }
  return p;
}

// x^(8n) mod P: the shift that appending n bytes applies to a CRC.
uint32_t crc_shift_bytes(uint64_t n) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t sq = 1u << 23;      // x^8 (one byte)
  for (; n != 0; n >>= 1) {
    if (n & 1) result = crc_multmod(sq, result);
    sq = crc_multmod(sq, sq);
  }
  return result;
}

// crc32(A || B) from crc32(A), crc32(B) and |B|.
uint32_t crc_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  return crc_multmod(crc_shift_bytes(len_b), crc_a) ^ crc_b;
}
}  // namespace

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc) {
  const auto& t = crc_tables().t;
  uint32_t c = ~crc;
  for (; n >= 16; n -= 16, p += 16) {  // slicing-by-16: four u32 loads per step
    uint32_t w[4];
    memcpy(w, p, 16);
    w[0] ^= c;
    c = 0;
    for (int k = 0; k < 4; ++k)
      c ^= t[15 - 4 * k][w[k] & 0xff] ^ t[14 - 4 * k][(w[k] >> 8) & 0xff] ^
           t[13 - 4 * k][(w[k] >> 16) & 0xff] ^ t[12 - 4 * k][w[k] >> 24];
  }
  for (; n != 0; --n) c = t[0][(c ^ *p++) & 0xff] ^ (c >> 8);
  return ~c;
}

// ---- errors and the cursor -------------------------------------------------------------------
namespace {
std::string hex32(uint32_t v) {
  char buf[16];
  snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + "]";
}

// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    if (c < 0x80) { ++i; continue; }
    int len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; min = 0x80; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; min = 0x800; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return false;
    if (n - i < (size_t)len) return false;
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

// Reads little-endian fields from [base, base + size); `ctx` prefixes the field in messages.
class Cursor {
 public:
  Cursor(const uint8_t* base, size_t size, const std::string& path) : base_(base), size_(size), path_(path) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  void set_context(std::string ctx) { ctx_ = std::move(ctx); }

  [[noreturn]] void fail(const std::string& field, size_t at, const std::string& what) const {
    throw FormatError(path_ + ": " + ctx_ + field + " at offset " + std::to_string(at) + ": " + what);
  }

  void need(uint64_t n, const std::string& field) const {
    if (n > left())
      fail(field, pos_, "needs " + std::to_string(n) + " bytes but only " + std::to_string(left()) +
                            " remain (file size " + std::to_string(size_) + ")");
  }
  template <class T>
  T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  // u64 length + UTF-8 bytes, length <= max_len (and non-zero when !allow_empty).
  std::string string(const std::string& field, uint64_t max_len, bool allow_empty = true) {
    const size_t at = pos_;
    const uint64_t len = read<uint64_t>(field + " length");
    if (len > max_len)
      fail(field + " length", at, "length " + std::to_string(len) + " exceeds the limit " + std::to_string(max_len));
    if (len == 0 && !allow_empty) fail(field + " length", at, "must not be empty");
    need(len, field);
    const uint8_t* p = base_ + pos_;
    if (!valid_utf8(p, len)) fail(field, pos_, "is not valid UTF-8");
    pos_ += len;
    return std::string((const char*)p, len);
  }
  const uint8_t* bytes(uint64_t n, const std::string& field) {
    need(n, field);
    const uint8_t* p = base_ + pos_;
    pos_ += n;
    return p;
  }
  // A count of items of at least `min_item_bytes` each: <= max_count and fits in what is left.
  uint64_t count(const std::string& field, uint64_t max_count, uint64_t min_item_bytes) {
    const size_t at = pos_;
    const uint64_t n = read<uint64_t>(field);
    if (n > max_count) fail(field, at, std::to_string(n) + " exceeds the limit " + std::to_string(max_count));
    if (n > left() / min_item_bytes)
      fail(field, at, std::to_string(n) + " items need at least " + std::to_string(min_item_bytes) +
                          " bytes each but only " + std::to_string(left()) + " bytes remain");
    return n;
  }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& path_;
  std::string ctx_;
};

bool known_value_type(uint32_t t) { return t <= (uint32_t)ValueType::F64; }

// Bytes of one scalar of this type in the file (strings: the minimum, their length field).
uint64_t value_min_bytes(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::BOOL: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    default: return 8;  // U64, I64, F64, STRING
  }
}

bool is_integer_value(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16:
    case ValueType::U32: case ValueType::I32: case ValueType::U64: case ValueType::I64: return true;
    default: return false;
  }
}

// One integer of type t (integer or BOOL) as its unsigned bits and signed value.
void read_integer(Cursor& c, ValueType t, const std::string& field, int64_t* i, uint64_t* u) {
  const size_t at = c.pos();
  switch (t) {
    case ValueType::U8: *i = c.read<uint8_t>(field); break;
    case ValueType::I8: *i = c.read<int8_t>(field); break;
    case ValueType::U16: *i = c.read<uint16_t>(field); break;
    case ValueType::I16: *i = c.read<int16_t>(field); break;
    case ValueType::U32: *i = c.read<uint32_t>(field); break;
    case ValueType::I32: *i = c.read<int32_t>(field); break;
    case ValueType::I64: *i = c.read<int64_t>(field); break;
    case ValueType::U64: *u = c.read<uint64_t>(field); *i = (int64_t)*u; return;
    case ValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>(field);
      if (b > 1) c.fail(field, at, "bool must be 0 or 1, found " + std::to_string(b));
      *i = b;
      break;
    }
    default: c.fail(field, at, "not an integer type");
  }
  *u = (uint64_t)*i;
}

void read_scalar(Cursor& c, ValueType t, const std::string& field, Value* v) {
  if (t == ValueType::STRING) v->s = c.string(field, kMaxStringLen);
  else if (t == ValueType::F32) v->f = c.read<float>(field);
  else if (t == ValueType::F64) v->f = c.read<double>(field);
  else read_integer(c, t, field, &v->i, &v->u);
}

void read_array(Cursor& c, Value* v) {
  const size_t at = c.pos();
  const uint32_t et = c.read<uint32_t>("array element type");
  if (et == (uint32_t)ValueType::ARRAY) c.fail("array element type", at, "nested arrays are not allowed");
  if (!known_value_type(et)) c.fail("array element type", at, "unknown value type " + std::to_string(et));
  v->elem_type = (ValueType)et;
  const uint64_t min_bytes = value_min_bytes(v->elem_type);
  const bool raw = v->elem_type == ValueType::U8 || v->elem_type == ValueType::I8;
  const uint64_t n = c.count("array count", raw ? kMaxStringLen : kMaxArrayCount, min_bytes);
  if (raw) {  // kept verbatim, not widened
    v->bytes.assign((const char*)c.bytes(n, "array data"), n);
  } else if (v->elem_type == ValueType::STRING) {
    v->as.reserve(n);
    for (uint64_t k = 0; k < n; ++k) v->as.push_back(c.string("element " + std::to_string(k), kMaxStringLen));
  } else if (v->elem_type == ValueType::F32 || v->elem_type == ValueType::F64) {
    v->af.resize(n);
    for (uint64_t k = 0; k < n; ++k)
      v->af[k] = v->elem_type == ValueType::F32 ? c.read<float>("array data") : c.read<double>("array data");
  } else {
    v->ai.resize(n);
    uint64_t u;
    for (uint64_t k = 0; k < n; ++k) read_integer(c, v->elem_type, "array data", &v->ai[k], &u);
  }
}

// Where each tensor's fields sit in the file, for messages about them.
struct TensorFieldPos {
  size_t offset, size, crc;
};

std::string tensor_ctx(size_t i, const std::string& name) {
  return "tensor " + std::to_string(i) + " ('" + name + "') ";
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Checks the tensors' CRCs, splitting big tensors into pieces hashed in parallel.
// Returns the index of the first tensor that does not match, or -1.
int64_t first_bad_checksum(const std::vector<TensorInfo>& ts, std::vector<uint32_t>* computed) {
  constexpr uint64_t kPiece = uint64_t(8) << 20;
  struct Piece { size_t tensor; uint64_t begin, len; uint32_t crc; };
  std::vector<Piece> pieces;
  for (size_t i = 0; i < ts.size(); ++i)
    for (uint64_t b = 0; b < ts[i].size; b += kPiece) pieces.push_back({i, b, std::min(kPiece, ts[i].size - b), 0});
  const int64_t np = (int64_t)pieces.size();
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (int64_t k = 0; k < np; ++k) {
    Piece& p = pieces[k];
    p.crc = crc32(ts[p.tensor].data + p.begin, p.len);
  }
  computed->assign(ts.size(), 0);
  for (const Piece& p : pieces)
    (*computed)[p.tensor] = p.begin == 0 ? p.crc : crc_combine((*computed)[p.tensor], p.crc, p.len);
  for (size_t i = 0; i < ts.size(); ++i)
    if ((*computed)[i] != ts[i].crc32) return (int64_t)i;
  return -1;
}
}  // namespace

// ---- ModelFile -------------------------------------------------------------------------------
ModelFile::ModelFile(const std::string& path, bool verify_checksums) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    const int err = errno;
    const std::string msg = "cannot open model file '" + path + "': " + strerror(err);
    if (err == ENOENT) throw FileNotFound(msg);
    throw Error(msg);
  }
  struct stat st;
  if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    const std::string why = S_ISDIR(st.st_mode) ? "is a directory" : "is not a regular file";
    ::close(fd_);
    throw Error("cannot open model file '" + path + "': " + why);
  }
  size_ = (size_t)st.st_size;
  if (size_ > 0) {
    void* m = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd_);
      throw Error("cannot map model file '" + path + "': " + strerror(err));
    }
    map_ = (const uint8_t*)m;
  }
  ::close(fd_);  // the mapping keeps the file alive
  fd_ = -1;
  try {
    parse(verify_checksums);
  } catch (...) {
    if (map_) munmap((void*)map_, size_);
    map_ = nullptr;
    throw;
  }
}

ModelFile::~ModelFile() {
  if (map_) munmap((void*)map_, size_);
}

void ModelFile::parse(bool verify_checksums) {
  Cursor c(map_, size_, path_);

  // header
  const uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) c.fail("magic", 0, "expected " + hex32(kMagic) + " (\"DDRT\"), found " + hex32(magic));
  version_ = c.read<uint32_t>("version");
  if (version_ != kVersion)
    c.fail("version", 4, "unsupported version " + std::to_string(version_) + " (this reader reads " +
                             std::to_string(kVersion) + ")");
  const uint64_t n_tensors = c.count("n_tensors", kMaxTensors, 45);  // smallest table entry
  const uint64_t n_kv = c.count("n_kv", kMaxKv, 14);                 // smallest key/value pair

  // metadata
  std::map<std::string, uint64_t> kv_index;
  for (uint64_t k = 0; k < n_kv; ++k) {
    c.set_context("kv " + std::to_string(k) + " ");
    const size_t key_at = c.pos();
    std::string key = c.string("key", kMaxNameLen, /*allow_empty=*/false);
    if (kv_index.count(key)) c.fail("key", key_at, "duplicate key '" + key + "' (first in kv " + std::to_string(kv_index[key]) + ")");
    kv_index[key] = k;
    c.set_context("kv " + std::to_string(k) + " ('" + key + "') ");
    const size_t type_at = c.pos();
    const uint32_t vt = c.read<uint32_t>("value type");
    if (!known_value_type(vt)) c.fail("value type", type_at, "unknown value type " + std::to_string(vt));
    Value v;
    v.type = (ValueType)vt;
    const size_t value_at = c.pos();
    if (v.type == ValueType::ARRAY) read_array(c, &v);
    else read_scalar(c, v.type, "value", &v);
    if (key == kAlignmentKey) {
      if (v.type != ValueType::U32) c.fail("value type", type_at, "general.alignment must be u32");
      if (v.i < kMinAlignment || v.i > kMaxAlignment || (v.i & (v.i - 1)) != 0)
        c.fail("value", value_at, "alignment " + std::to_string(v.i) + " is not a power of two in [" +
                                      std::to_string(kMinAlignment) + ", " + std::to_string(kMaxAlignment) + "]");
      alignment_ = (uint32_t)v.i;
    }
    kv_.emplace(std::move(key), std::move(v));
  }

  // tensor table
  tensors_.reserve(n_tensors);
  std::vector<TensorFieldPos> fpos;
  fpos.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    c.set_context("tensor " + std::to_string(k) + " ");
    const size_t name_at = c.pos();
    TensorInfo t;
    t.name = c.string("name", kMaxNameLen, /*allow_empty=*/false);
    if (index_.count(t.name))
      c.fail("name", name_at, "duplicate tensor name '" + t.name + "' (first is tensor " + std::to_string(index_[t.name]) + ")");
    c.set_context(tensor_ctx(k, t.name));
    const size_t ndims_at = c.pos();
    const uint32_t n_dims = c.read<uint32_t>("n_dims");
    if (n_dims < 1 || n_dims > kMaxDims) c.fail("n_dims", ndims_at, std::to_string(n_dims) + " is not in [1, 4]");
    for (uint32_t d = 0; d < n_dims; ++d) {
      const size_t dim_at = c.pos();
      const uint64_t dim = c.read<uint64_t>("dim " + std::to_string(d));
      if (dim < 1 || dim > kMaxDim) c.fail("dim " + std::to_string(d), dim_at, std::to_string(dim) + " is not in [1, 2^50]");
      t.shape.push_back((int64_t)dim);
    }
    const size_t type_at = c.pos();
    const uint32_t type = c.read<uint32_t>("type");
    t.type = (TensorType)type;
    if (!known_type(t.type)) c.fail("type", type_at, "unknown tensor type id " + std::to_string(type));
    const int64_t need = tensor_bytes(t.type, (int)n_dims, t.shape.data());
    if (need < 0) {
      const bool elementwise = is_float(t.type) || t.type == TensorType::I32 || t.type == TensorType::U8;
      c.fail("type", type_at, std::string("type ") + type_name(t.type) + " does not fit shape " + shape_str(t.shape) +
                                  (!elementwise && n_dims != 2 ? " (it needs 2 dims)" : " (too many elements)"));
    }
    TensorFieldPos p;
    p.offset = c.pos();
    t.offset = c.read<uint64_t>("offset");
    p.size = c.pos();
    t.size = c.read<uint64_t>("size");
    if (t.size != (uint64_t)need)
      c.fail("size", p.size, std::to_string(t.size) + " bytes, but type " + type_name(t.type) + " shape " +
                                 shape_str(t.shape) + " needs " + std::to_string(need));
    p.crc = c.pos();
    t.crc32 = c.read<uint32_t>("crc32");
    index_[t.name] = k;
    tensors_.push_back(std::move(t));
    fpos.push_back(p);
  }
  c.set_context("");

  // data section: placement of every tensor
  const uint64_t data_start = align_up(c.pos(), alignment_);
  const uint64_t data_len = data_start <= size_ ? size_ - data_start : 0;
  for (size_t k = 0; k < tensors_.size(); ++k) {
    TensorInfo& t = tensors_[k];
    c.set_context(tensor_ctx(k, t.name));
    if (t.offset % alignment_ != 0)
      c.fail("offset", fpos[k].offset, std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(alignment_));
    if (t.offset > data_len || t.size > data_len - t.offset)
      c.fail("offset", fpos[k].offset, "data [" + std::to_string(t.offset) + ", " + std::to_string(t.offset) + " + " +
                                           std::to_string(t.size) + ") lies outside the data section [" +
                                           std::to_string(data_start) + ", " + std::to_string(size_) + ") (file size " +
                                           std::to_string(size_) + ")");
    if (t.type == TensorType::RES4 && (data_start + t.offset) % kResidualAlignment != 0)
      c.fail("offset", fpos[k].offset, "res4 data at file byte " + std::to_string(data_start + t.offset) +
                                           " is not a multiple of " + std::to_string(kResidualAlignment));
    t.data = map_ + data_start + t.offset;
  }
  std::vector<size_t> order(tensors_.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const TensorInfo& a = tensors_[order[k - 1]];
    const TensorInfo& b = tensors_[order[k]];
    if (a.offset + a.size > b.offset) {
      c.set_context(tensor_ctx(order[k], b.name));
      c.fail("offset", fpos[order[k]].offset, "data starting at " + std::to_string(b.offset) + " overlaps tensor " +
                                                  std::to_string(order[k - 1]) + " ('" + a.name + "') [" +
                                                  std::to_string(a.offset) + ", " + std::to_string(a.offset + a.size) + ")");
    }
  }

  if (!verify_checksums) return;
  std::vector<uint32_t> computed;
  const int64_t bad = first_bad_checksum(tensors_, &computed);
  if (bad >= 0) {
    const TensorInfo& t = tensors_[bad];
    c.set_context(tensor_ctx(bad, t.name));
    c.fail("crc32", fpos[bad].crc, "checksum mismatch: stored " + hex32(t.crc32) + " but the data at file offset " +
                                       std::to_string(data_start + t.offset) + " hashes to " + hex32(computed[bad]));
  }
}

// ---- lookups ---------------------------------------------------------------------------------
namespace {
const char* value_type_name(ValueType t) {
  static const char* kNames[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
  return (uint32_t)t <= (uint32_t)ValueType::F64 ? kNames[(uint32_t)t] : "unknown";
}

[[noreturn]] void key_error(const std::string& path, const std::string& key, const std::string& what) {
  throw FormatError(path + ": metadata key '" + key + "' " + what);
}

const Value& typed(const std::string& path, const std::string& key, const Value& v, bool ok, const char* want) {
  if (!ok) key_error(path, key, std::string("is ") + value_type_name(v.type) + ", expected " + want);
  return v;
}
}  // namespace

int64_t ModelFile::get_int(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) key_error(path_, key, "is missing");
  const Value& v = typed(path_, key, it->second, is_integer_value(it->second.type), "an integer");
  if (v.type == ValueType::U64 && v.u > (uint64_t)INT64_MAX) key_error(path_, key, "value " + std::to_string(v.u) + " does not fit in int64");
  return v.i;
}
int64_t ModelFile::get_int(const std::string& key, int64_t dflt) const { return has(key) ? get_int(key) : dflt; }

double ModelFile::get_float(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) key_error(path_, key, "is missing");
  const Value& v = it->second;
  if (v.type == ValueType::F32 || v.type == ValueType::F64) return v.f;
  typed(path_, key, v, is_integer_value(v.type), "a number");
  return v.type == ValueType::U64 ? (double)v.u : (double)v.i;
}
double ModelFile::get_float(const std::string& key, double dflt) const { return has(key) ? get_float(key) : dflt; }

bool ModelFile::get_bool(const std::string& key, bool dflt) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) return dflt;
  return typed(path_, key, it->second, it->second.type == ValueType::BOOL, "bool").i != 0;
}

std::string ModelFile::get_string(const std::string& key) const {
  auto it = kv_.find(key);
  if (it == kv_.end()) key_error(path_, key, "is missing");
  return typed(path_, key, it->second, it->second.type == ValueType::STRING, "string").s;
}
std::string ModelFile::get_string(const std::string& key, const std::string& dflt) const {
  return has(key) ? get_string(key) : dflt;
}

const TensorInfo* ModelFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& ModelFile::require(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) throw FormatError(path_ + ": tensor '" + name + "' is missing from the file");
  return *t;
}

}  // namespace ddrt
