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
  grid_dep_wait();
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
  grid_dep_wait();
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

// Rope of one pair at position pos: angle = (float)pos * inv_freq_i in fp32, its sine and cosine as
// the CPU computes them (in double), (a, b) -> (a c - b s, a s + b c). The one formula of every
// kernel that rotates (rope, rope_qk, attention): the same bits wherever it runs.
struct RopeCS {
  float c, s;
};
__device__ __forceinline__ RopeCS rope_cs(int64_t pos, float inv_freq_i) {
  const float angle = (float)pos * inv_freq_i;
  return {(float)cos((double)angle), (float)sin((double)angle)};
}
__device__ __forceinline__ void rope_pair(float& a, float& b, RopeCS r) {
  const float x = a, y = b;
  a = x * r.c - y * r.s;
  b = x * r.s + y * r.c;
}

__global__ void rope_kernel(float* x, int T, int n_heads, int head_dim, int64_t pos0, const float* inv_freq,
                            const int64_t* pos_dev) {
  grid_dep_wait();
  pdl_trigger();
  if (pos_dev) pos0 = *pos_dev;
  const int half = head_dim / 2;
  const int64_t n = (int64_t)T * n_heads * half;
  for (int64_t k = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    const int i = (int)(k % half);
    const int64_t th = k / half;  // t * n_heads + h
    const int t = (int)(th / n_heads);
    float* xh = x + th * head_dim;
    rope_pair(xh[i], xh[i + half], rope_cs(pos0 + t, inv_freq[i]));
  }
}

// x += y, then out = rmsnorm(x) * w, one block per row of float4s (see rmsnorm4_kernel).
__global__ void add_rmsnorm4_kernel(float* out, float* x, const float* y, const float* w, int dim, float eps) {
  grid_dep_wait();
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
  grid_dep_wait();
  pdl_trigger();
  if (pos_dev) pos0 = *pos_dev;
  const int half = head_dim / 2, nh = n_q + n_k;
  const int64_t n = (int64_t)T * nh * half;
  for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int i = (int)(e % half);
    const int64_t th = e / half;  // t * nh + h
    const int t = (int)(th / nh), h = (int)(th % nh);
    float* xh = h < n_q ? q + ((int64_t)t * n_q + h) * head_dim : k + ((int64_t)t * n_k + (h - n_q)) * head_dim;
    rope_pair(xh[i], xh[i + half], rope_cs(pos0 + t, inv_freq[i]));
  }
}

__global__ void swiglu_kernel(float* out, const float* gate, const float* up, size_t n) {
  grid_dep_wait();
  pdl_trigger();
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = swiglu1(gate[i], up[i]);
}

__global__ void add_kernel(float* x, const float* y, size_t n) {
  grid_dep_wait();
  pdl_trigger();
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] += y[i];
}

unsigned grid_for(size_t n) {
  const size_t b = (n + kThreads - 1) / kThreads;
  return (unsigned)(b < 4096 ? (b < 1 ? 1 : b) : 4096);
}

// ---- attention -------------------------------------------------------------------------------
// Split-sequence ("flash decoding") attention, one launch. Block (sp, y, t): query t, split sp of
// its positions 0..pos0+t, the q heads of slice y (up to kAttnMaxG heads of one kv head: each key
// and value row is loaded once for all of them). A warp takes every W-th position of the split (W
// warps per block), U of them at a time (their key and value loads all in flight together), keeps
// an online softmax per head; the block merges its warps and writes (max, sum, unnormalised
// output) per head to scratch, or, when the query has a single split, its output directly.
// Otherwise the last block of (t, y) to finish merges the splits: each block's stores, then
// __syncthreads, then a fence and an atomicAdd on the counter of (t, y); the block that takes it
// to the split count sees every other block's stores (fence before the add, fence after seeing
// it, L2 loads) and resets the counter for the next launch.
// The chunk's own keys and values (positions pos0..pos0+T-1) are read from k/v, not from the
// cache: split 0's blocks store them into the cache in this launch and no block reads those cache
// rows in this launch, so the store needs no ordering (and replaces a kernel).
// inv_freq non-null (T == 1, head_dim == 32 * PL, PL even; launch_attention checks): q and the new
// k are rotated here, as rope_qk_kernel would (the same angle, formula and rounding): each lane
// holds both halves of its pairs (element i = lane + 32u pairs with u + PL/2).
// prefetch (attn_prefetch_force; on by default, env DDRT_ATTN_PREFETCH=0 off): each warp loads
// the cached rows (positions < pos0) of its first U positions before the dependency wait. No
// kernel of this launch's stream writes them any more: the attention launch that stored them
// (an earlier step or chunk) has completed, as every kernel between it and this one passed its
// own wait, and at least one of those (the previous layer's attention, or the embedding) only
// lets its dependents start after its wait. So the loads overlap the previous kernel's tail.
constexpr int kAttnWarps = 4;      // warps per block where 8 do not fit (attn_warps), and the twin's
constexpr int kMaxHeadDim = 256;
constexpr int kAttnMaxG = 8;        // q heads per block at most
// blocks the split count aims at (attn_splits), with 4 and with 8 warps per block: H100 A/B at
// context 512, two rounds (eleventh session): 8 warps at 160 blocks +2.0 % llama3-8b, +2.2 %
// smollm2-135m over 4 warps at 264 (8 warps at 264: +1.0 / +2.3 %; at 128: +0.9 / +5.1 %)
constexpr int kAttnTargetBlocks = 264, kAttnTargetBlocks8 = 160;

struct AttnGeom {
  int G, slices, gb;  // q heads per kv head, slices of them (one block each), heads per slice
};
__host__ __device__ inline AttnGeom attn_geom(const AttnShape& s) {
  const int G = s.n_heads / s.n_kv_heads;
  const int slices = (G + kAttnMaxG - 1) / kAttnMaxG;
  return {G, slices, (G + slices - 1) / slices};
}

