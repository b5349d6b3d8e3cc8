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
//           tensor-core GEMV (gemv_tc.cuh): quad q of the slice (codes 4q..4q+3, whose inputs are
//           4 consecutive x) has code 4q + i in byte i of its word(s): quads 0..5 are whole
//           fields, quad q at bits 3 (q % 2) .. +2 of each byte of w[q / 2]; quads 6 and 7 are
//           split: their low 2 bits at bits 6-7 of each byte of w0 (quad 6) / w1 (quad 7), their
//           bit 2 at bit 6 (quad 6) / 7 (quad 7) of each byte of w2.
// Every field of a word that ends at or below bit 22 is decoded in place; the others from the
// word shifted right by 16 (kShift), which brings each of them below bit 23 too.
//
// Tensor-core view (quad_i8): for bits 3 and 4, quad j of a lane step (codes 4j..4j+3) decodes
// with one LOP3 (bits 4; bits 3 quads 0..5) or two shifts and two LOP3 (bits 3 quads 6, 7) into
// one register of 4 unsigned bytes, byte i = code 4j + i << s, s = the quad's class shift (two
// classes): the A fragment register of an int8 mma (mma.m16n8k32 u8 x s8). The GEMV keeps the
// classes apart and divides each by 2^s once per group.
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
// Lane-step chunks per unit (a unit's input codes per row: 1024 at 3 bits, 512 at 4: one or two
// whole slabs, so that the int8 mma pairs each quad of a slab's first chunk with the same quad of
// its second: same class, same group; 6 / 4 KB per 16-row unit). Units of 256 4-bit codes made
// the 4-bit launch ~30 % slower (twice the partial slots, atomics and finishing per byte).
#ifndef DDRT_TC_UNIT_CHUNKS4  // lab override (-DDDRT_TC_UNIT_CHUNKS4=2)
#define DDRT_TC_UNIT_CHUNKS4 4
#endif
DDRT_HDC int tc_unit_chunks(int bits) { return bits == 3 ? 2 : DDRT_TC_UNIT_CHUNKS4; }
// Units per 16-row tile (a tile's columns): the row's chunks, two per slab, in units.
DDRT_HDC int64_t tc_tile_units(int64_t d_in, int bits) {
  return (2 * mma_slabs(d_in, bits) + tc_unit_chunks(bits) - 1) / tc_unit_chunks(bits);
}
// A fused-GEMV unit's ring slot (gemv_tc.cuh), which is also its unit image (DevLinear::units):
// groups per slab, groups of a unit's row (its slabs': a 3-bit unit is half a slab, that slab's),
// and the slot's size in uint4: the unit's codes (16 rows x its chunks) + its rows' (scale, min)
// words (16 rows x its groups).
DDRT_HDC int tc_slab_groups(int bits, int group) { return 8 * step_codes(bits) / group; }
DDRT_HDC int tc_unit_groups(int bits, int group) {
  return (tc_unit_chunks(bits) + 1) / 2 * tc_slab_groups(bits, group);
}
DDRT_HDC int tc_slot_vecs(int bits, int group) {
  return tc_unit_chunks(bits) * 2 * step_vecs(bits) * 32 + (16 * tc_unit_groups(bits, group) + 3) / 4;
}
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
// bits 3: codes of quads 6 and 7 of a slice (codes 24..31) are split (see above).
DDRT_HDC bool split3(int bits, int c) { return bits == 3 && (c % 32) >= 24; }
// bits 3, a split code: the position of its bit 2 (packed_pos gives that of its low 2 bits).
DDRT_HDC Pos split3_hi(int c) { return Pos{3 * (c / 32) + 2, 8 * (c % 4) + 6 + ((c % 32) / 4 - 6)}; }

