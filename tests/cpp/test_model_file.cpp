// .ddrt reader tests: a valid file reads back exactly; every handcrafted corruption (and every
// truncation of the header region) throws FormatError naming an offset, and nothing crashes.
// The file is built here by a small writer independent of the Python one (spec: docs/format.md).
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "check.h"
#include "model_file.h"

using namespace ddrt;
namespace fs = std::filesystem;

namespace {

// ---- a tiny in-memory writer ---------------------------------------------------------------
struct Bytes : std::vector<uint8_t> {
  template <class T>
  void put(T v) {
    const size_t n = size();
    resize(n + sizeof(T));
    memcpy(data() + n, &v, sizeof(T));
  }
  void put_str(const std::string& s) {
    put<uint64_t>(s.size());
    insert(end(), s.begin(), s.end());
  }
  template <class T>
  void patch(size_t at, T v) { memcpy(data() + at, &v, sizeof(T)); }
};

struct KV {
  std::string key;
  uint32_t type;
  Bytes payload;  // everything after the value type
};

struct TensorSpec {
  std::string name;
  TensorType type;
  std::vector<uint64_t> dims;
  Bytes data;
  // overrides of what the writer computes; -1 = computed
  int64_t n_dims = -1, offset = -1, size = -1, crc = -1;
};

struct FileSpec {
  uint32_t magic = kMagic, version = kVersion;
  int64_t n_tensors = -1, n_kv = -1;  // -1 = the real counts
  uint32_t alignment = kDefaultAlignment;  // placement; the key (if any) is one of kv
  std::vector<KV> kv;
  std::vector<TensorSpec> tensors;
};

struct Built {
  Bytes bytes;
  std::map<std::string, size_t> at;  // "kv3.type", "t2.offset", ... -> byte position
  std::vector<uint64_t> offsets;     // per tensor, from the data section start
  size_t data_start = 0;
};

// Bitwise CRC-32, the independent reference for the reader's sliced one.
uint32_t crc_ref(const uint8_t* p, size_t n, uint32_t crc = 0) {
  uint32_t c = ~crc;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
  }
  return ~c;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

Built build(const FileSpec& s) {
  Built b;
  Bytes& o = b.bytes;
  o.put(s.magic);
  o.put(s.version);
  b.at["n_tensors"] = o.size();
  o.put<uint64_t>(s.n_tensors >= 0 ? s.n_tensors : s.tensors.size());
  b.at["n_kv"] = o.size();
  o.put<uint64_t>(s.n_kv >= 0 ? s.n_kv : s.kv.size());
  for (size_t i = 0; i < s.kv.size(); ++i) {
    const std::string p = "kv" + std::to_string(i);
    b.at[p + ".key"] = o.size();
    o.put_str(s.kv[i].key);
    b.at[p + ".type"] = o.size();
    o.put(s.kv[i].type);
    b.at[p + ".value"] = o.size();
    o.insert(o.end(), s.kv[i].payload.begin(), s.kv[i].payload.end());
  }
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    const TensorSpec& t = s.tensors[i];
    const std::string p = "t" + std::to_string(i);
    b.at[p + ".name"] = o.size();
    o.put_str(t.name);
    b.at[p + ".n_dims"] = o.size();
    o.put<uint32_t>(t.n_dims >= 0 ? (uint32_t)t.n_dims : (uint32_t)t.dims.size());
    for (uint64_t d : t.dims) o.put(d);
    b.at[p + ".type"] = o.size();
    o.put((uint32_t)t.type);
    b.at[p + ".offset"] = o.size();
    o.put<uint64_t>(0);
    b.at[p + ".size"] = o.size();
    o.put<uint64_t>(t.size >= 0 ? t.size : t.data.size());
    b.at[p + ".crc"] = o.size();
    o.put<uint32_t>(t.crc >= 0 ? (uint32_t)t.crc : crc_ref(t.data.data(), t.data.size()));
  }
  // data: non-res4 tensors first, then res4 at page-aligned file positions
  b.data_start = align_up(o.size(), s.alignment);
  b.offsets.assign(s.tensors.size(), 0);
  uint64_t end = 0;
  for (int pass = 0; pass < 2; ++pass)
    for (size_t i = 0; i < s.tensors.size(); ++i) {
      if ((s.tensors[i].type == TensorType::RES4) != (pass == 1)) continue;
      uint64_t off = align_up(end, s.alignment);
      while (pass == 1 && (b.data_start + off) % kResidualAlignment != 0) off += s.alignment;
      b.offsets[i] = off;
      end = off + s.tensors[i].data.size();
    }
  o.resize(s.tensors.empty() ? o.size() : b.data_start + end, 0);  // no tensors: no padding
  for (size_t i = 0; i < s.tensors.size(); ++i) {
    const TensorSpec& t = s.tensors[i];
    memcpy(o.data() + b.data_start + b.offsets[i], t.data.data(), t.data.size());
    o.patch<uint64_t>(b.at["t" + std::to_string(i) + ".offset"], t.offset >= 0 ? (uint64_t)t.offset : b.offsets[i]);
  }
  return b;
}

