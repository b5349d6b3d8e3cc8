// The queue lab: how long does one dependent L2-hit load (the GEMV's x) take while weight copies
// are in flight, and whose copies delay it: the SM's own, or every SM's?
//
// The fused GEMV stages x right after its dependency wait while every warp of the GPU has its
// ring of weight copies in flight; the timeline (BENCHMARKS 2026-12-05, seventh session) shows
// x's staging taking 3-5 us then, ~1 us on a small matrix, and shorter when fewer copies are
// ahead of it. This lab isolates that: a grid shaped like the GEMV's (2 blocks of 8 warps per
// SM) where each warp puts `per_warp` bytes of copies in flight (cp.async 16 B per lane, as the
// ring; or one cp.async.bulk per warp, the copy engine's path) and then times one 16-byte load of
// a small buffer that a kernel just wrote (in L2, as x is), with %globaltimer, issue to use.
//   idle      no copies: the load's latency alone
//   own       the warp's copies, then the load (the GEMV's order for the first slot)
//   xfirst    the load, then the copies, then its use (DDRT_TC_EARLY's order)
//   ownlate   the copies, a spin of delay ns, then the load
//   others    blocks on odd SMs copy; blocks on even SMs copy nothing and load after delay ns:
//             if their latency is close to idle, the queue that delays x is the SM's own
//   bulk      one cp.async.bulk per warp instead of the 16-byte copies, then the load: if close
//             to idle, weights by TMA would leave x's load path free (docs/gemv.md, next)
//   prefetch  one cp.async.bulk.prefetch.L2 per warp (nothing lands in the SM), then the load:
//             what DDRT_TC_PRE_L2 (taken out: -5.5 % decode) put before the dependency wait
//   xbulk     the warp's 16-byte copies as `own`, then x's 512 bytes of the warp by one
//             cp.async.bulk into shared memory (an mbarrier's wait, then the use): if close to
//             idle while `own` is not, x staged by the copy engine would skip the queue of weight
//             copies (the other way round from `bulk`: the GEMV's weights stay as they are)
//   zcidle    no copies; the timed load reads pinned, mapped host memory (a fresh 4 KB page per
//             warp and launch, so never an L2 hit): the zero-copy round trip alone
//   zcbulk    every warp's bulk copies in flight (the base GEMV's), then the zero-copy load: what
//             a DecDEC compensation block's gather waits for on an SM it shares with a base block
//   zcothers  blocks on odd SMs bulk-copy, blocks on even SMs load zero-copy after delay ns: the
//             compensation on SMs of its own while the others stream
//   (every warp loading at once puts ~1 MB of zero-copy reads on the link: the zc modes above
//   measure its throughput under that burst, ~23 us on the H100, not one load's round trip)
//   zclone    one warp of the grid loads zero-copy, nothing else runs: the lone round trip
//   zcone     warp 0 of every even block (about one warp per SM) loads zero-copy, no copies: a
//             DecDEC gather's few rows per block, without the base
//   zconebulk as zcone, while every warp has its bulk copies in flight: the gather beside the base
// Build and run on the GPU machine:
//   nvcc -O3 -std=c++17 -arch=sm_90 tools/lab/queue_lab.cu -o /tmp/queue_lab && /tmp/queue_lab
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "lab_check.h"

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32, kXVecs = 1024;  // x: 16 KB
enum Mode : int { kIdle, kOwn, kXFirst, kOwnLate, kOthers, kBulk, kPrefetch, kXBulk, kZcIdle, kZcBulk, kZcOthers,
                  kZcLone, kZcOne, kZcOneBulk };
const char* const kModeName[] = {"idle", "own",   "xfirst", "ownlate", "others",  "bulk",
                                  "prefetch", "xbulk", "zcidle", "zcbulk", "zcothers", "zclone", "zcone", "zconebulk"};
__host__ __device__ inline bool is_zc(int m) { return m >= kZcIdle; }
// the modes without copies (zclone and zcone: only some warps measure)
__host__ __device__ inline bool no_copies(int m) { return m == kIdle || m == kZcIdle || m == kZcLone || m == kZcOne; }
// the modes whose weight copies are one cp.async.bulk per warp
__host__ __device__ inline bool is_bulk(int m) { return m == kBulk || m == kZcBulk || m == kZcOthers || m == kZcOneBulk; }
constexpr int64_t kZcPageVecs = 4096 / 16;  // zero-copy: one 4 KB page per warp and launch

struct Cfg {
  int mode;
  int per_warp;  // bytes of copies in flight per warp (a multiple of 512)
  int delay_ns;  // ownlate / others: spin before the load
};