// attn_kernel's positions in flight per warp (a batch is W x attn_u positions)
constexpr int attn_u(int PL, int W) { return PL >= 8 || W >= 8 ? 2 : 4; }
// whether attn_kernel's prefetch 2 exists in a block of W warps
constexpr bool attn_pf2(int W) { return W >= 8; }
// PL: floats of a head per lane (head_dim <= 32 * PL); GM: heads per block (gb <= GM); W: warps
// per block (attn_warps: 8 by default where they fit, twice kAttnWarps' warps per SM to hide
// latency, each with half the positions in flight; ncu of the 4-warp kernel: 12 % occupancy, 7
// cycles per issued instruction, latency-bound). KT: the cache's element (float or __half: kv_ld,
// kv_st, kv_round).
template <int PL, int GM, int W, typename KT>
__global__ void __launch_bounds__(32 * W)
attn_kernel(float* out, const float* q, const float* kin, const float* vin, KT* K, KT* V, AttnShape s,
            int splits, float* scratch, unsigned* counters, const float* inv_freq, int prefetch, int merge_pre,
            bool fence_sc, bool idle_exit, bool heads_inner, bool defer, L2Hint hint, unsigned long long* stamps) {
  constexpr int U = attn_u(PL, W);  // positions in flight per warp
  __shared__ float sm_m[W][GM], sm_l[W][GM], sm_c[W][GM], sm_bM[GM], sm_bL[GM];
  __shared__ __align__(16) float sm_o[W][GM][32 * PL];
  __shared__ float sm_w[GM][kAttnMaxSplits], sm_L[GM];
  __shared__ bool last;
  // the step timeline (stamp_region): a block's start, wait passed, split counted in (2; none with
  // a single split) and end, on every way out
  const BlockStamps stamp{stamps};
  const BlockEndStamp at_exit{stamp};
  stamp.at(0);
  if (s.pos_dev) s.pos0 = *s.pos_dev;  // written by a copy before the graph's first kernel
  // heads_inner (default; env DDRT_ATTN_HEADS_INNER=0 off): the grid is (head slices, splits, T), so blocks
  // go out split-major: a short query's idle splits come last in the launch order, and its active
  // ones are not the ones left to share an SM when the grid exceeds the SM count
  const int sp = heads_inner ? blockIdx.y : blockIdx.x, y = heads_inner ? blockIdx.x : blockIdx.y, t = blockIdx.z;
  const int n_y = heads_inner ? gridDim.x : gridDim.y;  // head slices (kv heads x slices)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int hd = s.head_dim;
  const AttnGeom geo = attn_geom(s);
  const int kvh = y / geo.slices, h0 = kvh * geo.G + (y % geo.slices) * geo.gb;
  const int nh = min(geo.gb, (kvh + 1) * geo.G - h0);
  const int64_t row = (int64_t)s.n_kv_heads * hd, col = (int64_t)kvh * hd;
  const int64_t n = s.pos0 + t + 1;
  const int64_t L = attn_split_len(n, splits);
  const int active = (int)((n + L - 1) / L);
  const int64_t p0 = (int64_t)sp * L, p1 = p0 + L < n ? p0 + L : n;
  // The key and value rows of U positions (pb + j * W) of this warp: those below `from`
  // (cached, < pos0) or at and above it (this chunk's, from k / v: as computed, kv_round'ed in the
  // loop below once rotated) are left as they are.
  float kr[U][PL], vr[U][PL];
  auto load_rows = [&](int64_t pb, int64_t lo, int64_t hi) {
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t p = pb + j * W;
      if (p < lo || p >= hi) continue;
      if (p < s.pos0) {
        const KT* kp = K + p * row + col;
        const KT* vp = V + p * row + col;
#pragma unroll
        for (int u = 0; u < PL; ++u) {
          const bool in = p < p1 && lane + 32 * u < hd;
          kr[j][u] = in ? kv_ld(kp[lane + 32 * u]) : 0.0f;
          vr[j][u] = in ? kv_ld(vp[lane + 32 * u]) : 0.0f;
        }
      } else {
        const float* kp = kin + (p - s.pos0) * row + col;
        const float* vp = vin + (p - s.pos0) * row + col;
#pragma unroll
        for (int u = 0; u < PL; ++u) {
          const bool in = p < p1 && lane + 32 * u < hd;
          kr[j][u] = in ? kp[lane + 32 * u] : 0.0f;
          vr[j][u] = in ? vp[lane + 32 * u] : 0.0f;
        }
      }
    }
  };
  const int64_t pfirst = p0 + warp;  // this warp's first batch
  if (hint.n) {  // the next linears' weights into L2 (pieces dealt block-first over the grid)
    const int64_t nb = (int64_t)gridDim.x * gridDim.y * gridDim.z;
    const int64_t b = ((int64_t)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    l2_prefetch(hint, b + nb * threadIdx.x, nb * blockDim.x);
  }
  // idle_exit (lab, env DDRT_ATTN_IDLE_EXIT=1): a split past the query's positions (a decode graph
  // fixes the split count while the position moves) leaves before the wait, having issued its
  // share of the L2 prefetch: it writes nothing and is not counted in the merge
  if (idle_exit && sp >= active) return;
  if (prefetch && sp < active) load_rows(pfirst, 0, s.pos0);  // cached rows only, before the wait
  // prefetch 2 (lab, DDRT_ATTN_PREFETCH=2): the second batch's cached rows too, by cp.async into
  // dynamic shared memory (W x U rows of K and of V, 32 PL floats each; each lane copies the
  // elements it reads later, so its own wait_group makes them visible to it): with 8 warps a batch
  // is 16 positions, and at context 512 Llama-3-8B's splits have 26, so the second batch's loads
  // came after the wait, one more L2 round trip on the split's path. The same values in the same
  // order: the same bits. An f16 cache's rows are copied 4 bytes (two elements) per lane: lane l
  // copies elements 2l, 2l + 1 (+ 64 u), which lanes 2l % 32 and 2l % 32 + 1 read, so the warp
  // syncs after its wait_group (head_dim even: the copies' 4-byte alignment).
  constexpr bool kF16 = sizeof(KT) == 2;
  const int64_t pnext = pfirst + W * U;  // this warp's second batch
  // (8-warp blocks only, attn_pf2: in the 4-warp instances its registers made two of them spill)
  const bool pf2 = attn_pf2(W) && prefetch == 2 && sp < active && pnext < p1 && (!kF16 || hd % 2 == 0);
  DDRT_DYN_SMEM(float, attn_dyn);  // (prefetch 2 only; launched with 0 bytes otherwise)
  KT* const pf_k = pf2 ? reinterpret_cast<KT*>(attn_dyn) + (int64_t)warp * U * 32 * PL : nullptr;
  KT* const pf_v = pf_k ? pf_k + (int64_t)W * U * 32 * PL : nullptr;
  if (pf2) {
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t p = pnext + j * W;
      if constexpr (kF16) {
#pragma unroll
        for (int u = 0; u < (PL + 1) / 2; ++u) {
          const int i = 2 * (lane + 32 * u);
          if (p < s.pos0 && p < p1 && i < hd) {
            cp_async4(pf_k + j * 32 * PL + i, K + p * row + col + i);
            cp_async4(pf_v + j * 32 * PL + i, V + p * row + col + i);
          }
        }
      } else {
#pragma unroll
        for (int u = 0; u < PL; ++u) {
          const int i = lane + 32 * u;
          if (p < s.pos0 && p < p1 && i < hd) {
            cp_async4(pf_k + j * 32 * PL + i, K + p * row + col + i);
            cp_async4(pf_v + j * 32 * PL + i, V + p * row + col + i);
          }
        }
      }
    }
    cp_commit();
  }
  // rope's angles (double cos and sin) before the wait too: the position and inv_freq are not the
  // previous kernel's (inv_freq is the model's; the position is copied in before the step's first
  // kernel, as read above), so they stay off the path from the wait to the first score
  RopeCS rcs[PL / 2 > 0 ? PL / 2 : 1];  // rope: pair lane + 32u
  if (inv_freq && sp < active) {
#pragma unroll
    for (int u = 0; u < PL / 2; ++u) rcs[u] = rope_cs(s.pos0 + t, inv_freq[lane + 32 * u]);
  }
  grid_dep_wait();
  // the early trigger lets the o GEMV's blocks start (and issue their first weight copies, which
  // slow this kernel's loads on a shared SM) now: dropping it (the eighth session's
  // DDRT_ATTN_LATE_TRIGGER) cut this kernel from 15.1 to 11.1 us per layer on llama3-8b but cost o
  // 6.6 us more, -1.0 % decode (H100, BENCHMARKS); taken out
  pdl_trigger();
  stamp.at(1);
  if (sp >= active) return;
  auto rotate = [&](float (&x)[PL]) {
    if constexpr (PL % 2 == 0) {
#pragma unroll
      for (int u = 0; u < PL / 2; ++u) rope_pair(x[u], x[u + PL / 2], rcs[u]);
    }
  };
  if (sp == 0 && y % geo.slices == 0) {
    if (inv_freq) {
      if (warp == 0) {
        float kr[PL];
#pragma unroll
        for (int u = 0; u < PL; ++u) kr[u] = kin[t * row + col + lane + 32 * u];
        rotate(kr);
#pragma unroll
        for (int u = 0; u < PL; ++u) K[(s.pos0 + t) * row + col + lane + 32 * u] = kv_st<KT>(kr[u]);
      }
    } else {
      for (int i = threadIdx.x; i < hd; i += blockDim.x)
        K[(s.pos0 + t) * row + col + i] = kv_st<KT>(kin[t * row + col + i]);
    }
    for (int i = threadIdx.x; i < hd; i += blockDim.x) V[(s.pos0 + t) * row + col + i] = kv_st<KT>(vin[t * row + col + i]);
  }
  const float inv_sqrt = 1.0f / sqrtf((float)hd);
  float qr[GM][PL], o[GM][PL], m[GM], l[GM];
