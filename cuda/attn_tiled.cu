// decdec_rt CUDA backend: prefill attention (T > 1) over query tiles, fp32 on CUDA cores.
//
// The split kernel (ops.cu, attn_kernel) gives each block one query: at T = 512 every key and
// value row of a kv head is read from L2 once per query (~1 GB per Llama-3-8B layer). Here a block
// takes the G q heads of one kv head for QT = 64 / G consecutive queries, 64 query rows (row r:
// query t0 + r / G, head kvh * G + r % G), and walks the keys in tiles of 32 positions held in
// shared memory, so each key and value row is read once per 64 rows. Online softmax per row, as
// the split kernel; same formula as the CPU reference (scores q . k * (1 / sqrt(head_dim)), fp32).
//
// Thread (ty, tx), tid = 8 ty + tx: rows 2 ty and 2 ty + 1 (their 8 threads are 8 lanes of one
// warp, so a row's reductions are 3 shuffles and its P row is shared with a __syncwarp); scores of
// keys tx + 8 i (i < 4); outputs of dims 4 tx + 32 c + e. Shared-memory rows of Q and K are padded
// by 4 floats so that the 8 lanes reading 8 consecutive rows at the same dims hit 8 different bank
// groups; P rows by 1 (the 4 rows a warp reads at one key).
//
// The chunk's own keys and values (positions pos0 .. pos0 + T - 1) are read from k / v, and each
// block stores those of its own queries into the cache: every such row is stored exactly once and
// no block of the launch reads it from the cache, so the stores need no ordering (as attn_kernel).
// KT: the cache's element (float or __half); the chunk's own rows are attended as the cache holds
// them (kv_round4).
#include <cstdlib>

#include "kernels.cuh"

