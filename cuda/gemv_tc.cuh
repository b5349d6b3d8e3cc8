// decdec_rt CUDA backend: the batch-1 GEMV for uniform 3/4-bit weights on the tensor cores, with
// the DecDEC compensation inside the same launch.
//
//   y = W x + rscale ⊙ (R[:, S] x[S])        (the second term only when DecDEC is on)
//
// Base math (as the first tensor-core GEMV, see packed.cuh for the decoder): codes become the A
// fragments of mma.m16n8k16 (exact fp16 subnormals), x the B fragments as fp16 hi + lo (columns
// 0 and 1, ~22 bits of x; |x| < 65504), fp32 accumulation, the group's scale applied to each
// group's mma chain, the min term from per-group sums of x.
//
// Work and its split (persistent, one wave): the grid is the GPU's resident capacity. Blocks
// [0, n_tb) take the compensation role, the others the base role. The base work is U units,
// a unit = one 16-row tile x 512 (3-bit) or 256 (4-bit) input codes; unit u = tile * n_units + k (k-minor). Base warp w
// of Wb takes the contiguous range [w U / Wb, (w+1) U / Wb) (balanced to one unit, whatever the
// shape: no tail wave). It streams its units through a register pipeline D units deep (the loads
// of the first D are issued before anything else, even before the previous kernel has finished:
// programmatic dependent launch, sm_90) and accumulates the tile's rows in registers.
//
// Merge, race-free and deterministic: a tile is finished by whoever arrives last.
//  - A base warp whose range covers a tile alone (and no compensation) writes y directly.
//  - Otherwise every contributor writes its partial to a slot of its own (base warp j of the
//    tile: part[tile][j][16]; the compensation: cpart[row], already scaled by rscale), makes it
//    visible (__threadfence), then counts itself in on cnt[tile] (atomicAdd). The contributor
//    whose add completes the expected count E(tile) (a function of the shape, known to all) sums
//    the slots in a fixed order (base j ascending, then the compensation), writes y and resets
//    the counter for the next launch. Nobody else writes y; nobody reads a slot before its
//    writer's fence; the sum order does not depend on timing, so results are bitwise repeatable.
//
// Groups (kernels.cuh): the members' rows are concatenated into one output space; tiles,
// units, slots and compensation segments are counted over it, and only the loads, the scale
// reads, the residual rows and the y writes look up the member (tc_member) of their rows.
//
// Compensation role (n_tb blocks): block b owns output segment b (a range of 32-output vectors).
// Each selects (approx: chunk c by block c % n_tb, a bucket histogram and two block scans,
// the CPU reference's rule; other modes: the selection a pre-kernel wrote to sel), then
// streams the selected residual rows' slices of its segment (16-byte zero-copy loads, 4 rows in
// flight per thread), reduces over its threads in shared memory, scales by rscale and writes
// cpart, then counts itself in on each tile of its segment. Its PCIe traffic overlaps the base
// warps' HBM streaming: both are in flight in the same launch, on the same SMs.
#pragma once

#include "gemv_q.cuh"
#include "tc_split.h"

