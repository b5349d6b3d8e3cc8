// decdec_rt CUDA backend: what the two int8 prefill matmul kernels share (gemm_i8.cu: the block
// tile kernel, which decodes a shared A tile; gemm_i8w.cu: the warp-owned kernel, whose warps
// decode their own rows' A fragments from the unit images).
#pragma once

#include "gemv_tc.cuh"
#include "kernels.cuh"

namespace ddrt {
namespace gpu {

// The matrices of one launch (a q/k/v or gate/up group, or one matrix): the same input x, shape
// d_in, type; member m owns row tiles of 128 rows [tile0[m], tile0[m + 1]) of the grid.
struct I8Members {
  const uint4* codes[kTcMaxMembers];
  // the members' unit images (DevLinear::units, 3/4 bits), read instead of codes and scales where
  // they exist (all members or none), and their units per 16-row tile
  const uint4* units[kTcMaxMembers];
  int64_t n_units;
  const __half2* sm[kTcMaxMembers];
  float* y[kTcMaxMembers];
  int64_t d_out[kTcMaxMembers];
  int tile0[kTcMaxMembers + 1];
  int n;
};

// Quad JJ (0..7, a constant here: the quad's position in its slice / nibble / field cycle) of a
// lane step as 4 unsigned bytes (byte i = code 4 quad + i), from the raw words of its period (w):
// quad_i8 (packed.cuh) brought down by its class shift.
template <int B, int JJ>
__device__ __forceinline__ uint32_t quad_u8(const uint32_t* w) {
  if (B == 3) return quad_i8<3>(w, JJ) >> class_shift<3>(quad_class<3>(JJ));
  if (B == 4) return (w[JJ % 4] >> (4 * (JJ / 4))) & 0x0F0F0F0Fu;  // word j % 4, high nibbles for j % 8 >= 4
  // bits 2: quad j in word 2 (j / 8) + j % 2 (the period's pair: w[j % 2]), field 2 ((j % 8) / 2)
  return (w[JJ % 2] >> (2 * (JJ / 2))) & 0x03030303u;
}

// One warp's max |x| and sum over the group of inputs i0 .. i0 + group - 1 of token row xt (zeros
// past d_in, or everywhere when !live): the x prep of both kernels (the same order of operations).
__device__ __forceinline__ void group_max_sum(const float* xt, int64_t i0, int group, int64_t d_in, bool live,
                                              int lane, float& mx, float& sum) {
  mx = 0.0f, sum = 0.0f;
  for (int c = lane; c < group; c += 32) {
    const float v = live && i0 + c < d_in ? xt[i0 + c] : 0.0f;
    mx = fmaxf(mx, fabsf(v));
    sum += v;
  }
#pragma unroll
  for (int m = 16; m > 0; m /= 2) {
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, m));
    sum += __shfl_xor_sync(0xffffffffu, sum, m);
  }
}

// d0, d1 (+)= a b0, a b1 for the two n8 tiles of one ldmatrix x4 (r: b0 = r[0], r[1]; b1 = r[2],
// r[3]), from zero when the step starts a group (fresh)
__device__ __forceinline__ void mma_pair(int (&d0)[4], int (&d1)[4], const uint32_t (&a)[4], const uint32_t* r,
                                         bool fresh) {
  if (fresh) {
    mma_i8_z(d0, a[0], a[1], a[2], a[3], r[0], r[1]);
    mma_i8_z(d1, a[0], a[1], a[2], a[3], r[2], r[3]);
  } else {
    mma_i8<false>(d0, a[0], a[1], a[2], a[3], r[0], r[1]);
    mma_i8<false>(d1, a[0], a[1], a[2], a[3], r[2], r[3]);
  }
}

// The warp-owned kernel (gemm_i8w.cu), for 3/4-bit members with unit images on sm_90+ (bulk copies):
// whether it takes W, its scratch for T tokens, and its launch (L limbs of x: 2 or 3).
bool gemm_i8w_takes(const DevLinear& W);
size_t gemm_i8w_scratch_bytes(const DevLinear& W, int T);
cudaError_t launch_gemm_i8w(const DevLinear& W, const I8Members& G, const float* x, int T, void* scratch,
                            cudaStream_t st, int limbs);

}  // namespace gpu
}  // namespace ddrt