namespace ddrt {
namespace gpu {

namespace {

constexpr int kRows = kAttnTiledRows, kKeys = 32, kThreadsT = 256;

template <int HD>
constexpr size_t tiled_smem_bytes() {
  return ((size_t)kRows * (HD + 4) + (size_t)kKeys * (HD + 4) + (size_t)kKeys * HD + (size_t)kRows * (kKeys + 1)) * 4;
}

__device__ __forceinline__ float dot4(float4 a, float4 b, float acc) {
  return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
}

template <int HD, typename KT>
__global__ void __launch_bounds__(kThreadsT) attn_tiled_kernel(float* out, const float* q, const float* kin,
                                                              const float* vin, KT* K, KT* V, AttnShape s) {
  DDRT_DYN_SMEM(float4, tiled_smem4);
  float* const Qs = reinterpret_cast<float*>(tiled_smem4);  // [kRows][HD + 4]
  float* const Ks = Qs + kRows * (HD + 4);                   // [kKeys][HD + 4]
  float* const Vs = Ks + kKeys * (HD + 4);                   // [kKeys][HD]
  float* const Ps = Vs + kKeys * HD;                         // [kRows][kKeys + 1]
  constexpr int H4 = HD / 4, DC = HD / 32;
  grid_dep_wait();
  pdl_trigger();
  const int G = s.n_heads / s.n_kv_heads, QT = kRows / G;
  const int kvh = blockIdx.y, t0 = blockIdx.x * QT, tq = min(QT, s.T - t0);
  const int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7;
  const int64_t row = (int64_t)s.n_kv_heads * HD, col = (int64_t)kvh * HD;

  for (int e = tid; e < tq * H4; e += kThreadsT) {  // this tile's new keys and values -> the cache
    const int64_t t = t0 + e / H4, d = 4 * (e % H4);
    kv_st4(K + (s.pos0 + t) * row + col + d, *reinterpret_cast<const float4*>(kin + t * row + col + d));
    kv_st4(V + (s.pos0 + t) * row + col + d, *reinterpret_cast<const float4*>(vin + t * row + col + d));
  }
  // a row's query (rows past the tile's queries, or past T, take a real one and are not stored)
  auto row_query = [&](int r) { return min(t0 + r / G, s.T - 1); };
  for (int e = tid; e < kRows * H4; e += kThreadsT) {
    const int r = e / H4, d = 4 * (e % H4);
    const int64_t h = (int64_t)kvh * G + r % G;
    *reinterpret_cast<float4*>(Qs + r * (HD + 4) + d) =
        *reinterpret_cast<const float4*>(q + ((int64_t)row_query(r) * s.n_heads + h) * HD + d);
  }
  const int64_t qpos0 = s.pos0 + row_query(2 * ty), qpos1 = s.pos0 + row_query(2 * ty + 1);
  const float inv_sqrt = 1.0f / sqrtf((float)HD);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[2][DC][4];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr)
#pragma unroll
    for (int c = 0; c < DC; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[rr][c][e] = 0.0f;

  const int64_t kend = s.pos0 + t0 + tq;  // keys [0, kend): up to the tile's last query
  for (int64_t k0 = 0; k0 < kend; k0 += kKeys) {
    __syncthreads();  // the last tile's K, V and P reads are done (first pass: Q is stored)
    for (int e = tid; e < kKeys * H4; e += kThreadsT) {
      const int j = e / H4, d = 4 * (e % H4);
      const int64_t p = k0 + j;
      float4 kv = make_float4(0.0f, 0.0f, 0.0f, 0.0f), vv = kv;
      if (p < kend) {
        if (p < s.pos0) {
          kv = kv_ld4(K + p * row + col + d);
          vv = kv_ld4(V + p * row + col + d);
        } else {
          const int64_t off = (p - s.pos0) * row + col + d;
          kv = kv_round4<KT>(*reinterpret_cast<const float4*>(kin + off));
          vv = kv_round4<KT>(*reinterpret_cast<const float4*>(vin + off));
        }
      }
      *reinterpret_cast<float4*>(Ks + j * (HD + 4) + d) = kv;
      *reinterpret_cast<float4*>(Vs + j * HD + d) = vv;
    }
    __syncthreads();
    float sc[2][4];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
#pragma unroll
      for (int i = 0; i < 4; ++i) sc[rr][i] = 0.0f;
#pragma unroll 8
    for (int d = 0; d < HD; d += 4) {
      const float4 qa = *reinterpret_cast<const float4*>(Qs + (2 * ty) * (HD + 4) + d);
      const float4 qb = *reinterpret_cast<const float4*>(Qs + (2 * ty + 1) * (HD + 4) + d);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float4 kk = *reinterpret_cast<const float4*>(Ks + (tx + 8 * i) * (HD + 4) + d);
        sc[0][i] = dot4(qa, kk, sc[0][i]);
        sc[1][i] = dot4(qb, kk, sc[1][i]);
      }
    }
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float mx = -INFINITY;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t p = k0 + tx + 8 * i;
        sc[rr][i] = p <= (rr ? qpos1 : qpos0) ? sc[rr][i] * inv_sqrt : -INFINITY;  // causal (and p < kend)
        mx = fmaxf(mx, sc[rr][i]);
      }
#pragma unroll
      for (int off = 1; off < 8; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      // key 0 lies in the first tile and every row sees it: m_new is finite from the first tile on
      const float mn = fmaxf(m[rr], mx), corr = expf(m[rr] - mn);  // m = -inf: 0
      float sum = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float e = expf(sc[rr][i] - mn);  // masked: 0
        sum += e;
        Ps[(2 * ty + rr) * (kKeys + 1) + tx + 8 * i] = e;
      }
#pragma unroll
      for (int off = 1; off < 8; off <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      l[rr] = l[rr] * corr + sum;
      m[rr] = mn;
#pragma unroll
      for (int c = 0; c < DC; ++c)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[rr][c][e] *= corr;
    }
    __syncwarp();  // the rows' P, written by their 8 lanes of this warp
#pragma unroll 4
    for (int j = 0; j < kKeys; ++j) {
      const float pa = Ps[(2 * ty) * (kKeys + 1) + j], pb = Ps[(2 * ty + 1) * (kKeys + 1) + j];
#pragma unroll
      for (int c = 0; c < DC; ++c) {
        const float4 v = *reinterpret_cast<const float4*>(Vs + j * HD + 4 * tx + 32 * c);
        o[0][c][0] = fmaf(pa, v.x, o[0][c][0]);
        o[0][c][1] = fmaf(pa, v.y, o[0][c][1]);
        o[0][c][2] = fmaf(pa, v.z, o[0][c][2]);
        o[0][c][3] = fmaf(pa, v.w, o[0][c][3]);
        o[1][c][0] = fmaf(pb, v.x, o[1][c][0]);
        o[1][c][1] = fmaf(pb, v.y, o[1][c][1]);
        o[1][c][2] = fmaf(pb, v.z, o[1][c][2]);
        o[1][c][3] = fmaf(pb, v.w, o[1][c][3]);
      }
    }
  }
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int r = 2 * ty + rr;
    if (r < QT * G && r / G < tq) {
      const int64_t t = t0 + r / G, h = (int64_t)kvh * G + r % G;
      float* const dst = out + (t * s.n_heads + h) * HD + 4 * tx;
#pragma unroll
      for (int c = 0; c < DC; ++c)
        *reinterpret_cast<float4*>(dst + 32 * c) =
            make_float4(o[rr][c][0] / l[rr], o[rr][c][1] / l[rr], o[rr][c][2] / l[rr], o[rr][c][3] / l[rr]);
    }
  }
}