// ---- values --------------------------------------------------------------------------------
template <class T>
KV scalar(const std::string& key, ValueType t, T v) {
  KV kv{key, (uint32_t)t, {}};
  kv.payload.put(v);
  return kv;
}
KV string_kv(const std::string& key, const std::string& s) {
  KV kv{key, (uint32_t)ValueType::STRING, {}};
  kv.payload.put_str(s);
  return kv;
}
template <class T>
KV array(const std::string& key, ValueType et, const std::vector<T>& v) {
  KV kv{key, (uint32_t)ValueType::ARRAY, {}};
  kv.payload.put((uint32_t)et);
  kv.payload.put<uint64_t>(v.size());
  for (const T& x : v) kv.payload.put(x);
  return kv;
}
KV string_array(const std::string& key, const std::vector<std::string>& v) {
  KV kv{key, (uint32_t)ValueType::ARRAY, {}};
  kv.payload.put((uint32_t)ValueType::STRING);
  kv.payload.put<uint64_t>(v.size());
  for (const auto& s : v) kv.payload.put_str(s);
  return kv;
}

Bytes pseudo_random(size_t n, uint32_t seed) {
  Bytes b;
  b.resize(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    b[i] = (uint8_t)x;
  }
  return b;
}

TensorSpec tensor(const std::string& name, TensorType t, std::vector<uint64_t> dims, uint32_t seed) {
  std::vector<int64_t> shape(dims.begin(), dims.end());
  const int64_t n = tensor_bytes(t, (int)shape.size(), shape.data());
  return TensorSpec{name, t, dims, pseudo_random((size_t)n, seed)};
}

const uint64_t kBigU64 = (uint64_t(1) << 63) + 5;