#pragma unroll
  for (int g = 0; g < GM; ++g) {
    m[g] = -INFINITY;
    l[g] = 0;
#pragma unroll
    for (int u = 0; u < PL; ++u) {
      const int i = lane + 32 * u;
      qr[g][u] = g < nh && i < hd ? q[((int64_t)t * s.n_heads + h0 + g) * hd + i] : 0.0f;
      o[g][u] = 0;
    }
    if (inv_freq) rotate(qr[g]);
  }
  for (int64_t pb = pfirst; pb < p1; pb += W * U) {
    // every row of the batch; the first batch's cached rows came before the wait when prefetching,
    // the second's (prefetch 2) into shared memory
    if (pf2 && pb == pnext) {
      cp_wait<0>();
      if constexpr (kF16) __syncwarp();  // (the lanes' copies cross lanes)
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const int64_t p = pb + j * W;
        if (p >= s.pos0) continue;
#pragma unroll
        for (int u = 0; u < PL; ++u) {
          const int i = lane + 32 * u;
          const bool in = p < p1 && i < hd;
          kr[j][u] = in ? kv_ld(pf_k[j * 32 * PL + i]) : 0.0f;
          vr[j][u] = in ? kv_ld(pf_v[j * 32 * PL + i]) : 0.0f;
        }
      }
    }
    load_rows(pb, (prefetch && pb == pfirst) || (pf2 && pb == pnext) ? s.pos0 : 0, INT64_MAX);
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t p = pb + j * W;
      if (p < s.pos0 || p >= p1) continue;
      if (inv_freq) rotate(kr[j]);  // the new key (T == 1: p == pos0)
      if constexpr (kF16) {  // the chunk's own rows as the cache holds them
#pragma unroll
        for (int u = 0; u < PL; ++u) {
          kr[j][u] = kv_round<KT>(kr[j][u]);
          vr[j][u] = kv_round<KT>(vr[j][u]);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < GM; ++g) {
      if (g >= nh) break;
      float sc[U];
#pragma unroll
      for (int j = 0; j < U; ++j) {
        float d = 0;
#pragma unroll
        for (int u = 0; u < PL; ++u) d = fmaf(qr[g][u], kr[j][u], d);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);
        sc[j] = d * inv_sqrt;
      }
      float mn = m[g];
#pragma unroll
      for (int j = 0; j < U; ++j)
        if (pb + j * W < p1) mn = fmaxf(mn, sc[j]);
      const float corr = expf(m[g] - mn);  // m = -inf: 0
      l[g] *= corr;
#pragma unroll
      for (int u = 0; u < PL; ++u) o[g][u] *= corr;
#pragma unroll
      for (int j = 0; j < U; ++j) {
        if (pb + j * W >= p1) break;
        const float e = expf(sc[j] - mn);
        l[g] += e;
#pragma unroll
        for (int u = 0; u < PL; ++u) o[g][u] = fmaf(e, vr[j][u], o[g][u]);
      }
      m[g] = mn;
    }
  }