__device__ __forceinline__ unsigned sm_id() {
  unsigned s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  return s;
}
__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
// the time once v is ready (the asm takes v as an input, so it issues after v's producer)
__device__ __forceinline__ unsigned long long now_after(float v) {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t) : "f"(v));
  return t;
}
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cp16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_wait_all() { asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory"); }
__device__ __forceinline__ float4 load_l2(const float4* p) {  // ld.global.cg: L2, as the GEMV's x
  float4 v;
  asm volatile("ld.global.cg.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void mbar_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(dst)),
               "l"(src), "r"(bytes), "r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ void mbar_wait0(uint64_t* bar) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT_%=:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], 0;\n@!p bra WAIT_%=;\n}\n" ::"r"(smem_addr(bar))
      : "memory");
}

__global__ void write_x(float4* x, int rep) {  // the producer: x freshly written, in L2
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < kXVecs) x[i] = make_float4((float)(i + rep), 1.0f, 2.0f, 3.0f);
}

// lat[warp of the grid]: ns from the load's issue to its use, 0 where the warp did not measure
__global__ void __launch_bounds__(kThreads, 2)
    queue_kernel(const uint4* W, int64_t w_vecs, int64_t base, const float4* x, const float4* hx, int64_t hx_vecs,
                 int64_t hbase, Cfg c, unsigned long long* lat, float* sink) {
  extern __shared__ uint4 ring_all[];
  __shared__ uint64_t bar[kWarps];
  __shared__ float4 xs[kWarps][32];  // xbulk: the warp's x
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t gw = (int64_t)blockIdx.x * kWarps + warp;
  const unsigned sm = sm_id();
  const bool halves = c.mode == kOthers || c.mode == kZcOthers;  // odd SMs copy, even SMs measure
  const bool copies = !no_copies(c.mode) && !(halves && sm % 2 == 0);
  const bool few = c.mode == kZcOne || c.mode == kZcOneBulk;  // warp 0 of the even blocks
  const bool measures = c.mode == kZcLone ? gw == 0 : few ? warp == 0 && blockIdx.x % 2 == 0 : !halves || sm % 2 == 0;
  const int vecs = c.per_warp / 16;
  uint4* ring = ring_all + (int64_t)warp * vecs;
  const uint4* src = W + (base + gw * vecs) % (w_vecs - vecs);  // a fresh stretch per launch
  if ((is_bulk(c.mode) || c.mode == kXBulk) && lane == 0) mbar_init(&bar[warp]);
  __syncthreads();
  const float4* xp = is_zc(c.mode) ? hx + ((hbase + gw) * kZcPageVecs) % hx_vecs + lane
                                   : x + (blockIdx.x * kThreads + threadIdx.x) % kXVecs;
  auto issue = [&] {
    if (is_bulk(c.mode)) {
      if (lane == 0) bulk_copy(ring, src, (uint32_t)vecs * 16, &bar[warp]);
    } else if (c.mode == kPrefetch) {
      if (lane == 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"((uint32_t)vecs * 16) : "memory");
    } else {
      for (int v = lane; v < vecs; v += 32) cp16(ring + v, src + v);
    }
  };
  auto spin = [&] {
    const unsigned long long t = now_ns();
    while (now_ns() - t < (unsigned long long)c.delay_ns) {
    }
  };
  float s = 0.0f;
  unsigned long long t0 = 0, t1 = 0;
  if (c.mode == kXFirst) {
    t0 = now_ns();
    const float4 v = load_l2(xp);
    issue();
    s = (v.x + v.y) + (v.z + v.w);
    t1 = now_after(s);
  } else {
    if (copies) issue();
    if (c.mode == kOwnLate || halves) spin();
    if (measures && c.mode == kXBulk) {  // the warp's 32 x vectors (512 bytes, one bulk copy)
      const float4* xw = x + (((int64_t)blockIdx.x * kThreads + warp * 32) % kXVecs);
      t0 = now_ns();
      if (lane == 0) bulk_copy(xs[warp], xw, 32 * sizeof(float4), &bar[warp]);
      mbar_wait0(&bar[warp]);  // every lane waits on the phase
      const float4 v = xs[warp][lane];
      s = (v.x + v.y) + (v.z + v.w);
      t1 = now_after(s);
    } else if (measures) {
      t0 = now_ns();
      const float4 v = load_l2(xp);
      s = (v.x + v.y) + (v.z + v.w);
      t1 = now_after(s);
    }
  }
  if (is_bulk(c.mode)) {
    if (copies && lane == 0) mbar_wait0(&bar[warp]);
    __syncwarp();
  } else if (copies && c.mode != kPrefetch) {
    cp_wait_all();
  }
  if (lane == 0) {
    lat[gw] = measures ? t1 - t0 : 0;
    sink[gw] = s + (float)ring[lane % (vecs > 0 ? vecs : 1)].x;
  }
}

}  // namespace

