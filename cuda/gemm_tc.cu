// decdec_rt CUDA backend: the tensor-core matmul for T > 1 (prefill), y[T][d_out] = x[T][d_in] W^T.
//
// Two kernels: x_prep splits x once into operand-type halves (scratch: x_hi, x_lo [T][Kp], and for
// uniform types the sum of x per 32-channel tile), then the matmul: a block computes 128 rows of
// W x 128 tokens, 8 warps of 64 rows x 32 tokens each, over K tiles of 32 input channels in a
// 3-stage shared-memory ring (one barrier per K tile): x tiles and float W tiles arrive by
// cp.async two tiles ahead; quantized W tiles are loaded into registers one tile ahead and decoded
// into shared memory. W is the mma.sync A operand (m16n8k16, [o][k] rows), x the B operand
// ([t][k] rows), fp32 accumulators.
//
// Precision (near fp32, so the op tests keep NMSE <= 1e-8 against the fp32 CPU reference):
//   * W enters the MMA exactly: quantized codes are small integers (exact in fp16/bf16), LUT
//     entries and F16/BF16 weights are fp16/bf16 values already.
//   * x = x_hi + x_lo, both halves in the operand type (x_lo = x - x_hi rounded once): two MMAs per
//     tile. The part of x lost is < 2^-17 |x| (bf16) or 2^-22 |x| (fp16), far under the test's
//     tolerance.
//   * Uniform types: each group's code.x products accumulate in their own fragment P, and at the
//     group's end acc += s * P + m * sum(x over the group) in fp32 (the sum from the fp32 x).
// Operand type: bf16 for UQ2/3/4 and BF16 (bf16 keeps the range of fp32, so x_lo never goes
// subnormal); fp16 for UQ8 (codes up to 255 need 8 significant bits, bf16 has 8 with the implicit
// one but the magic-bias conversion below needs 9), LUT3/4 and F16 (fp16 values). F32 weights do not
// fit either operand type exactly and stay on the simple kernel (gemm.cu).
//
// Quantized tiles are decoded from the GPU layout (packed.cuh): K tile k0 (a multiple of 32) is
// block j of the octet slab of 8 lane steps s = r*32 + 8a + b (b = 0..7); step b holds its elements
// k0 + 4b + cc as codes c = 4j + cc (cc = 0..3). For bits 2/4/8 those 4 codes are fields 8 bits
// apart of one word (bits 3: step_code per code, with constant positions); a shift and a mask put (cc0, cc2) and (cc1, cc3) in the two halves of a word,
// OR-ing the exponent of 128 (bf16) or 1024 (fp16) and one HSUB2 make them exact operand pairs.
// The A tile keeps that in-register order [cc0, cc2, cc1, cc3] per step, and x is staged with the
// same order (elements 1 and 2 of every 4 swapped): the dot product is the same sum.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels.cuh"

