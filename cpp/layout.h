// decdec_rt: the ONE definition of every packed layout in a .ddrt file.
//
// Mirrored in numpy by python/decdec_rt/quant.py; tests/python/test_layout.py checks the two
// bit-exact against each other. docs/format.md describes the same bytes in prose.
//
// Conventions
//   A weight matrix W has shape [d_out, d_in] (y = W x). Quantized types group codes along the
//   input dim (d_in). All multi-byte values are little-endian.
//
// Uniform quantization (types UQ{b}_G{g}), b in {2,3,4,8}, g in {32,64,128}:
//   w[o][i] = s[o][i/g] * q[o][i] + m[o][i/g]      q in [0, 2^b - 1], s and m fp16
//   Data = codes section | scales section | mins section, no padding between sections:
//     codes : d_out rows x n_blocks(d_in) blocks x block_bytes(b) bytes
//     scales: d_out x n_groups(d_in, g) fp16   (row-major)
//     mins  : d_out x n_groups(d_in, g) fp16
//   A block holds 32 consecutive codes of one row; a row ends with a partial block padded with
//   code 0 when d_in % 32 != 0 (the padded codes are never used). The last group may be short.
//
// Non-uniform quantization (types LUT3, LUT4): w[o][i] = lut[o][q[o][i]]
//   Data = codes section (as above, b = 3 or 4) | lut section: d_out x 2^b fp16.
//
// Code blocks, 32 codes c0..c31 in block_bytes(b) = 4*b bytes:
//   b = 2 (8 bytes):  byte j (0..7)   = c[j] | c[j+8]<<2 | c[j+16]<<4 | c[j+24]<<6
//   b = 4 (16 bytes): byte j (0..15)  = c[j] | c[j+16]<<4
//   b = 8 (32 bytes): byte j (0..31)  = c[j]
//   b = 3 (12 bytes): bytes 0..7  = the low 2 bits of each code, laid out as b = 2
//                     bytes 8..11 = the high bit: bit (j%8) of byte 8 + j/8 is bit 2 of c[j]
//   General rule for b in {2,4,8}: with n = 4*b bytes, code j sits in byte (j % n) at bit
//   b * (j / n). Strided (not adjacent) packing lets a SIMD lane or GPU thread unpack a whole
//   16-byte load with one shift + mask per sub-position.
//
// DecDEC residual (type RES4), logical shape [d_in, d_out] (stored TRANSPOSED):
//   r[o][i] = rscale[o] * c[i][o],  c in -7..7 (4-bit symmetric), rscale fp16 per output channel
//   Row i (one input channel) = res_row_bytes(d_out) = ceil(d_out/2) bytes:
//     byte p = (c[i][2p] + 8) | (c[i][2p+1] + 8) << 4     (a missing odd last element: nibble 8)
//   so fetching input channel i reads one contiguous row. rscale is a separate F16 tensor
//   "<linear>.residual_scale" of shape [d_out].
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.h"

