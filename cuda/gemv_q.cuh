// decdec_rt CUDA backend: the batch-1 GEMV for quantized weights (uniform UQ*, LUT3/4).
//
// y[o] = sum over 32-code slices j of row o:  s[o][g(j)] * (q_j . x_j) + m[o][g(j)] * sum(x_j)
// (uniform; LUT rows use lut[o][q] . x). fp32 throughout.
//
// Work: one warp per row at a time; lane l takes lane steps l, l+32, ... of the row (packed.cuh),
// V coalesced 16-byte loads each, the next step's loads issued before this one's math (two steps
// in flight per lane). Rows are spread over all warps of a grid sized by occupancy so that every
// SM streams weights; warps stride over rows (row = warp, warp + n_warps, ...).
// x is staged once per block in shared memory in the lane-step layout with a 16-byte pad per
// lane step (conflict-free 16-byte reads), plus the sum of each 32-code slice (the min term);
// when that does not fit, launch_gemv_prep writes the same layout to global memory.
//
// Decoding (per code, 2 instructions + the FFMA): a field q at bits p..p+b-1 (p+b <= 23) of word w
// becomes the float with exponent 2^(23-p) and mantissa w & (mask << p), i.e. 2^(23-p) + q, and
// subtracting 2^(23-p) leaves q exactly. Fields above bit 22 use w >> 16 (packed.cuh).
//
// DecDEC fused later (DESIGN.md §5): a grid with extra blocks whose warps gather residual rows
// while these stream weights; the base path here then needs no change besides its warp count.
#pragma once

#include "kernels.cuh"