namespace ddrt {
namespace gpu {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 32, kThreads = 256, kStages = 3;
constexpr int kLd = kBK + 8;  // shared row stride in 16-bit elements (80 bytes: ldmatrix conflict free)

// Matrix kinds of the kernel template: uniform bits 2/3/4/8, LUT bits 3/4, F16, BF16.
enum Kind { kUQ2, kUQ3, kUQ4, kUQ8, kLUT3, kLUT4, kF16, kBF16 };
__host__ __device__ constexpr bool is_uq(int k) { return k <= kUQ8; }
__host__ __device__ constexpr bool is_lutk(int k) { return k == kLUT3 || k == kLUT4; }
__host__ __device__ constexpr bool is_fk(int k) { return k == kF16 || k == kBF16; }
__host__ __device__ constexpr int kind_bits(int k) {
  return k == kUQ2 ? 2 : (k == kUQ3 || k == kLUT3) ? 3 : (k == kUQ4 || k == kLUT4) ? 4 : k == kUQ8 ? 8 : 16;
}
__host__ __device__ constexpr bool is_bf(int k) { return k == kUQ2 || k == kUQ3 || k == kUQ4 || k == kBF16; }

// Units of the loaders (per thread per K tile).
constexpr int kAUnits = kBM * 8 / kThreads;        // quantized: (row, step b) pairs, 4 codes each
constexpr int kFUnits = kBM * kBK / 8 / kThreads;  // float W: uint4 of 8 elements
constexpr int kXUnits = kBN * kBK / 8 / kThreads;  // x: 16-byte chunks (8 elements) of x_hi and of x_lo

// 99 KB: fits the opt-in limit of every target (sm_86/89: 99 KB).
struct Smem {
  uint16_t a[kStages][kBM][kLd];   // W tile, operand type
  uint16_t xh[kStages][kBN][kLd];  // x_hi tile
  uint16_t xl[kStages][kBN][kLd];  // x_lo tile
  float2 sm[kStages][kBM];         // uniform: (scale, min) of the tile's group per row
  float xs[kStages][kBN];          // uniform: sum of the tile's x per token
};

// Scratch of the prepared x: x_hi, x_lo [T][Kp] (Kp = K tiles * 32), x sums [n_tiles][T].
struct XPrep {
  uint16_t *hi, *lo;
  float* sum;
  int64_t kp;
};
__host__ __device__ constexpr int64_t k_tiles(int64_t d_in) { return (d_in + kBK - 1) / kBK; }
XPrep carve(void* scratch, int64_t d_in, int T) {
  XPrep p;
  p.kp = k_tiles(d_in) * kBK;
  p.hi = static_cast<uint16_t*>(scratch);
  p.lo = p.hi + (int64_t)T * p.kp;
  p.sum = reinterpret_cast<float*>(p.lo + (int64_t)T * p.kp);
  return p;
}

// Two 16-bit operand values from two floats (exact for the values we feed it: W entries).
template <bool BF>
__device__ __forceinline__ uint32_t to2(float a, float b) {
  if (BF) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  const __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}
template <bool BF>
__device__ __forceinline__ uint16_t to1(float a) {
  if (BF) {
    const __nv_bfloat16 v = __float2bfloat16_rn(a);
    return *reinterpret_cast<const uint16_t*>(&v);
  }
  const __half v = __float2half_rn(a);
  return *reinterpret_cast<const uint16_t*>(&v);
}
template <bool BF>
__device__ __forceinline__ float from1(uint16_t u) {
  if (BF) return __uint_as_float((uint32_t)u << 16);
  return __half2float(*reinterpret_cast<const __half*>(&u));
}

// Integer codes q0 (low half) and q1 (high half) of a word, < 2^7 (bf16) or < 2^10 (fp16), as an
// exact operand pair: OR the exponent of 128 / 1024 and subtract it.
template <bool BF>
__device__ __forceinline__ uint32_t codes2(uint32_t q) {
  if (BF) {
    const uint32_t v = q | 0x43004300u;
    const __nv_bfloat162 r =
        __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&v), __floats2bfloat162_rn(128.0f, 128.0f));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
  const uint32_t v = q | 0x64006400u;
  const __half2 r = __hsub2(*reinterpret_cast<const __half2*>(&v), __floats2half2_rn(1024.0f, 1024.0f));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// The four codes of one (row, step) unit of a K tile, as words (cc0 | cc2 << 16, cc1 | cc3 << 16).
template <int B>
struct Codes {
  uint32_t w[B == 3 ? 3 : 1];
  // jj: block j of the slab; its words: row o's of lane step s, from the codes (at row[idx[.]]),
  // or with Img from the unit images (row_word: uniform 3/4-bit without codes)
  template <bool Img>
  __device__ __forceinline__ void load(const DevLinear& W, int64_t o, int64_t s, int j) {
    auto word = [&](int wd) {
      if constexpr (Img) return row_word<B>(W, o, s, wd);
      return __ldg(reinterpret_cast<const uint32_t*>(W.codes + o * W.row_vecs) + 4 * vec_index(s, wd / 4, B) + wd % 4);
    };
    if (B == 3) {
      const int sl = j / 8;
#pragma unroll
      for (int i = 0; i < 3; ++i) w[i] = word(3 * sl + i);
    } else {
      w[0] = word(packed_pos(B, 4 * j).word);
    }
  }
  template <int JJ>
  __device__ __forceinline__ void pairs3(uint32_t* lo, uint32_t* hi) const {
    // step_code with constant codes folds to constant shifts: whatever the slice layout of
    // packed.cuh, codes 0..31 of a slice read only its 3 words.
    constexpr int c0 = 4 * JJ;
    *lo = (uint32_t)step_code(w, 3, c0) | ((uint32_t)step_code(w, 3, c0 + 2) << 16);
    *hi = (uint32_t)step_code(w, 3, c0 + 1) | ((uint32_t)step_code(w, 3, c0 + 3) << 16);
  }
  __device__ __forceinline__ void pairs(int j, uint32_t* lo, uint32_t* hi) const {
    if (B == 3) {
      switch (j % 8) {  // uniform over the block: constant shifts in each case
        case 0: pairs3<0>(lo, hi); break;
        case 1: pairs3<1>(lo, hi); break;
        case 2: pairs3<2>(lo, hi); break;
        case 3: pairs3<3>(lo, hi); break;
        case 4: pairs3<4>(lo, hi); break;
        case 5: pairs3<5>(lo, hi); break;
        case 6: pairs3<6>(lo, hi); break;
        default: pairs3<7>(lo, hi); break;
      }
    } else {
      constexpr uint32_t m = (1u << B) - 1, m2 = m | (m << 16);
      const int sh = packed_pos(B, 4 * j).bit;  // codes 4j + cc at sh + 8 cc
      *lo = (w[0] >> sh) & m2;
      *hi = (w[0] >> (sh + 8)) & m2;
    }
  }
};

__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b, bool bf) {
#ifdef DDRT_CUDA_EMU
  ::ddrt_emu::mma_m16n8k16_f32(c, a, b, bf);
#else
  if (bf)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
// What one thread carries from a K tile's global loads to its shared-memory stores.
template <int K>
struct Staged {
  Codes<kind_bits(K) == 16 ? 4 : kind_bits(K)> q[kAUnits];
  __half2 sm;  // uniform: row tid's (scale, min)
};

// x [T][d_in] fp32 -> hi, lo [T][Kp] in the operand type (zero past d_in; elements 1 and 2 of
// every 4 swapped when kSwap) and sum[tile][T]: one warp per (token, K tile).
template <bool BF, bool kSwap>
__global__ void x_prep_kernel(XPrep p, const float* x, int64_t d_in, int T) {
  const int lane = threadIdx.x % 32;
  const int64_t nk = p.kp / kBK, unit = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (unit >= nk * T) return;
  const int t = (int)(unit / nk);
  const int64_t kt = unit % nk, k = kt * kBK + lane;
  const int64_t i = kSwap ? (k & ~3) + ((k & 3) == 1 ? 2 : (k & 3) == 2 ? 1 : (k & 3)) : k;
  const float v = i < d_in ? x[(int64_t)t * d_in + i] : 0.0f;
  const uint16_t h = to1<BF>(v);
  p.hi[(int64_t)t * p.kp + k] = h;
  p.lo[(int64_t)t * p.kp + k] = to1<BF>(v - from1<BF>(h));
  float s = v;
#pragma unroll
  for (int m = 16; m > 0; m /= 2) s += __shfl_xor_sync(0xffffffffu, s, m);
  if (lane == 0) p.sum[kt * T + t] = s;
}

template <int K>
__global__ void __launch_bounds__(kThreads, 1) gemm_tc_kernel(DevLinear W, float* y, XPrep xp, int T) {
  constexpr int B = kind_bits(K);
  constexpr bool BF = is_bf(K);
  DDRT_DYN_SMEM(unsigned char, smem_raw);
  Smem& S = *reinterpret_cast<Smem*>(smem_raw);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % 2, wn = warp / 2;  // warp tile: rows wm*64.., tokens wn*32..
  const int64_t o0 = (int64_t)blockIdx.x * kBM;
  const int t0 = blockIdx.y * kBN;
  const int64_t d_in = W.d_in;
  const int nk = (int)k_tiles(d_in);

  // cp.async of K tile kt into ring slot buf: x_hi, x_lo, x sums, float W.
  auto fetch = [&](int kt, int buf) {
    const int64_t k0 = (int64_t)kt * kBK;
#pragma unroll
    for (int u = 0; u < kXUnits; ++u) {
      const int e = tid + u * kThreads, tok = e / 4, q = e % 4;
      const int t = min(t0 + tok, T - 1);  // tokens past T: any valid row, their outputs are not stored
      const int64_t off = (int64_t)t * xp.kp + k0 + 8 * q;
      cp_async16(&S.xh[buf][tok][8 * q], xp.hi + off, true);
      cp_async16(&S.xl[buf][tok][8 * q], xp.lo + off, true);
    }
    if (is_uq(K) && tid < kBN) cp_async4(&S.xs[buf][tid], xp.sum + (int64_t)kt * T + min(t0 + tid, T - 1));
    if constexpr (is_fk(K)) {
#pragma unroll
      for (int u = 0; u < kFUnits; ++u) {
        const int e = tid + u * kThreads, row = e / 4, q = e % 4;
        const int64_t o = o0 + row, i = k0 + 8 * q;
        const bool ok = o < W.d_out && i < W.row_stride;
        const uint16_t* src = static_cast<const uint16_t*>(W.fdata) + (ok ? o * W.row_stride + i : 0);
        cp_async16(&S.a[buf][row][8 * q], src, ok);
      }
    }
  };

  Staged<K> st;
  auto load = [&](int kt) {  // quantized W: registers
    const int64_t k0 = (int64_t)kt * kBK;
    if constexpr (!is_fk(K)) {
      constexpr int64_t C = step_codes(B);
      const int64_t r = k0 / (32 * C), a = (k0 % (32 * C)) / (8 * C);
      const int j = (int)((k0 % (8 * C)) / 32);
#pragma unroll
      for (int u = 0; u < kAUnits; ++u) {
        const int e = tid + u * kThreads, row = e / 8, b = e % 8;
        const int64_t o = o0 + row;
        if (o < W.d_out)
          if (is_uq(K) && !W.codes)  // the weights as unit images alone
            st.q[u].template load<is_uq(K)>(W, o, r * 32 + 8 * a + b, j);
          else
            st.q[u].template load<false>(W, o, r * 32 + 8 * a + b, j);
      }
      if (is_uq(K) && tid < kBM && o0 + tid < W.d_out) st.sm = row_sm(W, o0 + tid, k0 / W.group);
    }
  };

  auto store = [&](int kt, int buf) {  // quantized W: registers -> decoded tile
    const int64_t k0 = (int64_t)kt * kBK;
    if constexpr (!is_fk(K)) {
      constexpr int64_t C = step_codes(B);
      const int j = (int)((k0 % (8 * C)) / 32);
#pragma unroll
      for (int u = 0; u < kAUnits; ++u) {
        const int e = tid + u * kThreads, row = e / 8, b = e % 8;
        uint2 v = make_uint2(0, 0);
        if (o0 + row < W.d_out) {
          uint32_t lo, hi;
          st.q[u].pairs(j, &lo, &hi);
          if constexpr (is_lutk(K)) {
            const float* l = W.lut + ((o0 + row) << B);
            v.x = to2<BF>(__ldg(l + (lo & 0xFFFF)), __ldg(l + (lo >> 16)));
            v.y = to2<BF>(__ldg(l + (hi & 0xFFFF)), __ldg(l + (hi >> 16)));
          } else {
            v.x = codes2<BF>(lo);
            v.y = codes2<BF>(hi);
          }
        }
        *reinterpret_cast<uint2*>(&S.a[buf][row][4 * b]) = v;
      }
      if (is_uq(K) && tid < kBM) S.sm[buf][tid] = o0 + tid < W.d_out ? __half22float2(st.sm) : make_float2(0.f, 0.f);
    }
  };

  float acc[4][4][4] = {};  // [m16 tile][n8 tile][fragment]
  float part[is_uq(K) ? 4 : 1][is_uq(K) ? 4 : 1][4] = {};
  float xg[4][2] = {};  // uniform: this group's sum of x for the thread's 8 tokens

  // Ring: at step kt the tensor cores read slot kt % 3, cp.async fills slot (kt + 2) % 3 and the
  // decoded tile kt + 1 goes to slot (kt + 1) % 3 (both last read at an earlier step).
  fetch(0, 0);
  cp_commit();
  if (nk > 1) fetch(1, 1);
  cp_commit();
  load(0);
  store(0, 0);
  if (nk > 1) load(1);
  cp_wait<1>();
  __syncthreads();
  for (int kt = 0; kt < nk; ++kt) {
    const int buf = kt % kStages;
    if (kt + 2 < nk) fetch(kt + 2, (kt + 2) % kStages);
    cp_commit();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t af[4][4], bh[4][2], bl[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) ldsm4(af[mi], &S.a[buf][wm * 64 + mi * 16 + lane % 16][kk + (lane / 16) * 8]);
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        const int n = wn * 32 + nj * 16 + lane % 8 + (lane / 16) * 8, k = kk + ((lane / 8) % 2) * 8;
        uint32_t r[4];
        ldsm4(r, &S.xh[buf][n][k]);
        bh[2 * nj][0] = r[0], bh[2 * nj][1] = r[1], bh[2 * nj + 1][0] = r[2], bh[2 * nj + 1][1] = r[3];
        ldsm4(r, &S.xl[buf][n][k]);
        bl[2 * nj][0] = r[0], bl[2 * nj][1] = r[1], bl[2 * nj + 1][0] = r[2], bl[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          float* c = is_uq(K) ? part[is_uq(K) ? mi : 0][is_uq(K) ? ni : 0] : acc[mi][ni];
          mma16816(c, af[mi], bh[ni], BF);
          mma16816(c, af[mi], bl[ni], BF);
        }
    }
    if constexpr (is_uq(K)) {
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int e = 0; e < 2; ++e) xg[ni][e] += S.xs[buf][wn * 32 + ni * 8 + 2 * (lane % 4) + e];
      const int64_t kend = (int64_t)(kt + 1) * kBK;
      if (kend % W.group == 0 || kt + 1 == nk) {  // the group ends: acc += s P + m sum(x)
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const float2 sm = S.sm[buf][wm * 64 + mi * 16 + lane / 4 + 8 * h];
#pragma unroll
            for (int ni = 0; ni < 4; ++ni)
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                float& p = part[mi][ni][2 * h + e];
                acc[mi][ni][2 * h + e] = fmaf(sm.x, p, fmaf(sm.y, xg[ni][e], acc[mi][ni][2 * h + e]));
                p = 0.0f;
              }
          }
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) xg[ni][0] = xg[ni][1] = 0.0f;
      }
    }
    if (kt + 1 < nk) {
      store(kt + 1, (kt + 1) % kStages);
      if (kt + 2 < nk) load(kt + 2);
    }
    cp_wait<1>();
    __syncthreads();
  }