DDRT_HDC Pos packed_pos(int bits, int c) {
  return bits == 4 ? Pos{(c % 16) / 4, 8 * ((c % 16) % 4) + 4 * (c / 16)}
       : bits == 2 ? Pos{2 * (c / 32) + ((c % 32) % 8) / 4, 8 * (((c % 32) % 8) % 4) + 2 * ((c % 32) / 8)}
       : bits == 8 ? Pos{c / 4, 8 * (c % 4)}
       : split3(bits, c) ? Pos{3 * (c / 32) + (c % 32) / 4 - 6, 8 * (c % 4) + 6}
                         : Pos{3 * (c / 32) + (c % 32) / 8, 8 * (c % 4) + 3 * (((c % 32) / 4) % 2)};
}

// Code c (0..C-1) of one lane step given its words: the slow, obviously correct reader.
DDRT_HD int step_code(const uint32_t* w, int bits, int c) {
  const Pos p = packed_pos(bits, c);
  if (split3(bits, c)) {
    const Pos h = split3_hi(c);
    return (int)((w[p.word] >> p.bit) & 3u) | (int)((w[h.word] >> h.bit) & 1u) << 2;
  }
  return (int)((w[p.word] >> p.bit) & ((1u << bits) - 1));
}
// Writes code q at position c into zeroed words.
inline void step_put(uint32_t* w, int bits, int c, int q) {
  const Pos p = packed_pos(bits, c);
  if (split3(bits, c)) {
    const Pos h = split3_hi(c);
    w[p.word] |= (uint32_t)(q & 3) << p.bit;
    w[h.word] |= (uint32_t)((q >> 2) & 1) << h.bit;
    return;
  }
  w[p.word] |= (uint32_t)q << p.bit;
}

// Code i of a row of the repacked matrix, its words given by word(s, w) (word w of lane step s):
// the slow reader used by the tiled matmul and embed.
template <class Word>
DDRT_HD int packed_code_of(Word&& word, int bits, int64_t i) {
  int64_t s;
  int c;
  code_place(i, bits, &s, &c);
  const Pos p = packed_pos(bits, c);
  if (split3(bits, c)) {
    const Pos h = split3_hi(c);
    return (int)((word(s, p.word) >> p.bit) & 3u) | (int)((word(s, h.word) >> h.bit) & 1u) << 2;
  }
  return (int)((word(s, p.word) >> p.bit) & ((1u << bits) - 1));
}
// The same from the row's words in the row layout (row = that row's words).
DDRT_HD int packed_code(const uint32_t* row, int bits, int64_t i) {
  return packed_code_of([&](int64_t s, int w) { return row[4 * vec_index(s, w / 4, bits) + w % 4]; }, bits, i);
}

