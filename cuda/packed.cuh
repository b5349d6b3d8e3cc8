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
//   bits 3: per 32-code slice sl (3 words w0 w1 w2 = words 3sl..3sl+2), arranged for the
//           tensor-core GEMV (gemv_tc.cuh): each 16-bit half of a word holds 5 codes at bits
//           0,3,6,9,12 and one bit of a split code at bit 15. Quad q (codes cc = 4q..4q+3) is two
//           "slots" (a0: cc 4q, 4q+1; a2: cc 4q+2, 4q+3), a slot being one field position in both
//           halves of one word (low half: the even code, high half: the odd one); kQuad3 lists
//           (word, bit) of each slot. Codes 14 and 15 (slot a2 of quad 3) are split: bit j of
//           code 14 is bit 15 of w_j, of code 15 bit 31 of w_j.
// Every field of a word that ends at or below bit 22 is decoded in place; the others from the
// word shifted right by 16 (kShift), which brings each of them below bit 23 too.
//
// Tensor-core view (quad_frag): for bits 3 and 4, quad j of a lane step (codes 4j..4j+3, whose
// inputs are 4 consecutive x) decodes with one LOP3 (and shared shifts) per slot into two
// __half2 whose halves are fp16 SUBNORMALS q * 2^(p - 24), p = the field's bit within its half
// after the shift (0, or kClassShift for "class 1" quads). Every quad is of one class, and the
// quads of one 32..128 group share it, so the GEMV scales a group's product once.
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

// The fused GEMV (gemv_tc.cuh) works in slabs of x (a slab = 8 lane steps = 8 C codes; in shared
// memory one uint4 per x float4: hi b0 b1, lo b0 b1), two chunks per slab.
DDRT_HDC int64_t mma_slabs(int64_t d_in, int bits) { return (d_in + 8 * step_codes(bits) - 1) / (8 * step_codes(bits)); }
// Lane-step chunks per unit (a unit's input codes per row: 512 at 3 and at 4 bits, 3 / 4 KB per
// 16-row unit; one unit's codes take 24 / 32 registers per lane). Units of 256 4-bit codes made
// the 4-bit launch ~30 % slower (twice the partial slots, atomics and finishing per byte).
#ifndef DDRT_TC_UNIT_CHUNKS4  // lab override (-DDDRT_TC_UNIT_CHUNKS4=2)
#define DDRT_TC_UNIT_CHUNKS4 4
#endif
DDRT_HDC int tc_unit_chunks(int bits) { return bits == 3 ? 1 : DDRT_TC_UNIT_CHUNKS4; }
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
// bits 3: (word within the slice, bit within the half) of slot a0 and a2 of quad q; -1: split.
DDRT_HDC int quad3_word(int q, int slot) {
  return slot == 0 ? (q == 0 ? 0 : q == 1 ? 0 : q == 2 ? 1 : q == 3 ? 2 : q == 4 ? 0 : q == 5 ? 1 : q == 6 ? 1 : 2)
                   : (q == 0 ? 0 : q == 1 ? 1 : q == 2 ? 2 : q == 3 ? -1 : q == 4 ? 0 : q == 5 ? 1 : q == 6 ? 2 : 2);
}
DDRT_HDC int quad3_bit(int q, int slot) {
  return slot == 0 ? (q == 0 ? 0 : q == 1 ? 12 : q == 2 ? 6 : q == 3 ? 6 : q == 4 ? 3 : q == 5 ? 3 : q == 6 ? 12 : 9)
                   : (q == 0 ? 6 : q == 1 ? 0 : q == 2 ? 0 : q == 3 ? 15 : q == 4 ? 9 : q == 5 ? 9 : q == 6 ? 3 : 12);
}
// bits 3: codes 14 and 15 of a slice are split over its three words (bit 15 / 31 of each).
DDRT_HDC bool split3(int bits, int c) { return bits == 3 && ((c % 32) == 14 || (c % 32) == 15); }

DDRT_HDC Pos packed_pos(int bits, int c) {
  return bits == 4 ? Pos{(c % 16) / 4, 8 * ((c % 16) % 4) + 4 * (c / 16)}
       : bits == 2 ? Pos{2 * (c / 32) + ((c % 32) % 8) / 4, 8 * (((c % 32) % 8) % 4) + 2 * ((c % 32) / 8)}
       : bits == 8 ? Pos{c / 4, 8 * (c % 4)}
       : split3(bits, c) ? Pos{3 * (c / 32), 15 + 16 * ((c % 32) - 14)}
                         : Pos{3 * (c / 32) + quad3_word((c % 32) / 4, (c % 4) / 2),
                               quad3_bit((c % 32) / 4, (c % 4) / 2) + 16 * (c % 2)};
}

