// decdec_rt CUDA backend: the GPU-side layout of a quantized weight matrix, repacked at load.
//
// The file layout (layout.h) is kept for the meaning of codes; only their placement changes so
// that the batch-1 GEMV (gemv_q.cuh) reads every byte once with coalesced 16-byte loads and turns
// each code into an exact float with one LOP3 + one FADD (the "magic exponent" trick below).
//
// Lane step: the unit of work of one lane on one row: C codes in V 16-byte vectors.
//   bits 2: C =  64 codes, V = 1     bits 3: C = 128 codes, V = 3
//   bits 4: C =  32 codes, V = 1     bits 8: C =  32 codes, V = 2
// A round is 32 lane steps (one per lane of a warp) = 32*C codes of the row; a row holds
// n_rounds = ceil(d_in / (32 C)) rounds (codes past d_in are 0). Vector v of lane step s sits at
// uint4 index  (s / 32) * 32 * V + v * 32 + (s % 32)  of the row (row stride row_vecs uint4), so
// a warp's load of vector v of one round is 512 contiguous bytes.
// Which codes a lane step holds (code_index): lane l = 8a + b of round r covers the octet slab
// r*32C + a*8C .. +8C-1 of the row, and in it code c (0..C-1) is element
//   32 * (c / 4) + 4 * b + c % 4
// so the 8 lanes of an octet read x as 8 consecutive float4 (128 coalesced bytes) for every 4
// codes, and every lane's codes of a 128-group sit in one group per 4 float4 (few scale reads).
// Inside a lane step the V*4 32-bit words hold code c (0..C-1) at (word, bit) = packed_pos(c):
//   bits 4: file block layout (byte j = c[j] | c[j+16] << 4)
//   bits 2: file block layout, two blocks (8 bytes each) per step
//   bits 8: byte c
//   bits 3: per 32-code slice sl (3 words w0 w1 w2 = words 3sl..3sl+2): code cc < 30 at word
//           cc / 10, bits 3*(cc%10)..+2; code 30: low 2 bits = w0[31:30], high bit = w2[30];
//           code 31: low 2 bits = w1[31:30], high bit = w2[31].
//     w0: |c30lo| c9 | c8 | ... | c0 |      w2: |c31hi c30hi| c29 | ... | c20 |
// Every field of a word that ends at or below bit 22 is decoded in place; the others from the
// word shifted right by 16 (kShift), which brings each of them below bit 23 too.
#pragma once

#include <cstdint>
#include <cstring>

#include "layout.h"