FileSpec valid_spec() {
  FileSpec s;
  s.alignment = 128;
  s.kv = {
      scalar<uint32_t>("general.alignment", ValueType::U32, 128),
      scalar<uint8_t>("v.u8", ValueType::U8, 200),
      scalar<int8_t>("v.i8", ValueType::I8, -5),
      scalar<uint16_t>("v.u16", ValueType::U16, 60000),
      scalar<int16_t>("v.i16", ValueType::I16, -30000),
      scalar<uint32_t>("v.u32", ValueType::U32, 4000000000u),
      scalar<int32_t>("v.i32", ValueType::I32, -2000000000),
      scalar<float>("v.f32", ValueType::F32, 1.5f),
      scalar<uint8_t>("v.bool", ValueType::BOOL, 1),
      string_kv("v.string", "h\xc3\xa9llo"),
      scalar<uint64_t>("v.u64", ValueType::U64, kBigU64),
      scalar<int64_t>("v.i64", ValueType::I64, -(int64_t(1) << 40)),
      scalar<double>("v.f64", ValueType::F64, 3.25),
      array<uint8_t>("a.u8", ValueType::U8, {0, 1, 255}),
      array<int8_t>("a.i8", ValueType::I8, {-128, 0, 127}),
      array<uint16_t>("a.u16", ValueType::U16, {65535, 1}),
      array<int16_t>("a.i16", ValueType::I16, {-32768, 2}),
      array<uint32_t>("a.u32", ValueType::U32, {4294967295u}),
      array<int32_t>("a.i32", ValueType::I32, {-7, 7, 0}),
      array<float>("a.f32", ValueType::F32, {0.25f, -2.0f}),
      array<uint8_t>("a.bool", ValueType::BOOL, {1, 0, 1}),
      string_array("a.string", {"a", "", "\xe2\x96\x81the"}),
      array<uint64_t>("a.u64", ValueType::U64, {kBigU64, 3}),
      array<int64_t>("a.i64", ValueType::I64, {-(int64_t(1) << 50)}),
      array<double>("a.f64", ValueType::F64, {1e300, -0.5}),
      array<int32_t>("a.empty", ValueType::I32, {}),
  };
  s.tensors = {
      tensor("a.f32", TensorType::F32, {3, 5}, 1),
      tensor("blk.0.attn_q.residual", TensorType::RES4, {10, 33}, 2),
      tensor("b.f16", TensorType::F16, {7}, 3),
      tensor("blk.0.attn_q.weight", TensorType::UQ3_G128, {4, 200}, 4),
      tensor("blk.0.ffn_up.weight", TensorType::LUT4, {3, 64}, 5),
      tensor("blk.0.ffn_up.residual", TensorType::RES4, {64, 3}, 6),
      tensor("f.i32", TensorType::I32, {2, 2, 2, 2}, 7),
  };
  return s;
}

// ---- a temp dir ------------------------------------------------------------------------------
struct TempDir {
  std::string path;
  int counter = 0;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "ddrt_test_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) { perror("mkdtemp"); throw Error("mkdtemp failed"); }
    path = tmpl;
  }
  ~TempDir() { std::error_code ec; fs::remove_all(path, ec); }
  std::string write(const Bytes& b, const std::string& name = "") {
    const std::string p = path + "/" + (name.empty() ? "f" + std::to_string(counter++) : name) + ".ddrt";
    FILE* f = fopen(p.c_str(), "wb");
    if (!f || (b.size() && fwrite(b.data(), 1, b.size(), f) != b.size())) throw Error("cannot write " + p);
    fclose(f);
    return p;
  }
};

// Opens `bytes`; returns the FormatError message, or "" when it opened. Any other exception
// is a test failure (reported by the caller through the returned "<other> ..." text).
std::string open_error(TempDir& dir, const Bytes& bytes, bool verify = true) {
  const std::string p = dir.write(bytes, "probe");
  try {
    ModelFile mf(p, verify);
    return "";
  } catch (const FormatError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<other> ") + e.what();
  }
}

