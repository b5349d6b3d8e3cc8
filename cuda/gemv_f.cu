// decdec_rt CUDA backend: batch-1 GEMV for float weights (F32, F16, BF16; e.g. an fp16 lm_head).
// One warp per row at a time, 16-byte streaming loads, four of them in flight per lane, x read
// through L1 (it is small and every warp reads it), fp32 accumulation.
#include <cuda_bf16.h>

#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

namespace {

template <int TY>
constexpr int elems_per_vec() { return TY == (int)TensorType::F32 ? 4 : 8; }

// w . x over the E elements of one 16-byte vector starting at element i0 (n valid elements).
template <int TY>
__device__ __forceinline__ float vec_dot(uint4 w, const float* x, int64_t i0, int64_t n) {
  constexpr int E = elems_per_vec<TY>();
  float xe[E];
  if (n >= E) {
#pragma unroll
    for (int k = 0; k < E / 4; ++k) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(x + i0) + k);
      xe[4 * k] = v.x; xe[4 * k + 1] = v.y; xe[4 * k + 2] = v.z; xe[4 * k + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < E; ++k) xe[k] = k < n ? x[i0 + k] : 0.0f;
  }
  const uint32_t wd[4] = {w.x, w.y, w.z, w.w};
  float acc = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (TY == (int)TensorType::F32) {
      acc = fmaf(__uint_as_float(wd[k]), xe[k], acc);
    } else if (TY == (int)TensorType::F16) {
      __half2 h;
      memcpy(&h, &wd[k], 4);
      const float2 f = __half22float2(h);
      acc = fmaf(f.x, xe[2 * k], acc);
      acc = fmaf(f.y, xe[2 * k + 1], acc);
    } else {  // BF16
      acc = fmaf(__uint_as_float(wd[k] << 16), xe[2 * k], acc);
      acc = fmaf(__uint_as_float(wd[k] & 0xffff0000u), xe[2 * k + 1], acc);
    }
  }
  return acc;
}

template <int TY>
__global__ void __launch_bounds__(kGemvThreads) gemv_f_kernel(DevLinear W, float* y, const float* x) {
  grid_dep_wait();
  pdl_trigger();
  constexpr int E = elems_per_vec<TY>(), U = 4;
  const int lane = threadIdx.x & 31;
  const int64_t nvec = (W.d_in + E - 1) / E;
  const int64_t row_u4 = W.row_stride * (TY == (int)TensorType::F32 ? 4 : 2) / 16;
  const int64_t nwt = (int64_t)gridDim.x * kGemvWarps;
  for (int64_t row = (int64_t)blockIdx.x * kGemvWarps + threadIdx.x / 32; row < W.d_out; row += nwt) {
    const uint4* rp = static_cast<const uint4*>(W.fdata) + row * row_u4;
    float acc = 0;
    for (int64_t v0 = lane; v0 < nvec; v0 += 32 * U) {
      uint4 w[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (v0 + 32 * u < nvec) w[u] = ld_stream(rp + v0 + 32 * u);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t v = v0 + 32 * u;
        if (v < nvec) acc += vec_dot<TY>(w[u], x, v * E, W.d_in - v * E);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) y[row] = acc;
  }
}

}  // namespace

cudaError_t launch_gemv_f(const DevLinear& W, float* y, const float* x, int n_sm, cudaStream_t st) {
  const int64_t want = (W.d_out + kGemvWarps - 1) / kGemvWarps;
  const int blocks = (int)(want < (int64_t)n_sm * 8 ? want : (int64_t)n_sm * 8);
  switch (W.type) {
    case TensorType::F32: return launch_pdl(gemv_f_kernel<(int)TensorType::F32>, blocks, kGemvThreads, 0, st, W, y, x);
    case TensorType::F16: return launch_pdl(gemv_f_kernel<(int)TensorType::F16>, blocks, kGemvThreads, 0, st, W, y, x);
    case TensorType::BF16: return launch_pdl(gemv_f_kernel<(int)TensorType::BF16>, blocks, kGemvThreads, 0, st, W, y, x);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace gpu
}  // namespace ddrt
