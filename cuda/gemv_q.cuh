// decdec_rt CUDA backend: the batch-1 GEMV for quantized weights (uniform UQ*, LUT3/4).
//
// y[o] = sum over groups g of row o:  s[o][g] * (q_g . x_g) + m[o][g] * sum(x_g)
// (uniform; LUT rows use lut[o][q] . x). fp32 throughout.
//
// Work: one warp per R consecutive rows (a task), one task per warp, no shared-memory staging.
// Per round (packed.cuh) every lane loads V 16-byte vectors of each of its R rows (the next
// round's loads are issued before this round's math: two rounds in flight) and reads its x
// values straight from global memory through L1 as float4 (an octet of lanes reads 128
// coalesced bytes; x stays in L1, the weights bypass it), so each x load and its group sum
// serve R rows. Scales are prefetched into L1 one round ahead. The grid is d_out / R warps.
//
// Decoding (per code, 2 instructions + the FFMA): a field q at bits p..p+b-1 (p+b <= 23) of word w
// becomes the float with exponent 2^(23-p) and mantissa w & (mask << p), i.e. 2^(23-p) + q, and
// subtracting 2^(23-p) leaves q exactly. Fields above bit 22 use w >> 16 (packed.cuh).
//
// DecDEC fused later (DESIGN.md §5): extra blocks appended to this grid whose warps gather
// residual rows while these stream weights; the task mapping here then needs no change.
#pragma once

#include "kernels.cuh"

namespace ddrt {
namespace gpu {

constexpr int kGemvThreads = 128;
constexpr int kGemvWarps = kGemvThreads / 32;

struct GemvArgs {
  DevLinear W;
  float* y;        // [d_out]
  const float* x;  // [d_in]
};

// Streaming 16-byte load that does not allocate in L1 (keeps L1 for x and the scales).
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
#ifdef DDRT_CUDA_EMU
  return *p;
#else
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
#endif
}
__device__ __forceinline__ void prefetch_l1(const void* p) {
#ifndef DDRT_CUDA_EMU
  asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
#endif
}

// The 4 x values of float4 slot `i0` (i0 % 4 == 0); FULL: in range and x 16-byte aligned.
// CG: through L2 only (ld.global.cg), for data that other blocks of the same launch wrote (a chained
// GEMV's stage reads the previous stage's output: the non-coherent path of __ldg may hold a line
// from before it was written).
template <bool FULL, bool CG = false>
__device__ __forceinline__ float4 load_x4(const float* x, int64_t i0, int64_t d_in) {
  auto ld = [](const float* p) { return CG ? __ldcg(p) : __ldg(p); };
  if (FULL)
    return CG ? __ldcg(reinterpret_cast<const float4*>(x + i0)) : __ldg(reinterpret_cast<const float4*>(x + i0));
  float4 v;
  v.x = i0 < d_in ? ld(x + i0) : 0.0f;
  v.y = i0 + 1 < d_in ? ld(x + i0 + 1) : 0.0f;
  v.z = i0 + 2 < d_in ? ld(x + i0 + 2) : 0.0f;
  v.w = i0 + 3 < d_in ? ld(x + i0 + 3) : 0.0f;
  return v;
}

// The math of one round of one lane: codes in w[R][V], x of its octet slab from xbase.
// GJ: group / 32 (uniform types), 0 for LUT. sm_at(r, g): row r's scale word g of this slab (its
// groups counted from the slab's first); lut: this warp's tables [R][2^B].
template <int B, int GJ, int R, bool FULL, class SmAt>
__device__ __forceinline__ void round_math(const uint4 (&w)[R][step_vecs(B)], const float* xbase, int64_t i_lane,
                                           int64_t d_in, SmAt&& sm_at, const float* lut, float (&acc)[R]) {
  constexpr int C = step_codes(B), V = step_vecs(B), NW = 4 * V, NJ = C / 4, G1 = GJ > 0 ? GJ : 1;
  uint32_t wd[R][NW], wsh[R][NW];
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      wd[r][4 * k] = w[r][k].x; wd[r][4 * k + 1] = w[r][k].y; wd[r][4 * k + 2] = w[r][k].z; wd[r][4 * k + 3] = w[r][k].w;
    }
#pragma unroll
    for (int k = 0; k < NW; ++k) wsh[r][k] = wd[r][k] >> kShift;
  }
  float dg[R], sxg = 0.0f;
