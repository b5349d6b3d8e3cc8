// decdec_rt CUDA backend: DecDEC compensation in separate kernels, y[t] += R[:, S_t] x[t][S_t]: prefill
// (T > 1), the twin of the in-launch compensation (gemv_tc.cuh) and its side-stream ablation.
//
// Three kernels, stream-ordered after the base GEMV (so they are race-free with it: each starts
// only when the previous kernel on the stream has finished writing y):
//  1. select   grid (chunk, t), 1024 threads: the channels of one 1024-wide chunk, chosen exactly
//              as select_channels (decdec.h/.cpp): sort (invalid, key, index) ascending with a
//              bitonic sort in shared memory, keep the first k_c valid ones, write them ascending
//              to sel[t][c * k_full ...] (-1 in unused slots). Keys: exact -|x| (as bits),
//              approx bucket, static rank_pos, random random_key(); NaN is never a candidate.
//  2. gather   grid (blocks of V 32-output vectors, t), 256 threads = V vectors x 256/V row splits
//              (V = 8 for few tokens, 64 for many): thread (split, v) walks the selected slots
//              split, split + 256/V, ...: one 16-byte load of residual row j (zero-copy from mapped
//              host memory, or device memory; the V threads of a split read 16 V contiguous bytes
//              of the row), 32 fp32 FMAs with x[j], four rows in flight. The splits are summed in shared memory in a fixed order (deterministic),
//              scaled by rscale and either added to y (one stream: y[t][o] is owned by one thread
//              and the base GEMV finished before, by stream order) or written to partial[t][o].
//  3. reduce   y[t][o] += partial[t][o]: only with the side stream, after the join.
// approx mode selects without sorting (approx_select_kernel): a 32-bin histogram of the bucket
// of each channel, then two block-wide prefix counts (the boundary bucket's members in index
// order, then the output positions): a handful of barriers instead of the sort's 55.
// launch_comp_select_gather and launch_comp_reduce split the work so the backend can run
// select + gather on a side stream beside the base GEMV and the reduce (then the only kernel that
// touches y) after both, on the main stream. No scratch grows with the number of splits: the
// backend needs sel [T][kmax] and, for the side stream only, partial [T][d_out].
#include "kernels.cuh"