namespace ddrt {
namespace gpu {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kLutFloats = 16;  // per warp: the current row's table

// Floats of one staged lane step: C codes + a 16-byte pad (C/4 is even for every C).
DDRT_HDC int span_floats(int bits) { return step_codes(bits) + 4; }

struct GemvArgs {
  DevLinear W;
  float* y;
  const float* x;       // [d_in]
  const float* xprep;   // null (stage x) or [n_steps * span] prepared
  const float* sxprep;  // null or [n_steps * slices] prepared
};

// Streaming 16-byte load that does not allocate in L1 (keeps L1 for x).
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Lays x out as the GEMV reads it: xs[s * span + c] = x[s * C + c] (0 past d_in), and
// sxs[j] = sum of slice j (32 codes), summed in order. Called by `nt` threads numbered `tid`.
template <int B>
__device__ void stage_x(float* xs, float* sxs, const float* x, int64_t d_in, int64_t tid, int64_t nt) {
  constexpr int C = step_codes(B), SPAN = span_floats(B);
  const int64_t ns = n_steps(d_in, B);
  for (int64_t i = tid; i < ns * C; i += nt) xs[(i / C) * SPAN + i % C] = i < d_in ? x[i] : 0.0f;
  for (int64_t j = tid; j < ns * (C / 32); j += nt) {
    const int64_t i0 = j * 32;
    float s = 0;
    for (int e = 0; e < 32 && i0 + e < d_in; ++e) s += x[i0 + e];
    sxs[j] = s;
  }
}

template <int B>
__global__ void gemv_prep_kernel(const float* x, int64_t d_in, float* xs, float* sxs) {
  stage_x<B>(xs, sxs, x, d_in, (int64_t)blockIdx.x * blockDim.x + threadIdx.x, (int64_t)gridDim.x * blockDim.x);
}

template <int B, bool LUT, bool STAGED>
__global__ void __launch_bounds__(kGemvThreads) gemv_q_kernel(GemvArgs a) {
  constexpr int C = step_codes(B), V = step_vecs(B), S = C / 32, SPAN = span_floats(B), NW = 4 * V;
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  float* lut_s = smem + (threadIdx.x / 32) * kLutFloats;  // [kLutFloats] this warp's row table
  const DevLinear& W = a.W;
  const int64_t ns = n_steps(W.d_in, B);
  const int ipr = (int)((ns + 31) / 32);  // lane-step rounds per row
  const int lane = threadIdx.x & 31;
  const int64_t nwt = (int64_t)gridDim.x * kGemvWarps;
  const int64_t gw = (int64_t)blockIdx.x * kGemvWarps + threadIdx.x / 32;
  const int64_t my_rows = gw < W.d_out ? (W.d_out - 1 - gw) / nwt + 1 : 0;
  const int64_t total = my_rows * ipr;

  // item i = (row gw + (i / ipr) * nwt, round i % ipr); its lane step is round * 32 + lane
  auto load = [&](int64_t row, int it, uint4* v) {
    const int64_t s = (int64_t)it * 32 + lane;
    if (s >= ns) return;
    const uint4* p = W.codes + row * W.row_vecs + (int64_t)it * 32 * V + lane;
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = ld_stream(p + 32 * k);
  };

  uint4 cur[V], nxt[V];
  int64_t row = gw;
  int it = 0;
  if (total > 0) load(row, it, cur);  // in flight while x is staged

  const float* xs;
  const float* sxs;
  if (STAGED) {
    float* xw = smem + kGemvWarps * kLutFloats;
    float* sw = xw + ns * SPAN;
    stage_x<B>(xw, sw, a.x, W.d_in, threadIdx.x, blockDim.x);
    __syncthreads();
    xs = xw;
    sxs = sw;
  } else {
    xs = a.xprep;
    sxs = a.sxprep;
  }

  float acc = 0;
  for (int64_t i = 0; i < total; ++i) {
    int64_t nrow = row;
    int nit = it + 1;
    if (nit == ipr) { nit = 0; nrow += nwt; }
    if (i + 1 < total) load(nrow, nit, nxt);
    if (LUT && it == 0) {
      __syncwarp();
      if (lane < (1 << B)) lut_s[lane] = W.lut[row * (1 << B) + lane];
      __syncwarp();
    }
    const int64_t s = (int64_t)it * 32 + lane;
    if (s < ns) {
      uint32_t wd[NW], wsh[NW];
#pragma unroll
      for (int k = 0; k < V; ++k) {
        wd[4 * k] = cur[k].x; wd[4 * k + 1] = cur[k].y; wd[4 * k + 2] = cur[k].z; wd[4 * k + 3] = cur[k].w;
      }
#pragma unroll
      for (int k = 0; k < NW; ++k) wsh[k] = wd[k] >> kShift;
#pragma unroll
      for (int sl = 0; sl < S; ++sl) {
        const float4* xp = reinterpret_cast<const float4*>(xs + s * SPAN + sl * 32);
        float d0 = 0, d1 = 0;
#pragma unroll
        for (int q4 = 0; q4 < 8; ++q4) {
          const float4 xv = xp[q4];
          const float xe[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int c = sl * 32 + q4 * 4 + e;
            float w;
            if (LUT) w = lut_s[step_code(wd, B, c)];
            else w = code_f<B>(wd, wsh, c);
            if (e & 1) d1 = fmaf(w, xe[e], d1);
            else d0 = fmaf(w, xe[e], d0);
          }
        }
        if (LUT) {
          acc += d0 + d1;
        } else {
          const int64_t g = (s * C + sl * 32) / W.group;
          const float2 f = __half22float2(W.sm[row * W.n_groups + g]);
          acc = fmaf(f.x, d0 + d1, fmaf(f.y, sxs[s * S + sl], acc));
        }
      }
    }
    if (it == ipr - 1) {  // row done: reduce over the warp
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (lane == 0) a.y[row] = acc;
      acc = 0;
    }
#pragma unroll
    for (int k = 0; k < V; ++k) cur[k] = nxt[k];
    row = nrow;
    it = nit;
  }
}

inline size_t gemv_q_smem_bytes(const DevLinear& W, bool staged) {
  const int64_t ns = n_steps(W.d_in, W.bits);
  size_t f = kGemvWarps * kLutFloats;
  if (staged) f += ns * span_floats(W.bits) + ns * step_slices(W.bits);
  return f * sizeof(float);
}

// Launch and occupancy of one (bits, LUT) instantiation; defined by DDRT_GEMV_Q_INSTANTIATE.
template <int B, bool LUT>
cudaError_t gemv_q_run(const GemvArgs& a, int n_blocks, size_t smem, cudaStream_t st);
template <int B, bool LUT>
cudaError_t gemv_q_blocks_per_sm(bool staged, size_t smem, int* n);
template <int B>
cudaError_t gemv_prep_run(const float* x, int64_t d_in, float* xs, float* sxs, cudaStream_t st);
#define DDRT_GEMV_Q_DECLARE(B, LUT)                                                    \
  template <>                                                                          \
  cudaError_t gemv_q_run<B, LUT>(const GemvArgs& a, int n_blocks, size_t smem, cudaStream_t st); \
  template <>                                                                          \
  cudaError_t gemv_q_blocks_per_sm<B, LUT>(bool staged, size_t smem, int* n);
DDRT_GEMV_Q_DECLARE(2, false)
DDRT_GEMV_Q_DECLARE(3, false)
DDRT_GEMV_Q_DECLARE(4, false)
DDRT_GEMV_Q_DECLARE(8, false)
DDRT_GEMV_Q_DECLARE(3, true)
DDRT_GEMV_Q_DECLARE(4, true)
template <> cudaError_t gemv_prep_run<2>(const float*, int64_t, float*, float*, cudaStream_t);
template <> cudaError_t gemv_prep_run<3>(const float*, int64_t, float*, float*, cudaStream_t);
template <> cudaError_t gemv_prep_run<4>(const float*, int64_t, float*, float*, cudaStream_t);
template <> cudaError_t gemv_prep_run<8>(const float*, int64_t, float*, float*, cudaStream_t);

#define DDRT_GEMV_Q_INSTANTIATE(B, LUT)                                                              \
  template <>                                                                                        \
  cudaError_t gemv_q_run<B, LUT>(const GemvArgs& a, int n_blocks, size_t smem, cudaStream_t st) {    \
    if (a.xprep) {                                                                                   \
      gemv_q_kernel<B, LUT, false><<<n_blocks, kGemvThreads, smem, st>>>(a);                         \
      return cudaGetLastError();                                                                     \
    }                                                                                                \
    if (smem > 48 * 1024) {                                                                          \
      cudaError_t e = cudaFuncSetAttribute(gemv_q_kernel<B, LUT, true>,                              \
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);  \
      if (e != cudaSuccess) return e;                                                                \
    }                                                                                                \
    gemv_q_kernel<B, LUT, true><<<n_blocks, kGemvThreads, smem, st>>>(a);                            \
    return cudaGetLastError();                                                                       \
  }                                                                                                  \
  template <>                                                                                        \
  cudaError_t gemv_q_blocks_per_sm<B, LUT>(bool staged, size_t smem, int* n) {                       \
    if (!staged)                                                                                     \
      return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, gemv_q_kernel<B, LUT, false>,          \
                                                           kGemvThreads, smem);                      \
    if (smem > 48 * 1024) {                                                                          \
      cudaError_t e = cudaFuncSetAttribute(gemv_q_kernel<B, LUT, true>,                              \
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);  \
      if (e != cudaSuccess) return e;                                                                \
    }                                                                                                \
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, gemv_q_kernel<B, LUT, true>,             \
                                                         kGemvThreads, smem);                        \
  }

#define DDRT_GEMV_PREP_INSTANTIATE(B)                                                                \
  template <>                                                                                        \
  cudaError_t gemv_prep_run<B>(const float* x, int64_t d_in, float* xs, float* sxs, cudaStream_t st) { \
    gemv_prep_kernel<B><<<128, 256, 0, st>>>(x, d_in, xs, sxs);                                      \
    return cudaGetLastError();                                                                       \
  }

}  // namespace gpu
}  // namespace ddrt