#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t o = o0 + wm * 64 + mi * 16 + lane / 4 + 8 * (e / 2);
        const int t = t0 + wn * 32 + ni * 8 + 2 * (lane % 4) + e % 2;
        if (o < W.d_out && t < T) y[(int64_t)t * W.d_out + o] = acc[mi][ni][e];
      }
}

template <int K>
cudaError_t launch_kind(const DevLinear& W, float* y, const float* x, int T, void* scratch, cudaStream_t st) {
  const XPrep xp = carve(scratch, W.d_in, T);
  const int64_t units = k_tiles(W.d_in) * T;
  cudaError_t err =
      launch_plain(x_prep_kernel<is_bf(K), !is_fk(K)>, (unsigned)((units + 7) / 8), 256, 0, st, xp, x, W.d_in, T);
  if (err != cudaSuccess) return err;
  const size_t smem = sizeof(Smem);
  err = cudaFuncSetAttribute(gemm_tc_kernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  const dim3 grid((unsigned)((W.d_out + kBM - 1) / kBM), (unsigned)((T + kBN - 1) / kBN));
  return launch_plain(gemm_tc_kernel<K>, grid, kThreads, smem, st, W, y, xp, T);
}

}  // namespace

bool gemm_tc_supports(TensorType t) { return t != TensorType::F32 && is_matrix_type(t); }