namespace ddrt {
namespace gpu {

namespace {

constexpr int kSelThreads = kChunk;  // one thread per channel of a chunk
constexpr int kGatherThreads = 256;
constexpr int kUnroll = 4;

struct SortKey {
  uint64_t key;
  int32_t tag;  // invalid << 16 | channel in chunk
};

__device__ __forceinline__ bool before(const SortKey& a, const SortKey& b) {
  const int ia = a.tag >> 16, ib = b.tag >> 16;
  if (ia != ib) return ia < ib;
  if (a.key != b.key) return a.key < b.key;
  return a.tag < b.tag;
}

__global__ void __launch_bounds__(kSelThreads)
select_kernel(CompParams p, const int32_t* rank_pos, const float* x,
              int64_t d_in, int32_t* sel) {
  __shared__ SortKey keys[kSelThreads];
  __shared__ int flag[kSelThreads];
  __shared__ int warp_count[kSelThreads / 32];
  const int i = threadIdx.x, lane = i & 31, warp = i >> 5;
  const int t = blockIdx.y;
  const int64_t c0 = (int64_t)blockIdx.x * kChunk;
  const int len = (int)(d_in - c0 < kChunk ? d_in - c0 : kChunk);
  const int kc = chunk_k(p.call.k_chunk, len);
  const float* xt = x + (int64_t)t * d_in;

  bool valid = i < len && !isnan(xt[c0 + i]);
  uint64_t key = ~0ull;
  if (valid) {
    const float xv = xt[c0 + i];
    switch (p.call.mode) {
      case DecdecMode::Exact: key = 0xffffffffull - __float_as_uint(fabsf(xv)); break;
      case DecdecMode::Approx: {
        const int b = approx_bucket(p.floors, fabsf(xv));
        valid = b < kBuckets;
        key = (uint64_t)b;
        break;
      }
      case DecdecMode::Static: key = (uint64_t)(uint32_t)rank_pos[c0 + i]; break;
      case DecdecMode::Random:
        key = random_key(p.call.seed, p.call.linear_id, (p.pos_dev ? *p.pos_dev : p.call.pos0) + t, c0 + i);
        break;
      default: valid = false;
    }
  }
  keys[i] = SortKey{key, (valid ? 0 : 1 << 16) | i};
  flag[i] = 0;
  __syncthreads();
  for (int k = 2; k <= kSelThreads; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      const int ixj = i ^ j;
      if (ixj > i) {
        const SortKey a = keys[i], b = keys[ixj];
        const bool up = (i & k) == 0;
        if (up ? before(b, a) : before(a, b)) {
          keys[i] = b;
          keys[ixj] = a;
        }
      }
      __syncthreads();
    }
  }
  if (i < kc && (keys[i].tag >> 16) == 0) flag[keys[i].tag & 0xffff] = 1;
  __syncthreads();
  // ascending output: position = number of flagged channels below this one
  const unsigned ball = __ballot_sync(0xffffffffu, flag[i] != 0);
  if (lane == 0) warp_count[warp] = __popc(ball);
  __syncthreads();
  int before_me = __popc(ball & ((1u << lane) - 1));
  int n_sel = 0;
  for (int w = 0; w < kSelThreads / 32; ++w) {
    if (w < warp) before_me += warp_count[w];
    n_sel += warp_count[w];
  }
  int32_t* out = sel + (int64_t)t * p.kmax + (int64_t)blockIdx.x * p.k_full;
  if (flag[i]) out[before_me] = (int32_t)(c0 + i);
  if (i >= n_sel && i < kc) out[i] = -1;
}

// Exclusive prefix count of `flag` over the block's threads (kSelThreads), and the total.
__device__ __forceinline__ int block_prefix(bool flag, int* warp_count, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned ball = __ballot_sync(0xffffffffu, flag);
  __syncthreads();  // warp_count may still be read by a previous call
  if (lane == 0) warp_count[warp] = __popc(ball);
  __syncthreads();
  int before = __popc(ball & ((1u << lane) - 1)), n = 0;
  for (int w = 0; w < kSelThreads / 32; ++w) {
    if (w < warp) before += warp_count[w];
    n += warp_count[w];
  }
  *total = n;
  return before;
}

__global__ void __launch_bounds__(kSelThreads)
approx_select_kernel(CompParams p, const float* x, int64_t d_in, int32_t* sel) {
  __shared__ int count[kBuckets + 1];
  __shared__ int warp_count[kSelThreads / 32];
  const int i = threadIdx.x, t = blockIdx.y;
  const int64_t c0 = (int64_t)blockIdx.x * kChunk;
  const int len = (int)(d_in - c0 < kChunk ? d_in - c0 : kChunk);
  const int kc = chunk_k(p.call.k_chunk, len);
  if (i <= kBuckets) count[i] = 0;
  __syncthreads();
  const int b = i < len ? approx_bucket(p.floors, fabsf(x[(int64_t)t * d_in + c0 + i])) : kBuckets;
  if (b < kBuckets) atomicAdd(&count[b], 1);
  __syncthreads();
  // buckets 0..full-1 fit whole; `rest` more come from bucket `full` in ascending index order
  int full = 0, taken = 0;
  while (full < kBuckets && taken + count[full] <= kc) taken += count[full++];
  const int rest = full < kBuckets ? kc - taken : 0;
  int n_boundary;
  const int rank = block_prefix(b == full && full < kBuckets, warp_count, &n_boundary);
  const bool chosen = b < full || (b == full && full < kBuckets && rank < rest);
  int n_sel;
  const int at = block_prefix(chosen, warp_count, &n_sel);
  int32_t* out = sel + (int64_t)t * p.kmax + (int64_t)blockIdx.x * p.k_full;
  if (chosen) out[at] = (int32_t)(c0 + i);
  if (i >= n_sel && i < kc) out[i] = -1;
}

// VECS 32-output vectors per block, kGatherThreads / VECS row splits: 8 for few tokens (more
// blocks), 64 for many (1 KB contiguous per row and block: fewer, wider PCIe reads).
template <int VECS>
__global__ void __launch_bounds__(kGatherThreads)
gather_kernel(DevResidual R, int64_t d_out, int64_t d_in, int64_t kmax, const int32_t* sel, const float* x,
              float* out, bool add) {
  constexpr int kGatherVecs = VECS, kGatherSplits = kGatherThreads / VECS;
  // red[(split * VECS + v) * 33 + e]: the 33 keeps a warp's stores and loads on 32 banks
  __shared__ float red[kGatherThreads * 33];
  const int tid = threadIdx.x, v = tid % kGatherVecs, split = tid / kGatherVecs, t = blockIdx.y;
  const int64_t nvo = (d_out + 31) / 32, vo = (int64_t)blockIdx.x * kGatherVecs + v;
  const int32_t* st = sel + (int64_t)t * kmax;
  const float* xt = x + (int64_t)t * d_in;
  float acc[32];
#pragma unroll
  for (int e = 0; e < 32; ++e) acc[e] = 0;
  for (int64_t s0 = split; vo < nvo && s0 < kmax; s0 += (int64_t)kUnroll * kGatherSplits) {
    int32_t j[kUnroll];
    uint4 r[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t s = s0 + (int64_t)u * kGatherSplits;
      j[u] = s < kmax ? st[s] : -1;
      if (j[u] >= 0) r[u] = *reinterpret_cast<const uint4*>(R.rows + (int64_t)j[u] * R.row_pitch + 16 * vo);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (j[u] < 0) continue;
      const float xj = xt[j[u]];
      const uint32_t w[4] = {r[u].x, r[u].y, r[u].z, r[u].w};
#pragma unroll
      for (int e = 0; e < 32; ++e) {
        // output 32 vo + e: byte e / 2 of the vector, nibble e % 2; nibble - 8 exactly via 2^23
        const uint32_t nib = (w[e / 8] >> (4 * (e % 8))) & 15u;
        acc[e] = fmaf(__uint_as_float(nib | 0x4B000000u) - 8388616.0f, xj, acc[e]);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < 32; ++e) red[tid * 33 + e] = acc[e];
  __syncthreads();
  // thread -> outputs (vector i / 32, element i % 32), i = tid, tid + 256, ...: the splits summed
  // in ascending order
  for (int i = tid; i < kGatherVecs * 32; i += kGatherThreads) {
    const int ov = i / 32, oe = i % 32;
    const int64_t o = 32 * ((int64_t)blockIdx.x * kGatherVecs + ov) + oe;
    if (o >= d_out) break;
    float sum = 0;
    for (int k = 0; k < kGatherSplits; ++k) sum += red[(k * kGatherVecs + ov) * 33 + oe];
    const float val = R.rscale[o] * sum;
    if (add)
      out[(int64_t)t * d_out + o] += val;
    else
      out[(int64_t)t * d_out + o] = val;
  }
}

__global__ void reduce_kernel(int64_t d_out, const float* partial, float* y) {
  const int t = blockIdx.y;
  for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < d_out; o += (int64_t)gridDim.x * blockDim.x)
    y[(int64_t)t * d_out + o] += partial[(int64_t)t * d_out + o];
}

}  // namespace

namespace {
cudaError_t select_rows(const DevLinear& W, const DevResidual& R, const CompParams& p, const float* x, int T,
                        int32_t* sel, cudaStream_t st) {
  const int64_t n_chunks = (W.d_in + kChunk - 1) / kChunk;
  if (p.call.mode == DecdecMode::Approx)
    return launch_plain(approx_select_kernel, dim3((unsigned)n_chunks, T), kSelThreads, 0, st, p, x, W.d_in, sel);
  return launch_plain(select_kernel, dim3((unsigned)n_chunks, T), kSelThreads, 0, st, p, R.rank_pos, x, W.d_in, sel);
}
}  // namespace

cudaError_t launch_comp_select(const DevLinear& W, const DevResidual& R, const CompParams& p, const float* x,
                               int32_t* sel, cudaStream_t st) {
  if (p.kmax <= 0) return cudaSuccess;
  return select_rows(W, R, p, x, 1, sel, st);
}

cudaError_t launch_comp_select_gather(const DevLinear& W, const DevResidual& R, const CompParams& p,
                                      const float* x, int T, int32_t* sel, float* out, bool add, cudaStream_t st) {
  if (p.kmax <= 0 || T <= 0) return cudaSuccess;
  cudaError_t e = select_rows(W, R, p, x, T, sel, st);
  if (e != cudaSuccess) return e;
  const int64_t nv = (W.d_out + 31) / 32;
  if (T >= 16)
    return launch_plain(gather_kernel<64>, dim3((unsigned)((nv + 63) / 64), T), kGatherThreads, 0, st, R, W.d_out,
                        W.d_in, p.kmax, sel, x, out, add);
  return launch_plain(gather_kernel<8>, dim3((unsigned)((nv + 7) / 8), T), kGatherThreads, 0, st, R, W.d_out, W.d_in,
                      p.kmax, sel, x, out, add);
}

cudaError_t launch_comp_reduce(const DevLinear& W, const CompParams& p, float* y, int T, const float* partial,
                               cudaStream_t st) {
  if (p.kmax <= 0 || T <= 0) return cudaSuccess;
  const unsigned rb = (unsigned)((W.d_out + 255) / 256 < 1024 ? (W.d_out + 255) / 256 : 1024);
  return launch_plain(reduce_kernel, dim3(rb, T), 256, 0, st, W.d_out, partial, y);
}

}  // namespace gpu
}  // namespace ddrt