// ---- the valid file --------------------------------------------------------------------------
void check_valid(TempDir& dir) {
  const FileSpec s = valid_spec();
  const Built b = build(s);
  const std::string p = dir.write(b.bytes);
  ModelFile mf(p);
  CHECK(mf.version() == kVersion);
  CHECK(mf.alignment() == 128);
  CHECK(mf.file_size() == b.bytes.size());
  CHECK(mf.metadata().size() == s.kv.size());

  const auto& m = mf.metadata();
  auto v = [&](const char* k) -> const Value& { return m.at(k); };
  CHECK(v("v.u8").type == ValueType::U8 && v("v.u8").i == 200);
  CHECK(v("v.i8").i == -5 && v("v.u16").i == 60000 && v("v.i16").i == -30000);
  CHECK(v("v.u32").i == 4000000000LL && v("v.i32").i == -2000000000);
  CHECK(v("v.f32").type == ValueType::F32 && v("v.f32").f == 1.5);
  CHECK(v("v.bool").type == ValueType::BOOL && v("v.bool").i == 1);
  CHECK(v("v.string").s == "h\xc3\xa9llo");
  CHECK(v("v.u64").u == kBigU64);
  CHECK(v("v.i64").i == -(int64_t(1) << 40) && v("v.f64").f == 3.25);
  CHECK(v("a.u8").type == ValueType::ARRAY && v("a.u8").elem_type == ValueType::U8);
  CHECK(v("a.u8").bytes == std::string("\x00\x01\xff", 3));
  CHECK(v("a.i8").elem_type == ValueType::I8 && v("a.i8").bytes == std::string("\x80\x00\x7f", 3));
  CHECK((v("a.u16").ai == std::vector<int64_t>{65535, 1}));
  CHECK((v("a.i16").ai == std::vector<int64_t>{-32768, 2}));
  CHECK((v("a.u32").ai == std::vector<int64_t>{4294967295LL}));
  CHECK((v("a.i32").ai == std::vector<int64_t>{-7, 7, 0}));
  CHECK((v("a.f32").af == std::vector<double>{0.25, -2.0}));
  CHECK((v("a.bool").elem_type == ValueType::BOOL && v("a.bool").ai == std::vector<int64_t>{1, 0, 1}));
  CHECK((v("a.string").as == std::vector<std::string>{"a", "", "\xe2\x96\x81the"}));
  CHECK(v("a.u64").ai.size() == 2 && (uint64_t)v("a.u64").ai[0] == kBigU64 && v("a.u64").ai[1] == 3);
  CHECK((v("a.i64").ai == std::vector<int64_t>{-(int64_t(1) << 50)}));
  CHECK((v("a.f64").af == std::vector<double>{1e300, -0.5}));
  CHECK(v("a.empty").elem_type == ValueType::I32 && v("a.empty").ai.empty());

  // typed getters
  CHECK(mf.get_int("v.i32") == -2000000000 && mf.get_int("v.u8") == 200);
  CHECK(mf.get_int("missing", 7) == 7);
  CHECK_THROWS(mf.get_int("missing"), FormatError);
  CHECK_THROWS(mf.get_int("v.u64"), FormatError);  // above INT64_MAX
  CHECK_THROWS(mf.get_int("v.string"), FormatError);
  CHECK(mf.get_float("v.f32") == 1.5 && mf.get_float("v.i16") == -30000.0);
  CHECK(mf.get_float("missing", 0.5) == 0.5);
  CHECK_THROWS(mf.get_float("v.bool"), FormatError);
  CHECK(mf.get_bool("v.bool", false) && !mf.get_bool("missing", false));
  CHECK_THROWS(mf.get_bool("v.u8", false), FormatError);
  CHECK(mf.get_string("v.string") == "h\xc3\xa9llo" && mf.get_string("missing", "d") == "d");
  CHECK_THROWS(mf.get_string("v.f64"), FormatError);
  CHECK(mf.has("a.f64") && !mf.has("nope"));

  // tensors: table order, values, data bytes, placement
  CHECK(mf.tensors().size() == s.tensors.size());
  for (size_t i = 0; i < s.tensors.size() && i < mf.tensors().size(); ++i) {
    const TensorInfo& t = mf.tensors()[i];
    const TensorSpec& e = s.tensors[i];
    CHECK_MSG(t.name == e.name && t.type == e.type, e.name);
    CHECK_MSG(std::vector<int64_t>(e.dims.begin(), e.dims.end()) == t.shape, e.name);
    CHECK_MSG(t.size == e.data.size() && t.offset == b.offsets[i], e.name);
    CHECK_MSG(t.crc32 == crc_ref(e.data.data(), e.data.size()), e.name);
    CHECK_MSG(t.data && memcmp(t.data, e.data.data(), t.size) == 0, e.name);
    CHECK_MSG(t.offset % 128 == 0, e.name);
    if (t.type == TensorType::RES4) CHECK_MSG((uintptr_t)t.data % kResidualAlignment == 0, e.name);
    CHECK(mf.find(e.name) == &t && &mf.require(e.name) == &t);
  }
  CHECK(mf.find("nope") == nullptr);
  CHECK_THROWS(mf.require("nope"), FormatError);
  CHECK(std::string(type_name(TensorType::UQ3_G128)) == "uq3_g128");
  CHECK(std::string(type_name(TensorType::LUT3)) == "lut3" && std::string(type_name(TensorType::RES4)) == "res4");
  CHECK(std::string(type_name(TensorType::BF16)) == "bf16" && std::string(type_name(TensorType::UQ8_G32)) == "uq8_g32");

  // no alignment key: default 256; no tensors, no metadata: the smallest valid file
  FileSpec d = valid_spec();
  d.kv.erase(d.kv.begin());
  d.alignment = kDefaultAlignment;
  ModelFile md(dir.write(build(d).bytes));
  CHECK(md.alignment() == kDefaultAlignment && md.tensors().size() == s.tensors.size());
  FileSpec e;
  ModelFile me(dir.write(build(e).bytes));
  CHECK(me.metadata().empty() && me.tensors().empty() && me.file_size() == 24);
}