namespace ddrt {
namespace gpu {

constexpr int kTcThreads = 256, kTcWarps = kTcThreads / 32;

__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// x as B fragments in shared memory: one uint4 per x float4 (hi b0 b1, lo b0 b1), slab by slab
// (a slab = 8 lane steps = 8 C codes), then the group sums.
DDRT_HDC int64_t mma_slabs(int64_t d_in, int bits) { return (d_in + 8 * step_codes(bits) - 1) / (8 * step_codes(bits)); }
// Lane-step chunks per unit (a unit's input codes per row: 512 at 3 bits, 256 at 4 bits, so
// that one unit's codes take 24 / 16 registers per lane).
DDRT_HDC int tc_unit_chunks(int bits) { return bits == 3 ? 1 : 2; }

// Everything one launch needs; the host fills it (gemv_tc.cu) from the shape and the grid.
struct TcArgs {
  DevLinear W;     // the launch's shape: d_out = the group's total; codes/sm are per member below
  const float* x;  // [d_in]
  // the members (kernels.cuh): member m owns rows [row0[m], row0[m + 1]) of the group
  int64_t row0[kTcMaxMembers];  // row0[0] = 0; INT64_MAX past the last member
  const uint4* codes[kTcMaxMembers];
  const __half2* sm[kTcMaxMembers];
  float* y[kTcMaxMembers];
  DevResidual R[kTcMaxMembers];  // with compensation: rows, row_pitch, rscale
  // base split
  int n_tb = 0;           // compensation blocks (0: DecDEC off in this launch)
  int64_t n_units = 0;    // units per tile
  int64_t n_tiles = 0;
  int64_t wb = 0;         // base warps that get work (<= U)
  int max_s = 0;          // base slots per tile in part
  float* part = nullptr;  // [n_tiles][max_s][16]
  int* cnt = nullptr;     // [n_tiles], all 0 between launches
  // compensation
  CompParams p;
  int32_t* sel = nullptr;         // [kmax] the selection (global): from a pre-kernel, or made here
  bool select_here = false;       // approx: the compensation blocks select (chunk c: block
                                  // c % n_tb, warp c / n_tb), publish sel and wait for each other
  float* cpart = nullptr;         // [d_out] rscale * (R[:, S] x[S]), group rows
  int64_t seg_vecs = 0;           // 32-output vectors per compensation block
  // the timeline lab (test_cuda_ops --bench-stamps): [grid][kTcStamps] %globaltimer ns, or null
  unsigned long long* stamps = nullptr;
};

// Timeline stamps of a block (thread 0): 0 start, 1 after the dependency wait, 2 base: x ready /
// compensation: selection published, 3 compensation: gather + reduce done, 4 end.
constexpr int kTcStamps = 5;
__device__ __forceinline__ void tc_stamp(const TcArgs& a, int slot) {
  if (a.stamps != nullptr && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    a.stamps[blockIdx.x * kTcStamps + slot] = t;
  }
}

// The member owning group row `row` (boundaries are multiples of 32: a tile or a 32-output vector
// lies in one member).
__device__ __forceinline__ int tc_member(const TcArgs& a, int64_t row) {
  return (row >= a.row0[1] ? 1 : 0) + (row >= a.row0[2] ? 1 : 0);
}

// Shared memory bytes of the base role (x fragments + group sums) and of the compensation role.
inline size_t tc_base_smem(int64_t d_in, int bits, int group) {
  const int64_t f4 = mma_slabs(d_in, bits) * 2 * step_codes(bits);
  return (size_t)(f4 * 16 + f4 * 4 / group * 4);
}
inline size_t tc_comp_smem(int64_t kmax, int64_t seg_vecs) {
  const int64_t nvs = seg_vecs < kTcThreads ? seg_vecs : kTcThreads;
  return (size_t)kmax * 8 + (size_t)seg_vecs * 32 * 4 + (size_t)kTcThreads * 32 * 4 * (nvs > 0) +
         (2 * kBuckets + 2 * kTcWarps) * 4 + 64;
}

__device__ __forceinline__ void grid_dep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// The last contributor of tile `tile` sums its slots (fixed order) into y and resets the counter.
// Called by a whole warp; lanes 0..15 take one row each.
__device__ __forceinline__ void tc_finish_tile(const TcArgs& a, int64_t tile, int64_t e_base, int lane) {
  const int64_t row = tile * 16 + lane;
  if (lane < 16 && row < a.W.d_out) {
    float s = 0.0f;
    for (int64_t j = 0; j < e_base; ++j) s += __ldcg(a.part + (tile * a.max_s + j) * 16 + lane);
    if (a.n_tb > 0) s += __ldcg(a.cpart + row);
    const int m = tc_member(a, row);
    a.y[m][row - a.row0[m]] = s;
  }
  if (lane == 0) a.cnt[tile] = 0;
}

// Counts the calling warp's contribution to `tile` in (after its slot writes); finishes the tile
// when it is the last one. e_total = e_base + (compensation on ? 1 : 0).
__device__ __forceinline__ void tc_arrive(const TcArgs& a, int64_t tile, int64_t e_base, int64_t e_total, int lane) {
  __threadfence();
  __syncwarp();
  int last = 0;
  if (lane == 0) last = atomicAdd(a.cnt + tile, 1) == e_total - 1;
  last = __shfl_sync(0xffffffffu, last, 0);
  if (last) {
    __threadfence();
    tc_finish_tile(a, tile, e_base, lane);
  }
}

__device__ __forceinline__ int64_t tc_e_base(const TcArgs& a, int64_t tile) {
  return tc_e_base(tile, a.n_units, a.n_tiles * a.n_units, a.wb);
}

// ---- compensation role --------------------------------------------------------------------------

// approx_bucket (decdec.h) by binary search: the same bucket when floors are non-increasing
// (the host checks; otherwise it selects with the pre-kernel). floors in shared memory.
__device__ __forceinline__ int tc_bucket(const float* floors, float v) {
  int lo = 0;
#pragma unroll
  for (int step = kBuckets / 2; step >= 1; step >>= 1)
    if (!(v >= floors[lo + step - 1])) lo += step;
  return v >= floors[lo] ? lo : kBuckets;
}

// Exclusive prefix sum of v over the block's threads (index order), and the total. wsum:
// kTcWarps ints of shared memory used by this call only.
__device__ __forceinline__ int tc_block_scan(int v, int* wsum, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int u = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += u;
  }
  if (lane == 31) wsum[warp] = inc;
  __syncthreads();
  int before = 0, all = 0;
#pragma unroll
  for (int w = 0; w < kTcWarps; ++w) {
    const int x = wsum[w];
    before += w < warp ? x : 0;
    all += x;
  }
  *total = all;
  return before + inc - v;
}

// approx selection of chunk c by the whole block (thread t: channels c0 + 4t .. 4t + 3): the same
// set as select_channels (decdec.cpp): whole buckets from the top while they fit, then the
// boundary bucket's members in ascending index order; written ascending to sel[c * k_full ...]
// (-1 in unused slots). s: shared ints, kBuckets + 2 * kTcWarps.
__device__ __forceinline__ void tc_select_chunk_approx(const TcArgs& a, int64_t c, const float* floors,
                                                       int32_t* sel, int* s) {
  const int tid = threadIdx.x, lane = tid & 31;
  const int64_t c0 = c * kChunk, d_in = a.W.d_in;
  const int len = (int)(d_in - c0 < kChunk ? d_in - c0 : kChunk);
  const int kc = chunk_k(a.p.call.k_chunk, len);
  int* cnt = s;                    // [kBuckets]
  int* wsum = s + kBuckets;        // [2][kTcWarps]
  if (tid < kBuckets) cnt[tid] = 0;
  __syncthreads();
  int b[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int i = 4 * tid + e;
    b[e] = i < len ? tc_bucket(floors, fabsf(a.x[c0 + i])) : kBuckets;
    // one shared atomic per distinct bucket of the warp (not per channel: they would collide)
    const unsigned peers = __match_any_sync(0xffffffffu, b[e]);
    if (b[e] < kBuckets && lane == __ffs(peers) - 1) atomicAdd(cnt + b[e], __popc(peers));
  }
  __syncthreads();
  int full = 0, taken = 0;
  while (full < kBuckets && taken + cnt[full] <= kc) taken += cnt[full++];
  const int rest = full < kBuckets ? kc - taken : 0;
  int n_b = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) n_b += b[e] == full && full < kBuckets;
  int unused, n_sel;
  int r = tc_block_scan(n_b, wsum, &unused);  // boundary members before this thread's
  bool chosen[4];
  int n_c = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const bool bnd = b[e] == full && full < kBuckets;
    chosen[e] = b[e] < full || (bnd && r < rest);
    r += bnd;
    n_c += chosen[e];
  }
  int at = tc_block_scan(n_c, wsum + kTcWarps, &n_sel);
  int32_t* out = sel + c * a.p.k_full;