template <int HD, typename KT>
cudaError_t launch_hd(float* out, const float* q, const float* k, const float* v, void* K, void* V,
                      const AttnShape& s, cudaStream_t st) {
  // per call (a function attribute belongs to the current device's context; T > 1 is never captured)
  const cudaError_t attr = cudaFuncSetAttribute(attn_tiled_kernel<HD, KT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                (int)tiled_smem_bytes<HD>());
  if (attr != cudaSuccess) return attr;
  const int QT = kRows / (s.n_heads / s.n_kv_heads);
  const dim3 grid((unsigned)((s.T + QT - 1) / QT), (unsigned)s.n_kv_heads);
  return launch_pdl(attn_tiled_kernel<HD, KT>, grid, dim3(kThreadsT), tiled_smem_bytes<HD>(), st, out, q, k, v,
                    static_cast<KT*>(K), static_cast<KT*>(V), s);
}

int g_forced = -1;  // attn_tiled_force: 0 off, 1 on, 2 auto; -1: the environment decides
int64_t g_launches = 0;

}  // namespace

void attn_tiled_force(int mode) { g_forced = mode; }
int64_t attn_tiled_launches() { return g_launches; }

bool attn_tiled_applies(const AttnShape& s, const void* const* ptrs, int n_ptrs) {
  static const int env_mode = env_int("DDRT_ATTN_TILED", 2);  // 1 on, 0 off, else auto (2)
  const int mode = g_forced >= 0 ? g_forced : env_mode == 0 || env_mode == 1 ? env_mode : 2;
  if (mode == 0) return false;
  if (s.T < kAttnTiledMinT || s.pos_dev || (s.head_dim != 64 && s.head_dim != 128) || s.n_kv_heads <= 0 ||
      s.n_heads % s.n_kv_heads != 0 || s.n_heads / s.n_kv_heads > kRows)
    return false;
  const int QT = kRows / (s.n_heads / s.n_kv_heads);
  const int64_t blocks = ((int64_t)s.T + QT - 1) / QT * s.n_kv_heads;
  if (blocks < kAttnTiledMinBlocks && (mode == 2 || s.pos0 > (int64_t)kAttnTiledMaxPrefix * s.T)) return false;
  for (int i = 0; i < n_ptrs; ++i)
    if (reinterpret_cast<uintptr_t>(ptrs[i]) & 15) return false;
  return true;
}

cudaError_t launch_attention_tiled(float* out, const float* q, const float* k, const float* v, void* K, void* V,
                                   const AttnShape& s, cudaStream_t st) {
  const cudaError_t e = s.kv_f16 ? (s.head_dim == 64 ? launch_hd<64, __half>(out, q, k, v, K, V, s, st)
                                                     : launch_hd<128, __half>(out, q, k, v, K, V, s, st))
                                 : (s.head_dim == 64 ? launch_hd<64, float>(out, q, k, v, K, V, s, st)
                                                     : launch_hd<128, float>(out, q, k, v, K, V, s, st));
  if (e == cudaSuccess) ++g_launches;
  return e;
}

}  // namespace gpu
}  // namespace ddrt