// ---- corruptions -----------------------------------------------------------------------------
enum class Corruption {
  BadMagic, BadVersion, NTensorsHuge, NKvHuge, NTensorsPlusOne, NKvPlusOne,
  KeyLenHuge, KeyEmpty, KeyNotUtf8, StringLenHuge, StringNotUtf8, ArrayCountHuge, ArrayCountPastEnd,
  NestedArray, UnknownValueType, UnknownElemType, DuplicateKey, BoolNot01, StringArrayElemHuge,
  AlignmentNotPow2, AlignmentTooSmall, AlignmentTooBig, AlignmentWrongType,
  DuplicateTensorName, TensorNameEmpty, NDims0, NDims5, DimZero, DimHuge, DimsOverflow,
  UnknownTensorType, TensorTypeGap, RankMismatch, SizeMismatch, OffsetOutOfRange, OffsetWraps,
  OffsetMisaligned, Overlap, Res4NotPage, ChecksumMismatch, ChecksumFieldWrong, EmptyFile,
  Count
};

const char* corruption_name(Corruption c) {
  static const char* kNames[] = {
      "BadMagic", "BadVersion", "NTensorsHuge", "NKvHuge", "NTensorsPlusOne", "NKvPlusOne",
      "KeyLenHuge", "KeyEmpty", "KeyNotUtf8", "StringLenHuge", "StringNotUtf8", "ArrayCountHuge", "ArrayCountPastEnd",
      "NestedArray", "UnknownValueType", "UnknownElemType", "DuplicateKey", "BoolNot01", "StringArrayElemHuge",
      "AlignmentNotPow2", "AlignmentTooSmall", "AlignmentTooBig", "AlignmentWrongType",
      "DuplicateTensorName", "TensorNameEmpty", "NDims0", "NDims5", "DimZero", "DimHuge", "DimsOverflow",
      "UnknownTensorType", "TensorTypeGap", "RankMismatch", "SizeMismatch", "OffsetOutOfRange", "OffsetWraps",
      "OffsetMisaligned", "Overlap", "Res4NotPage", "ChecksumMismatch", "ChecksumFieldWrong", "EmptyFile"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == (size_t)Corruption::Count, "one name per corruption");
  return kNames[(int)c];
}

size_t kv_index(const FileSpec& s, const std::string& key) {
  for (size_t i = 0; i < s.kv.size(); ++i)
    if (s.kv[i].key == key) return i;
  throw Error("test bug: no key " + key);
}