#pragma unroll
  for (int e = 0; e < 4; ++e)
    if (chosen[e]) out[at++] = (int32_t)(c0 + 4 * tid + e);
  for (int j = n_sel + tid; j < kc; j += kTcThreads) out[j] = -1;
  __syncthreads();  // cnt and wsum are reused by the next chunk
}

__device__ __forceinline__ void tc_comp_block(const TcArgs& a, uint8_t* smem) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t kmax = a.p.kmax, d_out = a.W.d_out, nv_all = (d_out + 31) / 32;
  const int64_t v0 = (int64_t)blockIdx.x * a.seg_vecs;
  const int64_t nvs = v0 >= nv_all ? 0 : (nv_all - v0 < a.seg_vecs ? nv_all - v0 : a.seg_vecs);
  int32_t* s_sel = reinterpret_cast<int32_t*>(smem);                    // [kmax]
  float* s_xs = reinterpret_cast<float*>(s_sel + kmax);                 // [kmax]
  float* s_rs = s_xs + kmax;                                            // [seg_vecs * 32] rscale
  float* red = s_rs + a.seg_vecs * 32;                                  // [kTcThreads * 32]
  float* floors = red + kTcThreads * 32;                    // [kBuckets]
  int* sel_smem = reinterpret_cast<int*>(floors + kBuckets);  // [kBuckets + 2 * kTcWarps]
  // rscale of the segment: independent of the previous kernel, fetched before the wait
  for (int64_t o = tid; o < nvs * 32; o += kTcThreads) {
    const int64_t row = v0 * 32 + o;
    const int m = tc_member(a, row);
    s_rs[o] = row < d_out ? a.R[m].rscale[row - a.row0[m]] : 0.0f;
  }
  if (tid < kBuckets) floors[tid] = a.p.floors[tid];
  grid_dep_wait();
  tc_stamp(a, 1);
  const int64_t n_ch = (a.W.d_in + kChunk - 1) / kChunk;
  if (a.select_here) {
    // Each chunk is selected once, by block c % n_tb (all its threads), into the global sel; then
    // every compensation block waits until all chunks are published (done == n_ch). The blocks
    // are the grid's first and the grid fits the GPU at once, so they are all resident: the
    // wait ends. The last block past the wait (passed == n_tb) resets both counters.
    int* done = a.cnt + a.n_tiles;
    int* passed = done + 1;
    __syncthreads();  // floors
    int mine = 0;
    for (int64_t c = blockIdx.x; c < n_ch; c += a.n_tb) {
      tc_select_chunk_approx(a, c, floors, a.sel, sel_smem);
      ++mine;
    }
    __threadfence();
    __syncthreads();
    if (tid == 0 && mine > 0) atomicAdd(done, mine);
    if (tid == 0) {
      while (*reinterpret_cast<volatile int*>(done) < (int)n_ch) __nanosleep(64);
      __threadfence();
      if (atomicAdd(passed, 1) == a.n_tb - 1) {
        *done = 0;
        *passed = 0;
      }
    }
    __syncthreads();
  }
  tc_stamp(a, 2);
  for (int64_t s = tid; s < kmax; s += kTcThreads) {
    const int32_t j = __ldcg(a.sel + s);
    s_sel[s] = j;
    s_xs[s] = j >= 0 ? a.x[j] : 0.0f;
  }
  __syncthreads();
  if (nvs == 0) return;  // no outputs: nothing to count in (segments past d_out own no tile)
  // thread -> (vector v, row split rs); vectors beyond 256 loop
  const int64_t nve = nvs < kTcThreads ? nvs : kTcThreads;
  const int n_rs = (int)(kTcThreads / nve), rs = (int)(tid / nve);
  const int64_t vt = tid % nve;
  for (int64_t vb = 0; vb < nvs; vb += nve) {
    const int64_t v = vb + vt;
    float acc[32];
#pragma unroll
    for (int e = 0; e < 32; ++e) acc[e] = 0.0f;
    if (rs < n_rs && v < nvs) {
      const int m = tc_member(a, 32 * (v0 + v));
      const uint8_t* col = a.R[m].rows + 16 * (v0 + v - a.row0[m] / 32);
      const int64_t pitch = a.R[m].row_pitch;
      for (int64_t s0 = rs; s0 < kmax; s0 += 4 * (int64_t)n_rs) {
        int32_t j[4];
        uint4 r[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int64_t s = s0 + (int64_t)u * n_rs;
          j[u] = s < kmax ? s_sel[s] : -1;
          if (j[u] >= 0) r[u] = *reinterpret_cast<const uint4*>(col + (int64_t)j[u] * pitch);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          if (j[u] < 0) continue;
          const float xj = s_xs[s0 + (int64_t)u * n_rs];
          const uint32_t w[4] = {r[u].x, r[u].y, r[u].z, r[u].w};
#pragma unroll
          for (int e = 0; e < 32; ++e) {
            // output 32 v + e: byte e / 2 of the vector, nibble e % 2; nibble - 8 exactly via 2^23
            const uint32_t nib = (w[e / 8] >> (4 * (e % 8))) & 15u;
            acc[e] = fmaf(__uint_as_float(nib | 0x4B000000u) - 8388616.0f, xj, acc[e]);
          }
        }
      }
    }
    // reduce the row splits (fixed order) and write the scaled slice
    if (rs < n_rs) {
#pragma unroll
      for (int e = 0; e < 32; ++e) red[(rs * nve + vt) * 32 + e] = acc[e];
    }
    __syncthreads();
    const int64_t nv_here = nvs - vb < nve ? nvs - vb : nve;
    for (int64_t k = tid; k < nv_here * 32; k += kTcThreads) {
      float s = 0.0f;
      for (int q = 0; q < n_rs; ++q) s += red[q * nve * 32 + k];
      const int64_t o = (v0 + vb) * 32 + k;
      if (o < d_out) a.cpart[o] = s_rs[vb * 32 + k] * s;
    }
    __syncthreads();
  }
  __threadfence();
  __syncthreads();
  tc_stamp(a, 3);
  // count in on every tile of the segment: the atomics a thread per tile (in parallel), then the
  // tiles this block completed are finished by its warps, 16 rows (lanes) at a time
  int* s_fin = reinterpret_cast<int*>(red);  // [tiles of the segment] + count (red is free now)
  int* s_nfin = s_fin + 2 * a.seg_vecs;
  if (tid == 0) *s_nfin = 0;
  __syncthreads();
  const int64_t t0 = v0 * 2, t1 = (v0 + nvs) * 2 < a.n_tiles ? (v0 + nvs) * 2 : a.n_tiles;
  for (int64_t tile = t0 + tid; tile < t1; tile += kTcThreads)
    if (atomicAdd(a.cnt + tile, 1) == tc_e_base(a, tile))  // the last of eb + 1 contributors
      s_fin[atomicAdd(s_nfin, 1)] = (int)(tile - t0);
  __syncthreads();
  const int n_fin = *s_nfin;
  if (n_fin > 0) __threadfence();
  for (int f = warp; f < n_fin; f += kTcWarps) {
    const int64_t tile = t0 + s_fin[f];
    tc_finish_tile(a, tile, tc_e_base(a, tile), lane);
  }
}