int main() {
  int n_sm = 0;
  CK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const int grid = 2 * n_sm, n_warps = grid * kWarps;
  const int64_t w_bytes = 1ll << 30, w_vecs = w_bytes / 16;  // 1 GB: every launch streams lines not in L2
  uint4* W = nullptr;
  float4* x = nullptr;
  unsigned long long* lat = nullptr;
  float* sink = nullptr;
  CK(cudaMalloc(&W, w_bytes));
  CK(cudaMemset(W, 1, w_bytes));
  CK(cudaMalloc(&x, kXVecs * sizeof(float4)));
  CK(cudaMalloc(&lat, n_warps * sizeof(unsigned long long)));
  CK(cudaMalloc(&sink, n_warps * sizeof(float)));
  // zero-copy: 256 MB of pinned, mapped host memory (the residual rows' kind of memory)
  const int64_t hx_bytes = 256ll << 20, hx_vecs = hx_bytes / 16;
  void* hx_host = nullptr;
  float4* hx = nullptr;
  CK(cudaHostAlloc(&hx_host, hx_bytes, cudaHostAllocMapped));
  std::memset(hx_host, 1, hx_bytes);
  CK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&hx), hx_host, 0));
  const int max_per_warp = 13312;  // 2 blocks of 8 warps x 13 KB: the 3-bit ring's 213 KB per SM
  CK(cudaFuncSetAttribute(queue_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kWarps * max_per_warp));
  std::printf("%s, %d SMs, grid %d x %d threads; x: one 16-byte ld.global.cg per thread of a 16 KB buffer written just before\n",
              prop.name, n_sm, grid, kThreads);
  std::printf("%-9s %9s %9s %12s | x latency us over measuring warps: median   p90    max\n", "mode", "per warp", "delay ns",
              "in flight MB");
  const std::vector<Cfg> cfgs = {{kIdle, 512, 0},       {kOwn, 3072, 0},        {kOwn, 6656, 0},     {kOwn, 13312, 0},
                                 {kXFirst, 13312, 0},   {kOwnLate, 13312, 1000}, {kOwnLate, 13312, 3000},
                                 {kOthers, 13312, 500}, {kOthers, 13312, 2000}, {kBulk, 6656, 0},    {kBulk, 13312, 0},
                                 {kPrefetch, 13312, 0}, {kXBulk, 6656, 0},       {kXBulk, 13312, 0},
                                 {kZcIdle, 512, 0},     {kZcBulk, 6656, 0},      {kZcBulk, 13312, 0},
                                 {kZcOthers, 13312, 500}, {kZcOthers, 13312, 2000},
                                 {kZcLone, 512, 0},     {kZcOne, 512, 0},        {kZcOneBulk, 6656, 0},
                                 {kZcOneBulk, 13312, 0}};
  std::vector<unsigned long long> h(n_warps);
  int64_t base = 0, hbase = 0;
  for (const Cfg& c : cfgs) {
    std::vector<double> us;
    for (int rep = 0; rep < 21; ++rep) {
      write_x<<<(kXVecs + 255) / 256, 256>>>(x, rep);
      queue_kernel<<<grid, kThreads, kWarps * c.per_warp>>>(W, w_vecs, base, x, hx, hx_vecs, hbase, c, lat, sink);
      CK(cudaGetLastError());
      CK(cudaDeviceSynchronize());
      base += (int64_t)n_warps * c.per_warp / 16;
      hbase += n_warps;  // the next launch's zero-copy loads: pages not read before (until the buffer wraps)
      if (rep == 0) continue;  // warm-up
      CK(cudaMemcpy(h.data(), lat, n_warps * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
      for (unsigned long long v : h)
        if (v > 0) us.push_back(v * 1e-3);
    }
    std::sort(us.begin(), us.end());
    const bool none = no_copies(c.mode);
    const bool halves = c.mode == kOthers || c.mode == kZcOthers;
    const double in_flight = none ? 0.0 : (double)n_warps * c.per_warp / (halves ? 2 : 1) / 1e6;
    auto at = [&](double f) { return us.empty() ? 0.0 : us[std::min(us.size() - 1, (size_t)(f * us.size()))]; };
    std::printf("%-9s %9d %9d %12.1f | %46.2f %6.2f %6.2f\n", kModeName[c.mode], none ? 0 : c.per_warp, c.delay_ns,
                in_flight, at(0.5), at(0.9), us.empty() ? 0.0 : us.back());
  }
  return 0;
}