// Spec-level corruptions edit the FileSpec; byte-level ones patch the built file.
Bytes corrupt(Corruption c) {
  FileSpec s = valid_spec();
  const size_t ialign = kv_index(s, "general.alignment");
  std::function<void(Built&)> patch = [](Built&) {};
  const uint64_t huge = uint64_t(1) << 62;
  switch (c) {
    case Corruption::BadMagic: s.magic = 0x46554747; break;  // "GGUF"
    case Corruption::BadVersion: s.version = 2; break;
    case Corruption::NTensorsHuge: s.n_tensors = (int64_t)huge; break;
    case Corruption::NKvHuge: patch = [](Built& b) { b.bytes.patch<uint64_t>(b.at["n_kv"], UINT64_MAX); }; break;
    case Corruption::NTensorsPlusOne: s.n_tensors = s.tensors.size() + 1; break;
    case Corruption::NKvPlusOne: s.n_kv = s.kv.size() + 1; break;
    case Corruption::KeyLenHuge: patch = [](Built& b) { b.bytes.patch<uint64_t>(b.at["kv1.key"], uint64_t(1) << 62); }; break;
    case Corruption::KeyEmpty: s.kv[2].key = ""; break;
    case Corruption::KeyNotUtf8: s.kv[2].key = "v.\xff\xfe"; break;
    case Corruption::StringLenHuge:
      patch = [&](Built& b) { b.bytes.patch<uint64_t>(b.at["kv" + std::to_string(kv_index(s, "v.string")) + ".value"], huge); };
      break;
    case Corruption::StringNotUtf8: s.kv[kv_index(s, "v.string")] = string_kv("v.string", "\xc0\xaf"); break;  // overlong '/'
    case Corruption::ArrayCountHuge:
      patch = [&](Built& b) { b.bytes.patch<uint64_t>(b.at["kv" + std::to_string(kv_index(s, "a.i64")) + ".value"] + 4, huge); };
      break;
    case Corruption::ArrayCountPastEnd:  // under the limit, more than the file holds
      patch = [&](Built& b) { b.bytes.patch<uint64_t>(b.at["kv" + std::to_string(kv_index(s, "a.i64")) + ".value"] + 4, 1u << 24); };
      break;
    case Corruption::NestedArray: {
      KV kv{"a.nested", (uint32_t)ValueType::ARRAY, {}};
      kv.payload.put((uint32_t)ValueType::ARRAY);
      kv.payload.put<uint64_t>(1);
      kv.payload.put((uint32_t)ValueType::U8);
      kv.payload.put<uint64_t>(1);
      kv.payload.put<uint8_t>(1);
      s.kv.push_back(kv);
      break;
    }
    case Corruption::UnknownValueType: s.kv[3].type = 13; break;
    case Corruption::UnknownElemType: s.kv.push_back(array<uint8_t>("a.bad", (ValueType)99, {1})); break;
    case Corruption::DuplicateKey: s.kv.push_back(scalar<uint8_t>("v.u8", ValueType::U8, 1)); break;
    case Corruption::BoolNot01: s.kv[kv_index(s, "v.bool")] = scalar<uint8_t>("v.bool", ValueType::BOOL, 2); break;
    case Corruption::StringArrayElemHuge:
      patch = [&](Built& b) { b.bytes.patch<uint64_t>(b.at["kv" + std::to_string(kv_index(s, "a.string")) + ".value"] + 12, huge); };
      break;
    case Corruption::AlignmentNotPow2: s.kv[ialign] = scalar<uint32_t>("general.alignment", ValueType::U32, 100); break;
    case Corruption::AlignmentTooSmall: s.kv[ialign] = scalar<uint32_t>("general.alignment", ValueType::U32, 16); break;
    case Corruption::AlignmentTooBig: s.kv[ialign] = scalar<uint32_t>("general.alignment", ValueType::U32, 1u << 20); break;
    case Corruption::AlignmentWrongType: s.kv[ialign] = scalar<uint64_t>("general.alignment", ValueType::U64, 128); break;
    case Corruption::DuplicateTensorName: s.tensors[3].name = s.tensors[0].name; break;
    case Corruption::TensorNameEmpty: s.tensors[2].name = ""; break;
    case Corruption::NDims0: s.tensors[2].dims = {}; break;
    case Corruption::NDims5: s.tensors[6].dims = {1, 2, 2, 2, 2}; break;
    case Corruption::DimZero: s.tensors[0].dims = {0, 5}; break;
    case Corruption::DimHuge: s.tensors[0].dims = {uint64_t(1) << 60, 1}; break;
    case Corruption::DimsOverflow: s.tensors[0].dims = {uint64_t(1) << 40, uint64_t(1) << 40}; break;
    case Corruption::UnknownTensorType: s.tensors[0].type = (TensorType)99; break;
    case Corruption::TensorTypeGap: s.tensors[0].type = (TensorType)5; break;
    case Corruption::RankMismatch: s.tensors[3].dims = {800}; break;
    case Corruption::SizeMismatch: s.tensors[2].size = s.tensors[2].data.size() + 1; break;
    case Corruption::OffsetOutOfRange: s.tensors[2].offset = int64_t(1) << 40; break;
    case Corruption::OffsetWraps: patch = [](Built& b) { b.bytes.patch<uint64_t>(b.at["t2.offset"], UINT64_MAX - 127); }; break;
    case Corruption::OffsetMisaligned: patch = [](Built& b) { b.bytes.patch<uint64_t>(b.at["t2.offset"], b.offsets[2] + 8); }; break;
    case Corruption::Overlap: patch = [](Built& b) { b.bytes.patch<uint64_t>(b.at["t3.offset"], b.offsets[0]); }; break;
    case Corruption::Res4NotPage: patch = [](Built& b) { b.bytes.patch<uint64_t>(b.at["t1.offset"], b.offsets[1] - 128); }; break;
    case Corruption::ChecksumMismatch: patch = [](Built& b) { b.bytes[b.data_start + b.offsets[3] + 17] ^= 0x10; }; break;
    case Corruption::ChecksumFieldWrong: s.tensors[4].crc = 0x12345678; break;
    case Corruption::EmptyFile: patch = [](Built& b) { b.bytes.clear(); }; break;
    case Corruption::Count: break;
  }
  Built b = build(s);
  patch(b);
  return b.bytes;
}