#pragma unroll
  for (int g = 0; g < GM; ++g) {
    if (lane == 0) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
#pragma unroll
    for (int u = 0; u < PL; ++u) sm_o[warp][g][lane + 32 * u] = o[g][u];
  }
  __syncthreads();
  // per head, once (a thread each): the warps' max M, each warp's factor exp(m_w - M) (0 for a warp
  // that saw no position: its l and o are exactly 0, so the sums below are those of skipping it)
  // and the block's sum L, in warp order
  if ((int)threadIdx.x < nh) {
    const int g = threadIdx.x;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < W; ++w) M = fmaxf(M, sm_m[w][g]);
    float Ls = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) {
      const float c = sm_m[w][g] != -INFINITY ? expf(sm_m[w][g] - M) : 0.0f;
      sm_c[w][g] = c;
      Ls += sm_l[w][g] * c;
    }
    sm_bM[g] = M;
    sm_bL[g] = Ls;
  }
  __syncthreads();
  // scratch: unnormalised outputs [T][n_heads][splits][hd], then (max, sum) [T][n_heads][splits][2]
  const int64_t ph = ((int64_t)t * s.n_heads + h0) * splits;  // (t, h0, split 0)
  float* const po = scratch + ph * hd;
  float* const pml = scratch + (int64_t)s.T * s.n_heads * splits * hd + ph * 2;
  for (int e = threadIdx.x; e < nh * hd; e += blockDim.x) {
    const int g = e / hd, i = e - g * hd;
    float acc = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) acc += sm_o[w][g][i] * sm_c[w][g];
    if (active == 1) {
      out[((int64_t)t * s.n_heads + h0 + g) * hd + i] = acc / sm_bL[g];
    } else {
      if (i == 0) {
        pml[((int64_t)g * splits + sp) * 2] = sm_bM[g];
        pml[((int64_t)g * splits + sp) * 2 + 1] = sm_bL[g];
      }
      po[((int64_t)g * splits + sp) * hd + i] = acc;
    }
  }
  if (active == 1) return;
  // defer (AttnDefer, launch_attention's deferred): the consumer GEMV merges the splits; its
  // dependency wait (the whole grid done, its stores visible) orders them, no counter needed. (The
  // timeline's "counted in" stamp: this split's stores issued.)
  if (defer) {
    if (stamps) {
      __syncthreads();
      stamp.at(2);
    }
    return;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    DDRT_COUNTER_FENCE(fence_sc);
    unsigned* c = counters + (int64_t)t * n_y + y;
    last = atomicAdd(c, 1u) == (unsigned)active - 1;
    if (last) *c = 0;
    stamp.at(2);  // the timeline: this split counted in (the merge, in the last block, follows)
  }
  __syncthreads();
  if (!last) return;
  DDRT_COUNTER_FENCE(fence_sc);
  // merge_pre (1, the twin; DDRT_ATTN_MERGE_PRE=0 off): the first kMergePre splits' partial outputs of this
  // thread's first 4 outputs are loaded here, beside the (max, sum) loads below, instead of after
  // the split weights: one L2 round trip fewer on the merging block's path; the same sum order
  // merge_pre 2 (the default since its H100 A/B, fourteenth session, two rounds: llama3-8b +0.9 %,
  // smollm2-135m +4.0 %; DDRT_ATTN_MERGE_PRE=1 the twin): where the block has twice the threads of its float4
  // outputs (n4), threads n4 .. 2 n4 - 1 load splits kMergePre .. 2 kMergePre - 1 of the same
  // outputs beside them (otherwise idle), and take over the first half's sums through shared
  // memory: one L2 round trip fewer again where more than kMergePre splits are active; each
  // output's sum keeps its order (split 0 first), so the same bits as merge_pre 1
  constexpr int kMergePre = 16;
  const bool vec4 = hd % 4 == 0 && ((uintptr_t)out & 15) == 0;
  const int n4 = nh * hd / 4;
  const bool pre2 = merge_pre == 2 && vec4 && 2 * n4 <= (int)blockDim.x;  // (block-uniform)
  const int half = pre2 && (int)threadIdx.x >= n4 ? 1 : 0, me = (int)threadIdx.x - half * n4;
  const bool pre_on = merge_pre != 0 && vec4 && me < n4;
  float4 pre[kMergePre];
  if (pre_on) {
    const int g = 4 * me / hd, i = 4 * me - g * hd, kb = half * kMergePre;
    const float4* src = reinterpret_cast<const float4*>(po + (int64_t)g * splits * hd + i);
#pragma unroll
    for (int k = 0; k < kMergePre; ++k)
      pre[k] = kb + k < active ? __ldcg(src + (int64_t)(kb + k) * (hd / 4)) : make_float4(0, 0, 0, 0);
  }
  for (int g = warp; g < nh; g += W) {  // split weights exp(m_k - M) and the sum L
    float mk[kAttnMaxSplits / 32], M = -INFINITY;
#pragma unroll
    for (int r = 0; r < kAttnMaxSplits / 32; ++r) {
      const int k = lane + 32 * r;
      mk[r] = k < active ? __ldcg(pml + ((int64_t)g * splits + k) * 2) : -INFINITY;
      M = fmaxf(M, mk[r]);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
    float Ls = 0;
#pragma unroll
    for (int r = 0; r < kAttnMaxSplits / 32; ++r) {
      const int k = lane + 32 * r;
      if (k < active) {
        const float w = expf(mk[r] - M);
        sm_w[g][k] = w;
        Ls = fmaf(__ldcg(pml + ((int64_t)g * splits + k) * 2 + 1), w, Ls);  // (as tc_attn_x4)
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) Ls += __shfl_xor_sync(0xffffffffu, Ls, off);
    if (lane == 0) sm_L[g] = Ls;
  }
  __syncthreads();
  float* const oh = out + ((int64_t)t * s.n_heads + h0) * hd;
  auto fma4 = [](float4 v, float w, float4 acc) {
    return make_float4(fmaf(v.x, w, acc.x), fmaf(v.y, w, acc.y), fmaf(v.z, w, acc.z), fmaf(v.w, w, acc.w));
  };
  if (pre2) {  // output me: the first half's splits [0, kMergePre), then the second half's and the rest
    float4* const hand = reinterpret_cast<float4*>(&sm_o[0][0][0]);  // free since the block's own merge
    // (threads past 2 n4 have me >= n4 and no output: g is past the block's heads, so sm_L[g] is
    // read only where me < n4; H100 memcheck: an out-of-range shared read with 8 warps, head_dim 16)
    const int g = 4 * me / hd, i = 4 * me - g * hd;
    const float Lg = me < n4 ? sm_L[g] : 1.0f;
    float4 acc = make_float4(0, 0, 0, 0);
    if (half == 0 && me < n4) {
#pragma unroll
      for (int k = 0; k < kMergePre; ++k)
        if (k < active) acc = fma4(pre[k], sm_w[g][k], acc);
      if (active <= kMergePre)
        *reinterpret_cast<float4*>(oh + (int64_t)g * hd + i) = make_float4(acc.x / Lg, acc.y / Lg, acc.z / Lg, acc.w / Lg);
      else
        hand[me] = acc;
    }
    if (active > kMergePre) {
      __syncthreads();
      if (half == 1 && me < n4) {
        acc = hand[me];
#pragma unroll
        for (int k = 0; k < kMergePre; ++k)
          if (kMergePre + k < active) acc = fma4(pre[k], sm_w[g][kMergePre + k], acc);
        const float4* src = reinterpret_cast<const float4*>(po + (int64_t)g * splits * hd + i);
        for (int k = 2 * kMergePre; k < active; ++k) acc = fma4(__ldcg(src + (int64_t)k * (hd / 4)), sm_w[g][k], acc);
        *reinterpret_cast<float4*>(oh + (int64_t)g * hd + i) = make_float4(acc.x / Lg, acc.y / Lg, acc.z / Lg, acc.w / Lg);
      }
    }
  } else if (vec4) {  // 4 outputs per thread, one 16-byte load per split, all in flight together
    for (int e = threadIdx.x; e < nh * hd / 4; e += blockDim.x) {
      const int g = 4 * e / hd, i = 4 * e - g * hd;
      const float4* src = reinterpret_cast<const float4*>(po + (int64_t)g * splits * hd + i);
      float4 acc = make_float4(0, 0, 0, 0);
      int k0 = 0;
      if (pre_on && e == (int)threadIdx.x) {  // the splits loaded before the weights
#pragma unroll
        for (int k = 0; k < kMergePre; ++k) {
          if (k >= active) break;
          const float w = sm_w[g][k];
          acc = fma4(pre[k], w, acc);
        }
        k0 = kMergePre;
      }
#pragma unroll 16
      for (int k = k0; k < active; ++k) {
        const float4 v = __ldcg(src + (int64_t)k * (hd / 4));
        const float w = sm_w[g][k];
        acc = fma4(v, w, acc);
      }
      const float Lg = sm_L[g];
      *reinterpret_cast<float4*>(oh + (int64_t)g * hd + i) = make_float4(acc.x / Lg, acc.y / Lg, acc.z / Lg, acc.w / Lg);
    }
  } else {
    for (int e = threadIdx.x; e < nh * hd; e += blockDim.x) {
      const int g = e / hd, i = e - g * hd;
      float acc = 0;
#pragma unroll 16
      for (int k = 0; k < active; ++k) acc = fmaf(__ldcg(po + ((int64_t)g * splits + k) * hd + i), sm_w[g][k], acc);
      oh[(int64_t)g * hd + i] = acc / sm_L[g];
    }
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
                              unsigned* counter, bool fence_sc, BlockStamps stamps) {
  stamps.at(0);
  const BlockEndStamp at_end{stamps};
  grid_dep_wait();
  pdl_trigger();
  stamps.at(1);
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
    DDRT_COUNTER_FENCE(fence_sc);
    last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  DDRT_COUNTER_FENCE(fence_sc);
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

const DeviceInfo& device_info() {
  static thread_local int dev_cached = -1;
  static thread_local DeviceInfo info;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return info;
  if (dev != dev_cached) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, dev) == cudaSuccess) {
      info.n_sm = prop.multiProcessorCount;
      info.max_smem = (int)prop.sharedMemPerBlockOptin;
      // env DDRT_PDL=0 (lab): no programmatic dependent launch (each kernel starts once the one
      // before has ended): the A/B of what it hides, and racecheck without kernels overlapping
      info.pdl = prop.major >= 9 && env_int("DDRT_PDL", 1) != 0;
      info.bulk = prop.major >= 9;
      dev_cached = dev;
    }
  }
  return info;
}

