// decdec_rt CPU backend: weight loading, row dequantization, matmul and DecDEC compensation.
//
// All accumulation is fp32. The kernels are plain code over GCC/Clang vector types (16 lanes)
// that the compiler maps onto whatever SIMD the build targets (AVX-512, AVX2, NEON, scalar);
// the one x86 intrinsic is the byte -> int32 widening (widen_u8), which GCC would scalarise.
//   T == 1, uniform types: fused GEMV, y[o] = sum_g s[o][g] * (q[o][g] . x[g]) + m[o][g] * sum(x[g]).
//   otherwise: per tile of 4 output rows, dequantize the rows once into fp32 and take their dot
//   products with all T rows of x (4 rows x 4 tokens per inner step).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#if defined(__F16C__) || defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "cpu_linear.h"

#if defined(__GNUC__) && !defined(__clang__)
// 64-byte vector values passed between inline functions: the ABI note GCC prints when AVX-512
// is not enabled does not apply (nothing crosses a translation unit).
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace ddrt {
namespace cpu {

namespace {

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint8_t v16u8 __attribute__((vector_size(16)));
typedef uint64_t v2u64 __attribute__((vector_size(16)));

constexpr int kVec = 16;   // floats per vector
constexpr int kRows = 4;   // output rows per tile
constexpr int kToks = 4;   // tokens per inner step

inline v16f load16(const float* p) {
  v16f v;
  memcpy(&v, p, sizeof v);
  return v;
}
inline float hsum(v16f v) {
  float s = 0;
  for (int l = 0; l < kVec; ++l) s += v[l];
  return s;
}
inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

uint16_t rd16(const uint8_t* p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}

// ---- packed code blocks (layout.h) ---------------------------------------------------------

// 16 bytes zero-extended to 32-bit lanes. GCC scalarises __builtin_convertvector from bytes
// to ints, so x86 builds use the one-instruction widenings.
inline v16i widen_u8(v16u8 b) {
#if defined(__AVX512F__)
  return (v16i)_mm512_maskz_cvtepu8_epi32(0xffff, (__m128i)b);  // maskz: no "undefined" source (GCC warns)
#elif defined(__AVX2__)
  const __m256i lo = _mm256_cvtepu8_epi32((__m128i)b), hi = _mm256_cvtepu8_epi32(_mm_srli_si128((__m128i)b, 8));
  v16i r;
  memcpy(&r, &lo, 32);
  memcpy((char*)&r + 32, &hi, 32);
  return r;
#else
  return __builtin_convertvector(b, v16i);
#endif
}

// c0 = codes 0..15 and c1 = codes 16..31 of one block of B-bit codes (32-bit lanes: every
// shift is a per-lane vector shift, which x86 has for 32-bit lanes only).
template <int B>
inline void block_codes(const uint8_t* blk, v16i& c0, v16i& c1) {
  if constexpr (B == 8) {
    v16u8 a, b;
    memcpy(&a, blk, 16);
    memcpy(&b, blk + 16, 16);
    c0 = widen_u8(a);
    c1 = widen_u8(b);
  } else if constexpr (B == 4) {  // code j in byte j % 16 at bit 4 * (j / 16)
    v16u8 a;
    memcpy(&a, blk, 16);
    const v16i v = widen_u8(a);
    c0 = v & 15;
    c1 = v >> 4;
  } else {  // B = 2 or 3: low 2 bits of code j in byte j % 8 at bit 2 * (j / 8)
    // Broadcasts and per-lane shifts only (no lane shuffles, which compilers scalarise).
    uint64_t lo8;
    memcpy(&lo8, blk, 8);
    const v2u64 twice = {lo8, lo8};  // lanes 0..15 = bytes 0..7, 0..7
    const v16i lo = widen_u8((v16u8)twice);
    const v16i s0 = {0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2};
    c0 = (lo >> s0) & 3;
    c1 = (lo >> (s0 + 4)) & 3;
    if constexpr (B == 3) {  // bit 2 of code j: bit j % 8 of byte 8 + j / 8 = bit j of bytes 8..11 (LE)
      uint32_t hi4;
      memcpy(&hi4, blk + 8, 4);
      const v16u h = (v16u){} + hi4;
      const v16u j0 = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
      c0 |= (v16i)(((h >> j0) & 1) << 2);
      c1 |= (v16i)(((h >> (j0 + 16)) & 1) << 2);
    }
  }
}

// The two halves of a block's codes as floats.
template <int B>
inline void block_codes_f(const uint8_t* blk, v16f& lo, v16f& hi) {
  v16i c0, c1;
  block_codes<B>(blk, c0, c1);
  lo = __builtin_convertvector(c0, v16f);
  hi = __builtin_convertvector(c1, v16f);
}

// ---- dequantize one row ----------------------------------------------------------------------
template <int B>
void dequant_uniform_row(const CpuLinear& W, int64_t o, float* out) {
  const int64_t d_in = W.d_in, ng = n_groups(d_in, W.group);
  const uint8_t* row = W.codes + o * row_code_bytes(d_in, B);
  const float* s = W.scale.data() + o * ng;
  const float* m = W.mn.data() + o * ng;
  for (int64_t b = 0; b < n_blocks(d_in); ++b) {
    const int64_t i0 = b * kBlockCodes, n = std::min<int64_t>(kBlockCodes, d_in - i0);
    const float sg = s[i0 / W.group], mg = m[i0 / W.group];  // a block never straddles groups
    alignas(64) float w[kBlockCodes];
    v16f lo, hi;
    block_codes_f<B>(row + b * block_bytes(B), lo, hi);
    lo = lo * sg + mg;
    hi = hi * sg + mg;
    memcpy(w, &lo, sizeof lo);
    memcpy(w + kVec, &hi, sizeof hi);
    memcpy(out + i0, w, n * sizeof(float));
  }
}

template <int B>
void dequant_lut_row(const CpuLinear& W, int64_t o, float* out) {
  const int64_t d_in = W.d_in;
  const uint8_t* row = W.codes + o * row_code_bytes(d_in, B);
  const float* lut = W.lut.data() + o * (1 << B);
  for (int64_t b = 0; b < n_blocks(d_in); ++b) {
    const int64_t i0 = b * kBlockCodes, n = std::min<int64_t>(kBlockCodes, d_in - i0);
    alignas(64) int32_t c[kBlockCodes];
    v16i c0, c1;
    block_codes<B>(row + b * block_bytes(B), c0, c1);
    memcpy(c, &c0, sizeof c0);
    memcpy(c + kVec, &c1, sizeof c1);
    for (int64_t j = 0; j < n; ++j) out[i0 + j] = lut[c[j]];
  }
}

// ---- fused uniform GEMV (T == 1) -------------------------------------------------------------
// xsum[g] = sum of x over group g.
void group_sums(const float* x, int64_t d_in, int group, float* xsum) {
  for (int64_t g = 0; g < n_groups(d_in, group); ++g) {
    float s = 0;
    for (int64_t i = g * group; i < std::min<int64_t>(d_in, (g + 1) * group); ++i) s += x[i];
    xsum[g] = s;
  }
}

// x . (row o of W), x padded with zeros to a whole number of blocks.
template <int B>
float uniform_row_dot(const CpuLinear& W, int64_t o, const float* xp, const float* xsum) {
  const int64_t d_in = W.d_in, ng = n_groups(d_in, W.group), nb = n_blocks(d_in);
  const int bpg = W.group / kBlockCodes;
  const uint8_t* row = W.codes + o * row_code_bytes(d_in, B);
  const float* s = W.scale.data() + o * ng;
  const float* m = W.mn.data() + o * ng;
  v16f acc = {};  // sum_g s[g] * (q[g] . x[g])
  float macc = 0;  // sum_g m[g] * sum(x[g])
  for (int64_t g = 0; g < ng; ++g) {
    v16f v = {};
    for (int64_t b = g * bpg; b < std::min<int64_t>(nb, (g + 1) * bpg); ++b) {
      v16f lo, hi;
      block_codes_f<B>(row + b * block_bytes(B), lo, hi);
      v += lo * load16(xp + b * kBlockCodes) + hi * load16(xp + b * kBlockCodes + kVec);
    }
    acc += s[g] * v;
    macc += m[g] * xsum[g];
  }
  return hsum(acc) + macc;
}

template <int B>
void uniform_gemv(const CpuLinear& W, float* y, const float* x, int n_threads) {
  std::vector<float> xp(round_up(W.d_in, kBlockCodes), 0.0f);  // [nb * 32], zero padded
  std::copy(x, x + W.d_in, xp.begin());
  std::vector<float> xsum(n_groups(W.d_in, W.group));
  group_sums(x, W.d_in, W.group, xsum.data());
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 16)  // dynamic: the cores are shared
  for (int64_t o = 0; o < W.d_out; ++o) y[o] = uniform_row_dot<B>(W, o, xp.data(), xsum.data());
}

// ---- tiled matmul: dequantize 4 rows once, reuse them for every token ------------------------
// out[r][n] = w[r] . x[n] over L (a multiple of 16) floats; w rows and x rows have stride L.
template <int NT>
inline void dot_tile(const float* w, const float* x, int64_t L, float out[kRows][kToks]) {
  v16f acc[kRows][NT] = {};
  for (int64_t i = 0; i < L; i += kVec) {
    v16f wv[kRows];
    for (int r = 0; r < kRows; ++r) wv[r] = load16(w + r * L + i);
    for (int n = 0; n < NT; ++n) {
      const v16f xv = load16(x + n * L + i);
      for (int r = 0; r < kRows; ++r) acc[r][n] += wv[r] * xv;
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int n = 0; n < NT; ++n) out[r][n] = hsum(acc[r][n]);
}

void tiled_matmul(const CpuLinear& W, float* y, const float* x, int T, int n_threads) {
  const int64_t d_in = W.d_in, d_out = W.d_out, L = round_up(d_in, kVec);
  std::vector<float> xp((size_t)T * L, 0.0f);  // [T][L], zero padded
  for (int t = 0; t < T; ++t) std::copy(x + (int64_t)t * d_in, x + (int64_t)(t + 1) * d_in, xp.begin() + t * L);
  const int64_t n_tiles = (d_out + kRows - 1) / kRows;
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<float> w((size_t)kRows * L, 0.0f);  // [kRows][L], zero padded
#pragma omp for schedule(dynamic, 2)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t o0 = tile * kRows;
      const int nr = (int)std::min<int64_t>(kRows, d_out - o0);
      for (int r = 0; r < nr; ++r) dequant_row(W, o0 + r, w.data() + r * L);
      float out[kRows][kToks];
      for (int t = 0; t < T; t += kToks) {
        const int nt = std::min(kToks, T - t);
        if (nt == kToks) {
          dot_tile<kToks>(w.data(), xp.data() + t * L, L, out);
        } else {
          for (int n = 0; n < nt; ++n) {
            float one[kRows][kToks];
            dot_tile<1>(w.data(), xp.data() + (t + n) * L, L, one);
            for (int r = 0; r < kRows; ++r) out[r][n] = one[r][0];
          }
        }
        for (int r = 0; r < nr; ++r)
          for (int n = 0; n < nt; ++n) y[(int64_t)(t + n) * d_out + o0 + r] = out[r][n];
      }
    }
  }
}

// ---- DecDEC compensation ---------------------------------------------------------------------
void check_decdec(const CpuLinear& W, const DecdecCall& call) {
  const std::string what = "linear '" + W.desc.name + "': DecDEC mode " + mode_name(call.mode);
  if (!W.has_residual) throw InvalidArgument(what + " needs a residual, and this linear has none");
  if (call.mode == DecdecMode::Approx && !W.has_thresholds)
    throw InvalidArgument(what + " needs calibration thresholds, and this linear has none");
  if (call.mode == DecdecMode::Static && !W.has_ranking)
    throw InvalidArgument(what + " needs a calibration ranking, and this linear has none");
  if ((int)call.mode < 0 || (int)call.mode > (int)DecdecMode::Random)
    throw InvalidArgument(what + ": unknown mode");
}

// y[t][o] += rscale[o] * sum_{j in S_t} res_code(R row j, o) * x[t][j] for every row t.
void compensate(const CpuLinear& W, float* y, const float* x, int T, const DecdecCall& call, int n_threads) {
  check_decdec(W, call);
  const int64_t d_in = W.d_in, d_out = W.d_out, kmax = total_k(call.k_chunk, d_in);
  if (kmax == 0) return;
  std::vector<int32_t> sel((size_t)T * kmax);  // [T][kmax]
  std::vector<int64_t> n_sel(T);
  const int32_t* rank = W.rank_pos.empty() ? nullptr : W.rank_pos.data();
#pragma omp parallel for num_threads(n_threads) schedule(static)
  for (int t = 0; t < T; ++t)
    n_sel[t] = select_channels(call, call.pos0 + t, x + (int64_t)t * d_in, d_in, W.desc.thresholds, rank,
                               sel.data() + t * kmax);
  constexpr int64_t kBytes = 64;  // residual bytes (128 outputs) per work item
  const int64_t rb = res_row_bytes(d_out), n_pieces = (rb + kBytes - 1) / kBytes;
#pragma omp parallel for collapse(2) num_threads(n_threads) schedule(static)
  for (int t = 0; t < T; ++t) {
    for (int64_t piece = 0; piece < n_pieces; ++piece) {
      const int64_t p0 = piece * kBytes, np = std::min(kBytes, rb - p0);
      const float* xt = x + (int64_t)t * d_in;
      float acc[2 * kBytes] = {0};
      for (int64_t s = 0; s < n_sel[t]; ++s) {
        const int32_t j = sel[t * kmax + s];
        const uint8_t* row = W.desc.residual + (int64_t)j * rb + p0;
        const float xj = xt[j];
        for (int64_t p = 0; p < np; ++p) {
          acc[2 * p] += (float)((int)(row[p] & 15) - kResZero) * xj;
          acc[2 * p + 1] += (float)((int)(row[p] >> 4) - kResZero) * xj;
        }
      }
      float* yt = y + (int64_t)t * d_out;
      for (int64_t o = 2 * p0; o < std::min(d_out, 2 * (p0 + np)); ++o) yt[o] += W.rscale[o] * acc[o - 2 * p0];
    }
  }
}

}  // namespace

