// decdec_rt CUDA backend: the batch-1 GEMV for uniform 3- and 4-bit weights on the tensor cores.
//
// y[o] = sum over groups g:  s[o][g] * (q_g . x_g) + m[o][g] * sum(x_g), in ~fp32 accuracy:
//  - codes: quad_frag (packed.cuh) turns one 32-bit word into two codes with one LOP3, as fp16
//    subnormals q * 2^(p-24) (exact); these are the A fragments of mma.m16n8k16 (rows g, g+8 of
//    a 16-row tile; lane (g, t) = (lane / 4, lane % 4)).
//  - x: each block first writes x as B fragments to shared memory: column 0 = fp16(x) (hi),
//    column 1 = fp16(x - hi) (lo); columns 2..7 are zero. hi + lo carries ~22 bits of x, the
//    products are exact in fp32 and the accumulation is fp32, so the result is ~fp32 accurate
//    for |x| < 65504 (fp16 range). Per-group sums of x (the min term) go to shared memory too.
//  - each group's mma chain starts from zero; its D (cols 0 + 1 of lane t = 0) is scaled by the
//    group's scale into one of two class accumulators (class 1 fields are 2^kClassShift larger).
// Work: a block = TILES tiles of 16 rows x KS warps splitting the K chunks of the rows round
// robin; a chunk = one lane step (packed.cuh) of each of the 16 rows per lane t (4 lane steps
// of a slab half), so a warp's load of one vector is 8 rows x 64 contiguous bytes. Chunks are
// loaded D ahead in registers. The KS partial sums are added in shared memory (fixed order).
#pragma once

#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

constexpr int kMmaTiles = 2, kMmaKs = 8, kMmaThreads = 32 * kMmaTiles * kMmaKs;

__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Shared memory of one block for d_in: B entries (one uint4 per x float4: hi b0 b1, lo b0 b1),
// group sums, the KS partials.
DDRT_HDC int64_t mma_slabs(int64_t d_in, int bits) { return (d_in + 8 * step_codes(bits) - 1) / (8 * step_codes(bits)); }
inline size_t mma_smem_bytes(int64_t d_in, int bits, int group) {
  const int64_t f4 = mma_slabs(d_in, bits) * 2 * step_codes(bits);
  return (size_t)(f4 * 16 + f4 * 4 / group * 4 + kMmaKs * kMmaTiles * 16 * 4);
}

template <int B, int G>
__global__ void __launch_bounds__(kMmaThreads) gemv_qmma_kernel(GemvArgs a) {
  constexpr int C = step_codes(B), V = step_vecs(B), NW = 4 * V, NQ = C / 4, QG = G / 32, NG = NQ / QG;
  constexpr int D = B == 3 ? 2 : 6;  // chunks in flight per warp
  extern __shared__ uint4 smem[];
  const DevLinear& W = a.W;
  const int64_t n_slabs = mma_slabs(W.d_in, B), n_f4 = n_slabs * 2 * C, n_chunks = 2 * n_slabs;
  uint4* xs = smem;                                              // [n_f4] B entries
  float* sx = reinterpret_cast<float*>(smem + n_f4);             // [n_f4 * 4 / G] group sums
  float* red = sx + n_f4 * 4 / G;                                // [KS][TILES * 16]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int tile = warp % kMmaTiles, ks = warp / kMmaTiles;
  const int64_t row0 = (int64_t)blockIdx.x * kMmaTiles * 16 + tile * 16;
  const int64_t ra = row0 + g < W.d_out ? row0 + g : W.d_out - 1, rb = row0 + g + 8 < W.d_out ? row0 + g + 8 : W.d_out - 1;
  const uint4* wa = W.codes + ra * W.row_vecs;
  const uint4* wb = W.codes + rb * W.row_vecs;
  const __half2* sa = W.sm + ra * W.n_groups;
  const __half2* sb = W.sm + rb * W.n_groups;
  // chunk ci = 2 * slab + h: lane step 8 * (slab % 4) + 4h + t of round slab / 4
  auto vec_off = [&](int64_t ci) { return (ci >> 3) * 32 * V + 4 * (ci & 7) + t; };
  uint4 buf[D][2][V];
  auto load = [&](int64_t i, uint4 (&v)[2][V]) {
    const int64_t ci = ks + i * kMmaKs;
    if (ci >= n_chunks) return;
    const int64_t off = vec_off(ci);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      v[0][k] = ld_stream(wa + off + 32 * k);
      v[1][k] = ld_stream(wb + off + 32 * k);
    }
    asm volatile("prefetch.global.L2 [%0];" ::"l"(sa + (ci >> 1) * NG));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(sb + (ci >> 1) * NG));
  };
  const int64_t my_chunks = ks < n_chunks ? (n_chunks - ks + kMmaKs - 1) / kMmaKs : 0;