namespace {
__global__ void step_advance_kernel(int64_t* pos, int32_t* id, const int32_t* next, int32_t* log, int cap) {
  grid_dep_wait();
  pdl_trigger();
  const int32_t v = *next;
  *id = v;
  *pos += 1;
  const int32_t c = log[0];
  if (c >= 0 && c < cap) {  // a full log (single replays, whose count nobody resets) stays as it is
    log[1 + c] = v;
    log[0] = c + 1;
  }
}
}  // namespace

cudaError_t launch_step_advance(int64_t* pos, int32_t* id, const int32_t* next, int32_t* log, int cap,
                                cudaStream_t st) {
  return launch_pdl(step_advance_kernel, 1, 1, 0, st, pos, id, next, log, cap);
}

cudaError_t launch_argmax(const float* x, int n, int32_t* out, void* scratch, cudaStream_t st) {
  if (n <= 0) return cudaErrorInvalidValue;
  const int blocks = (int)std::min<int64_t>(kArgmaxBlocks, ((int64_t)n + 1023) / 1024);
  float* pv = static_cast<float*>(scratch);
  int* pi = reinterpret_cast<int*>(pv + kArgmaxBlocks);
  unsigned* counter = reinterpret_cast<unsigned*>(pi + kArgmaxBlocks);
  static const bool sc = fence_sc();
  return launch_pdl(argmax_kernel, blocks, 1024, 0, st, x, n, out, pv, pi, counter, sc, BlockStamps{stamp_region(blocks)});
}

