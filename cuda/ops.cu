// decdec_rt CUDA backend: rmsnorm, rope, swiglu, add and attention. Each follows the CPU
// reference's formula (cpp/cpu/cpu_backend.cpp) in fp32 with IEEE functions (no fast math).
#include <algorithm>

#include "kernels.cuh"

namespace ddrt {
namespace gpu {

namespace {

constexpr int kThreads = 256;

__device__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0;
  for (int w = 0; w < (int)(blockDim.x >> 5); ++w) s += red[w];
  __syncthreads();
  return s;
}

// one block per row: out = x / sqrt(mean(x^2) + eps) * w
__global__ void rmsnorm_kernel(float* out, const float* x, const float* w, int dim, float eps) {
  pdl_trigger();
  __shared__ float red[32];
  const float* xt = x + (int64_t)blockIdx.x * dim;
  float* ot = out + (int64_t)blockIdx.x * dim;
  float ss = 0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(xt[i], xt[i], ss);
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / (float)dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ot[i] = xt[i] * r * w[i];
}

// The same for rows of whole float4s (dim % 4 == 0, 16-byte aligned rows): one load per thread
// in flight per pass instead of a chain of scalar loads (decode: one row, latency-bound).
__global__ void rmsnorm4_kernel(float* out, const float* x, const float* w, int dim, float eps) {
  pdl_trigger();
  __shared__ float red[32];
  const int n4 = dim / 4;
  const float4* xt = reinterpret_cast<const float4*>(x + (int64_t)blockIdx.x * dim);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4* ot = reinterpret_cast<float4*>(out + (int64_t)blockIdx.x * dim);
  float ss = 0;
  for (int i = threadIdx.x; i < n4; i += blockDim.x) {
    const float4 a = xt[i];
    ss = fmaf(a.x, a.x, ss);
    ss = fmaf(a.y, a.y, ss);
    ss = fmaf(a.z, a.z, ss);
    ss = fmaf(a.w, a.w, ss);
  }
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / (float)dim + eps);
  for (int i = threadIdx.x; i < n4; i += blockDim.x) {
    const float4 a = xt[i], b = w4[i];
    ot[i] = make_float4(a.x * r * b.x, a.y * r * b.y, a.z * r * b.z, a.w * r * b.w);
  }
}

// angle = (float)(pos0 + t) * inv_freq[i] in fp32, its sine/cosine as the CPU: in double.
__global__ void rope_kernel(float* x, int T, int n_heads, int head_dim, int64_t pos0, const float* inv_freq,
                            const int64_t* pos_dev) {
  if (pos_dev) pos0 = *pos_dev;
  const int half = head_dim / 2;
  const int64_t n = (int64_t)T * n_heads * half;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    const int i = (int)(k % half);
    const int64_t th = k / half;  // t * n_heads + h
    const int t = (int)(th / n_heads);
    const float angle = (float)(pos0 + t) * inv_freq[i];
    const float c = (float)cos((double)angle), s = (float)sin((double)angle);
    float* xh = x + th * head_dim;
    const float a = xh[i], b = xh[i + half];
    xh[i] = a * c - b * s;
    xh[i + half] = a * s + b * c;
  }
}

// x += y, then out = rmsnorm(x) * w, one block per row of float4s (see rmsnorm4_kernel).
__global__ void add_rmsnorm4_kernel(float* out, float* x, const float* y, const float* w, int dim, float eps) {
  pdl_trigger();
  __shared__ float red[32];
  const int n4 = dim / 4;
  float4* xt = reinterpret_cast<float4*>(x + (int64_t)blockIdx.x * dim);
  const float4* yt = reinterpret_cast<const float4*>(y + (int64_t)blockIdx.x * dim);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4* ot = reinterpret_cast<float4*>(out + (int64_t)blockIdx.x * dim);
  float ss = 0;
  for (int i = threadIdx.x; i < n4; i += blockDim.x) {
    float4 a = xt[i];
    const float4 b = yt[i];
    a = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
    xt[i] = a;
    ss = fmaf(a.x, a.x, ss);
    ss = fmaf(a.y, a.y, ss);
    ss = fmaf(a.z, a.z, ss);
    ss = fmaf(a.w, a.w, ss);
  }
  ss = block_sum(ss, red);  // its barrier also orders the stores to x before the reads below
  const float r = 1.0f / sqrtf(ss / (float)dim + eps);
  for (int i = threadIdx.x; i < n4; i += blockDim.x) {
    const float4 a = xt[i], b = w4[i];
    ot[i] = make_float4(a.x * r * b.x, a.y * r * b.y, a.z * r * b.z, a.w * r * b.w);
  }
}