void check_message(const std::string& what, const std::string& msg) {
  CHECK_MSG(!msg.empty(), what + ": opened without error");
  CHECK_MSG(msg.rfind("<other>", 0) != 0, what + ": wrong exception: " + msg);
  CHECK_MSG(msg.find(" at offset ") != std::string::npos, what + ": message names no offset: " + msg);
}

void check_corruptions(TempDir& dir, bool verbose) {
  for (int i = 0; i < (int)Corruption::Count; ++i) {
    const Corruption c = (Corruption)i;
    const std::string msg = open_error(dir, corrupt(c));
    if (verbose) printf("  %-20s %s\n", corruption_name(c), msg.c_str());
    check_message(corruption_name(c), msg);
  }
  // the checksum is not read when verification is off
  CHECK(open_error(dir, corrupt(Corruption::ChecksumMismatch), /*verify=*/false).empty());
}

// Every cut through the header, metadata, table and padding, and a sample through the data.
void check_truncations(TempDir& dir) {
  const Built b = build(valid_spec());
  std::vector<size_t> cuts;
  for (size_t n = 0; n <= b.data_start; ++n) cuts.push_back(n);
  for (size_t n = b.data_start + 1; n < b.bytes.size(); n += 97) cuts.push_back(n);
  cuts.push_back(b.bytes.size() - 1);
  int bad = 0;
  for (size_t n : cuts) {
    Bytes t;
    t.assign(b.bytes.begin(), b.bytes.begin() + n);
    const std::string msg = open_error(dir, t);
    if (msg.empty() || msg.rfind("<other>", 0) == 0 || msg.find(" at offset ") == std::string::npos) {
      if (bad++ < 5) fprintf(stderr, "truncated at %zu: '%s'\n", n, msg.c_str());
    }
  }
  CHECK_MSG(bad == 0, std::to_string(bad) + " of " + std::to_string(cuts.size()) + " truncations not rejected properly");
}