cudaError_t launch_rmsnorm(float* out, const float* x, const float* w, int T, int dim, float eps, cudaStream_t st) {
  if (T <= 0) return cudaSuccess;
  const bool vec = dim % 4 == 0 && (((uintptr_t)out | (uintptr_t)x | (uintptr_t)w) & 15) == 0;
  if (vec)
    return launch_pdl(rmsnorm4_kernel, T, dim >= 4096 ? 1024 : 256, 0, st, out, x, w, dim, eps);
  return launch_pdl(rmsnorm_kernel, T, kThreads, 0, st, out, x, w, dim, eps);
}

cudaError_t launch_rope(float* x, int T, int n_heads, int head_dim, int64_t pos0, const float* inv_freq,
                        cudaStream_t st, const int64_t* pos_dev) {
  const size_t n = (size_t)T * n_heads * (head_dim / 2);
  if (n == 0) return cudaSuccess;
  return launch_pdl(rope_kernel, grid_for(n), kThreads, 0, st, x, T, n_heads, head_dim, pos0, inv_freq, pos_dev);
}

cudaError_t launch_add_rmsnorm(float* out, float* x, const float* y, const float* w, int T, int dim, float eps,
                               cudaStream_t st) {
  if (T <= 0) return cudaSuccess;
  const bool vec = dim % 4 == 0 && (((uintptr_t)out | (uintptr_t)x | (uintptr_t)y | (uintptr_t)w) & 15) == 0;
  if (!vec) {
    const cudaError_t e = launch_add(x, y, (size_t)T * dim, st);
    return e != cudaSuccess ? e : launch_rmsnorm(out, x, w, T, dim, eps, st);
  }
  return launch_pdl(add_rmsnorm4_kernel, T, dim >= 4096 ? 1024 : 256, 0, st, out, x, y, w, dim, eps);
}

cudaError_t launch_rope_qk(float* q, float* k, int T, int n_q, int n_k, int head_dim, int64_t pos0,
                           const float* inv_freq, cudaStream_t st, const int64_t* pos_dev) {
  const size_t n = (size_t)T * (n_q + n_k) * (head_dim / 2);
  if (n == 0) return cudaSuccess;
  return launch_pdl(rope_qk_kernel, grid_for(n), kThreads, 0, st, q, k, T, n_q, n_k, head_dim, pos0, inv_freq, pos_dev);
}

cudaError_t launch_swiglu(float* out, const float* gate, const float* up, size_t n, cudaStream_t st) {
  if (n == 0) return cudaSuccess;
  return launch_pdl(swiglu_kernel, grid_for(n), kThreads, 0, st, out, gate, up, n);
}

cudaError_t launch_add(float* x, const float* y, size_t n, cudaStream_t st) {
  if (n == 0) return cudaSuccess;
  return launch_pdl(add_kernel, grid_for(n), kThreads, 0, st, x, y, n);
}

namespace {
// the kernel's template arguments for a shape: heads per block GM, floats of a head per lane PL
int attn_gm(const AttnGeom& geo) { return geo.gb <= 1 ? 1 : geo.gb <= 2 ? 2 : geo.gb <= 4 ? 4 : 8; }
int attn_pl(int head_dim) {
  const int pl = (head_dim + 31) / 32;
  return pl <= 1 ? 1 : pl <= 2 ? 2 : pl <= 4 ? 4 : 8;
}
// Warps per attention block: 8 where its shared arrays fit the 48 KB of static shared memory
// (GM * PL <= 32), else kAttnWarps; env DDRT_ATTN_WARPS=4 (the twin) always kAttnWarps.
int g_attn_warps = -1;  // attn_warps_force; -1: the environment
int attn_warps(int gm, int pl) {
  static const int env_w = env_int("DDRT_ATTN_WARPS", 8);
  const int w = g_attn_warps < 0 ? env_w : g_attn_warps;
  return w == 8 && gm * pl <= 32 ? 8 : kAttnWarps;
}
}  // namespace

int attn_splits(const AttnShape& s) {
  // ~2 (4 warps) or ~1.2 (8 warps) blocks per SM of an H100 when the position range allows (a
  // split >= kAttnMinLen positions: shorter ones cost more in the merge than they save), at most
  // kAttnMaxSplits; with pos_dev the
  // position is not known here: the count is fixed and the split length follows the position.
  // lab knob DDRT_ATTN_BLOCKS=N: aim at N blocks instead (fewer: longer splits, a cheaper merge;
  // 1: no split, no merge, wherever one block per query and head slice)
  static const int env_target = env_int("DDRT_ATTN_BLOCKS", 0);
  const AttnGeom geo = attn_geom(s);
  const int target = env_target > 0 ? env_target
                   : attn_warps(attn_gm(geo), attn_pl(s.head_dim)) == 8 ? kAttnTargetBlocks8 : kAttnTargetBlocks;
  const int64_t per_split = (int64_t)s.T * s.n_kv_heads * geo.slices;
  int64_t k = std::min<int64_t>(kAttnMaxSplits, (target + per_split - 1) / per_split);
  if (!s.pos_dev) k = std::min<int64_t>(k, (s.pos0 + s.T + kAttnMinLen - 1) / kAttnMinLen);
  return (int)(k < 1 ? 1 : k);
}

int64_t attn_scratch_floats(const AttnShape& s) {
  return (int64_t)s.T * s.n_heads * attn_splits(s) * (s.head_dim + 2);
}
int64_t attn_counters(const AttnShape& s) { return (int64_t)s.T * s.n_kv_heads * attn_geom(s).slices; }