// rope of q ([T][n_q heads]) and k ([T][n_k heads]) in one launch, as rope_kernel.
__global__ void rope_qk_kernel(float* q, float* k, int T, int n_q, int n_k, int head_dim, int64_t pos0,
                               const float* inv_freq, const int64_t* pos_dev) {
  pdl_trigger();
  if (pos_dev) pos0 = *pos_dev;
  const int half = head_dim / 2, nh = n_q + n_k;
  const int64_t n = (int64_t)T * nh * half;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int i = (int)(e % half);
    const int64_t th = e / half;  // t * nh + h
    const int t = (int)(th / nh), h = (int)(th % nh);
    float* xh = h < n_q ? q + ((int64_t)t * n_q + h) * head_dim : k + ((int64_t)t * n_k + (h - n_q)) * head_dim;
    const float angle = (float)(pos0 + t) * inv_freq[i];
    const float c = (float)cos((double)angle), s = (float)sin((double)angle);
    const float a = xh[i], b = xh[i + half];
    xh[i] = a * c - b * s;
    xh[i + half] = a * s + b * c;
  }
}

__global__ void swiglu_kernel(float* out, const float* gate, const float* up, size_t n) {
  pdl_trigger();
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

__global__ void add_kernel(float* x, const float* y, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] += y[i];
}

unsigned grid_for(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return (unsigned)(b < 4096 ? (b < 1 ? 1 : b) : 4096);
}

// ---- attention -------------------------------------------------------------------------------
// Split-sequence ("flash decoding") attention: block (split, head, t) runs an online softmax over
// its positions (4 warps, one position per warp at a time, head_dim over the lanes) and writes
// (max, sum, unnormalised output); combine_kernel merges the splits of each (t, head).
constexpr int kAttnWarps = 4;
constexpr int kMaxHeadDim = 256;
constexpr int kPerLane = kMaxHeadDim / 32;

__host__ __device__ int64_t attn_split_len(const AttnShape& s, int splits) {
  const int64_t n = s.pos0 + s.T;
  return (n + splits - 1) / splits;
}

__global__ void __launch_bounds__(32 * kAttnWarps)
attn_partial_kernel(const float* q, const float* K, const float* V, AttnShape s, int splits, float* scratch) {
  if (s.pos_dev) s.pos0 = *s.pos_dev;
  __shared__ float sm_m[kAttnWarps], sm_l[kAttnWarps];
  __shared__ float sm_o[kAttnWarps][kMaxHeadDim];
  const int sp = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int hd = s.head_dim;
  const int64_t n = s.pos0 + t + 1;
  const int64_t L = attn_split_len(s, splits);
  const int64_t p0 = sp * L, p1 = p0 + L < n ? p0 + L : n;
  const int kvh = h / (s.n_heads / s.n_kv_heads);
  const int64_t row = (int64_t)s.n_kv_heads * hd;
  const float* qh = q + ((int64_t)t * s.n_heads + h) * hd;
  const float inv_sqrt = 1.0f / sqrtf((float)hd);
  float qr[kPerLane], o[kPerLane];
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    qr[u] = lane + 32 * u < hd ? qh[lane + 32 * u] : 0.0f;
    o[u] = 0;
  }
  float m = -INFINITY, l = 0;
  for (int64_t p = p0 + warp; p < p1; p += kAttnWarps) {
    const float* kp = K + p * row + (int64_t)kvh * hd;
    const float* vp = V + p * row + (int64_t)kvh * hd;
    float d = 0;
#pragma unroll
    for (int u = 0; u < kPerLane; ++u)
      if (lane + 32 * u < hd) d = fmaf(qr[u], kp[lane + 32 * u], d);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
    const float sc = d * inv_sqrt;
    const float mn = fmaxf(m, sc);
    const float corr = expf(m - mn);  // m = -inf: 0
    const float e = expf(sc - mn);
    l = l * corr + e;
#pragma unroll
    for (int u = 0; u < kPerLane; ++u)
      if (lane + 32 * u < hd) o[u] = o[u] * corr + e * vp[lane + 32 * u];
    m = mn;
  }
  if (lane == 0) { sm_m[warp] = m; sm_l[warp] = l; }
#pragma unroll
  for (int u = 0; u < kPerLane; ++u)
    if (lane + 32 * u < hd) sm_o[warp][lane + 32 * u] = o[u];
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, sm_m[w]);
  float* out = scratch + (((int64_t)t * s.n_heads + h) * splits + sp) * (hd + 2);
  if (threadIdx.x == 0) {
    float Ls = 0;
    for (int w = 0; w < kAttnWarps; ++w)
      if (sm_m[w] != -INFINITY) Ls += sm_l[w] * expf(sm_m[w] - M);
    out[0] = M;
    out[1] = Ls;
  }
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float acc = 0;
    for (int w = 0; w < kAttnWarps; ++w)
      if (sm_m[w] != -INFINITY) acc += sm_o[w][i] * expf(sm_m[w] - M);
    out[2 + i] = acc;
  }
}

