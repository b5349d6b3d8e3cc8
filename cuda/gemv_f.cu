// decdec_rt CUDA backend: batch-1 GEMV for float weights (F32, F16, BF16; e.g. an fp16 lm_head).
// One warp per row (or two: gemv_f_force_rows / DDRT_GEMV_F_ROWS) at a time, 16-byte streaming
// loads, four per row in flight per lane, x read through L1 (it is small and every warp reads
// it) once per row group, fp32 accumulation.
#include <cuda_bf16.h>


#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

namespace {

template <int TY>
constexpr int elems_per_vec() { return TY == (int)TensorType::F32 ? 4 : 8; }

// The E x values of one 16-byte weight vector starting at element i0 (n valid elements).
template <int TY>
__device__ __forceinline__ void load_xe(const float* x, int64_t i0, int64_t n, float (&xe)[elems_per_vec<TY>()]) {
  constexpr int E = elems_per_vec<TY>();
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
}

// w . xe over the E elements of one 16-byte vector
template <int TY>
__device__ __forceinline__ float vec_dot(uint4 w, const float (&xe)[elems_per_vec<TY>()]) {
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

// R rows per warp at a time: each x vector is read once (through L1) for R weight vectors. R = 1
// read 32 bytes of x per 16 bytes of fp16 weights, which on the H200 (4.5 TB/s) may be what holds
// the fp16 GEMV at ~68 % of HBM bandwidth (93 % on the H100); R = 2 halves that.
// kGemvBlocksPerSm blocks per SM (the grid's cap below) must fit: R = 2 needed 68 registers
// unbounded (7 blocks of 128 threads per SM), which left an eighth of the grid to a second wave.
//
// Which warp takes which row group (R rows): each warp's first is its index in the grid. Then
//  - queue (Q; gemv_f_force_queue / env DDRT_GEMV_F_QUEUE=0 off): the next group is the grid's
//    warp count plus a ticket from cnt[0] (one atomicAdd per group, issued as the group's loads
//    start and read after its math, so its latency hides under the streaming). The step timeline
//    showed why: in the decode step the lm head's median block ended 322 us after its wait and
//    its last 447 us (H100, llama3-8b), so SMs stream at unequal rates and a fixed split waits for
//    the slowest; with the queue a fast SM takes more groups: 344 us, llama3-8b 3-bit decode
//    +4.1 % (two rounds). By default only where a group is at least kGemvFQueueBytes: smollm2-135m's
//    lm head (2 rows of 576 fp16, 2.3 KB a group, too little to hide a ticket) measured 1.4 %
//    slower with it.
//  - static (the twin): every grid-stride group, as before.
// Either way a row's sum runs in the same order, whichever warp takes it: the outputs are equal
// bit for bit. The queue's reset: a warp stops once its ticket is past the last group (every
// ticket it took was returned to it, so its atomics are done); then its block counts itself in
// on cnt[1] (after a __syncthreads and a fence) and the last block zeroes both counters. The
// next launch that uses them takes its first ticket after its dependency wait, so after this
// grid has completed (every kernel between passes its own wait before completing).
constexpr int kGemvBlocksPerSm = 8;
constexpr int64_t kGemvFQueueBytes = 8192;  // the queue by default from this many bytes a group
template <int TY, int R, bool Q>
__global__ void __launch_bounds__(kGemvThreads, kGemvBlocksPerSm) gemv_f_kernel(DevLinear W, float* y, const float* x,
                                                                                unsigned* cnt, BlockStamps stamps) {
  stamps.at(0);
  grid_dep_wait();
  pdl_trigger();
  stamps.at(1);
  constexpr int E = elems_per_vec<TY>(), U = 4;
  const int lane = threadIdx.x & 31;
  const int64_t nvec = (W.d_in + E - 1) / E;
  const int64_t row_u4 = W.row_stride * (TY == (int)TensorType::F32 ? 4 : 2) / 16;
  const int64_t nwt = (int64_t)gridDim.x * kGemvWarps, n_groups = (W.d_out + R - 1) / R;
  for (int64_t grp = (int64_t)blockIdx.x * kGemvWarps + threadIdx.x / 32; grp < n_groups;) {
    unsigned ticket = 0;
    if (Q && lane == 0) ticket = atomicAdd(cnt, 1u);
    const int64_t row0 = grp * R;
    const uint4* rp[R];
#pragma unroll
    for (int r = 0; r < R; ++r)  // rows past d_out read the last row again (not stored)
      rp[r] = static_cast<const uint4*>(W.fdata) + (row0 + r < W.d_out ? row0 + r : W.d_out - 1) * row_u4;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0;
    for (int64_t v0 = lane; v0 < nvec; v0 += 32 * U) {
      uint4 w[R][U];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (v0 + 32 * u < nvec) w[r][u] = ld_stream(rp[r] + v0 + 32 * u);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t v = v0 + 32 * u;
        if (v < nvec) {
          float xe[E];
          load_xe<TY>(x, v * E, W.d_in - v * E, xe);
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r] += vec_dot<TY>(w[r][u], xe);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
      if (lane == 0 && row0 + r < W.d_out) y[row0 + r] = acc[r];
    }
    grp = Q ? nwt + (int64_t)__shfl_sync(0xffffffffu, ticket, 0) : grp + nwt;
  }
  if (Q || stamps.p) __syncthreads();  // (uniform) every warp of the block is done
  if (Q && threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(cnt + 1, 1u) == gridDim.x - 1) {  // the last block: no ticket is outstanding
      cnt[0] = 0;
      cnt[1] = 0;
    }
  }
  stamps.at(4);  // the end stamp once the block's rows are written
}

int g_rows = 0;   // gemv_f_force_rows; 0: the default
int g_queue = -1;  // gemv_f_force_queue; -1: the default

template <int TY, int R>
cudaError_t launch_rq(bool queue, int blocks, const DevLinear& W, float* y, const float* x, unsigned* cnt,
                      BlockStamps stamps, cudaStream_t st) {
  return queue ? launch_pdl(gemv_f_kernel<TY, R, true>, blocks, kGemvThreads, 0, st, W, y, x, cnt, stamps)
               : launch_pdl(gemv_f_kernel<TY, R, false>, blocks, kGemvThreads, 0, st, W, y, x, cnt, stamps);
}

template <int TY>
cudaError_t launch_rows(int R, bool queue, const DevLinear& W, float* y, const float* x, int n_sm, unsigned* cnt,
                        cudaStream_t st) {
  const int64_t want = (W.d_out + (int64_t)kGemvWarps * R - 1) / ((int64_t)kGemvWarps * R);
  const int64_t cap = (int64_t)n_sm * kGemvBlocksPerSm;
  const int blocks = (int)(want < cap ? want : cap);
  const BlockStamps stamps{stamp_region(blocks)};
  return R == 2 ? launch_rq<TY, 2>(queue, blocks, W, y, x, cnt, stamps, st)
                : launch_rq<TY, 1>(queue, blocks, W, y, x, cnt, stamps, st);
}

}  // namespace

