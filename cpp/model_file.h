// decdec_rt: reader of the .ddrt model file (spec: docs/format.md).
//
// The file is memory-mapped read-only. Every field is validated before use; anything
// malformed throws FormatError("<field> at offset <n>: <what is wrong>"). After a successful
// open, every TensorInfo's [data, data + size) lies inside the mapping, its size equals
// tensor_bytes(type, shape), it is aligned, does not overlap another tensor, and (unless
// verification was switched off) its checksum matched.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "layout.h"

namespace ddrt {

constexpr uint32_t kMagic = 0x54524444;  // "DDRT" read as little-endian u32
constexpr uint32_t kVersion = 1;
constexpr uint32_t kDefaultAlignment = 256;
constexpr uint32_t kResidualAlignment = 4096;

// Metadata value types: GGUF's numbering.
enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

// A metadata value. Arrays are homogeneous and not nested; they are stored by element kind.
struct Value {
  ValueType type = ValueType::U8;
  ValueType elem_type = ValueType::U8;  // for ARRAY
  // scalars: integers (all widths, bool) in i, floats in f, strings in s
  int64_t i = 0;
  uint64_t u = 0;  // the same integer, for U64 values above INT64_MAX
  double f = 0;
  std::string s;
  // arrays: numeric elements widened into ai / af, strings into as; raw bytes for U8/I8 arrays
  std::vector<int64_t> ai;
  std::vector<double> af;
  std::vector<std::string> as;
  std::string bytes;  // U8 / I8 array contents, verbatim
};

struct TensorInfo {
  std::string name;
  TensorType type;
  std::vector<int64_t> shape;  // outermost first: [d_out, d_in] for matrices
  uint64_t offset = 0;         // from the start of the data section
  uint64_t size = 0;           // bytes
  uint32_t crc32 = 0;          // CRC-32 (zlib polynomial) of the bytes
  const uint8_t* data = nullptr;  // into the mapping
};

class ModelFile {
 public:
  // Opens and validates `path`. verify_checksums=false skips the CRC pass (fast open).
  explicit ModelFile(const std::string& path, bool verify_checksums = true);
  ~ModelFile();
  ModelFile(const ModelFile&) = delete;
  ModelFile& operator=(const ModelFile&) = delete;

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }

  const std::map<std::string, Value>& metadata() const { return kv_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  // Typed getters: throw FormatError naming the key when missing or of the wrong type.
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t dflt) const;
  double get_float(const std::string& key) const;  // accepts integer values too
  double get_float(const std::string& key, double dflt) const;
  bool get_bool(const std::string& key, bool dflt) const;
  std::string get_string(const std::string& key) const;
  std::string get_string(const std::string& key, const std::string& dflt) const;

  // nullptr when absent.
  const TensorInfo* find(const std::string& name) const;
  // Throws FormatError when absent, of another type set, or of another shape.
  const TensorInfo& require(const std::string& name) const;

 private:
  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  std::map<std::string, Value> kv_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  void parse(bool verify_checksums);
};

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);

}  // namespace ddrt