__global__ void attn_combine_kernel(float* out, AttnShape s, int splits, const float* scratch) {
  pdl_trigger();
  if (s.pos_dev) s.pos0 = *s.pos_dev;
  const int h = blockIdx.x, t = blockIdx.y, hd = s.head_dim;
  const float* base = scratch + ((int64_t)t * s.n_heads + h) * splits * (hd + 2);
  float M = -INFINITY;
  for (int k = 0; k < splits; ++k) M = fmaxf(M, base[k * (hd + 2)]);
  float L = 0;
  for (int k = 0; k < splits; ++k) {
    const float mk = base[k * (hd + 2)];
    if (mk != -INFINITY) L += base[k * (hd + 2) + 1] * expf(mk - M);
  }
  float* oh = out + ((int64_t)t * s.n_heads + h) * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float acc = 0;
    for (int k = 0; k < splits; ++k) {
      const float mk = base[k * (hd + 2)];
      if (mk != -INFINITY) acc += base[k * (hd + 2) + 2 + i] * expf(mk - M);
    }
    oh[i] = acc / L;
  }
}

__global__ void kv_store_kernel(float* K, float* V, const float* k, const float* v, int64_t row, int T,
                                int64_t pos0, const int64_t* pos_dev) {
  if (pos_dev) pos0 = *pos_dev;
  const int64_t n = (int64_t)T * row;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    K[pos0 * row + i] = k[i];
    V[pos0 * row + i] = v[i];
  }
}

// (v, i) pairs: the larger value wins, the lower index on ties; idx == n means "none" (NaN or
// nothing seen) and loses to everything.
__device__ __forceinline__ void argmax_merge(float& v, int& idx, float ov, int oi, int n) {
  if (oi == n) return;
  if (idx == n || ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
}

__device__ void block_argmax(float& v, int& idx, int n) {
  __shared__ float bv[32];
  __shared__ int bi[32];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    argmax_merge(v, idx, ov, oi, n);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) { bv[warp] = v; bi[warp] = idx; }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < (int)(blockDim.x >> 5); ++w) argmax_merge(v, idx, bv[w], bi[w], n);
}

// Argmax over many blocks in one launch: each block reduces its slice to (v, i) in part_v/part_i,
// and the last block to finish (a device counter, reset by that block for the next launch or
// graph replay) reduces the partials. NaN never wins; lowest index on ties.
__global__ void argmax_kernel(const float* x, int n, int32_t* out, float* part_v, int* part_i,
                              unsigned* counter) {
  float v = -INFINITY;
  int idx = n;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float xi = x[i];
    if (!isnan(xi) && (idx == n || xi > v)) { v = xi; idx = i; }
  }
  block_argmax(v, idx, n);
  __shared__ bool last;
  if (threadIdx.x == 0) {
    part_v[blockIdx.x] = v;
    part_i[blockIdx.x] = idx;
    __threadfence();
    last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  v = -INFINITY;
  idx = n;
  for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x)
    argmax_merge(v, idx, ((volatile float*)part_v)[b], ((volatile int*)part_i)[b], n);
  block_argmax(v, idx, n);
  if (threadIdx.x == 0) {
    out[0] = idx < n ? idx : 0;
    *counter = 0;
  }
}

}  // namespace

cudaError_t launch_kv_store(float* K, float* V, const float* k, const float* v, int64_t row, int T, int64_t pos0,
                            const int64_t* pos_dev, cudaStream_t st) {
  if (T <= 0) return cudaSuccess;
  kv_store_kernel<<<grid_for((size_t)T * row), kThreads, 0, st>>>(K, V, k, v, row, T, pos0, pos_dev);
  return cudaGetLastError();
}

cudaError_t launch_argmax(const float* x, int n, int32_t* out, void* scratch, cudaStream_t st) {
  if (n <= 0) return cudaErrorInvalidValue;
  const int blocks = (int)std::min<int64_t>(kArgmaxBlocks, ((int64_t)n + 1023) / 1024);
  float* pv = static_cast<float*>(scratch);
  int* pi = reinterpret_cast<int*>(pv + kArgmaxBlocks);
  unsigned* counter = reinterpret_cast<unsigned*>(pi + kArgmaxBlocks);
  argmax_kernel<<<blocks, 1024, 0, st>>>(x, n, out, pv, pi, counter);
  return cudaGetLastError();
}