// Where a unit image (tc_pack_kernel) holds what the row layout holds elsewhere, for readers of the
// images other than the ring (the prefill GEMM): 32-bit word w (of 4 V) of lane step s of row o
// (o < d_out, s a step within the row's codes), and the (scale, min) word of row o, group gi.
// n_units: units per tile (tc_split.h); the images' unit (tile, k) at (tile n_units + k) slots.
// TcUnitGeom: what these need of a launch (units per tile, the slot's size, a unit's groups per
// row), computed once: a reader that computes many positions (the prefill GEMM, per K tile) then
// does no division. A unit's groups per row is its codes per row (1024 at 3 bits, 512 at 4) over
// the group (32, 64 or 128, the only groups with images): a power of two (test_cuda_layout).
struct TcUnitGeom {
  int64_t n_units;
  int slot_vecs, nu, nu_shift;  // nu_shift = log2(nu)
};
template <int B>
DDRT_HD TcUnitGeom tc_unit_geom(int64_t n_units, int group) {
  const int nu = tc_unit_groups(B, group);
#ifdef __CUDA_ARCH__
  const int sh = __popc((unsigned)nu - 1u);  // log2 of a power of two
#else
  const int sh = __builtin_popcount((unsigned)nu - 1u);
#endif
  return {n_units, tc_slot_vecs(B, group), nu, sh};
}
template <int B>
DDRT_HD int64_t tc_unit_code_word(int64_t o, int64_t s, int w, const TcUnitGeom& u) {
  constexpr int V = step_vecs(B), UC = tc_unit_chunks(B);
  const int64_t ci = (s / 32) * 8 + (s % 32) / 4, k = ci / UC;
  const int c = (int)(ci % UC), t = (int)(s % 4), g = (int)(o % 8), h = (int)(o % 16) / 8;
  const int64_t base = ((o / 16) * u.n_units + k) * u.slot_vecs;
  return (base + ((c * 2 + h) * V + w / 4) * 32 + 4 * g + t) * 4 + w % 4;
}
template <int B>
DDRT_HD int64_t tc_unit_scale_word(int64_t o, int64_t gi, const TcUnitGeom& u) {
  static_assert(tc_unit_chunks(B) % 2 == 0, "a unit starts on a slab: its groups are gi / NU's");
  constexpr int V = step_vecs(B), UC = tc_unit_chunks(B);
  const int64_t k = gi >> u.nu_shift;  // gi >= 0
  const int r = (int)(gi & (u.nu - 1));
  const int64_t base = ((o / 16) * u.n_units + k) * u.slot_vecs;
  return (base + UC * 2 * V * 32) * 4 + (o % 16) * u.nu + r;
}
template <int B>
DDRT_HD int64_t tc_unit_code_word(int64_t o, int64_t s, int w, int64_t n_units, int group) {
  return tc_unit_code_word<B>(o, s, w, tc_unit_geom<B>(n_units, group));
}
template <int B>
DDRT_HD int64_t tc_unit_scale_word(int64_t o, int64_t gi, int64_t n_units, int group) {
  return tc_unit_scale_word<B>(o, gi, tc_unit_geom<B>(n_units, group));
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
    const Pos h = split3_hi(c);
    const uint32_t v = ((wd[p.word] >> p.bit) & 3u) | (((wd[h.word] >> h.bit) & 1u) << 2);
    return bits_f(v | 0x4B000000u) - 8388608.0f;
  }
  return p.bit + B <= 23 ? field_f<B>(wd[p.word], p.bit) : field_f<B>(wsh[p.word], p.bit - kShift);
}

// ---- the tensor-core GEMV's decoder (gemv_tc.cuh; also run by test_cuda_layout) -----------
// Class of quad j of a lane step (0 or 1): the quads of one class decode to the same shift,
// class_shift. The GEMV gives each class its own mma columns.
template <int B>
DDRT_HDC int quad_class(int j) {
  return B == 4 ? (j % 8) / 4 : (j % 8) < 6 ? (j % 8) % 2 : 1;
}
template <int B>
DDRT_HDC int class_shift(int cls) {
  return cls == 0 ? 0 : B == 4 ? 4 : 3;
}
// Quad j (a compile-time constant after unrolling) of a lane step whose words are w: 4 unsigned
// bytes, byte i = code 4j + i << class_shift(quad_class(j)).
template <int B>
DDRT_HD uint32_t quad_i8(const uint32_t* w, int j) {
  if (B == 4) return w[j % 4] & ((j % 8) < 4 ? 0x0F0F0F0Fu : 0xF0F0F0F0u);
  const uint32_t* s = w + 3 * (j / 8);
  switch (j % 8) {
    case 0: return s[0] & 0x07070707u;
    case 1: return s[0] & 0x38383838u;
    case 2: return s[1] & 0x07070707u;
    case 3: return s[1] & 0x38383838u;
    case 4: return s[2] & 0x07070707u;
    case 5: return s[2] & 0x38383838u;
    case 6: return ((s[0] >> 3) & 0x18181818u) | ((s[2] >> 1) & 0x20202020u);
    default: return ((s[1] >> 3) & 0x18181818u) | ((s[2] >> 2) & 0x20202020u);
  }
}

}  // namespace gpu
}  // namespace ddrt