namespace ddrt {

// Tensor type ids as stored in the file's tensor table. Values are part of the file format.
enum class TensorType : uint32_t {
  F32 = 0,
  F16 = 1,
  BF16 = 2,
  I32 = 3,
  U8 = 4,
  // uniform: id = 16 + 3 * bits_index + group_index, bits (2,3,4,8), group (32,64,128)
  UQ2_G32 = 16, UQ2_G64 = 17, UQ2_G128 = 18,
  UQ3_G32 = 19, UQ3_G64 = 20, UQ3_G128 = 21,
  UQ4_G32 = 22, UQ4_G64 = 23, UQ4_G128 = 24,
  UQ8_G32 = 25, UQ8_G64 = 26, UQ8_G128 = 27,
  LUT3 = 40,
  LUT4 = 41,
  RES4 = 48,
};

constexpr int kBlockCodes = 32;      // codes per packed block
constexpr int kChunk = 1024;         // DecDEC selection chunk along d_in
constexpr int kBuckets = 32;         // DecDEC approximate top-k buckets
constexpr int kResZero = 8;          // residual nibble offset (nibble = code + 8)
constexpr int kResMaxCode = 7;       // residual codes are -7..7

DDRT_HDC int block_bytes(int bits) { return 4 * bits; }
DDRT_HDC int64_t n_blocks(int64_t d_in) { return (d_in + kBlockCodes - 1) / kBlockCodes; }
DDRT_HDC int64_t n_groups(int64_t d_in, int group) { return (d_in + group - 1) / group; }
DDRT_HDC int64_t row_code_bytes(int64_t d_in, int bits) { return n_blocks(d_in) * block_bytes(bits); }
DDRT_HDC int64_t res_row_bytes(int64_t d_out) { return (d_out + 1) / 2; }

static_assert(block_bytes(2) == 8 && block_bytes(3) == 12 && block_bytes(4) == 16 && block_bytes(8) == 32,
              "a block of 32 codes takes exactly 4*b bytes");
static_assert(kBlockCodes * 3 == 8 * block_bytes(3), "3-bit blocks are dense");

inline bool is_uniform(TensorType t) { return (uint32_t)t >= 16 && (uint32_t)t <= 27; }
inline bool is_lut(TensorType t) { return t == TensorType::LUT3 || t == TensorType::LUT4; }
inline bool is_float(TensorType t) {
  return t == TensorType::F32 || t == TensorType::F16 || t == TensorType::BF16;
}
inline bool is_matrix_type(TensorType t) { return is_float(t) || is_uniform(t) || is_lut(t); }

// Bits per code of a quantized type (uniform or LUT); 0 otherwise.
inline int type_bits(TensorType t) {
  static const int kBits[4] = {2, 3, 4, 8};
  if (is_uniform(t)) return kBits[((uint32_t)t - 16) / 3];
  if (t == TensorType::LUT3) return 3;
  if (t == TensorType::LUT4) return 4;
  return 0;
}
// Group size of a uniform type; 0 otherwise.
inline int type_group(TensorType t) {
  static const int kGroups[3] = {32, 64, 128};
  return is_uniform(t) ? kGroups[((uint32_t)t - 16) % 3] : 0;
}
// The uniform type for (bits, group), or false if that pair is not a format type.
inline bool uniform_type(int bits, int group, TensorType* out) {
  int bi = bits == 2 ? 0 : bits == 3 ? 1 : bits == 4 ? 2 : bits == 8 ? 3 : -1;
  int gi = group == 32 ? 0 : group == 64 ? 1 : group == 128 ? 2 : -1;
  if (bi < 0 || gi < 0) return false;
  *out = (TensorType)(16 + 3 * bi + gi);
  return true;
}
inline bool known_type(TensorType t) {
  return is_float(t) || t == TensorType::I32 || t == TensorType::U8 || is_uniform(t) || is_lut(t) ||
         t == TensorType::RES4;
}
const char* type_name(TensorType t);  // "f32", "uq3_g128", ... (model_file.cpp)

// Bytes of a tensor of this type. shape = [d_out, d_in] for matrices, [d_in, d_out] for RES4,
// [n] for 1-D element types. Returns -1 when the type/rank pair is invalid or on overflow
// (the reader turns that into a FormatError).
inline int64_t tensor_bytes(TensorType t, int n_dims, const int64_t* shape) {
  int64_t n = 1;
  for (int d = 0; d < n_dims; ++d) {
    if (shape[d] < 0 || (shape[d] > 0 && n > (int64_t(1) << 50) / shape[d])) return -1;
    n *= shape[d];
  }
  switch (t) {
    case TensorType::F32: case TensorType::I32: return 4 * n;
    case TensorType::F16: case TensorType::BF16: return 2 * n;
    case TensorType::U8: return n;
    default: break;
  }
  if (n_dims != 2) return -1;
  const int64_t rows = shape[0], cols = shape[1];
  if (is_uniform(t)) {
    const int b = type_bits(t), g = type_group(t);
    return rows * row_code_bytes(cols, b) + 2 * 2 * rows * n_groups(cols, g);
  }
  if (is_lut(t)) {
    const int b = type_bits(t);
    return rows * row_code_bytes(cols, b) + 2 * rows * (int64_t(1) << b);
  }
  if (t == TensorType::RES4) return rows * res_row_bytes(cols);  // rows = d_in, cols = d_out
  return -1;
}

// ---- accessors: the slow, obviously correct definition of each layout -----------------------
// Code j (0..31) of one packed block of `bits` bits.
DDRT_HD int block_code(const uint8_t* blk, int bits, int j) {
  if (bits == 3) {
    const int lo = (blk[j % 8] >> (2 * (j / 8))) & 3;
    const int hi = (blk[8 + j / 8] >> (j % 8)) & 1;
    return lo | (hi << 2);
  }
  const int n = 4 * bits;
  return (blk[j % n] >> (bits * (j / n))) & ((1 << bits) - 1);
}

// Residual code (-7..7) of input channel i (its row `row`), output channel o.
DDRT_HD int res_code(const uint8_t* row, int64_t o) {
  return (int)((row[o >> 1] >> (4 * (o & 1))) & 15) - kResZero;
}

}  // namespace ddrt