// ---- base role ---------------------------------------------------------------------------------

template <int B, int G>
__device__ __forceinline__ void tc_base_block(const TcArgs& a, uint4* smem) {
  constexpr int C = step_codes(B), V = step_vecs(B), NW = 4 * V, NQ = C / 4, QG = G / 32, NG = NQ / QG;
  constexpr int UC = tc_unit_chunks(B);
  constexpr int D = 2;                        // units in flight per warp
  const DevLinear& W = a.W;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int64_t w = (int64_t)(blockIdx.x - a.n_tb) * kTcWarps + warp;
  const int64_t U = a.n_tiles * a.n_units;
  const bool active = w < a.wb;
  const int64_t u_begin = active ? tc_range_begin(w, U, a.wb) : 0, u_end = active ? tc_range_begin(w + 1, U, a.wb) : 0;
  const int64_t n_slabs = mma_slabs(W.d_in, B), n_f4 = n_slabs * 2 * C, n_chunks = 2 * n_slabs;

  // a unit as (tile, k): cursors advance one unit at a time (no 64-bit divisions in the loop)
  const uint32_t n_units = (uint32_t)a.n_units;
  auto advance = [&](uint32_t& tl, uint32_t& k) {
    if (++k == n_units) {
      k = 0;
      ++tl;
    }
  };
  // rows g and g + 8 of tile tl, as member rows (clamped to the group's last row), and the member
  auto rows_of = [&](uint32_t tl, int64_t& ra, int64_t& rb) {
    const int64_t r0 = (int64_t)tl * 16;
    ra = r0 + g < W.d_out ? r0 + g : W.d_out - 1;
    rb = r0 + g + 8 < W.d_out ? r0 + g + 8 : W.d_out - 1;
    const int m = tc_member(a, r0 < W.d_out ? r0 : W.d_out - 1);
    ra -= a.row0[m];
    rb -= a.row0[m];
    return m;
  };
  auto vec_off = [&](int64_t ci) { return (ci >> 3) * 32 * V + 4 * (ci & 7) + t; };
  uint4 buf[D][UC][2][V];
  auto load = [&](uint32_t tl, uint32_t k, uint4 (&v)[UC][2][V]) {
    int64_t ra, rb;
    const int m = rows_of(tl, ra, rb);
    const uint4* wa = a.codes[m] + ra * W.row_vecs;
    const uint4* wb = a.codes[m] + rb * W.row_vecs;
#pragma unroll
    for (int c = 0; c < UC; ++c) {
      const int64_t ci = (int64_t)k * UC + c;
      if (ci < n_chunks) {
        const int64_t off = vec_off(ci);
#pragma unroll
        for (int q = 0; q < V; ++q) {
          v[c][0][q] = ld_stream(wa + off + 32 * q);
          v[c][1][q] = ld_stream(wb + off + 32 * q);
        }
      }
    }
    const int64_t slab = (int64_t)k * UC / 2;
    prefetch_l1(a.sm[m] + ra * W.n_groups + slab * NG);  // read from L1 when the unit is computed
    prefetch_l1(a.sm[m] + rb * W.n_groups + slab * NG);
  };
  const int n_mine = (int)(u_end - u_begin);
  uint32_t lt = (uint32_t)(u_begin / n_units), lk = (uint32_t)(u_begin % n_units);  // load cursor
  const uint32_t t_begin = lt, k_begin = lk;
#pragma unroll
  for (int p = 0; p < D; ++p)
    if (p < n_mine) {
      load(lt, lk, buf[p]);
      advance(lt, lk);
    }

  grid_dep_wait();  // x (and the scratch) belong to the previous kernels until here
  tc_stamp(a, 1);

  // x -> B fragments (hi, lo) and group sums; loads batched 4 per thread
  uint4* xs = smem;
  float* sx = reinterpret_cast<float*>(smem + n_f4);
  for (int64_t f0 = threadIdx.x; f0 < n_f4; f0 += 4 * kTcThreads) {
    float xv[4][4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t i0 = 4 * (f0 + (int64_t)q * kTcThreads);
#pragma unroll
      for (int e = 0; e < 4; ++e) xv[q][e] = i0 + e < W.d_in ? __ldg(a.x + i0 + e) : 0.0f;
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t f = f0 + (int64_t)q * kTcThreads;
      if (f >= n_f4) break;  // uniform across the warp (n_f4 is a multiple of 32)
      const int64_t i0 = 4 * f, slab = i0 / (8 * C), r = i0 % (8 * C);
      const int j = (int)(r / 32), b = (int)(r % 32) / 4;
      const int64_t ent = ((slab * 2 + b / 4) * NQ + j) * 4 + (b & 3);
      __half hi[4], lo[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        hi[e] = __float2half_rn(xv[q][e]);
        lo[e] = __float2half_rn(xv[q][e] - __half2float(hi[e]));
      }
      const int c00 = quad_code<B>(0, 0), c01 = quad_code<B>(0, 1), c10 = quad_code<B>(1, 0), c11 = quad_code<B>(1, 1);
      uint4 en;
      en.x = (uint32_t)__half_as_ushort(hi[c00]) | (uint32_t)__half_as_ushort(hi[c01]) << 16;
      en.y = (uint32_t)__half_as_ushort(hi[c10]) | (uint32_t)__half_as_ushort(hi[c11]) << 16;
      en.z = (uint32_t)__half_as_ushort(lo[c00]) | (uint32_t)__half_as_ushort(lo[c01]) << 16;
      en.w = (uint32_t)__half_as_ushort(lo[c10]) | (uint32_t)__half_as_ushort(lo[c11]) << 16;
      xs[ent] = en;
      float s = (xv[q][0] + xv[q][1]) + (xv[q][2] + xv[q][3]);
#pragma unroll
      for (int o = 1; o < G / 4; o <<= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if ((lane & (G / 4 - 1)) == 0) sx[i0 / G] = s;
    }
  }
  __syncthreads();
  tc_stamp(a, 2);
  if (!active) return;

  const uint2* xs2 = reinterpret_cast<const uint2*>(xs);
  float acc[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};  // [class][row g, g+8]
  float accm[2] = {0.0f, 0.0f};                      // min term
  uint32_t ct = t_begin, ck = k_begin;               // compute cursor
  uint32_t cur_tile = t_begin;
  constexpr float k0 = 16777216.0f, k1 = (float)(1 << (24 - class_shift<B>()));
  auto flush = [&](int64_t tile) {
    const float ya = fmaf(acc[0][0], k0, fmaf(acc[1][0], k1, accm[0]));
    const float yb = fmaf(acc[0][1], k0, fmaf(acc[1][1], k1, accm[1]));
    const int64_t eb = tc_e_base(a, tile), et = eb + (a.n_tb > 0 ? 1 : 0);
    if (et == 1) {
      if (t == 0) {
        const int m = tc_member(a, tile * 16);
        const int64_t r = tile * 16 + g;
        if (r < W.d_out) a.y[m][r - a.row0[m]] = ya;
        if (r + 8 < W.d_out) a.y[m][r + 8 - a.row0[m]] = yb;
      }
    } else {
      const int64_t j = w - tc_first_warp(tile, a.n_units, U, a.wb);
      if (t == 0) {
        a.part[(tile * a.max_s + j) * 16 + g] = ya;
        a.part[(tile * a.max_s + j) * 16 + g + 8] = yb;
      }
      tc_arrive(a, tile, eb, et, lane);
    }
    acc[0][0] = acc[0][1] = acc[1][0] = acc[1][1] = accm[0] = accm[1] = 0.0f;
  };
  auto compute = [&](uint32_t tl, uint32_t k, const uint4 (&v)[UC][2][V]) {
    if (tl != cur_tile) {
      flush(cur_tile);
      cur_tile = tl;
    }
    int64_t ra, rb;
    const int m = rows_of(tl, ra, rb);
#pragma unroll
    for (int c = 0; c < UC; ++c) {
      const int64_t ci = (int64_t)k * UC + c, slab = ci >> 1;
      if (ci >= n_chunks) continue;
      uint32_t w0[NW], w1[NW];
#pragma unroll
      for (int q = 0; q < V; ++q) {
        w0[4 * q] = v[c][0][q].x; w0[4 * q + 1] = v[c][0][q].y; w0[4 * q + 2] = v[c][0][q].z; w0[4 * q + 3] = v[c][0][q].w;
        w1[4 * q] = v[c][1][q].x; w1[4 * q + 1] = v[c][1][q].y; w1[4 * q + 2] = v[c][1][q].z; w1[4 * q + 3] = v[c][1][q].w;
      }
      const uint2* xe = xs2 + (ci * NQ * 4 + t) * 2 + g;
      const float first = (ci & 1) == 0 ? 1.0f : 0.0f;
      const __half2* sga = a.sm[m] + ra * W.n_groups + slab * NG;
      const __half2* sgb = a.sm[m] + rb * W.n_groups + slab * NG;
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
        const int cls = quad_class<B>(gg * QG);
        acc[cls][0] = fmaf(fa.x, d[0] + d[1], acc[cls][0]);
        acc[cls][1] = fmaf(fb.x, d[2] + d[3], acc[cls][1]);
        const float sg = first * sxs[gg];
        accm[0] = fmaf(fa.y, sg, accm[0]);
        accm[1] = fmaf(fb.y, sg, accm[1]);
      }
    }
  };
  for (int i0 = 0; i0 < n_mine; i0 += D) {
#pragma unroll
    for (int p = 0; p < D; ++p) {
      if (i0 + p < n_mine) {
        compute(ct, ck, buf[p]);
        advance(ct, ck);
        if (i0 + p + D < n_mine) {
          load(lt, lk, buf[p]);
          advance(lt, lk);
        }
      }
    }
  }
  flush(cur_tile);
}

template <int B, int G>
__global__ void __launch_bounds__(kTcThreads, 2) gemv_tc_kernel(const __grid_constant__ TcArgs a) {
  // __grid_constant__: the roles read the arguments in place (a reference to a plain kernel
  // parameter would copy all of them to local memory)
  extern __shared__ uint4 tc_smem[];
  pdl_trigger();  // the next GEMV may start streaming its weights as this one's blocks finish
  tc_stamp(a, 0);
  if ((int)blockIdx.x < a.n_tb)
    tc_comp_block(a, reinterpret_cast<uint8_t*>(tc_smem));
  else
    tc_base_block<B, G>(a, tc_smem);
  tc_stamp(a, 4);
}

}  // namespace gpu
}  // namespace ddrt