namespace {
// The grid's order (attn_kernel's heads_inner): on by default since its H100 A/B (twelfth
// session: smollm2-135m +3.8 % over two rounds, +3.3 % in gpu_check's row, +1.8 % the session
// before; llama3-8b -0.1 %, whose 160 blocks are all active at context 512); env
// DDRT_ATTN_HEADS_INNER=0 off (the split-fastest twin)
bool attn_heads_inner() {
  static const bool on = env_int("DDRT_ATTN_HEADS_INNER", 1) != 0;
  return on;
}
int g_attn_prefetch = -1;  // attn_prefetch_force; -1: the environment
// 0 off, 1 the first batch's cached rows before the wait, 2 (the default since its H100 A/B,
// fifteenth session: llama3-8b +1.7 % over two rounds, smollm2-135m -0.3 %) also the second's, into
// shared memory (8-warp blocks; 4-warp blocks take 1)
int attn_prefetch_mode() {
  static const int env = env_int("DDRT_ATTN_PREFETCH", 2);
  const int m = g_attn_prefetch >= 0 ? g_attn_prefetch : env;
  return m == 0 || m == 2 ? m : 1;
}
int g_attn_merge_pre = -1;  // attn_merge_pre_force; -1: the environment
int attn_merge_pre() {
  static const int env = env_int("DDRT_ATTN_MERGE_PRE", 2);
  return g_attn_merge_pre >= 0 ? g_attn_merge_pre : env;
}
// One attn_kernel instance's launch. Prefetch 2's dynamic shared memory beside the kernel's static
// arrays can pass the 48 KB a launch gets without opting in (head_dim 256: 16-32 KB of sm_o and 32
// KB of its own), so such a launch opts in (per launch: the attribute is the current device's);
// where the device refuses, it takes prefetch 1 (no dynamic memory). The static arrays besides
// sm_o stay under 16 KB, so launches whose sm_o and dynamic memory fit 32 KB need no call.
template <int PL, int GM, int W, typename KT>
cudaError_t attn_launch_k(dim3 grid, cudaStream_t st, float* out, const float* q, const float* k, const float* v,
                          KT* K, KT* V, const AttnShape& s, int splits, float* scratch, unsigned* counters,
                          const float* inv_freq, const L2Hint& hint, bool defer, int prefetch, int merge_pre,
                          bool sc, bool idle_exit, bool heads_inner, unsigned long long* st_reg) {
  const dim3 block(32 * W);
  // prefetch 2: the second batch's K and V rows in dynamic shared memory (attn_kernel)
  size_t smem = prefetch == 2 && attn_pf2(W) ? (size_t)2 * W * attn_u(PL, W) * 32 * PL * sizeof(KT) : 0;
  constexpr size_t sm_o = (size_t)W * GM * 32 * PL * sizeof(float);
  static_assert(3 * W * GM + 3 * GM + GM * kAttnMaxSplits + 1 < 4 * 1024, "attn_kernel's small arrays: under 16 KB");
  if (smem > 0 && sm_o + smem > 32 * 1024) {
    if (cudaFuncSetAttribute(attn_kernel<PL, GM, W, KT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) !=
        cudaSuccess) {
      (void)cudaGetLastError();  // (the refusal is not this launch's error)
      prefetch = 1;
      smem = 0;
    }
  }
  return launch_pdl(attn_kernel<PL, GM, W, KT>, grid, block, smem, st, out, q, k, v, K, V, s, splits, scratch, counters,
                    inv_freq, prefetch, merge_pre, sc, idle_exit, heads_inner, defer, hint, st_reg);
}
template <int PL, int W, typename KT>
cudaError_t attn_launch_w(int gm, dim3 grid, cudaStream_t st, float* out, const float* q, const float* k,
                          const float* v, KT* K, KT* V, const AttnShape& s, int splits, float* scratch,
                          unsigned* counters, const float* inv_freq, const L2Hint& hint, bool defer) {
  const int prefetch = attn_prefetch_mode();
  // attn_kernel's merge_pre: on by default since its H100 A/B (eighth session, two rounds:
  // +0.2 % llama3-8b, +0.8 % smollm2-135m); env DDRT_ATTN_MERGE_PRE=0 off
  // 2 (the default since the fourteenth session's A/B, +0.9 / +4.0 %): also the splits past the
  // first 16 by the threads the merge leaves idle (attn_merge_pre_force); 1 the twin
  const int merge_pre = attn_merge_pre();
  static const bool sc = fence_sc();
  static const bool idle_exit = env_int("DDRT_ATTN_IDLE_EXIT", 0) == 1;
  const bool heads_inner = attn_heads_inner();
  unsigned long long* const st_reg = stamp_region((int64_t)grid.x * grid.y * grid.z);
#define DDRT_ATTN_LAUNCH(GMV)                                                                                         \
  attn_launch_k<PL, GMV, W, KT>(grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint, defer, prefetch, \
                            merge_pre, sc, idle_exit, heads_inner, st_reg)
  switch (gm) {
    case 1: return DDRT_ATTN_LAUNCH(1);
    case 2: return DDRT_ATTN_LAUNCH(2);
    case 4: return DDRT_ATTN_LAUNCH(4);
    default:
      if constexpr (8 * PL <= 32 || W == kAttnWarps) return DDRT_ATTN_LAUNCH(8);
      return cudaErrorInvalidValue;  // not reached: attn_warps keeps kAttnWarps there
  }
#undef DDRT_ATTN_LAUNCH
}
template <int PL, typename KT>
cudaError_t attn_launch(int gm, dim3 grid, cudaStream_t st, float* out, const float* q, const float* k,
                        const float* v, KT* K, KT* V, const AttnShape& s, int splits, float* scratch,
                        unsigned* counters, const float* inv_freq, const L2Hint& hint, bool defer) {
  if (attn_warps(gm, PL) == 8)
    return attn_launch_w<PL, 8>(gm, grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint, defer);
  return attn_launch_w<PL, kAttnWarps>(gm, grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint, defer);
}
// the instance for the shape's head_dim (PL) and the cache's element (KT)
template <typename KT>
cudaError_t attn_launch_pl(int pl, int gm, dim3 grid, cudaStream_t st, float* out, const float* q, const float* k,
                           const float* v, void* Kv, void* Vv, const AttnShape& s, int splits, float* scratch,
                           unsigned* counters, const float* inv_freq, const L2Hint& hint, bool defer) {
  KT* const K = static_cast<KT*>(Kv);
  KT* const V = static_cast<KT*>(Vv);
  if (pl <= 1) return attn_launch<1>(gm, grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint, defer);
  if (pl <= 2) return attn_launch<2>(gm, grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint, defer);
  if (pl <= 4) return attn_launch<4>(gm, grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint, defer);
  return attn_launch<8>(gm, grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint, defer);
}
}  // namespace