size_t gemm_tc_scratch_bytes(const DevLinear& W, int T) {
  const int64_t nk = k_tiles(W.d_in);
  return (size_t)T * nk * (2 * kBK * sizeof(uint16_t) + sizeof(float));
}

cudaError_t launch_gemm_tc(const DevLinear& W, float* y, const float* x, int T, void* scratch, cudaStream_t st) {
  if (is_uniform(W.type)) {
    switch (W.bits) {
      case 2: return launch_kind<kUQ2>(W, y, x, T, scratch, st);
      case 3: return launch_kind<kUQ3>(W, y, x, T, scratch, st);
      case 4: return launch_kind<kUQ4>(W, y, x, T, scratch, st);
      case 8: return launch_kind<kUQ8>(W, y, x, T, scratch, st);
      default: return cudaErrorInvalidValue;
    }
  }
  switch (W.type) {
    case TensorType::LUT3: return launch_kind<kLUT3>(W, y, x, T, scratch, st);
    case TensorType::LUT4: return launch_kind<kLUT4>(W, y, x, T, scratch, st);
    case TensorType::F16: return launch_kind<kF16>(W, y, x, T, scratch, st);
    case TensorType::BF16: return launch_kind<kBF16>(W, y, x, T, scratch, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace gpu
}  // namespace ddrt
