// decdec_rt CUDA backend: the T > 1 matmul's dispatch, its simple twin, and embed.
// launch_gemm sends uniform 2/3/4-bit weights to the int8 tensor-core kernel (gemm_i8.cu) where the
// device has its shared memory, every other type but F32 to the bf16 tensor-core kernel (gemm_tc.cu).
// The simple kernel (launch_gemm_simple: F32 weights, and the slow, obviously correct twin the
// tests and the bench compare with): each block dequantizes a 64-row x 32-column tile of W into
// shared memory with the slow reader (dequant_at), loads 32 tokens x 32 columns of x, and
// accumulates a 64 x 32 output tile in fp32 (4 rows x 2 tokens per thread).
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels.cuh"

namespace ddrt {
namespace gpu {

// W[o][i] as fp32, from the GPU layout (any matrix type).
__device__ __forceinline__ float dequant_at(const DevLinear& W, int64_t o, int64_t i) {
  switch (W.type) {
    case TensorType::F32: return static_cast<const float*>(W.fdata)[o * W.row_stride + i];
    case TensorType::F16: return __half2float(static_cast<const __half*>(W.fdata)[o * W.row_stride + i]);
    case TensorType::BF16: {
      const uint16_t b = static_cast<const uint16_t*>(W.fdata)[o * W.row_stride + i];
      return __uint_as_float((uint32_t)b << 16);
    }
    default: break;
  }
  int q;
  if (W.codes) {
    q = packed_code(reinterpret_cast<const uint32_t*>(W.codes + o * W.row_vecs), W.bits, i);
  } else {  // the weights as unit images alone (DevLinear::units: 3/4-bit uniform)
    q = W.bits == 3 ? packed_code_of([&](int64_t s, int w) { return row_word<3>(W, o, s, w); }, 3, i)
                    : packed_code_of([&](int64_t s, int w) { return row_word<4>(W, o, s, w); }, 4, i);
  }
  if (W.type == TensorType::LUT3 || W.type == TensorType::LUT4) return W.lut[(o << W.bits) + q];
  const float2 f = __half22float2(row_sm(W, o, i / W.group));
  return fmaf(f.x, (float)q, f.y);
}

namespace {

constexpr int kBM = 64, kBT = 32, kBK = 32, kThreads = 256;

__global__ void __launch_bounds__(kThreads) gemm_kernel(DevLinear W, float* y, const float* x, int T) {
  __shared__ float ws[kBK][kBM + 1];  // [k][o]
  __shared__ float xs[kBT][kBK + 1];  // [t][k]
  const int tid = threadIdx.x;
  const int64_t o0 = (int64_t)blockIdx.x * kBM;
  const int t0 = blockIdx.y * kBT;
  const int oo = tid % 16, tt = tid / 16;  // rows oo + 16 r, tokens 2 tt + u
  float acc[4][2] = {};
  for (int64_t k0 = 0; k0 < W.d_in; k0 += kBK) {
    for (int e = tid; e < kBM * kBK; e += kThreads) {
      const int ol = e / kBK, kl = e % kBK;
      const int64_t o = o0 + ol, i = k0 + kl;
      ws[kl][ol] = (o < W.d_out && i < W.d_in) ? dequant_at(W, o, i) : 0.0f;
    }
    for (int e = tid; e < kBT * kBK; e += kThreads) {
      const int tl = e / kBK, kl = e % kBK;
      const int64_t i = k0 + kl;
      xs[tl][kl] = (t0 + tl < T && i < W.d_in) ? x[(int64_t)(t0 + tl) * W.d_in + i] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kBK; ++k) {
      float a[4], b[2];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = ws[k][oo + 16 * r];
#pragma unroll
      for (int u = 0; u < 2; ++u) b[u] = xs[2 * tt + u][k];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int u = 0; u < 2; ++u) acc[r][u] = fmaf(a[r], b[u], acc[r][u]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int64_t o = o0 + oo + 16 * r;
      const int t = t0 + 2 * tt + u;
      if (o < W.d_out && t < T) y[(int64_t)t * W.d_out + o] = acc[r][u];
    }
}

constexpr int kEmbedIds = 64;
struct EmbedIds {
  int32_t id[kEmbedIds];
};

__global__ void embed_kernel(DevLinear W, float* out, EmbedIds ids, const int32_t* id_dev) {
  grid_dep_wait();
  pdl_trigger();
  const int t = blockIdx.y;
  const int32_t id = id_dev ? id_dev[t] : ids.id[t];
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < W.d_in; i += (int64_t)gridDim.x * blockDim.x)
    out[(int64_t)t * W.d_in + i] = dequant_at(W, id, i);
}

}  // namespace

namespace {
bool g_force_simple = false;
}

void gemm_force_simple(bool on) { g_force_simple = on; }

size_t gemm_scratch_bytes(const DevLinear& W, int T) {
  size_t n = gemm_tc_supports(W.type) ? gemm_tc_scratch_bytes(W, T) : 0;
  if (gemm_i8_supported(W)) n = std::max(n, gemm_i8_scratch_bytes(W, T));
  return n;
}

cudaError_t launch_gemm(const DevLinear& W, float* y, const float* x, int T, void* scratch, cudaStream_t st,
                        int limbs) {
  if (!g_force_simple && gemm_i8_enabled() && gemm_i8_supported(W)) return launch_gemm_i8(W, y, x, T, scratch, st, limbs);
  if (!g_force_simple && gemm_tc_supports(W.type)) return launch_gemm_tc(W, y, x, T, scratch, st);
  return launch_gemm_simple(W, y, x, T, st);
}

bool gemm_group_fusable(const DevLinear* const* Ws, int n) {
  return !g_force_simple && gemm_i8_enabled() && n >= 2 && gemm_i8_groupable(Ws, n);
}

cudaError_t launch_gemm_simple(const DevLinear& W, float* y, const float* x, int T, cudaStream_t st) {
  const dim3 grid((unsigned)((W.d_out + kBM - 1) / kBM), (unsigned)((T + kBT - 1) / kBT));
  return launch_plain(gemm_kernel, grid, kThreads, 0, st, W, y, x, T);
}

// ids: host ints, passed by value (64 per launch), so the launch can be captured in a graph.
cudaError_t launch_embed(const DevLinear& W, float* out, const int32_t* ids, int T, cudaStream_t st,
                         const int32_t* id_dev) {
  if (id_dev && T != 1) return cudaErrorInvalidValue;
  for (int t0 = 0; t0 < T; t0 += kEmbedIds) {
    const int n = T - t0 < kEmbedIds ? T - t0 : kEmbedIds;
    EmbedIds e{};
    for (int k = 0; k < n; ++k) e.id[k] = ids[t0 + k];
    const int bx = (int)((W.d_in + 255) / 256 < 64 ? (W.d_in + 255) / 256 : 64);
    const cudaError_t err = launch_pdl(embed_kernel, dim3(bx, n), 256, 0, st, W, out + (int64_t)t0 * W.d_in, e, id_dev);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace gpu
}  // namespace ddrt