// ---- public ----------------------------------------------------------------------------------
void f16_to_f32_n(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + i))));
#endif
  for (; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

void dequant_row(const CpuLinear& W, int64_t o, float* out) {
  const int64_t d_in = W.d_in;
  switch (W.type) {
    case TensorType::F32: memcpy(out, W.desc.data + o * d_in * 4, d_in * 4); return;
    case TensorType::F16: {
      const uint8_t* row = W.desc.data + o * d_in * 2;
      if (((uintptr_t)row & 1) == 0) return f16_to_f32_n((const uint16_t*)row, out, d_in);
      for (int64_t i = 0; i < d_in; ++i) out[i] = f16_to_f32(rd16(row + 2 * i));
      return;
    }
    case TensorType::BF16: {
      const uint8_t* row = W.desc.data + o * d_in * 2;
      for (int64_t i = 0; i < d_in; ++i) out[i] = bf16_to_f32(rd16(row + 2 * i));
      return;
    }
    case TensorType::LUT3: return dequant_lut_row<3>(W, o, out);
    case TensorType::LUT4: return dequant_lut_row<4>(W, o, out);
    default: break;
  }
  switch (W.bits) {
    case 2: return dequant_uniform_row<2>(W, o, out);
    case 3: return dequant_uniform_row<3>(W, o, out);
    case 4: return dequant_uniform_row<4>(W, o, out);
    case 8: return dequant_uniform_row<8>(W, o, out);
  }
  throw InvalidArgument("linear '" + W.desc.name + "': no CPU kernel for its tensor type");
}

void matmul(const CpuLinear& W, float* y, const float* x, int T, const DecdecCall& call, int n_threads) {
  if (T <= 0) return;
  if (T == 1 && is_uniform(W.type)) {
    switch (W.bits) {
      case 2: uniform_gemv<2>(W, y, x, n_threads); break;
      case 3: uniform_gemv<3>(W, y, x, n_threads); break;
      case 4: uniform_gemv<4>(W, y, x, n_threads); break;
      case 8: uniform_gemv<8>(W, y, x, n_threads); break;
    }
  } else {
    tiled_matmul(W, y, x, T, n_threads);
  }
  if (call.mode != DecdecMode::Off) compensate(W, y, x, T, call, n_threads);
}

std::unique_ptr<CpuLinear> load_linear(const LinearDesc& d) {
  check_linear_desc(d);
  auto W = std::make_unique<CpuLinear>();
  W->desc = d;
  W->d_out = d.d_out;
  W->d_in = d.d_in;
  W->type = d.type;
  W->bits = type_bits(d.type);
  W->group = type_group(d.type);
  if (W->bits) W->codes = d.data;
  const uint8_t* tables = d.data + d.d_out * row_code_bytes(d.d_in, W->bits);  // after the codes
  if (is_uniform(d.type)) {
    const int64_t n = d.d_out * n_groups(d.d_in, W->group);
    W->scale.resize(n);
    W->mn.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      W->scale[i] = f16_to_f32(rd16(tables + 2 * i));
      W->mn[i] = f16_to_f32(rd16(tables + 2 * (n + i)));
    }
  } else if (is_lut(d.type)) {
    W->lut.resize(d.d_out << W->bits);
    for (size_t i = 0; i < W->lut.size(); ++i) W->lut[i] = f16_to_f32(rd16(tables + 2 * i));
  }
  if (d.residual) {
    W->has_residual = true;
    W->rscale.resize(d.d_out);
    for (int64_t o = 0; o < d.d_out; ++o) W->rscale[o] = f16_to_f32(rd16((const uint8_t*)(d.residual_scale + o)));
  }
  W->has_thresholds = d.thresholds != nullptr;
  W->rank_pos = rank_positions(d);
  W->has_ranking = !W->rank_pos.empty();
  return W;
}

}  // namespace cpu
}  // namespace ddrt