cudaError_t launch_rmsnorm(float* out, const float* x, const float* w, int T, int dim, float eps, cudaStream_t st) {
  if (T <= 0) return cudaSuccess;
  const bool vec = dim % 4 == 0 && (((uintptr_t)out | (uintptr_t)x | (uintptr_t)w) & 15) == 0;
  if (vec)
    rmsnorm4_kernel<<<T, dim >= 4096 ? 1024 : 256, 0, st>>>(out, x, w, dim, eps);
  else
    rmsnorm_kernel<<<T, kThreads, 0, st>>>(out, x, w, dim, eps);
  return cudaGetLastError();
}

cudaError_t launch_rope(float* x, int T, int n_heads, int head_dim, int64_t pos0, const float* inv_freq,
                        cudaStream_t st, const int64_t* pos_dev) {
  const size_t n = (size_t)T * n_heads * (head_dim / 2);
  if (n == 0) return cudaSuccess;
  rope_kernel<<<grid_for(n), kThreads, 0, st>>>(x, T, n_heads, head_dim, pos0, inv_freq, pos_dev);
  return cudaGetLastError();
}

cudaError_t launch_add_rmsnorm(float* out, float* x, const float* y, const float* w, int T, int dim, float eps,
                               cudaStream_t st) {
  if (T <= 0) return cudaSuccess;
  const bool vec = dim % 4 == 0 && (((uintptr_t)out | (uintptr_t)x | (uintptr_t)y | (uintptr_t)w) & 15) == 0;
  if (!vec) {
    const cudaError_t e = launch_add(x, y, (size_t)T * dim, st);
    return e != cudaSuccess ? e : launch_rmsnorm(out, x, w, T, dim, eps, st);
  }
  add_rmsnorm4_kernel<<<T, dim >= 4096 ? 1024 : 256, 0, st>>>(out, x, y, w, dim, eps);
  return cudaGetLastError();
}

cudaError_t launch_rope_qk(float* q, float* k, int T, int n_q, int n_k, int head_dim, int64_t pos0,
                           const float* inv_freq, cudaStream_t st, const int64_t* pos_dev) {
  const size_t n = (size_t)T * (n_q + n_k) * (head_dim / 2);
  if (n == 0) return cudaSuccess;
  rope_qk_kernel<<<grid_for(n), kThreads, 0, st>>>(q, k, T, n_q, n_k, head_dim, pos0, inv_freq, pos_dev);
  return cudaGetLastError();
}

cudaError_t launch_swiglu(float* out, const float* gate, const float* up, size_t n, cudaStream_t st) {
  if (n == 0) return cudaSuccess;
  swiglu_kernel<<<grid_for(n), kThreads, 0, st>>>(out, gate, up, n);
  return cudaGetLastError();
}

cudaError_t launch_add(float* x, const float* y, size_t n, cudaStream_t st) {
  if (n == 0) return cudaSuccess;
  add_kernel<<<grid_for(n), kThreads, 0, st>>>(x, y, n);
  return cudaGetLastError();
}

int attn_splits(const AttnShape& s) {
  // ~16 blocks per SM: short position ranges keep each warp's chain of dependent steps short;
  // at most 64 splits, or the combine's pass over the splits costs more than it saves (SmolLM2's
  // 9 heads would get 235: measured 452 vs 622 tok/s)
  const int64_t by_grid = std::min<int64_t>(64, (2112 + (int64_t)s.T * s.n_heads - 1) / ((int64_t)s.T * s.n_heads));
  if (s.pos_dev) return (int)(by_grid < 1 ? 1 : by_grid);  // position unknown on the host
  const int64_t n = s.pos0 + s.T;
  const int64_t by_len = (n + 7) / 8;                                          // >= 8 positions each
  const int64_t k = by_len < by_grid ? by_len : by_grid;
  return (int)(k < 1 ? 1 : k);
}

int64_t attn_scratch_floats(const AttnShape& s) {
  return (int64_t)s.T * s.n_heads * attn_splits(s) * (s.head_dim + 2);
}

cudaError_t launch_attention(float* out, const float* q, const float* K, const float* V, const AttnShape& s,
                             float* scratch, cudaStream_t st) {
  if (s.T <= 0) return cudaSuccess;
  if (s.head_dim > kMaxHeadDim || s.head_dim <= 0) return cudaErrorInvalidValue;
  const int splits = attn_splits(s);
  attn_partial_kernel<<<dim3(splits, s.n_heads, s.T), 32 * kAttnWarps, 0, st>>>(q, K, V, s, splits, scratch);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  attn_combine_kernel<<<dim3(s.n_heads, s.T), 128, 0, st>>>(out, s, splits, scratch);
  return cudaGetLastError();
}

}  // namespace gpu
}  // namespace ddrt