L2Hint l2_hint_for(const DevLinear* const* Ws, int n, int64_t budget) {
  L2Hint h;
  int64_t left = budget;
  auto add = [&](const void* p, int64_t bytes) {
    bytes = (bytes < left ? bytes : left) / 16 * 16;
    if (!p || bytes <= 0 || h.n == L2Hint::kMax || reinterpret_cast<uintptr_t>(p) % 16) return;
    h.p[h.n] = static_cast<const char*>(p);
    h.bytes[h.n++] = bytes;
    left -= bytes;
  };
  for (int i = 0; i < n && left > 0; ++i) {
    const DevLinear& d = *Ws[i];
    if (d.fdata) add(d.fdata, d.d_out * d.row_stride * (d.type == TensorType::F32 ? 4 : 2));
    if (d.units) {  // what the fused GEMV reads of it (the bulk ring)
      add(d.units, (int64_t)gemv_tc_units_bytes(d));
      continue;
    }
    if (d.codes) add(d.codes, d.d_out * d.row_vecs * (int64_t)sizeof(uint4));
    if (d.sm) add(d.sm, d.d_out * d.n_groups * (int64_t)sizeof(__half2));
    if (d.lut) add(d.lut, (d.d_out << d.bits) * (int64_t)sizeof(float));
  }
  return h;
}

void attn_prefetch_force(int mode) { g_attn_prefetch = mode < 0 ? -1 : mode >= 2 ? 2 : mode == 1 ? 1 : 0; }
void attn_merge_pre_force(int mode) { g_attn_merge_pre = mode < 0 ? -1 : mode > 2 ? 2 : mode; }
void attn_warps_force(int warps) { g_attn_warps = warps < 0 ? -1 : warps; }
namespace {
int g_attn_defer = -1;  // attn_defer_force; -1: the environment
}
void attn_defer_force(int mode) { g_attn_defer = mode < 0 ? -1 : mode > 2 ? 2 : mode; }
// 2 (auto, the default since its H100 A/B, sixteenth session): launches of at most
// kAttnDeferMaxSplits splits. Llama-3-8B's 20 splits: +1.7 % decode over two rounds (attention 13.0
// -> 8.1 us per layer, o 7.2 -> 10.5); SmolLM2-135M's 54 (33 active at context 512): -4.5 % (o 4.6
// -> 9.6 us: every o block merges the splits of the heads it stages, so its cost grows with them).
// Env DDRT_ATTN_DEFER=0 never (the twin), 1 wherever the kernels allow
int attn_defer_mode() {
  static const int env = env_int("DDRT_ATTN_DEFER", 2);
  const int m = g_attn_defer >= 0 ? g_attn_defer : env;
  return m >= 0 && m <= 2 ? m : 2;
}
bool attn_defer_on() { return attn_defer_mode() != 0; }

bool attn_fuses_rope(const AttnShape& s) {
  return s.T == 1 && (s.head_dim == 64 || s.head_dim == 128 || s.head_dim == 256);
}

cudaError_t launch_attention(float* out, const float* q, const float* k, const float* v, void* K, void* V,
                             const AttnShape& s, float* scratch, unsigned* counters, cudaStream_t st,
                             const float* inv_freq, const L2Hint& hint, AttnDefer* deferred) {
  if (deferred) *deferred = AttnDefer();
  if (s.T <= 0) return cudaSuccess;
  if (s.head_dim > kMaxHeadDim || s.head_dim <= 0 || s.n_kv_heads <= 0 || s.n_heads % s.n_kv_heads != 0 ||
      (inv_freq && !attn_fuses_rope(s)))
    return cudaErrorInvalidValue;
  const void* ptrs[6] = {out, q, k, v, K, V};
  if (!inv_freq && attn_tiled_applies(s, ptrs, 6)) return launch_attention_tiled(out, q, k, v, K, V, s, st);
  const AttnGeom geo = attn_geom(s);
  const int splits = attn_splits(s);
  const unsigned n_y = (unsigned)(s.n_kv_heads * geo.slices);
  const dim3 grid = attn_heads_inner() ? dim3(n_y, splits, s.T) : dim3(splits, n_y, s.T);
  const int gm = attn_gm(geo), pl = attn_pl(s.head_dim);
  // the merge left to the consumer: where its GEMV can merge (T = 1, head_dim 64 or 128) and a
  // query may see more than one split
  const bool defer = deferred && s.T == 1 && (s.head_dim == 64 || s.head_dim == 128) && splits > 1 &&
                     (attn_defer_mode() == 1 || splits <= kAttnDeferMaxSplits);
  if (defer) {
    const int64_t ph = (int64_t)s.n_heads * splits;
    deferred->po = scratch;
    deferred->pml = scratch + ph * s.head_dim;
    deferred->splits = splits;
    deferred->head_dim = s.head_dim;
    deferred->pos0 = s.pos0;
    deferred->pos_dev = s.pos_dev;
  }
  if (s.kv_f16)
    return attn_launch_pl<__half>(pl, gm, grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint,
                                  defer);
  return attn_launch_pl<float>(pl, gm, grid, st, out, q, k, v, K, V, s, splits, scratch, counters, inv_freq, hint, defer);
}

}  // namespace gpu
}  // namespace ddrt