#pragma unroll
  for (int r = 0; r < R; ++r) dg[r] = 0.0f;
#pragma unroll
  for (int j = 0; j < NJ; ++j) {
    const float4 xv = load_x4<FULL>(xbase, 32 * j, d_in - i_lane);
    const float xe[4] = {xv.x, xv.y, xv.z, xv.w};
    if (GJ > 0) sxg += (xe[0] + xe[1]) + (xe[2] + xe[3]);
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 4 * j + e;
        const float q = GJ > 0 ? code_f<B>(wd[r], wsh[r], c) : lut[r * (1 << B) + step_code(wd[r], B, c)];
        dg[r] = fmaf(q, xe[e], dg[r]);
      }
    }
    if (GJ > 0 && (j + 1) % G1 == 0) {  // group done: scale, min
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float2 f = __half22float2(sm_at(r, j / G1));
        acc[r] = fmaf(f.x, dg[r], fmaf(f.y, sxg, acc[r]));
        dg[r] = 0.0f;
      }
      sxg = 0.0f;
    }
  }
  if (GJ == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] += dg[r];
  }
}

// Img: the weights as unit images alone (DevLinear::units, codes and sm null; uniform 3/4-bit):
// row_vec and row_sm read the images (the same words, another place); an instantiation of its own
// (R = 1 only), so that the codes' kernels keep their registers.
template <int B, int GJ, int R, bool Img = false>
__global__ void __launch_bounds__(kGemvThreads) gemv_q_kernel(GemvArgs a) {
  grid_dep_wait();
  pdl_trigger();
  constexpr int C = step_codes(B), V = step_vecs(B), G1 = GJ > 0 ? GJ : 1;
  constexpr bool LUT = GJ == 0;
  __shared__ float lut_s[kGemvWarps][LUT ? R << B : 1];
  const DevLinear& W = a.W;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row0 = ((int64_t)blockIdx.x * kGemvWarps + warp) * R;
  if (row0 >= W.d_out) return;  // whole warps only; no block barrier below
  constexpr bool images = Img;
  int64_t rows[R];
  const uint4* wrow[R];
  const __half2* smr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    rows[r] = row0 + r < W.d_out ? row0 + r : W.d_out - 1;
    wrow[r] = images ? nullptr : W.codes + rows[r] * W.row_vecs + lane;
    smr[r] = images ? nullptr : W.sm + rows[r] * W.n_groups;
  }
  if (LUT) {
    for (int k = lane; k < (R << B); k += 32) {
      const int64_t row = row0 + (k >> B) < W.d_out ? row0 + (k >> B) : W.d_out - 1;
      lut_s[warp][k] = W.lut[row * (1 << B) + (k & ((1 << B) - 1))];
    }
    __syncwarp();
  }
  const int64_t nr = n_rounds(W.d_in, B);
  const int64_t slab = (int64_t)(lane >> 3) * 8 * C;  // this lane's octet slab within a round
  const bool aligned = ((uintptr_t)a.x & 15) == 0;
  // round rd of this lane: codes from i0 = rd * 32C + slab; active when i0 < d_in
  auto load = [&](int64_t rd, uint4 (&v)[R][V]) {
    if (rd * round_codes(B) + slab >= W.d_in) return;
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int k = 0; k < V; ++k)
        if constexpr (images)
          v[r][k] = row_vec<B>(W, rows[r], rd * 32 * V + 32 * k + lane);
        else
          v[r][k] = ld_stream(wrow[r] + rd * 32 * V + 32 * k);
    if (!LUT && !images && (lane & 7) == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) prefetch_l1(smr[r] + (rd * round_codes(B) + slab) / (32 * G1));
    }
  };
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  uint4 cur[R][V], nxt[R][V];
  load(0, cur);
  for (int64_t rd = 0; rd < nr; ++rd) {
    if (rd + 1 < nr) load(rd + 1, nxt);
    const int64_t i0 = rd * round_codes(B) + slab;
    if (i0 < W.d_in) {
      const int64_t i_lane = i0 + 4 * (lane & 7);
      const int64_t g0 = i0 / (32 * G1);  // the slab's first group
      const __half2* sm_row[R];
#pragma unroll
      for (int r = 0; r < R; ++r) sm_row[r] = LUT || images ? nullptr : smr[r] + g0;
      auto sm_codes = [&](int r, int g) { return sm_row[r][g]; };
      auto sm_images = [&](int r, int g) { return row_sm(W, rows[r], g0 + g); };
      const float* lut = LUT ? lut_s[warp] : nullptr;
      const bool full = aligned && i0 + 8 * C <= W.d_in;
      if constexpr (!LUT && images) {
        if (full)
          round_math<B, GJ, R, true>(cur, a.x + i_lane, i_lane, W.d_in, sm_images, lut, acc);
        else
          round_math<B, GJ, R, false>(cur, a.x + i_lane, i_lane, W.d_in, sm_images, lut, acc);
      } else if (full) {
        round_math<B, GJ, R, true>(cur, a.x + i_lane, i_lane, W.d_in, sm_codes, lut, acc);
      } else {
        round_math<B, GJ, R, false>(cur, a.x + i_lane, i_lane, W.d_in, sm_codes, lut, acc);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int k = 0; k < V; ++k) cur[r][k] = nxt[r][k];
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
    if (lane == 0 && row0 + r < W.d_out) a.y[row0 + r] = acc[r];
  }
}