// Code c (0..C-1) of one lane step given its words: the slow, obviously correct reader.
DDRT_HD int step_code(const uint32_t* w, int bits, int c) {
  const Pos p = packed_pos(bits, c);
  if (split3(bits, c)) {
    int q = 0;
    for (int j = 0; j < 3; ++j) q |= (int)((w[p.word + j] >> p.bit) & 1) << j;
    return q;
  }
  return (int)((w[p.word] >> p.bit) & ((1u << bits) - 1));
}
// Writes code q at position c into zeroed words.
inline void step_put(uint32_t* w, int bits, int c, int q) {
  const Pos p = packed_pos(bits, c);
  if (split3(bits, c)) {
    for (int j = 0; j < 3; ++j) w[p.word + j] |= (uint32_t)((q >> j) & 1) << p.bit;
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
  if (split3(bits, c)) {
    int q = 0;
    for (int j = 0; j < 3; ++j) {
      const int wj = p.word + j;
      q |= (int)((row[4 * vec_index(s, wj / 4, bits) + wj % 4] >> p.bit) & 1) << j;
    }
    return q;
  }
  const uint32_t wa = row[4 * vec_index(s, p.word / 4, bits) + p.word % 4];
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
  const Pos p = packed_pos(B, c);
  if (split3(B, c)) {
    const uint32_t v = ((wd[p.word] >> p.bit) & 1u) | ((wd[p.word + 1] >> (p.bit - 1)) & 2u) |
                       ((wd[p.word + 2] >> (p.bit - 2)) & 4u);
    return bits_f(v | 0x4B000000u) - 8388608.0f;
  }
  return p.bit + B <= 23 ? field_f<B>(wd[p.word], p.bit) : field_f<B>(wsh[p.word], p.bit - kShift);
}

// ---- the tensor-core GEMV's decoder (gemv_tc.cuh; also run by test_cuda_layout) -----------
// Class of quad j (see the top): 0 or 1; a class-1 field decodes to q * 2^(kClassShift - 24).
template <int B>
DDRT_HDC int quad_class(int j) { return B == 4 ? (j % 8) / 4 : (j % 8) / 4; }
template <int B>
DDRT_HDC int class_shift() { return B == 4 ? 4 : 3; }
// Which code of the quad (0..3) sits in (slot, half): bits 3: 2*slot + half; bits 4: slot + 2*half.
template <int B>
DDRT_HDC int quad_code(int slot, int half) { return B == 3 ? 2 * slot + half : slot + 2 * half; }
// The two A-fragment words of quad j (j a compile-time constant after unrolling) of a lane step
// whose words are w: slot 0 (a0) and slot 1 (a2), each a __half2 of subnormals.
template <int B>
DDRT_HD void quad_frag(const uint32_t* w, int j, uint32_t& a0, uint32_t& a2) {
  constexpr uint32_t m0 = B == 4 ? 0x000F000Fu : 0x00070007u, m1 = m0 << class_shift<B>();
  if (B == 4) {
    const uint32_t m = quad_class<4>(j) ? m1 : m0, v = w[j % 4];
    a0 = v & m;
    a2 = (v >> 8) & m;
    return;
  }
  const uint32_t* s = w + 3 * (j / 8);
  switch (j % 8) {
    case 0: a0 = s[0] & m0; a2 = (s[0] >> 6) & m0; break;
    case 1: a0 = (s[0] >> 12) & m0; a2 = s[1] & m0; break;
    case 2: a0 = (s[1] >> 6) & m0; a2 = s[2] & m0; break;
    case 3:
      a0 = (s[2] >> 6) & m0;
      a2 = ((s[0] >> 15) & 0x00010001u) | ((s[1] >> 14) & 0x00020002u) | ((s[2] >> 13) & 0x00040004u);
      break;
    case 4: a0 = s[0] & m1; a2 = (s[0] >> 6) & m1; break;
    case 5: a0 = s[1] & m1; a2 = (s[1] >> 6) & m1; break;
    case 6: a0 = (s[1] >> 9) & m1; a2 = s[2] & m1; break;
    default: a0 = (s[2] >> 6) & m1; a2 = (s[2] >> 9) & m1; break;
  }
}

}  // namespace gpu
}  // namespace ddrt