// Overwriting any single byte of the header region with 0x00, 0xff or 0x80 either still opens or
// throws FormatError: never another exception, never a crash (run under ASan once).
void check_byte_overwrites(TempDir& dir) {
  const Built b = build(valid_spec());
  int other = 0, rejected = 0;
  for (size_t i = 0; i < b.data_start; ++i)
    for (uint8_t val : {0x00, 0xff, 0x80}) {
      if (b.bytes[i] == val) continue;
      Bytes t = b.bytes;
      t[i] = val;
      const std::string msg = open_error(dir, t);
      if (msg.rfind("<other>", 0) == 0 && other++ < 5) fprintf(stderr, "byte %zu = %d: %s\n", i, val, msg.c_str());
      rejected += !msg.empty();
    }
  CHECK(other == 0);
  CHECK(rejected > 0);
}

// ---- checksums -------------------------------------------------------------------------------
void check_crc(TempDir& dir) {
  const char* digits = "123456789";
  CHECK(crc32((const uint8_t*)digits, 9) == 0xCBF43926u);
  CHECK(crc32(nullptr, 0) == 0);
  const Bytes r = pseudo_random(1000, 11);
  bool same = true;
  for (size_t start = 0; start < 16; ++start)
    for (size_t n = 0; n + start <= 200; n += 7) same &= crc32(r.data() + start, n) == crc_ref(r.data() + start, n);
  CHECK(same);
  CHECK(crc32(r.data() + 300, 700, crc32(r.data(), 300)) == crc_ref(r.data(), 1000));  // chaining

  // a tensor larger than the reader's parallel CRC pieces (8 MiB): the pieces combine correctly
  FileSpec s;
  s.tensors = {tensor("big", TensorType::U8, {(uint64_t(20) << 20) + 3}, 12)};
  Built b = build(s);
  CHECK(open_error(dir, b.bytes).empty());
  b.bytes[b.data_start + (17 << 20)] ^= 1;
  const std::string msg = open_error(dir, b.bytes);
  CHECK_MSG(msg.find("crc32") != std::string::npos, msg);
}

void check_open_errors(TempDir& dir) {
  CHECK_THROWS(ModelFile(dir.path + "/does_not_exist.ddrt"), FileNotFound);
  bool names_path = false;
  try {
    ModelFile mf(dir.path + "/does_not_exist.ddrt");
  } catch (const FileNotFound& e) {
    names_path = std::string(e.what()).find("does_not_exist.ddrt") != std::string::npos;
  }
  CHECK(names_path);
  bool dir_error = false;
  try {
    ModelFile mf(dir.path);
  } catch (const FormatError&) {
  } catch (const Error&) {
    dir_error = true;
  }
  CHECK(dir_error);
}

}  // namespace

int main(int argc, char** argv) {
  const bool verbose = argc > 1 && std::string(argv[1]) == "-v";
  try {
    TempDir dir;
    check_valid(dir);
    check_corruptions(dir, verbose);
    check_truncations(dir);
    check_byte_overwrites(dir);
    check_crc(dir);
    check_open_errors(dir);
  } catch (const std::exception& e) {
    fprintf(stderr, "FAIL: unexpected exception: %s\n", e.what());
    ++ddrt_test::n_fail();
  }
  return ddrt_test::check_summary();
}