// Launch of one (bits, group/32 or 0 for LUT, rows per warp) instantiation; defined by
// DDRT_GEMV_Q_INSTANTIATE in gemv_q<B>.cu.
template <int B, int GJ, int R>
cudaError_t gemv_q_run(const GemvArgs& a, cudaStream_t st);
#define DDRT_GEMV_Q_DECLARE_R(B, GJ, R) \
  template <>                           \
  cudaError_t gemv_q_run<B, GJ, R>(const GemvArgs& a, cudaStream_t st);
#define DDRT_GEMV_Q_DECLARE(B, GJ) \
  DDRT_GEMV_Q_DECLARE_R(B, GJ, 1)  \
  DDRT_GEMV_Q_DECLARE_R(B, GJ, 2)  \
  DDRT_GEMV_Q_DECLARE_R(B, GJ, 4)
DDRT_GEMV_Q_DECLARE(2, 1) DDRT_GEMV_Q_DECLARE(2, 2) DDRT_GEMV_Q_DECLARE(2, 4)
DDRT_GEMV_Q_DECLARE(3, 1) DDRT_GEMV_Q_DECLARE(3, 2) DDRT_GEMV_Q_DECLARE(3, 4) DDRT_GEMV_Q_DECLARE(3, 0)
DDRT_GEMV_Q_DECLARE(4, 1) DDRT_GEMV_Q_DECLARE(4, 2) DDRT_GEMV_Q_DECLARE(4, 4) DDRT_GEMV_Q_DECLARE(4, 0)
DDRT_GEMV_Q_DECLARE(8, 1) DDRT_GEMV_Q_DECLARE(8, 2) DDRT_GEMV_Q_DECLARE(8, 4)

#define DDRT_GEMV_Q_INSTANTIATE_R(B, GJ, R)                                                    \
  template <>                                                                                  \
  cudaError_t gemv_q_run<B, GJ, R>(const GemvArgs& a, cudaStream_t st) {                       \
    if ((B == 3 || B == 4) && GJ > 0 && a.W.codes == nullptr) /* unit images alone: R = 1 */    \
      return launch_pdl(gemv_q_kernel<B, GJ, 1, ((B == 3 || B == 4) && GJ > 0)>,               \
                        (unsigned)((a.W.d_out + kGemvWarps - 1) / kGemvWarps), kGemvThreads, 0, st, a); \
    const int64_t warps = (a.W.d_out + R - 1) / R;                                             \
    const int64_t blocks = (warps + kGemvWarps - 1) / kGemvWarps;                              \
    return launch_pdl(gemv_q_kernel<B, GJ, R>, (unsigned)blocks, kGemvThreads, 0, st, a);       \
  }
#define DDRT_GEMV_Q_INSTANTIATE(B, GJ) \
  DDRT_GEMV_Q_INSTANTIATE_R(B, GJ, 1)  \
  DDRT_GEMV_Q_INSTANTIATE_R(B, GJ, 2)  \
  DDRT_GEMV_Q_INSTANTIATE_R(B, GJ, 4)

}  // namespace gpu
}  // namespace ddrt