namespace ddrt {
namespace gpu {

constexpr int kShift = 16;  // the second view of each word: w >> kShift

DDRT_HDC int step_codes(int bits) { return bits == 2 ? 64 : bits == 3 ? 128 : 32; }
DDRT_HDC int step_vecs(int bits) { return bits == 3 ? 3 : bits == 8 ? 2 : 1; }
DDRT_HDC int step_words(int bits) { return 4 * step_vecs(bits); }
DDRT_HDC int step_slices(int bits) { return step_codes(bits) / 32; }
DDRT_HDC int64_t round_codes(int bits) { return 32 * (int64_t)step_codes(bits); }
DDRT_HDC int64_t n_rounds(int64_t d_in, int bits) { return (d_in + round_codes(bits) - 1) / round_codes(bits); }
// uint4 per row: whole rounds.
DDRT_HDC int64_t row_vecs(int64_t d_in, int bits) { return n_rounds(d_in, bits) * 32 * step_vecs(bits); }
// uint4 index (within the row) of vector v of lane step s.
DDRT_HD int64_t vec_index(int64_t s, int v, int bits) {
  return (s / 32) * 32 * step_vecs(bits) + (int64_t)v * 32 + (s % 32);
}
// Index in the row of code c of lane step s, and its inverse.
DDRT_HD int64_t code_index(int64_t s, int c, int bits) {
  const int l = (int)(s % 32);
  return (s / 32) * round_codes(bits) + (l / 8) * 8 * step_codes(bits) + 32 * (c / 4) + 4 * (l % 8) + c % 4;
}
DDRT_HD void code_place(int64_t i, int bits, int64_t* s, int* c) {
  const int64_t C = step_codes(bits), u = i % (32 * C), v = u % (8 * C);
  *s = (i / (32 * C)) * 32 + (u / (8 * C)) * 8 + (v % 32) / 4;
  *c = (int)(4 * (v / 32) + v % 4);
}
// Scale/min words per row on the GPU: whole rounds (the groups past d_in are padding).
DDRT_HDC int64_t sm_row_groups(int64_t d_in, int bits, int group) {
  return n_rounds(d_in, bits) * round_codes(bits) / group;
}

// (word, bit) of code c of a lane step; for bits 3, codes 30 and 31 of a slice are split
// (see above) and this returns word 3sl + (cc - 30), bit 30 for their low 2 bits.
struct Pos {
  int word, bit;
};
DDRT_HDC Pos packed_pos(int bits, int c) {
  return bits == 4 ? Pos{(c % 16) / 4, 8 * ((c % 16) % 4) + 4 * (c / 16)}
       : bits == 2 ? Pos{2 * (c / 32) + ((c % 32) % 8) / 4, 8 * (((c % 32) % 8) % 4) + 2 * ((c % 32) / 8)}
       : bits == 8 ? Pos{c / 4, 8 * (c % 4)}
       : (c % 32) < 30 ? Pos{3 * (c / 32) + (c % 32) / 10, 3 * ((c % 32) % 10)}
                       : Pos{3 * (c / 32) + (c % 32) - 30, 30};
}

// Code c (0..C-1) of one lane step given its words: the slow, obviously correct reader.
DDRT_HD int step_code(const uint32_t* w, int bits, int c) {
  const Pos p = packed_pos(bits, c);
  if (bits == 3 && (c % 32) >= 30) {
    const int hi = (w[3 * (c / 32) + 2] >> (30 + (c % 32) - 30)) & 1;
    return (int)((w[p.word] >> 30) & 3) | (hi << 2);
  }
  return (int)((w[p.word] >> p.bit) & ((1u << bits) - 1));
}
// Writes code q at position c into zeroed words.
inline void step_put(uint32_t* w, int bits, int c, int q) {
  const Pos p = packed_pos(bits, c);
  if (bits == 3 && (c % 32) >= 30) {
    w[p.word] |= (uint32_t)(q & 3) << 30;
    w[3 * (c / 32) + 2] |= (uint32_t)((q >> 2) & 1) << (30 + (c % 32) - 30);
    return;
  }
  w[p.word] |= (uint32_t)q << p.bit;
}

// Code i of a row of the repacked matrix (row = that row's words): the slow reader used by the
// tiled matmul and embed.
DDRT_HD int packed_code(const uint32_t* row, int bits, int64_t i) {
  int64_t s;
  int c;
  code_place(i, bits, &s, &c);
  const Pos p = packed_pos(bits, c);
  const uint32_t wa = row[4 * vec_index(s, p.word / 4, bits) + p.word % 4];
  if (bits == 3 && (c % 32) >= 30) {
    const int w2 = 3 * (c / 32) + 2;
    const uint32_t wb = row[4 * vec_index(s, w2 / 4, bits) + w2 % 4];
    return (int)((wa >> 30) & 3) | (int)(((wb >> (c % 32)) & 1) << 2);
  }
  return (int)((wa >> p.bit) & ((1u << bits) - 1));
}

// ---- the GEMV's decoder (also run on the host by tests/cuda/test_cuda_layout.cpp) -----------
DDRT_HD float bits_f(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
// Exact float of the field at bits p..p+B-1 (p + B <= 23) of w: the float with exponent
// 2^(23-p) and mantissa w & (mask << p) is 2^(23-p) + q; subtracting 2^(23-p) leaves q.
template <int B>
DDRT_HD float field_f(uint32_t w, int p) {
  const uint32_t e = (uint32_t)(150 - p) << 23;
  return bits_f((w & (((1u << B) - 1) << p)) | e) - bits_f(e);
}
// Code c of a lane step as an exact float, from its words wd and wsh = wd >> kShift
// (c is a compile-time constant after unrolling, so all of this folds to LOP3 + FADD).
template <int B>
DDRT_HD float code_f(const uint32_t* wd, const uint32_t* wsh, int c) {
  if (B == 3 && (c % 32) >= 30) {
    const int sl = c / 32, cc = c % 32;
    const uint32_t v = (wd[3 * sl + cc - 30] >> 30) | ((wd[3 * sl + 2] >> (cc - 2)) & 4u);
    return bits_f(v | 0x4B000000u) - 8388608.0f;
  }
  const Pos p = packed_pos(B, c);
  return p.bit + B <= 23 ? field_f<B>(wd[p.word], p.bit) : field_f<B>(wsh[p.word], p.bit - kShift);
}

}  // namespace gpu
}  // namespace ddrt