void gemv_f_force_rows(int rows_per_warp) { g_rows = rows_per_warp == 2 ? 2 : rows_per_warp == 1 ? 1 : 0; }
void gemv_f_force_queue(int on) { g_queue = on < 0 ? -1 : on != 0; }

cudaError_t launch_gemv_f(const DevLinear& W, float* y, const float* x, int n_sm, unsigned* cnt, cudaStream_t st) {
  // default 2 rows per warp (H100 lab: the lm head 377 -> 345 us, 90.8 -> 99.2 % of HBM bandwidth,
  // 3-6 % on the other fp16 shapes); env DDRT_GEMV_F_ROWS=1: one row per warp
  static const int env_rows = env_int("DDRT_GEMV_F_ROWS", 2) == 1 ? 1 : 2;
  const int R = g_rows ? g_rows : env_rows;
  static const int env_queue = env_int("DDRT_GEMV_F_QUEUE", -1);  // -1: by the group's bytes
  const int mode = g_queue >= 0 ? g_queue : env_queue;
  const int64_t group_bytes = (int64_t)R * W.d_in * (W.type == TensorType::F32 ? 4 : 2);
  const bool queue = cnt != nullptr && (mode < 0 ? group_bytes >= kGemvFQueueBytes : mode != 0);
  switch (W.type) {
    case TensorType::F32: return launch_rows<(int)TensorType::F32>(R, queue, W, y, x, n_sm, cnt, st);
    case TensorType::F16: return launch_rows<(int)TensorType::F16>(R, queue, W, y, x, n_sm, cnt, st);
    case TensorType::BF16: return launch_rows<(int)TensorType::BF16>(R, queue, W, y, x, n_sm, cnt, st);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace gpu
}  // namespace ddrt