#pragma unroll
  for (int p = 0; p < D; ++p) load(p, buf[p]);

  // x -> B entries and group sums (while the first weight loads are in flight)
  for (int64_t f = threadIdx.x; f < n_f4; f += kMmaThreads) {
    const int64_t i0 = 4 * f;
    float xv[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) xv[e] = i0 + e < W.d_in ? __ldg(a.x + i0 + e) : 0.0f;
    const int64_t slab = i0 / (8 * C), r = i0 % (8 * C);
    const int j = (int)(r / 32), b = (int)(r % 32) / 4;
    const int64_t ent = ((slab * 2 + b / 4) * NQ + j) * 4 + (b & 3);
    __half hi[4], lo[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      hi[e] = __float2half_rn(xv[e]);
      lo[e] = __float2half_rn(xv[e] - __half2float(hi[e]));
    }
    // b0 holds the codes (slot 0, half 0/1), b1 (slot 1, half 0/1): quad_code order
    const int c00 = quad_code<B>(0, 0), c01 = quad_code<B>(0, 1), c10 = quad_code<B>(1, 0), c11 = quad_code<B>(1, 1);
    uint4 en;
    en.x = (uint32_t)__half_as_ushort(hi[c00]) | (uint32_t)__half_as_ushort(hi[c01]) << 16;
    en.y = (uint32_t)__half_as_ushort(hi[c10]) | (uint32_t)__half_as_ushort(hi[c11]) << 16;
    en.z = (uint32_t)__half_as_ushort(lo[c00]) | (uint32_t)__half_as_ushort(lo[c01]) << 16;
    en.w = (uint32_t)__half_as_ushort(lo[c10]) | (uint32_t)__half_as_ushort(lo[c11]) << 16;
    xs[ent] = en;
    float s = (xv[0] + xv[1]) + (xv[2] + xv[3]);
#pragma unroll
    for (int o = 1; o < G / 4; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((lane & (G / 4 - 1)) == 0) sx[i0 / G] = s;
  }
  __syncthreads();

  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // [class][row g, g+8], units 2^-24 / 2^(shift-24)
  float accm[2] = {0.0f, 0.0f};                      // min term, rows g, g+8
  const uint2* xs2 = reinterpret_cast<const uint2*>(xs);
  auto compute = [&](int64_t i, const uint4 (&v)[2][V]) {
    const int64_t ci = ks + i * kMmaKs, slab = ci >> 1;
    uint32_t w0[NW], w1[NW];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      w0[4 * k] = v[0][k].x; w0[4 * k + 1] = v[0][k].y; w0[4 * k + 2] = v[0][k].z; w0[4 * k + 3] = v[0][k].w;
      w1[4 * k] = v[1][k].x; w1[4 * k + 1] = v[1][k].y; w1[4 * k + 2] = v[1][k].z; w1[4 * k + 3] = v[1][k].w;
    }
    const uint2* xe = xs2 + (ci * NQ * 4 + t) * 2 + g;  // entry (ci, j, t), half g (g < 2)
    const float first = (ci & 1) == 0 ? 1.0f : 0.0f;      // min term once per group (slab half 0)
    const __half2* sga = sa + slab * NG;                    // this slab's scale words, rows g, g+8
    const __half2* sgb = sb + slab * NG;
    const float* sxs = sx + slab * NG;
#pragma unroll
    for (int gg = 0; gg < NG; ++gg) {
      float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int q = 0; q < QG; ++q) {
        const int j = gg * QG + q;
        uint32_t a0, a1, a2, a3;
        quad_frag<B>(w0, j, a0, a2);
        quad_frag<B>(w1, j, a1, a3);
        uint2 bv = make_uint2(0u, 0u);
        if (g < 2) bv = xe[j * 8];
        mma_f16(d, a0, a1, a2, a3, bv.x, bv.y);
      }
      const float2 fa = __half22float2(__ldg(sga + gg)), fb = __half22float2(__ldg(sgb + gg));
      const int cls = quad_class<B>(gg * QG);  // a constant after unrolling
      acc[cls][0] = fmaf(fa.x, d[0] + d[1], acc[cls][0]);
      acc[cls][1] = fmaf(fb.x, d[2] + d[3], acc[cls][1]);
      const float sg = first * sxs[gg];
      accm[0] = fmaf(fa.y, sg, accm[0]);
      accm[1] = fmaf(fb.y, sg, accm[1]);
    }
  };
  for (int64_t i0 = 0; i0 < my_chunks; i0 += D) {
#pragma unroll
    for (int p = 0; p < D; ++p) {
      if (i0 + p < my_chunks) {
        compute(i0 + p, buf[p]);
        load(i0 + p + D, buf[p]);
      }
    }
  }
  constexpr float k0 = 16777216.0f, k1 = (float)(1 << (24 - class_shift<B>()));
  if (t == 0) {
    red[ks * kMmaTiles * 16 + tile * 16 + g] = fmaf(acc[0][0], k0, fmaf(acc[1][0], k1, accm[0]));
    red[ks * kMmaTiles * 16 + tile * 16 + g + 8] = fmaf(acc[0][1], k0, fmaf(acc[1][1], k1, accm[1]));
  }
  __syncthreads();
  if (threadIdx.x < kMmaTiles * 16) {
    const int64_t row = (int64_t)blockIdx.x * kMmaTiles * 16 + threadIdx.x;
    float y = 0.0f;
#pragma unroll
    for (int k = 0; k < kMmaKs; ++k) y += red[k * kMmaTiles * 16 + threadIdx.x];
    if (row < W.d_out) a.y[row] = y;
  }
}

// Launch of one (bits, group) instantiation; defined in gemv_qmma.cu.
template <int B, int G>
cudaError_t gemv_qmma_run(const GemvArgs& a, cudaStream_t st);

}  // namespace gpu
}  // namespace ddrt
