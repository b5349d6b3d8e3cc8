// decdec_rt CUDA backend: the batch-1 GEMV for uniform 3/4-bit weights on the tensor cores, with
// the DecDEC compensation inside the same launch.
//
//   y = W x + rscale ⊙ (R[:, S] x[S])        (the second term only when DecDEC is on)
//
// Base math (int8 tensor cores): a unit's quads decode to u8 A fragments of mma.m16n8k32
// (quad_i8, packed.cuh: 4 codes per register, shifted left by their quad's class, 0 or 1); each
// mma pairs quad j of a slab's first chunk (k 0..15) with quad j of its second (k 16..31): 32
// inputs of one group and one class. x is quantized per group to X = round(x * kXq / max|x|)
// (~24 bits) and split into three int8 limbs X = 65536 hi + 256 mid + lo; B column 3c + l holds
// limb l for the quads of class c (zero elsewhere), so one int32 chain per group accumulates both
// classes (columns 6, 7 stay 0). Per group each lane weighs its two columns (limb, class, x
// scale) in fp32 and the 4 lanes of a row are summed once per unit; the min term comes from
// per-group fp32 sums of x.
//
// Work and its split (persistent, one wave): the grid is the GPU's resident capacity. Blocks
// [0, n_tb) take the compensation role, the others the base role. The base work is U units,
// a unit = one 16-row tile x 512 (3-bit) or 256 (4-bit) input codes (a column k); unit u = column
// u / n_tiles of tile u % n_tiles (k-major, tc_split.h). Base warp w of Wb takes the contiguous
// range [w U / Wb, (w+1) U / Wb) (balanced to one unit, whatever the shape: no tail wave), so a
// block's units span a column or two and it stages only those slabs of x. Each warp streams its
// units (codes and their rows' scales) through a ring of shared-memory slots filled by cp.async
// (the first ones issued before anything else, even before the previous kernel has finished:
// programmatic dependent launch, sm_90).
//
// Merge, race-free and deterministic: a tile is finished by whoever arrives last.
//  - When a unit is a whole tile (one column) and there is no compensation, it writes y directly.
//  - Otherwise every contributor writes its partial to a slot of its own (unit (tile, k):
//    part[tile][k][16]; the compensation: cpart[row], already scaled by rscale), makes it visible
//    (a fence, DDRT_COUNTER_FENCE: a base warp once, after its last unit), then counts itself in on cnt[tile]
//    (atomicAdd, one per unit). The contributor whose add completes the expected count
//    (n_units, + 1 with compensation, + comp_ch chunk-major) sums the slots in a fixed order (k
//    ascending, then the compensation), writes y and resets the counter for the next launch.
//    Nobody else writes y;
//    nobody reads a slot before its writer's fence; the sum order does not depend on timing, so
//    results are bitwise repeatable.
//  - accumulate (y += W x: y is the residual stream, engine.cpp): the one writer of a row reads
//    its old value and writes the sum; no block of the launch reads y otherwise (x never aliases y).
//
// Inputs (TcArgs::up / nw): swiglu1(x, up) or rmsnorm(x) * nw computed where x is read, so the
// swiglu and the norm need no launch of their own. For the norm, each block sums x^2 over all of
// d_in itself (16 KB of L2 reads at d_in 4096, issued beside the staging's loads); the base role
// quantizes x * nw per group (the factor r = 1 / sqrt(mean(x^2) + eps) is common to all groups,
// so the limbs do not see it) and scales each unit's result by r.
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
// Chunk-major (comp_ch > 0, DDRT_COMP_CHUNKS=1): block b takes chunks b % comp_cb (+ i comp_cb)
// and the output segment b / comp_cb; it selects its chunk itself (approx) or reads the
// pre-kernel's, gathers the chunk's rows for its segment and writes the chunk's term to cpart
// row c (already scaled by rscale). A tile then has n_units + comp_ch contributors; whoever
// arrives last adds the slots, then the chunks' terms in chunk order (still a fixed order). No
// block waits for another block's selection, and the row slices are comp_cb times wider.
#pragma once

#include "gemv_q.cuh"
#include "tc_split.h"

namespace ddrt {
namespace gpu {

constexpr int kTcThreads = 256, kTcWarps = kTcThreads / 32;
// The base role's unit pipeline (tc_base_block): slots per warp in shared memory, each
// tc_slot_vecs uint4 (packed.cuh). 3 slots for 4 bits, 2 for 3 bits and g32 (6.5 KB slots), so that
// two blocks fit an SM (g32 3-bit: one).
DDRT_HDC int tc_ring_slots(int bits, int group) { return bits == 3 || group == 32 ? 2 : 3; }

// Everything one launch needs; the host fills it (gemv_tc.cu) from the shape and the grid.
struct TcArgs {
  DevLinear W;     // the launch's shape: d_out = the group's total; codes/sm are per member below
  const float* x;  // [d_in]
  const float* up;  // null, or [d_in]: the input is swiglu1(x, up) (the down projection's)
  // null, or [d_in]: the input is rmsnorm(x) * nw = x * r * nw, r = 1 / sqrt(mean(x^2) + eps)
  // (each block sums x^2 itself; the base role stages x * nw and scales its sums by r, which the
  // per-group quantization of x does not see; the compensation reads x * r * nw as rmsnorm writes it)
  const float* nw = nullptr;
  float eps = 0.0f;
  // non-null attn.po: x is a deferred attention's output (TcIo::attn, AttnDefer): where more than
  // one split is active the base role merges the splits where it reads x (tc_attn_x4)
  AttnDefer attn;
  // the norm's sum of squares from the producer (TcIo::ssq_in): with nw, sum_i x_i^2 is the sum of
  // ssq_in[0 .. ssq_n) (the tiles' sums, in that order) instead of each block reading all of x
  const float* ssq_in = nullptr;
  int64_t ssq_n = 0;
  // (TcIo::ssq_out; with accumulate, one member) whoever writes a tile's final rows writes the sum
  // of their squares to ssq_out[tile] (in a fixed order), for the next launch's norm
  float* ssq_out = nullptr;
  bool accumulate = false;  // y += the result (y is the residual stream), not y =
  // the gate/up pair of a gated MLP (two members of equal d_out, a multiple of 16): once both tiles
  // of a pair (gate tile p, up tile p + n_tiles / 2) are written, y[0] = swiglu1(y[0], y[1]) over
  // its 16 rows (tc_pair_count), so that the down projection reads a plain x, one launch fewer
  bool swiglu_pairs = false;
  bool fence_sc = true;  // the merge counters' fences: fence_sc() (kernels.cuh)
  // the members (kernels.cuh): member m owns rows [row0[m], row0[m + 1]) of the group
  int64_t row0[kTcMaxMembers];  // row0[0] = 0; INT64_MAX past the last member
  const uint4* codes[kTcMaxMembers];
  const __half2* sm[kTcMaxMembers];
  float* y[kTcMaxMembers];
  DevResidual R[kTcMaxMembers];  // with compensation: rows, row_pitch, rscale
  // the members' unit images (DevLinear::units) and whether the base role's ring copies them whole
  // by cp.async.bulk (tc_base_block; every member has them) instead of by cp.async pieces
  const uint4* units[kTcMaxMembers];
  bool bulk = false;
  // base split
  int n_tb = 0;           // compensation blocks (0: DecDEC off in this launch)
  int64_t n_units = 0;    // units per tile
  int64_t n_tiles = 0;
  int64_t wb = 0;         // base warps that get work (<= U)
  TcDiv wb_div, nt_div;   // wb and n_tiles as divisors (tc_split.h)
  float* part = nullptr;  // [n_tiles][n_units][16]: slot k of a tile = its column-k unit
  // > 0 (TcPlan::local, lab knob DDRT_TC_LOCAL; the Local instantiation): the block-local merge. Block b owns tiles
  // [b local, (b + 1) local) whole: its warp j takes unit (tile b local + j / n_units, k = j %
  // n_units), at most one per warp (n_units * local <= kTcWarps), so the ring has one slot per
  // warp and the block stages all of x. The units' sums go to shared memory (local_off, uint4:
  // [local][n_units][16] floats) instead of part; after a block barrier the block's first warps
  // sum each row over k ascending, as the last contributor does (tc_finish_tiles): the same y bit
  // for bit, with no fence, no counter and no L2 round trip for the slots. 0: the k-major split.
  int local = 0;
  int64_t local_off = 0;
  int* cnt = nullptr;     // tile t's counter at tc_cnt_at(t) (tc_split.h), all 0 between launches
  // compensation
  CompParams p;
  int32_t* sel = nullptr;         // [kmax] the selection (global): from a pre-kernel, or made here
  bool select_here = false;       // approx: the compensation blocks select (chunk c: block
                                  // c % n_tb, warp c / n_tb), publish sel and wait for each other
  // segment-major with select_here: the x values of the published selection beside it ([kmax],
  // written by the selecting block, so that the others read them instead of recomputing x from
  // its sources: one dependent L2 round trip fewer; on by default, DDRT_COMP_XS=0 off), or null
  float* sel_xs = nullptr;
  // tc_select_chunk_approx with fewer barriers (lab knob DDRT_SEL_FAST=1; the same selection)
  bool sel_fast = false;
  // segment-major approx with nw (not ssq_in): the block that selects chunk c = its index (< 4:
  // x's first 4096 channels, which the norm's sum loads as float4 t + 256 c: chunk c's channels
  // 4t .. 4t + 3, the selection's own layout) takes x from those registers and nw from loads issued
  // before the dependency wait, instead of an L2 round trip for both after the norm factor (on by
  // default, DDRT_SEL_REUSE=0 off; the same values: tc_x's (x * r) * nw)
  bool sel_reuse = false;
  float* cpart = nullptr;         // [d_out] rscale * (R[:, S] x[S]), group rows ([comp_ch][d_out]:
                                  // chunk-major, chunk c's term in row c)
  int64_t seg_vecs = 0;           // 32-output vectors per compensation block
  // 0: segment-major compensation (block b: output segment b, all chunks); > 0: chunk-major
  // (DDRT_COMP_CHUNKS=1), comp_ch = the chunks of d_in, comp_cb = blocks per segment (<= comp_ch):
  // block b takes chunks b % comp_cb + i comp_cb of the segment b / comp_cb
  int64_t comp_ch = 0;
  int64_t comp_cb = 0;
  // the timeline lab (test_cuda_ops --bench-stamps): [grid][kTcStamps] %globaltimer ns, or null
  unsigned long long* stamps = nullptr;
  int64_t ring_off = 0;  // uint4 offset of the unit ring in shared memory (after the x slabs)
  int pre = 1;           // ring slots issued before the dependency wait, the rest after x is staged
  // the compensation blocks' rscale loads (lab knob DDRT_RS_PRE): 0 the first kRsRegs rows per
  // thread into registers before the dependency wait; 1 all rows by cp.async into shared memory
  // before the wait (nothing in a register's load queue ahead of the selection's x loads); 2 none
  // before: all rows loaded where the first reduce needs them
  int rs_pre = 0;
  // the weight copies' L2 policy (env DDRT_W_EVICT, default 1): evict_first (the weights are read
  // once per token, so they should not push out what is read again: +6 % decode measured, the
  // mechanism not isolated) or evict_normal, a load's default
  bool evict_first = false;
  // env DDRT_TC_EARLY (default on; 0 off): the slots after a.pre are
  // issued right after the first batch of x loads, before x is staged (x's loads queue behind the
  // slots issued before the wait, ~96 KB per SM at 3 bits; issued only after the staging, the rest
  // of the ring leaves a gap in the SM's stream: +6 % decode on llama3-8b 3-bit, +12 % on
  // smollm2-135m when closed; 4-bit: +4.6 % decode on llama3-8b, although two of its GEMVs
  // measured 4 % slower in the lab)
  bool early_issue = false;
  // (taken out after their H100 A/B, eighth session, as slower than this order: DDRT_TC_XFIRST, a
  // block barrier after the first x loads, -0.7 / -1.1 % on llama3-8b / smollm2-135m;
  // DDRT_TC_PRE_SPLIT, half the first slot before the wait, -3.5 / -1.7 %; DDRT_TC_PRE_L2, the
  // first unit prefetched into L2 before the wait and every copy after x's loads, -5.5 / -10.6 %;
  // the seventh session's DDRT_TC_PACE, fewer warps issuing before x is staged, -5 %)
  L2Hint next;  // TcIo::next
  // > 0 (lab knob DDRT_COMP_PAIR): the compensation blocks in two halves, blockIdx [0, h) and
  // [comp_pair, comp_pair + n_tb - h), h = ceil(n_tb / 2), comp_pair >= h; at the SM count the
  // first wave puts block i and block i + n_sm on one SM, so the compensation shares no SM with a
  // base block (the stamps' slot 7 shows where the blocks ran); 0: the grid's first n_tb blocks
  int comp_pair = 0;
  // a stage of a chain launch past the first (gemv_tc_chain_kernel): the dependency wait is the
  // grid barrier on *bar reaching bar_target instead of griddepcontrol.wait
  unsigned* bar = nullptr;
  unsigned bar_target = 0;
};

// Chained launches (DDRT_TC_CHAIN): consecutive fused GEMVs without compensation (o, gate/up, down,
// the next layer's q/k/v) as stages of one persistent launch. Between stages a grid barrier takes
// the place of the kernel boundary: every block arrives when all its warps are done with the
// stage (a block barrier, then a fence and one atomic), and leaves when the count reaches
// (stage) x (grid); so a stage reads what the previous one wrote (x += ..., tiles finished by
// other blocks) only after all of it is written and fenced. Before arriving, a warp already issues
// its first weight copies of the next stage into its own ring (every stage of a chain has the same
// ring offset, so no warp's ring overlaps another warp's or the x slabs that the barrier protects).
// The grid is the resident capacity (all blocks run at once, as a single launch's), so the barrier
// cannot wait on a block that has not started. (The widest stage's grid instead, DDRT_TC_CHAIN=2
// in the eighth session, was slower still: -14 % llama3-8b, -12.5 % smollm2-135m on an H100.) What a stage reads that an earlier stage of the
// same launch wrote (x, up, the accumulated y, x^2 for the norm) it loads through L2 (ld.global.cg),
// never by __ldg, whose non-coherent path may still hold the line from before the write.
constexpr int kTcChainMax = 4;
struct TcChainArgs {
  TcArgs s[kTcChainMax];
  int n = 0;
  unsigned* bar = nullptr;  // [2]: arrivals, blocks done (the last block out resets both)
};

// (The chain kernel runs its stages on the cp.async ring whatever TcArgs::bulk says: the codes are
// there either way.)

// The dependency wait of a stage: griddepcontrol.wait (a launch's first stage) or the chain's grid
// barrier.
__device__ __forceinline__ void tc_wait(const TcArgs& a) {
  if (a.bar == nullptr) {
    grid_dep_wait();
    return;
  }
  __syncthreads();  // every warp of this block is done with the previous stage
  if (threadIdx.x == 0) {
    DDRT_COUNTER_FENCE(a.fence_sc);
    atomicAdd(a.bar, 1u);
    while (*reinterpret_cast<volatile unsigned*>(a.bar) < a.bar_target) __nanosleep(32);
    DDRT_COUNTER_FENCE(a.fence_sc);
  }
  __syncthreads();
}

// The block's index in role order: compensation blocks [0, n_tb), then base blocks (see comp_pair).
__device__ __forceinline__ int tc_block(const TcArgs& a) {
  const int b = (int)blockIdx.x;
  if (a.comp_pair <= 0) return b;
  const int h = (a.n_tb + 1) / 2, S = a.comp_pair;
  if (b < h) return b;
  if (b >= S && b < S + a.n_tb - h) return h + (b - S);
  return a.n_tb + (b < S ? b - h : b - a.n_tb);
}

// A value instead of a time in a block's stamp slot (slot 7: the SM; 8: what a base block holds).
__device__ __forceinline__ void tc_stamp_value(const TcArgs& a, int slot, unsigned long long v) {
  if (a.stamps != nullptr && threadIdx.x == 0) a.stamps[tc_block(a) * kTcStamps + slot] = v;
}

// Timeline stamps of a block (thread 0), kTcStamps (kernels.cuh) per block.
__device__ __forceinline__ void tc_stamp(const TcArgs& a, int slot) {
  if (a.stamps != nullptr && threadIdx.x == 0) {
    const unsigned long long t = globaltimer_now();
    a.stamps[tc_block(a) * kTcStamps + slot] = t;
    if (slot == 0) tc_stamp_value(a, 7, sm_id() + 1);
  }
}

// A timeline stamp taken once `dep` is known (the asm reads it, so the clock is read after its
// producer: a load's use, not its issue), thread 0.
__device__ __forceinline__ void tc_stamp_after(const TcArgs& a, int slot, int dep) {
  if (a.stamps != nullptr && threadIdx.x == 0) {
    unsigned long long t;
#ifdef DDRT_CUDA_EMU
    t = ::ddrt_emu::globaltimer_ns() + (dep & 0);
#else
    asm volatile("add.s32 %1, %1, 0;\n\tmov.u64 %0, %%globaltimer;" : "=l"(t), "+r"(dep));
#endif
    a.stamps[tc_block(a) * kTcStamps + slot] = t;
  }
}

// x[i0 .. i0 + 3] of a deferred attention's output (AttnDefer), act of its splits active: the
// merge attn_kernel's merging block computes, per head: M = the splits' largest max, w_k =
// exp(m_k - M), L = sum of l_k w_k, x = (sum over k ascending of w_k o_k) / L. Called by a whole
// warp (lanes: 32 consecutive float4, i0 = 4 (f + lane), head-aligned): GL = head_dim / 4 lanes
// per head, lane k of a head's lanes takes splits k, k + GL, ..., then butterflies over them. At
// GL = 32 (head_dim 128) every step is the attention's own (lane k: splits k and k + 32, the same
// butterflies, the same fmaf): the same bits as the attention's merge. Lanes past d_in (a head's
// lanes all alike) take part in the shuffles and return zeros. Not inlined: inside the fused
// kernel its registers made every instance spill (ptxas: 400-600 bytes); as a call it has its own
// frame (no spills in it) and the kernel keeps its own allocation.
#ifdef DDRT_CUDA_EMU
#define DDRT_TC_NOINLINE  // (the emulator's host compiler: no such CUDA keyword, no register file)
#else
#define DDRT_TC_NOINLINE __noinline__
#endif
template <int GL>
__device__ DDRT_TC_NOINLINE float4 tc_attn_x4(const AttnDefer& d, int act, int64_t i0, int64_t d_in, int lane) {
  constexpr int R = kAttnMaxSplits / GL, hd = 4 * GL;
  const bool valid = i0 < d_in;
  const int my_act = valid ? act : 0;
  const int64_t h = valid ? i0 / hd : 0, j = valid ? i0 - h * hd : 0;
  const int gl = lane & (GL - 1), base = lane - gl;
  const float* const pml = d.pml + h * d.splits * 2;
  const float4* const src = reinterpret_cast<const float4*>(d.po + h * d.splits * hd + j);
  // the splits' outputs in batches of KB (registers: at 8 the 3-bit instances spilled 8-48 bytes
  // around the call), the first batch's loads beside the (max, sum) loads
  constexpr int KB = 4;
  float4 v[KB];
  auto load_outs = [&](int k0) {
#pragma unroll
    for (int i = 0; i < KB; ++i) v[i] = k0 + i < my_act ? __ldcg(src + (int64_t)(k0 + i) * GL) : make_float4(0, 0, 0, 0);
  };
  load_outs(0);
  float mk[R], w[R], M = -INFINITY;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int k = gl + GL * r;
    mk[r] = k < my_act ? __ldcg(pml + 2 * k) : -INFINITY;
    M = fmaxf(M, mk[r]);
  }
#pragma unroll
  for (int off = GL / 2; off > 0; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
  float Ls = 0;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int k = gl + GL * r;
    w[r] = 0.0f;
    if (k < my_act) {
      w[r] = expf(mk[r] - M);
      Ls = fmaf(__ldcg(pml + 2 * k + 1), w[r], Ls);
    }
  }
#pragma unroll
  for (int off = GL / 2; off > 0; off >>= 1) Ls += __shfl_xor_sync(0xffffffffu, Ls, off);
  float4 acc = make_float4(0, 0, 0, 0);
#pragma unroll 1
  for (int k0 = 0; k0 < act; k0 += KB) {  // (act is the same in every lane: so are the shuffles)
    if (k0 > 0) load_outs(k0);
#pragma unroll
    for (int i = 0; i < KB; ++i) {
      const int k = k0 + i, r = k / GL;
      float wr = w[0];
#pragma unroll
      for (int rr = 1; rr < R; ++rr) wr = r == rr ? w[rr] : wr;
      const float wk = __shfl_sync(0xffffffffu, wr, base + (k & (GL - 1)));
      if (k < my_act)
        acc = make_float4(fmaf(v[i].x, wk, acc.x), fmaf(v[i].y, wk, acc.y), fmaf(v[i].z, wk, acc.z), fmaf(v[i].w, wk, acc.w));
    }
  }
  if (!valid) return make_float4(0, 0, 0, 0);
  return make_float4(acc.x / Ls, acc.y / Ls, acc.z / Ls, acc.w / Ls);
}

// Input channel i as the math sees it.
// r: the rmsnorm factor (a.nw only)
__device__ __forceinline__ float tc_x(const TcArgs& a, int64_t i, float r) {
  return a.up ? swiglu1(a.x[i], a.up[i]) : a.nw ? a.x[i] * r * a.nw[i] : a.x[i];
}

// sum(x^2) over x[0, d_in) for the rmsnorm input (a.nw; loads through L2, see the chain), in two steps so that the base role can
// have the loads in flight while it stages its slabs: begin() issues this thread's first kSq float4
// loads (all of x up to d_in 4096 at 256 threads), warp_sum() adds them and the rest, in a fixed
// order, and returns the warp's sum in every lane.
struct TcSumSq {
  static constexpr int kSq = 4;
  float4 v[kSq];
  bool vec = false;  // float4 path (d_in % 4 == 0, x 16-byte aligned)
  __device__ __forceinline__ void begin(const TcArgs& a) {
    if (a.ssq_in) {  // the producer's tile sums: thread i's are i, i + kTcThreads, ... (in .x)
#pragma unroll
      for (int q = 0; q < kSq; ++q) {
        const int64_t i = threadIdx.x + (int64_t)q * kTcThreads;
        v[q] = make_float4(i < a.ssq_n ? __ldcg(a.ssq_in + i) : 0.0f, 0.0f, 0.0f, 0.0f);
      }
      return;
    }
    vec = a.W.d_in % 4 == 0 && (reinterpret_cast<uintptr_t>(a.x) & 15) == 0;
#pragma unroll
    for (int q = 0; q < kSq; ++q) {
      const int64_t i = threadIdx.x + (int64_t)q * kTcThreads;
      v[q] = vec && i < a.W.d_in / 4 ? __ldcg(reinterpret_cast<const float4*>(a.x) + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
  }
  __device__ __forceinline__ float warp_sum(const TcArgs& a) const {
    const int64_t n = a.W.d_in;
    float s = 0.0f;
    if (a.ssq_in) {
#pragma unroll
      for (int q = 0; q < kSq; ++q) s += v[q].x;
      for (int64_t i = threadIdx.x + (int64_t)kSq * kTcThreads; i < a.ssq_n; i += kTcThreads) s += __ldcg(a.ssq_in + i);
    } else if (vec) {
#pragma unroll
      for (int q = 0; q < kSq; ++q) s = fmaf(v[q].x, v[q].x, fmaf(v[q].y, v[q].y, fmaf(v[q].z, v[q].z, fmaf(v[q].w, v[q].w, s))));
      for (int64_t i = threadIdx.x + (int64_t)kSq * kTcThreads; i < n / 4; i += kTcThreads) {
        const float4 u = __ldcg(reinterpret_cast<const float4*>(a.x) + i);
        s = fmaf(u.x, u.x, fmaf(u.y, u.y, fmaf(u.z, u.z, fmaf(u.w, u.w, s))));
      }
    } else {
      for (int64_t i = threadIdx.x; i < n; i += kTcThreads) {
        const float u = __ldcg(a.x + i);
        s = fmaf(u, u, s);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s;
  }
};
// r from the warps' sums in red[kTcWarps] (after a barrier), the same order in every thread
__device__ __forceinline__ float tc_rms_factor(const TcArgs& a, const float* red) {
  float s = 0.0f;
#pragma unroll
  for (int w = 0; w < kTcWarps; ++w) s += red[w];
  return 1.0f / sqrtf(s / (float)a.W.d_in + a.eps);
}

// The member owning group row `row` (boundaries are multiples of 32: a tile or a 32-output vector
// lies in one member).
__device__ __forceinline__ int tc_member(const TcArgs& a, int64_t row) {
  return (row >= a.row0[1] ? 1 : 0) + (row >= a.row0[2] ? 1 : 0);
}

// Contributors of a tile: its units, and the compensation (one, or one per chunk: chunk-major).
__device__ __forceinline__ int64_t tc_tile_contributors(const TcArgs& a) {
  return a.n_units + (a.n_tb > 0 ? (a.comp_ch > 0 ? a.comp_ch : 1) : 0);
}

// Shared memory bytes of the base role for n_slabs slabs of x: the B fragments (per slab, quad,
// lane t, limb: the words of both chunks), the per-group sums of x and the groups' max |x|, and
// the warps' sums of x^2 (rmsnorm input).
inline size_t tc_base_smem(int64_t n_slabs, int bits, int group) {
  const int64_t per = (int64_t)step_codes(bits) / 4 * 96 + 8 * step_codes(bits) / group * 8;
  return (size_t)(n_slabs * per + 4 * kTcWarps + 15) / 16 * 16;
}
// The base role's unit ring (after the x slabs).
// bulk: and its slots' mbarriers after it (8 bytes each).
// slots: per warp (0: tc_ring_slots; the block-local merge has 1).
inline size_t tc_ring_bytes(int bits, int group, bool bulk = false, int slots = 0) {
  return (size_t)kTcWarps * (slots > 0 ? slots : tc_ring_slots(bits, group)) *
         (tc_slot_vecs(bits, group) * 16 + (bulk ? 8 : 0));
}
// shared ints of the selection (tc_select_chunk_approx): bucket counts, two scans' warp sums, and
// the warps' bucket counts (sel_fast)
constexpr int kTcSelInts = kBuckets + 2 * kTcWarps + kTcWarps * 32;
inline size_t tc_comp_smem(int64_t kmax, int64_t seg_vecs) {
  const int64_t nvs = seg_vecs < kTcThreads ? seg_vecs : kTcThreads;
  return (size_t)kmax * 8 + (size_t)seg_vecs * 32 * 4 + (size_t)kTcThreads * 32 * 4 * (nvs > 0) +
         (kBuckets + kTcSelInts) * 4 + 64;
}

// TcArgs::swiglu_pairs: each lane's `tile` (< 0: none) is one whose 16 rows of y this warp has
// written, fenced before the call. A tile counts in on its pair's counter (tc_pair_at); the second
// of the pair (it sees 1) resets the counter and, after a fence, writes y[0] = swiglu1(y[0], y[1])
// over the pair's rows, with the formula and rounding of the swiglu kernel, reading both halves
// through L2 (one of them another warp's, seen by the fence before its count and the one here).
// Called by a whole warp.
__device__ __forceinline__ void tc_pair_count(const TcArgs& a, int64_t tile, int lane) {
  const int64_t np = a.n_tiles / 2;
  int64_t p = 0;
  bool second = false;
  if (tile >= 0) {
    p = tile < np ? tile : tile - np;
    int* c = a.cnt + tc_pair_at(a.n_tiles, p);
    second = atomicAdd(c, 1) == 1;
    if (second) *c = 0;
  }
  unsigned m = __ballot_sync(0xffffffffu, second);
  if (m) DDRT_COUNTER_FENCE(a.fence_sc);
  while (m) {
    const int l = __ffs(m) - 1;
    m &= m - 1;
    const int64_t row = __shfl_sync(0xffffffffu, p, l) * 16 + (lane & 15);
    if (lane < 16) a.y[0][row] = swiglu1(__ldcg(a.y[0] + row), __ldcg(a.y[1] + row));
  }
}

// The last contributor of a tile sums its slots (fixed order: k ascending, then the compensation)
// into y and resets the counter. Called by a whole warp for up to two tiles: lanes 0..15 take
// row lane of tile ta, lanes 16..31 of tile tb (tb < 0: none). Each lane issues its row's slot
// loads 16 at a time before adding any: a chain of one L2 round trip per slot made the blocks that
// finish tiles end ~10 us late, and the compensation blocks (often the last to arrive, finishing a
// whole segment) one round trip per tile.
// Local (TcArgs::local): the slots are the block's shared array lp ([local tile][k][16], li: this
// lane's tile's local index), no counter to reset; the sum and everything after it as above (so y
// is the same bit for bit), but gate/up pairs (ta a pair's gate tile, tb its up tile) are joined
// within the warp: no count, no fence, no L2 round trip.
template <bool Local = false>
__device__ __forceinline__ void tc_finish_tiles(const TcArgs& a, int64_t ta, int64_t tb, int64_t e_base, int lane,
                                                const float* lp = nullptr, int li = 0) {
  const int64_t tile = lane < 16 ? ta : tb;
  float sq = 0.0f;   // this lane's row's final value squared (ssq_out)
  float fin = 0.0f;  // and the value (Local gate/up pairs)
  if (tile >= 0) {
    const int r = lane & 15;
    const float* slots = Local ? lp + (int64_t)li * a.n_units * 16 + r : a.part + tile * a.n_units * 16 + r;
    // the row's old value (accumulate) loaded beside the first slots, not one round trip after the
    // sum: only this lane writes the row in this launch, so the value is the same either way
    const int64_t row = tile * 16 + r;
    const bool in = row < a.W.d_out;
    const int m = in ? tc_member(a, row) : 0;
    float* const yr = in ? a.y[m] + (row - a.row0[m]) : nullptr;
    const float yold = in && a.accumulate ? __ldcg(yr) : 0.0f;  // through L2: a chain's earlier stage may have written it
    // likewise the compensation's first term (segment-major: its only one)
    const float cfirst = in && a.n_tb > 0 ? __ldcg(a.cpart + row) : 0.0f;
    float s = 0.0f;
    for (int64_t j0 = 0; j0 < e_base; j0 += 16) {
      float v[16];
#pragma unroll
      for (int q = 0; q < 16; ++q)
        v[q] = j0 + q >= e_base ? 0.0f : Local ? slots[(j0 + q) * 16] : __ldcg(slots + (j0 + q) * 16);
#pragma unroll
      for (int q = 0; q < 16; ++q) s += v[q];
    }
    if (in) {
      if (a.n_tb > 0) {  // the compensation's terms (chunk-major: one per chunk, in chunk order),
        // loaded 16 at a time before adding, as the slots (one at a time, a chunk-major tile waited
        // a round trip per chunk: the likely cause of the H100 stamps' ~10 us between the median and
        // the last compensation block's end on 4096x14336; not yet measured after this change)
        const int64_t nc = a.comp_ch > 0 ? a.comp_ch : 1;
        for (int64_t c0 = 0; c0 < nc; c0 += 16) {
          float v[16];
#pragma unroll
          for (int q = 0; q < 16; ++q)
            v[q] = c0 + q >= nc ? 0.0f : c0 + q == 0 ? cfirst : __ldcg(a.cpart + (c0 + q) * a.W.d_out + row);
#pragma unroll
          for (int q = 0; q < 16; ++q) s += v[q];
        }
      }
      const float yv = a.accumulate ? yold + s : s;
      *yr = yv;
      sq = yv * yv;
      fin = yv;
    }
    if (r == 0 && !Local) a.cnt[tc_cnt_at(tile)] = 0;
  }
  if (a.ssq_out) {  // each half-warp's tile: its rows' squares, summed in a fixed butterfly
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffffu, sq, o);
    if ((lane & 15) == 0 && tile >= 0) a.ssq_out[tile] = sq;
  }
  if (Local && a.swiglu_pairs) {  // lanes 16-31 hold the up rows of lanes 0-15's gate rows
    const float up = __shfl_xor_sync(0xffffffffu, fin, 16);
    if (lane < 16 && ta >= 0 && ta * 16 + lane < a.W.d_out) a.y[0][ta * 16 + lane] = swiglu1(fin, up);
  } else if (a.swiglu_pairs) {  // the rows above, then each tile's pair count (lanes 0 and 1: ta, tb)
    DDRT_COUNTER_FENCE(a.fence_sc);
    __syncwarp();
    tc_pair_count(a, lane == 0 ? ta : lane == 1 ? tb : -1, lane);
  }
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
// boundary bucket's members in ascending index order; written ascending to out[0 .. k_c) (the
// chunk's slots: sel + c * k_full, or a block's own; -1 in unused slots). s: shared ints,
// kTcSelInts.
// a.sel_fast (lab knob DDRT_SEL_FAST=1): the same set in the same order with three block barriers
// instead of five: each warp counts its buckets from six ballots of the bucket's bits (lane i: bucket
// i) instead of match.any and shared atomics on zeroed counters, and one block scan of two packed
// 16-bit counts (members below the boundary bucket, members in it) places every chosen channel at
// below + min(in, rest) instead of a scan of the boundary ranks and a second of the chosen. H100
// (thirteenth session): bitwise the same, and no shorter (the selection's ~3 us on an SM shared with
// a base block is not its barriers or atomics); decode +0.7 % in one and a half rounds. Off.
__device__ __forceinline__ void tc_select_chunk_approx(const TcArgs& a, int64_t c, const float* floors,
                                                       int32_t* out, int* s, float rn, float* xs_out = nullptr,
                                                       bool use_pre = false, float4 pre_x = {}, float4 pre_nw = {}) {
  const int tid = threadIdx.x, lane = tid & 31;
  const int64_t c0 = c * kChunk, d_in = a.W.d_in;
  const int len = (int)(d_in - c0 < kChunk ? d_in - c0 : kChunk);
  const int kc = chunk_k(a.p.call.k_chunk, len);
  const int warp = tid >> 5;
  const bool fast = a.sel_fast;
  int* cnt = s;                    // [kBuckets]
  int* wsum = s + kBuckets;        // [2][kTcWarps]
  int* wcnt = wsum + 2 * kTcWarps;  // [kTcWarps][32] (fast)
  if (!fast) {
    if (tid < kBuckets) cnt[tid] = 0;
    __syncthreads();
  }
  // the 4 x loads first, all in flight (beside the match below, one L2 round trip each in turn)
  float xv[4];
  if (use_pre) {  // (sel_reuse) channels c0 + 4 tid + e as tc_x computes them: (x * r) * nw
    const float px[4] = {pre_x.x, pre_x.y, pre_x.z, pre_x.w}, pw[4] = {pre_nw.x, pre_nw.y, pre_nw.z, pre_nw.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) xv[e] = 4 * tid + e < len ? px[e] * rn * pw[e] : 0.0f;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) xv[e] = 4 * tid + e < len ? tc_x(a, c0 + 4 * tid + e, rn) : 0.0f;
  }
  int b[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int i = 4 * tid + e;
    b[e] = i < len ? tc_bucket(floors, fabsf(xv[e])) : kBuckets;
    // the timeline (compensation blocks' slot 8): thread 0's x values loaded and bucketed, the last
    // chunk's that the block selects (the rest of the selection follows)
    if (e == 3) tc_stamp_after(a, 8, b[0] + b[1] + b[2] + b[3]);
    if (fast) continue;
    // one shared atomic per distinct bucket of the warp (not per channel: they would collide)
    const unsigned peers = __match_any_sync(0xffffffffu, b[e]);
    if (b[e] < kBuckets && lane == __ffs(peers) - 1) atomicAdd(cnt + b[e], __popc(peers));
  }
  static_assert(kBuckets == 32, "one bucket per lane");
  int incl;
  if (fast) {  // lane i: the warp's members of bucket i (b in [0, 32]: six bits; 32, none, has bit 5)
    int mine = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      unsigned eq = ~__ballot_sync(0xffffffffu, (b[e] >> 5) & 1);  // lane < 32: bit 5 clear
#pragma unroll
      for (int k = 0; k < 5; ++k) {
        const unsigned m = __ballot_sync(0xffffffffu, (b[e] >> k) & 1);
        eq &= (lane >> k) & 1 ? m : ~m;
      }
      mine += __popc(eq);
    }
    wcnt[warp * 32 + lane] = mine;
    __syncthreads();
    incl = 0;
#pragma unroll
    for (int w = 0; w < kTcWarps; ++w) incl += wcnt[w * 32 + lane];
  } else {
    __syncthreads();
    incl = cnt[lane];
  }
  // whole buckets from the top while they fit: a warp scan of the 32 counts (each warp its own)
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int u = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += u;
  }
  const int full = __popc(__ballot_sync(0xffffffffu, incl <= kc));  // counts >= 0: a prefix of lanes
  const int taken = full > 0 ? __shfl_sync(0xffffffffu, incl, full - 1) : 0;
  const int rest = full < kBuckets ? kc - taken : 0;
  int n_sel;
  if (fast) {  // members below the boundary (low 16 bits) and in it (high), before this thread's
    int lt = 0, eq = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) lt += b[e] < full, eq += b[e] == full && full < kBuckets;
    int tot;
    const int before = tc_block_scan(lt | eq << 16, wsum, &tot);
    n_sel = (tot & 0xffff) + min(tot >> 16, rest);
    lt = before & 0xffff, eq = before >> 16;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const bool bnd = b[e] == full && full < kBuckets;
      if (b[e] < full || (bnd && eq < rest)) {  // chosen: at the chosen members before it
        const int at = lt + min(eq, rest);
        if (xs_out) xs_out[at] = xv[e];
        out[at] = (int32_t)(c0 + 4 * tid + e);
      }
      lt += b[e] < full;
      eq += bnd;
    }
  } else {
    int n_b = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) n_b += b[e] == full && full < kBuckets;
    int unused;
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
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (chosen[e]) {
        if (xs_out) xs_out[at] = xv[e];
        out[at++] = (int32_t)(c0 + 4 * tid + e);
      }
  }
  for (int j = n_sel + tid; j < kc; j += kTcThreads) {
    out[j] = -1;
    if (xs_out) xs_out[j] = 0.0f;
  }
  __syncthreads();  // cnt, wsum and wcnt are reused by the next chunk
}

__device__ __forceinline__ void tc_comp_block(const TcArgs& a, uint8_t* smem) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t d_out = a.W.d_out, nv_all = (d_out + 31) / 32;
  // segment-major (comp_ch == 0): block b owns output segment b and gathers every chunk's
  // selection; chunk-major: block b owns segment b / comp_cb and chunks b % comp_cb + i comp_cb
  const bool chunked = a.comp_ch > 0;
  const int64_t blk = tc_block(a);
  const int64_t cb = chunked ? blk % a.comp_cb : 0, seg = chunked ? blk / a.comp_cb : blk;
  // selection slots in shared memory: all of them, or one chunk's (at most k_full)
  const int64_t kmax = chunked ? a.p.k_full : a.p.kmax;
  const int64_t v0 = seg * a.seg_vecs;
  const int64_t nvs = v0 >= nv_all ? 0 : (nv_all - v0 < a.seg_vecs ? nv_all - v0 : a.seg_vecs);
  int32_t* s_sel = reinterpret_cast<int32_t*>(smem);                    // [kmax]
  float* s_xs = reinterpret_cast<float*>(s_sel + kmax);                 // [kmax]
  float* s_rs = s_xs + kmax;                                            // [seg_vecs * 32] rscale
  float* red = s_rs + a.seg_vecs * 32;                                  // [kTcThreads * 32]
  float* floors = red + kTcThreads * 32;                    // [kBuckets]
  int* sel_smem = reinterpret_cast<int*>(floors + kBuckets);  // [kTcSelInts]
  // rscale of the segment (host memory): independent of the previous kernel, so its loads are
  // issued before the wait, into registers (the first kRsRegs rows per thread), and stored to
  // shared memory only after the selection: waiting for them here put a ~2-4 us zero-copy round
  // trip before the selection
  constexpr int kRsRegs = 4;
  const int rs_pre = a.rs_pre;
  auto rs_src = [&](int64_t o) {  // row v0 * 32 + o < d_out of the segment: its rscale (host memory)
    const int64_t row = v0 * 32 + o;
    const int m = tc_member(a, row);
    return a.R[m].rscale + (row - a.row0[m]);
  };
  auto rs_at = [&](int64_t o) { return v0 * 32 + o < d_out ? *rs_src(o) : 0.0f; };
  float rsr[kRsRegs];
#pragma unroll
  for (int q = 0; q < kRsRegs; ++q) {
    const int64_t o = tid + (int64_t)q * kTcThreads;
    rsr[q] = rs_pre == 0 && o < nvs * 32 ? rs_at(o) : 0.0f;
  }
  if (rs_pre == 1) {  // rows past d_out are never read (the reduce writes only o < d_out)
    for (int64_t o = tid; o < nvs * 32 && v0 * 32 + o < d_out; o += kTcThreads) cp_async4(s_rs + o, rs_src(o));
    cp_commit();
  }
  if (tid < kBuckets) floors[tid] = a.p.floors[tid];
  const int64_t n_ch = (a.W.d_in + kChunk - 1) / kChunk;
  // sel_reuse: this block's own chunk (c = blk) from the norm's x registers; its norm weights now,
  // before the wait (they do not come from the previous kernel)
  bool reuse = a.sel_reuse && blk < TcSumSq::kSq && blk < n_ch && a.W.d_in % 4 == 0 &&
               (reinterpret_cast<uintptr_t>(a.nw) & 15) == 0;
  float4 pre_x = make_float4(0.0f, 0.0f, 0.0f, 0.0f), pre_nw = pre_x;
  if (reuse && blk * kTcThreads + tid < a.W.d_in / 4)
    pre_nw = __ldg(reinterpret_cast<const float4*>(a.nw) + blk * kTcThreads + tid);
  grid_dep_wait();
  tc_stamp(a, 1);
  float r = 1.0f;  // the rmsnorm factor of x (a.nw)
  if (a.nw) {
    TcSumSq sq;
    sq.begin(a);
    reuse = reuse && sq.vec;  // (block-uniform)
#pragma unroll
    for (int q = 0; q < TcSumSq::kSq; ++q)
      if (reuse && q == blk) pre_x = sq.v[q];
    const float ws = sq.warp_sum(a);
    float* wred = reinterpret_cast<float*>(sel_smem);  // free until the selection
    __syncthreads();
    if (lane == 0) wred[warp] = ws;
    __syncthreads();
    r = tc_rms_factor(a, wred);
    __syncthreads();
  }
  if (a.select_here && !chunked) {
    // Each chunk is selected once, by block c % n_tb (all its threads), into the global sel; then
    // every compensation block waits until all chunks are published (done == n_ch). The blocks
    // are the grid's first and the grid fits the GPU at once, so they are all resident: the
    // wait ends. The last block past the wait (its ticket on the second counter, taken after the
    // selection is read back, n_tb - 1) resets both counters after its gather, off the chain.
    int* done = a.cnt + tc_cnt_at(a.n_tiles);
    __syncthreads();  // floors
    int mine = 0;
    for (int64_t c = blk; c < n_ch; c += a.n_tb) {
      tc_select_chunk_approx(a, c, floors, a.sel + c * a.p.k_full, sel_smem, r,
                             a.sel_xs ? a.sel_xs + c * a.p.k_full : nullptr, reuse && c == blk, pre_x, pre_nw);
      ++mine;
    }
    tc_stamp(a, 5);
    DDRT_COUNTER_FENCE(a.fence_sc);
    __syncthreads();
    if (tid == 0 && mine > 0) atomicAdd(done, mine);
    if (tid == 0) {
      while (*reinterpret_cast<volatile int*>(done) < (int)n_ch) __nanosleep(64);
      DDRT_COUNTER_FENCE(a.fence_sc);
    }
    __syncthreads();
  }
  tc_stamp(a, 2);
  // rscale into shared memory: only the reduce of the first gather needs it, so the stores (which
  // wait for the zero-copy loads issued before the dependency wait) come there, not before the
  // selection (H100 stamps, chunk-major, 4096x6144: storing them first put the selection at 7.5
  // us instead of ~4); rows past the registers' are read there too
  bool rs_filled = false;
  auto fill_rs = [&] {
    if (rs_filled) return;
    rs_filled = true;
    if (rs_pre == 1) {  // this thread's copies landed; the barrier after the caller's stores shows all
      cp_wait<0>();
      return;
    }
    if (rs_pre == 0)
#pragma unroll
      for (int q = 0; q < kRsRegs; ++q)
        if (tid + (int64_t)q * kTcThreads < nvs * 32) s_rs[tid + q * kTcThreads] = rsr[q];
    for (int64_t o = tid + (rs_pre == 0 ? (int64_t)kRsRegs * kTcThreads : 0); o < nvs * 32; o += kTcThreads)
      s_rs[o] = rs_at(o);
  };
  // the slots [0, kn) of a selection into s_sel and their x values into s_xs, from the global sel
  // (from; null: this block's own selection, already in s_sel and s_xs)
  auto take_sel = [&](const int32_t* from, int64_t kn) {
    if (from)
      for (int64_t s = tid; s < kn; s += kTcThreads) {
        // with sel_xs the selecting block's x value (0 in unused slots) loads beside j, not after it
        const int32_t j = __ldcg(from + s);
        const float xj = a.sel_xs ? __ldcg(a.sel_xs + s) : 0.0f;
        s_sel[s] = j;
        s_xs[s] = a.sel_xs ? xj : j >= 0 ? tc_x(a, j, r) : 0.0f;
      }
    __syncthreads();
    tc_stamp(a, 6);
  };
  // the gather of the slots [0, kn) for the segment's outputs, reduced, scaled by rscale, into
  // cpart row crow. thread -> (vector v, row split rs); vectors beyond 256 loop
  const int64_t nve = nvs == 0 ? 1 : nvs < kTcThreads ? nvs : kTcThreads;  // (nvs == 0: no gather)
  const int n_rs = (int)(kTcThreads / nve), rs = (int)(tid / nve);
  const int64_t vt = tid % nve;
  auto gather = [&](int64_t kn, int64_t crow) {
    for (int64_t vb = 0; vb < nvs; vb += nve) {
      const int64_t v = vb + vt;
      float acc[32];
#pragma unroll
      for (int e = 0; e < 32; ++e) acc[e] = 0.0f;
      if (rs < n_rs && v < nvs) {
        const int m = tc_member(a, 32 * (v0 + v));
        const uint8_t* col = a.R[m].rows + 16 * (v0 + v - a.row0[m] / 32);
        const int64_t pitch = a.R[m].row_pitch;
        for (int64_t s0 = rs; s0 < kn; s0 += 4 * (int64_t)n_rs) {
          int32_t j[4];
          uint4 rv[4];
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            const int64_t s = s0 + (int64_t)u * n_rs;
            j[u] = s < kn ? s_sel[s] : -1;
            if (j[u] >= 0) rv[u] = *reinterpret_cast<const uint4*>(col + (int64_t)j[u] * pitch);
          }
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            if (j[u] < 0) continue;
            const float xj = s_xs[s0 + (int64_t)u * n_rs];
            const uint32_t w[4] = {rv[u].x, rv[u].y, rv[u].z, rv[u].w};
#pragma unroll
            for (int e = 0; e < 32; ++e) {
              // output 32 v + e: byte e / 2 of the vector, nibble e % 2; nibble - 8 exactly via 2^23
              const uint32_t nib = (w[e / 8] >> (4 * (e % 8))) & 15u;
              acc[e] = fmaf(__uint_as_float(nib | 0x4B000000u) - 8388616.0f, xj, acc[e]);
            }
          }
        }
      }
      fill_rs();  // (read after the barrier below)
      // reduce the row splits (fixed order) and write the scaled slice. Thread t = rs * nve + vt
      // stores its 32 sums at red[t * 32 + (e + t) % 32]: rotated, so that a warp's 32 stores of one
      // e hit 32 banks (unrotated, each store was a 32-way conflict: ~4 us per block). Each output
      // is then summed by P lanes (strided row splits, then a shuffle tree: a fixed order).
      if (rs < n_rs) {
        const int t = rs * (int)nve + (int)vt;
#pragma unroll
        for (int e = 0; e < 32; ++e) red[t * 32 + ((e + t) & 31)] = acc[e];
      }
      __syncthreads();
      const int64_t nv_here = nvs - vb < nve ? nvs - vb : nve, n_o = nv_here * 32;
      int P = 1;  // lanes per output
      while (P < 32 && 2 * P * n_o <= kTcThreads) P *= 2;
      for (int64_t k0 = 0; k0 < n_o; k0 += kTcThreads / P) {
        const int64_t k = k0 + tid / P;
        const int p = tid % P, kv = (int)(k / 32), ke = (int)(k % 32);
        float s = 0.0f;
        if (k < n_o)
          for (int q = p; q < n_rs; q += P) {
            const int t = q * (int)nve + kv;
            s += red[t * 32 + ((ke + t) & 31)];
          }
        for (int o = P / 2; o >= 1; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        const int64_t o = (v0 + vb) * 32 + k;
        if (p == 0 && k < n_o && o < d_out) a.cpart[crow * d_out + o] = s_rs[vb * 32 + k] * s;
      }
      __syncthreads();
    }
  };
  // The selections this block gathers: segment-major, all chunks' at once (the global sel, read
  // back after the exchange above); chunk-major, each of its chunks (b % comp_cb + i comp_cb) in
  // turn: selected here (approx; into shared memory) or read from the pre-kernel's selection,
  // gathered as whole-row slices of the segment, its term written to cpart row c. In chunk-major
  // no block waits for another's selection. (One loop, one gather site: a second inlined copy of
  // the gather made the kernel spill.)
  int ticket = -1;  // this block's arrival past the selection wait (select_here, segment-major)
  int n_mine = 0;   // the terms this block contributes to each tile of its segment
  const int64_t n_iter = chunked ? (a.comp_ch - cb + a.comp_cb - 1) / a.comp_cb : 1;
  for (int64_t it = 0; it < n_iter; ++it) {
    const int64_t c = chunked ? cb + it * a.comp_cb : 0;
    int64_t kn = kmax;
    const int32_t* from = a.sel;
    if (chunked) {
      const int64_t c0 = c * kChunk, len = a.W.d_in - c0 < kChunk ? a.W.d_in - c0 : kChunk;
      kn = chunk_k(a.p.call.k_chunk, (int)len);
      from = a.select_here ? nullptr : a.sel + c * a.p.k_full;
      if (a.select_here) {
        __syncthreads();  // floors; the previous chunk's s_sel reads
        tc_select_chunk_approx(a, c, floors, s_sel, sel_smem, r, s_xs);  // x values with it: no re-read
        tc_stamp(a, 5);
      }
    }
    take_sel(from, kn);
    if (!chunked && a.select_here && tid == 0) ticket = atomicAdd(a.cnt + tc_cnt_at(a.n_tiles) + 1, 1);
    if (nvs > 0) gather(kn, c);  // no outputs: nothing to gather or count in (segments past d_out)
    ++n_mine;
  }
  if (ticket == a.n_tb - 1) {  // every block has read the selection: reset for the next launch
    int* done = a.cnt + tc_cnt_at(a.n_tiles);
    done[0] = 0;
    done[1] = 0;
  }
  if (nvs == 0) return;
  DDRT_COUNTER_FENCE(a.fence_sc);
  __syncthreads();
  tc_stamp(a, 3);
  // count in on every tile of the segment: the atomics a thread per tile (in parallel), then the
  // tiles this block completed are finished by its warps, 16 rows (lanes) at a time
  int* s_fin = reinterpret_cast<int*>(red);  // [tiles of the segment] + count (red is free now)
  int* s_nfin = s_fin + 2 * a.seg_vecs;
  if (tid == 0) *s_nfin = 0;
  __syncthreads();
  const int64_t t0 = v0 * 2, t1 = (v0 + nvs) * 2 < a.n_tiles ? (v0 + nvs) * 2 : a.n_tiles;
  const int64_t e_total = tc_tile_contributors(a);
  for (int64_t tile = t0 + tid; tile < t1; tile += kTcThreads)
    if (atomicAdd(a.cnt + tc_cnt_at(tile), n_mine) + n_mine == e_total)  // the last contributions
      s_fin[atomicAdd(s_nfin, 1)] = (int)(tile - t0);
  __syncthreads();
  const int n_fin = *s_nfin;
  if (n_fin > 0) DDRT_COUNTER_FENCE(a.fence_sc);
  for (int f = 2 * warp; f < n_fin; f += 2 * kTcWarps)
    tc_finish_tiles(a, t0 + s_fin[f], f + 1 < n_fin ? t0 + s_fin[f + 1] : -1, a.n_units, lane);
}

// ---- base role ---------------------------------------------------------------------------------

// Rows g and g + 8 of tile tl as member rows (clamped to the group's last row); returns the member.
__device__ __forceinline__ int tc_rows_of(const TcArgs& a, uint32_t tl, int g, int64_t& ra, int64_t& rb) {
  const int64_t r0 = (int64_t)tl * 16, d_out = a.W.d_out;
  ra = r0 + g < d_out ? r0 + g : d_out - 1;
  rb = r0 + g + 8 < d_out ? r0 + g + 8 : d_out - 1;
  const int m = tc_member(a, r0 < d_out ? r0 : d_out - 1);
  ra -= a.row0[m];
  rb -= a.row0[m];
  return m;
}

// Lane `lane`'s pieces of unit (tile tl, column k) in the order of its ring slot: the codes of rows
// g and g + 8 (chunk c, row h, vector q at slot vector ((c * 2 + h) * V + q) * 32 + lane; zeros past
// the last chunk), then the 16 rows' (scale, min) words from the unit's first slab's groups (rows
// clamped like the codes). put(word, src, bytes, code, ok) moves `bytes` (16 or 4) from src (zeros
// where !ok) to 32-bit word `word` of the slot. The one definition of a slot's contents: the
// cp.async ring copies these pieces, tc_pack_kernel writes them as the unit images the bulk ring
// copies whole.
template <int B, int G, class Put>
__device__ __forceinline__ void tc_unit_pieces(const TcArgs& a, uint32_t tl, uint32_t k, int lane, Put&& put) {
  constexpr int V = step_vecs(B), UC = tc_unit_chunks(B), NG = tc_slab_groups(B, G), NU = tc_unit_groups(B, G),
                SW = 16 * NU, UV = UC * 2 * V * 32;
  const DevLinear& W = a.W;
  const int g = lane >> 2, t = lane & 3;
  const int64_t n_chunks = 2 * mma_slabs(W.d_in, B);
  int64_t ra, rb;
  const int m = tc_rows_of(a, tl, g, ra, rb);
  // without codes (the weights as unit images alone): the image's word wd is the slot's word wd
  const uint32_t* img = a.codes[m] ? nullptr
                                   : reinterpret_cast<const uint32_t*>(a.units[m] + (((int64_t)tl - a.row0[m] / 16) * a.n_units + k) *
                                                                                       tc_slot_vecs(B, G));
  const uint4* wa = img ? nullptr : a.codes[m] + ra * W.row_vecs;
  const uint4* wb = img ? nullptr : a.codes[m] + rb * W.row_vecs;
#pragma unroll
  for (int c = 0; c < UC; ++c) {
    const int64_t ci = (int64_t)k * UC + c;
    const bool ok = ci < n_chunks;
    const int64_t off = ok ? (ci >> 3) * 32 * V + 4 * (ci & 7) + t : 0;
#pragma unroll
    for (int q = 0; q < V; ++q) {
      const int64_t da = (((c * 2) * V + q) * 32 + lane) * 4, db = (((c * 2 + 1) * V + q) * 32 + lane) * 4;
      put(da, img ? static_cast<const void*>(img + da) : wa + off + 32 * q, 16, true, img || ok);
      put(db, img ? static_cast<const void*>(img + db) : wb + off + 32 * q, 16, true, img || ok);
    }
  }
  const int64_t r0 = (int64_t)tl * 16, g0 = (int64_t)k * UC / 2 * NG;
  auto srow = [&](int64_t r) {  // member row r0 + r, clamped, at group g0
    return a.sm[m] + ((r0 + r < W.d_out ? r0 + r : W.d_out - 1) - a.row0[m]) * W.n_groups + g0;
  };
  if (NU % 4 == 0) {
#pragma unroll
    for (int p = lane; p < SW / 4; p += 32)
      put(UV * 4 + 4 * p, img ? static_cast<const void*>(img + UV * 4 + 4 * p) : srow(p / (NU / 4)) + 4 * (p % (NU / 4)), 16,
          false, true);
  } else if (lane < SW) {
    put(UV * 4 + lane, img ? static_cast<const void*>(img + UV * 4 + lane) : srow(lane / NU) + lane % NU, 4, false, true);
  }
}

// The unit images of one linear for the bulk ring (TcArgs::bulk): unit (tile, k) at
// units + (tile * n_units + k) * tc_slot_vecs, its ring slot's contents (tc_unit_pieces). a: the
// linear alone (one member); one warp per unit; the slot's unused tail words stay as they were
// (the caller zeroes the buffer).
template <int B, int G>
__global__ void __launch_bounds__(kTcThreads) tc_pack_kernel(const __grid_constant__ TcArgs a, uint4* units) {
  const int lane = threadIdx.x & 31;
  const int64_t u = (int64_t)blockIdx.x * kTcWarps + (threadIdx.x >> 5);
  if (u >= a.n_tiles * a.n_units) return;
  const int64_t tl = u / a.n_units, k = u % a.n_units;
  uint32_t* dw = reinterpret_cast<uint32_t*>(units + u * tc_slot_vecs(B, G));
  tc_unit_pieces<B, G>(a, (uint32_t)tl, (uint32_t)k, lane, [&](int64_t wd, const void* src, int bytes, bool, bool ok) {
    if (bytes == 4)
      dw[wd] = *static_cast<const uint32_t*>(src);
    else
      *reinterpret_cast<uint4*>(dw + wd) = ok ? *static_cast<const uint4*>(src) : make_uint4(0u, 0u, 0u, 0u);
  });
}

// The block-local merge's tiles of base block w0 / kTcWarps (TcArgs::local): n_loc of them, local
// tile li being tc_local_tile(a, tile0, n_loc, li). Plain: tiles [tile0, tile0 + n_loc). Gate/up
// pairs (swiglu_pairs): tile0 is the block's first pair, and it owns pairs [tile0, tile0 + n_loc /
// 2) whole: local tiles [0, n_loc / 2) are their gate tiles, [n_loc / 2, n_loc) their up tiles.
__device__ __forceinline__ void tc_local_tiles(const TcArgs& a, int64_t w0, int64_t& tile0, int& n_loc) {
  const int64_t b = w0 / kTcWarps;
  if (a.swiglu_pairs) {
    const int64_t per = a.local / 2, np = a.n_tiles / 2;
    tile0 = b * per;
    n_loc = 2 * (int)(np - tile0 < per ? np - tile0 : per);
    return;
  }
  tile0 = b * a.local;
  n_loc = (int)(a.n_tiles - tile0 < a.local ? a.n_tiles - tile0 : a.local);
}
__device__ __forceinline__ int64_t tc_local_tile(const TcArgs& a, int64_t tile0, int n_loc, int li) {
  if (!a.swiglu_pairs) return tile0 + li;
  const int h = n_loc / 2;
  return li < h ? tile0 + li : a.n_tiles / 2 + tile0 + (li - h);
}
// Local: the block-local merge's instantiation (a.local > 0; with Bulk only): its code is compiled
// out of the others, whose register allocation it would otherwise change (ptxas: the bulk
// instances spilled 40-116 bytes with it as a runtime branch).
template <int B, int G, bool Bulk = false, bool Local = false>
__device__ __forceinline__ void tc_base_block(const TcArgs& a, uint4* smem) {
  constexpr int C = step_codes(B), V = step_vecs(B), NW = 4 * V, NQ = C / 4, QG = G / 32, NG = NQ / QG;
  constexpr int UC = tc_unit_chunks(B);
  const DevLinear& W = a.W;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int64_t w0 = (int64_t)(tc_block(a) - a.n_tb) * kTcWarps, w = w0 + warp;
  const int64_t U = a.n_tiles * a.n_units;
  // the block-local merge (a.local): this block's tiles [tile0, tile0 + n_loc), warp j's unit j
  // (tile tile0 + j / n_units, k = j % n_units: its sums go to lp[j], tc_local_tiles)
  const int LT = Local ? a.local : 0;
  int64_t tile0 = 0;
  int n_loc = 0;
  if (LT) tc_local_tiles(a, w0, tile0, n_loc);
  const bool active = LT ? warp < n_loc * a.n_units : w < a.wb;
  const int64_t u_begin = active && !LT ? tc_range_begin(w, U, a.wb_div) : 0;
  const int64_t u_end = active ? (LT ? 1 : tc_range_begin(w + 1, U, a.wb_div)) : 0;
  const int64_t n_slabs = mma_slabs(W.d_in, B), n_chunks = 2 * n_slabs;
  int64_t s0 = 0, s1 = n_slabs;  // the x slabs this block stages (local: all)
  if (!LT) tc_block_slabs(w0, w0 + kTcWarps, a.nt_div, U, a.wb_div, UC, n_slabs, &s0, &s1);
  if (a.stamps != nullptr) {  // the lab: (slabs staged + 1) << 32 | units of the block's warps
    const int64_t w1 = w0 + kTcWarps < a.wb ? w0 + kTcWarps : a.wb;
    const int64_t units = LT ? n_loc * a.n_units
                          : w0 < w1 ? tc_range_begin(w1, U, a.wb_div) - tc_range_begin(w0, U, a.wb_div) : 0;
    tc_stamp_value(a, 8, (unsigned long long)(s1 - s0 + 1) << 32 | (unsigned long long)units);
  }

  // a unit as (tile, column k), k-major: cursors advance one unit at a time (no 64-bit divisions
  // in the loop)
  const uint32_t n_tiles = (uint32_t)a.n_tiles;
  auto advance = [&](uint32_t& tl, uint32_t& k) {
    if (++tl == n_tiles) {
      tl = 0;
      ++k;
    }
  };
  auto rows_of = [&](uint32_t tl, int64_t& ra, int64_t& rb) { return tc_rows_of(a, tl, g, ra, rb); };
  // The unit pipeline: a ring of R slots per warp in shared memory (nothing held in registers while
  // in flight): a unit's codes, and its rows' (scale, min) words, so that the math never waits on a
  // global load. Filled one of two ways:
  //  - cp.async (default): lane L copies and reads back only its own 16-byte code pieces (slot
  //    position ((c * 2 + h) * V + q) * 32 + L; tc_unit_pieces); the scale words are shared by the
  //    warp's lanes, so each slot is read after a __syncwarp that follows the copy's wait (its
  //    words are visible to all lanes) and refilled after one that follows its compute (all lanes
  //    done).
  //  - bulk (a.bulk, the instantiation with Bulk: the weights also as unit images, tc_pack_kernel): lane 0 copies the unit's
  //    whole slot image with one cp.async.bulk counted on the slot's mbarrier; every lane waits on
  //    the barrier's phase for that use (use j of a slot: parity j & 1), and the refill comes after
  //    the same __syncwarp as above, behind a proxy fence (the slot's reads were the generic
  //    proxy's, the copy is the async proxy's). The weights then stay off the load/store unit's
  //    queue, where x's loads and the attention's wait behind cp.async copies (queue_lab).
  constexpr int R = tc_ring_slots(B, G), UV = UC * 2 * V * 32, NU = tc_unit_groups(B, G), SLOT = tc_slot_vecs(B, G);
  static_assert(NG == tc_slab_groups(B, G), "groups per slab");
  const int RW = LT ? 1 : R;  // the slots a warp has (local: one, its one unit's)
  uint4* ring = smem + a.ring_off + (int64_t)warp * RW * SLOT;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + a.ring_off + (int64_t)kTcWarps * RW * SLOT) + warp * RW;
  constexpr bool bulk = Bulk;  // a.bulk, as the kernel's instantiation (the default's code stays as it was)
  const uint64_t pol = l2_policy(a.evict_first);
  auto issue = [&](uint32_t tl, uint32_t k, int slot) {
    if constexpr (bulk) {
      if (lane == 0) {
        const int m = tc_member(a, (int64_t)tl * 16);  // a tile lies in one member (tc_member)
        const uint4* src = a.units[m] + (((int64_t)tl - a.row0[m] / 16) * a.n_units + k) * SLOT;
        fence_proxy_async_smem();
        mbar_expect_tx(bars + slot, SLOT * 16);
        bulk_g2s(ring + slot * SLOT, src, SLOT * 16, bars + slot, pol);
      }
      return;
    }
    uint32_t* dw = reinterpret_cast<uint32_t*>(ring + slot * SLOT);
    tc_unit_pieces<B, G>(a, tl, k, lane, [&](int64_t wd, const void* src, int bytes, bool code, bool ok) {
      if (bytes == 4)
        cp_async4(dw + wd, src);
      else if (code)
        cp_async16_pol(dw + wd, src, ok, pol);
      else
        cp_async16(dw + wd, src, ok);
    });
  };
  if constexpr (bulk) {  // the warp's barriers, before its first copy
    if (lane == 0) {
#pragma unroll
      for (int p = 0; p < R; ++p)
        if (p < RW) mbar_init(bars + p, 1);
      mbar_fence_init();
    }
    __syncwarp();
  }
  // ... and their end, once every lane of the warp is past its last wait on them (every copy issued
  // has landed): invalidated, as PTX asks before their bytes serve anything else (the next block on
  // this SM, of this launch or the next, may stage x or a ring slot there)
  auto end_bars = [&]() {
    if constexpr (bulk) {
      __syncwarp();
      if (lane == 0) {
#pragma unroll
        for (int p = 0; p < R; ++p)
          if (p < RW) mbar_inval(bars + p);
      }
    }
  };
  const int n_mine = (int)(u_end - u_begin);
  const int64_t k_begin0 = LT ? warp % a.n_units : tc_quot(u_begin, a.nt_div);
  uint32_t lt = (uint32_t)(LT ? tc_local_tile(a, tile0, n_loc, warp / (int)a.n_units) : u_begin - k_begin0 * a.n_tiles),
           lk = (uint32_t)k_begin0;  // issue cursor
  const uint32_t t_begin = lt, k_begin = lk;
  // Units 0 .. R - 1, one commit group each (empty past the last unit: the group count stays
  // uniform, so "all but the newest R - 1 groups done" always means "unit i has landed"), issued
  // before the dependency wait (the weights do not depend on the previous kernel; measured ~10 %
  // faster than issuing them after x is staged): a.pre of them (default 1; all were slower: 347
  // vs 356 tok/s llama3-8b 3-bit, the x loads queue behind them; none: 334; 4-bit, 3 slots: 1
  // 324, 2 320, 3 318), the others right after the first x loads (early_issue; without it once x
  // is staged), so that every slot is in flight before the first unit's math: most warps hold
  // only 1-4 units, a refill after the first unit would come too late to matter.
  const int pre = a.pre;
  const bool early = a.early_issue;
#pragma unroll
  for (int p = 0; p < R; ++p) {
    if (p >= pre) continue;
    if (p < n_mine) {
      issue(lt, lk, p);
      advance(lt, lk);
    }
    cp_commit();
  }

  tc_wait(a);  // x (and the scratch) belong to the previous kernels (or stage) until here
  tc_stamp(a, 1);

  // x slabs [s0, s1) -> int8 B fragments, group sums and the groups' max |x|, block-local, in one
  // pass: a group's float4 lie in one warp, whose shuffles give every lane the group's sum and max
  const int64_t ns = s1 - s0;
  uint32_t* xw = reinterpret_cast<uint32_t*>(smem);
  float* sx = reinterpret_cast<float*>(xw + ns * NQ * 24);  // [ns][NG] group sums
  float* amx = sx + ns * NG;                                 // [ns][NG] max |x| / kXq: X's scale
  const int64_t f4_lo = s0 * 2 * C, f4_hi = s1 * 2 * C;      // float4 slots of the staged slabs
  const bool x_al =
      ((reinterpret_cast<uintptr_t>(a.x) | reinterpret_cast<uintptr_t>(a.up) | reinterpret_cast<uintptr_t>(a.nw)) & 15) == 0;
  constexpr int XB = 4;
  // rmsnorm input (a.nw): the loads of this thread's first x^2 terms go out with the staging's
  // (right after the first batch of x loads where there is one before the rest of the ring: x's
  // staging need not wait for them) and are summed after it (r is needed only once a unit's result
  // is written)
  TcSumSq sq;
  if (a.nw && !early) sq.begin(a);
  // x and up of a chained stage past the first were written in this launch: loaded through L2
  const bool cg = a.bar != nullptr;
  auto load_in = [&](const float* p, int64_t i0) {
    if (cg) return x_al && i0 + 4 <= W.d_in ? load_x4<true, true>(p, i0, W.d_in) : load_x4<false, true>(p, i0, W.d_in);
    return x_al && i0 + 4 <= W.d_in ? load_x4<true>(p, i0, W.d_in) : load_x4<false>(p, i0, W.d_in);
  };
  // a deferred attention's output (a.attn): its active splits, merged here where more than one
  int attn_act = 0;
  if (a.attn.po) {
    const int64_t n = (a.attn.pos_dev ? *a.attn.pos_dev : a.attn.pos0) + 1;
    const int64_t L = attn_split_len(n, a.attn.splits);
    attn_act = (int)((n + L - 1) / L);
  }
  auto load_batch = [&](int64_t f0, float4 (&xv)[XB]) {
    // (block-uniform; the tests below are warp-uniform: slabs of whole warps). Groups of 128 only
    // (tc_attn_defer_supports): in the g64 and g32 instances of 4 bits the call made the kernel spill
    if constexpr (G == 128) {
      if (attn_act > 1) {
#pragma unroll
        for (int q = 0; q < XB; ++q) {
          const int64_t f = f0 + (int64_t)q * kTcThreads, i0 = 4 * f;
          xv[q] = make_float4(0, 0, 0, 0);
          if (f - lane < f4_hi && i0 - 4 * lane < W.d_in)
            xv[q] = a.attn.head_dim == 128 ? tc_attn_x4<32>(a.attn, attn_act, i0, W.d_in, lane)
                                           : tc_attn_x4<16>(a.attn, attn_act, i0, W.d_in, lane);
        }
        return;
      }
    }
#pragma unroll
    for (int q = 0; q < XB; ++q) {
      const int64_t i0 = 4 * (f0 + (int64_t)q * kTcThreads);
      xv[q] = load_in(a.x, i0);
    }
    if (a.nw) {  // x * nw
#pragma unroll
      for (int q = 0; q < XB; ++q) {
        const int64_t i0 = 4 * (f0 + (int64_t)q * kTcThreads);
        const float4 u = x_al && i0 + 4 <= W.d_in ? load_x4<true>(a.nw, i0, W.d_in) : load_x4<false>(a.nw, i0, W.d_in);
        xv[q] = make_float4(xv[q].x * u.x, xv[q].y * u.y, xv[q].z * u.z, xv[q].w * u.w);
      }
    }
    if (a.up) {
#pragma unroll
      for (int q = 0; q < XB; ++q) {
        const int64_t i0 = 4 * (f0 + (int64_t)q * kTcThreads);
        const float4 u = load_in(a.up, i0);
        xv[q] = make_float4(swiglu1(xv[q].x, u.x), swiglu1(xv[q].y, u.y), swiglu1(xv[q].z, u.z), swiglu1(xv[q].w, u.w));
      }
    }
  };
  auto stage_batch = [&](int64_t f0, const float4 (&xv)[XB]) {
#pragma unroll
    for (int q = 0; q < XB; ++q) {
      const int64_t f = f0 + (int64_t)q * kTcThreads;
      if (f >= f4_hi) break;  // uniform across the warp (slabs are whole multiples of 32 slots)
      const int64_t i0 = 4 * f, sl = i0 / (8 * C) - s0, r = i0 % (8 * C), gi = (i0 - s0 * 8 * C) / G;
      float s = (xv[q].x + xv[q].y) + (xv[q].z + xv[q].w);
      float am = fmaxf(fmaxf(fabsf(xv[q].x), fabsf(xv[q].y)), fmaxf(fabsf(xv[q].z), fabsf(xv[q].w)));
#pragma unroll
      for (int o = 1; o < G / 4; o <<= 1) {  // the group's lanes (G / 4 of the warp)
        s += __shfl_xor_sync(0xffffffffu, s, o);
        am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, o));
      }
      if ((lane & (G / 4 - 1)) == 0) {
        sx[gi] = s;
        amx[gi] = am * (1.0f / kXq);
      }
      const int j = (int)(r / 32), b = (int)(r % 32) / 4;  // quad j, lane-in-octet b = 4 h + t
      const float inv = am > 0.0f ? kXq / am : 0.0f;
      const float xq[4] = {xv[q].x, xv[q].y, xv[q].z, xv[q].w};
      uint32_t lw[3] = {0u, 0u, 0u};  // hi, mid, lo
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const XLimbs l = x_limbs(xq[e], inv);
        lw[0] |= (uint32_t)(l.hi & 255) << (8 * e);
        lw[1] |= (uint32_t)(l.mid & 255) << (8 * e);
        lw[2] |= (uint32_t)(l.lo & 255) << (8 * e);
      }
      uint32_t* ent = xw + (((sl * NQ + j) * 4 + (b & 3)) * 3) * 2 + (b >> 2);  // [.][t][limb][h]
#pragma unroll
      for (int l = 0; l < 3; ++l) ent[2 * l] = lw[l];
    }
  };
  // ring slots pre .. R - 1 (every lane of the warp issues its pieces)
  auto issue_rest = [&]() {
#pragma unroll
    for (int p = 0; p < R; ++p) {
      if (p < pre) continue;
      if (p < n_mine) {
        issue(lt, lk, p);
        advance(lt, lk);
      }
      cp_commit();
    }
  };
  int64_t xf = f4_lo + threadIdx.x;
  // early: the first batch's x loads, then the slots, then its staging
  if (early) {
    float4 xv[XB];
    const bool in = xf < f4_hi;
    if (in) load_batch(xf, xv);
    if (a.nw) sq.begin(a);  // behind x's loads, ahead of the ring slots issued below
    issue_rest();
    if (in) stage_batch(xf, xv);
    xf += XB * kTcThreads;
  }
  for (; xf < f4_hi; xf += XB * kTcThreads) {
    float4 xv[XB];
    load_batch(xf, xv);
    stage_batch(xf, xv);
  }
  if (!early) issue_rest();
  float* ssq_red = amx + ns * NG;  // [kTcWarps] the warps' sums of x^2 (a.nw)
  if (a.nw) {
    const float ss = sq.warp_sum(a);
    if (lane == 0) ssq_red[warp] = ss;
  }
  __syncthreads();
  tc_stamp(a, 2);
  if (!active && !LT) {  // (local: every warp meets the merge's barrier below)
    end_bars();  // (no copy issued: no unit)
    return;
  }
  const float rn = a.nw ? tc_rms_factor(a, ssq_red) : 1.0f;  // the rmsnorm factor of x

  const uint2* xs2 = reinterpret_cast<const uint2*>(xw);
  // Unit results go to y directly when a unit is a whole tile and nothing else adds to it;
  // otherwise to the unit's slot (tile, k) of part, counted in after the warp's last unit
  // (with swiglu_pairs too: its tiles count in below; never in the block-local merge, whose gate/up
  // pairs of one unit per tile go through its shared array too)
  const bool direct = a.n_units == 1 && a.n_tb == 0 && !LT;
  // B columns: lane g holds column g: 0, 1 class 0's hi and mid limbs, 2, 3 class 1's, 4, 5 the lo
  // limbs of class 0 and 1 (6, 7 stay 0). Lane t's two D columns 2t, 2t + 1 then join exactly in
  // int32 as v = D[2t] cm + D[2t + 1] (cm = 256 for (hi, mid), 2^s1 for the two lo limbs, s1 class
  // 1's shift: |v| < 2^30 at 4 bits), so a group costs one IMAD and one I2FP per row, and the
  // lane's factor cf (256 / 2^shift, or 2^-s1) is applied once per unit.
  const int my_cls = g < 4 ? g / 2 : g < 6 ? g - 4 : -1, my_limb = g < 4 ? g % 2 : 2;
  constexpr int S1 = 1 << class_shift<B>(1);
  const int cm = t < 2 ? 256 : S1;
  const float cf = t == 0 ? 256.0f : t == 1 ? 256.0f / S1 : t == 2 ? 1.0f / S1 : 0.0f;
  constexpr int P = UC / 2;  // slabs per unit
  auto compute = [&](uint32_t tl, uint32_t k, const uint4* slot) {
    const __half2* ss = reinterpret_cast<const __half2*>(slot + UV);
    float acc[2] = {0.0f, 0.0f};   // rows g, g + 8: lane t's columns, weighed
    float accm[2] = {0.0f, 0.0f};  // min term
    int64_t ra, rb;
    const int m = rows_of(tl, ra, rb);
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t ci = (int64_t)k * UC + 2 * p, slab = ci >> 1;
      if (ci >= n_chunks) continue;
      uint32_t w[2][2][NW];  // [chunk of the slab][row g, g + 8][word]
#pragma unroll
      for (int c = 0; c < 2; ++c)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int q = 0; q < V; ++q) {
            const uint4 u = slot[(((2 * p + c) * 2 + h) * V + q) * 32 + lane];
            w[c][h][4 * q] = u.x; w[c][h][4 * q + 1] = u.y; w[c][h][4 * q + 2] = u.z; w[c][h][4 * q + 3] = u.w;
          }
      const uint2* xe = xs2 + ((slab - s0) * NQ * 4 + t) * 3 + my_limb;
      const int64_t su = (slab - (int64_t)k * UC / 2) * NG;  // the slab's groups within the unit's
      const __half2* sga = ss + g * NU + su;                 // the slot's scale words: rows g, g + 8
      const __half2* sgb = ss + (g + 8) * NU + su;
      const float* sxs = sx + (slab - s0) * NG;
      const float* sam = amx + (slab - s0) * NG;
#pragma unroll
      for (int gg = 0; gg < NG; ++gg) {
        int d[4] = {0, 0, 0, 0};
#pragma unroll
        for (int q = 0; q < QG; ++q) {
          const int j = gg * QG + q;
          uint2 bv = make_uint2(0u, 0u);
          if (my_cls == quad_class<B>(j)) bv = xe[j * 12];
          mma_i8(d, quad_i8<B>(w[0][0], j), quad_i8<B>(w[0][1], j), quad_i8<B>(w[1][0], j), quad_i8<B>(w[1][1], j),
                 bv.x, bv.y);
        }
        const float2 fa = __half22float2(sga[gg]), fb = __half22float2(sgb[gg]);
        const float sq = sam[gg];  // the group's x scale, max |x| / kXq
        acc[0] = fmaf(fa.x * sq, (float)(d[0] * cm + d[1]), acc[0]);
        acc[1] = fmaf(fb.x * sq, (float)(d[2] * cm + d[3]), acc[1]);
        accm[0] = fmaf(fa.y, sxs[gg], accm[0]);
        accm[1] = fmaf(fb.y, sxs[gg], accm[1]);
      }
    }
    // the 4 lanes of a row hold its columns: weigh them (cf) and sum them
    float ya = acc[0] * cf, yb = acc[1] * cf;
    ya += __shfl_xor_sync(0xffffffffu, ya, 1);
    yb += __shfl_xor_sync(0xffffffffu, yb, 1);
    ya += __shfl_xor_sync(0xffffffffu, ya, 2);
    yb += __shfl_xor_sync(0xffffffffu, yb, 2);
    ya = (ya + accm[0]) * rn;
    yb = (yb + accm[1]) * rn;
    if (direct && a.ssq_out) {  // the whole tile is this unit's: its rows' squares to ssq_out (lanes t == 0)
      const int64_t r = (int64_t)tl * 16 + g;
      float q = 0.0f;
      if (t == 0 && r < W.d_out) {
        const float v = a.accumulate ? __ldcg(a.y[m] + ra) + ya : ya;
        a.y[m][ra] = v;
        q = v * v;
      }
      if (t == 0 && r + 8 < W.d_out) {
        const float v = a.accumulate ? __ldcg(a.y[m] + rb) + yb : yb;
        a.y[m][rb] = v;
        q += v * v;
      }
#pragma unroll
      for (int o = 4; o < 32; o <<= 1) q += __shfl_xor_sync(0xffffffffu, q, o);  // over g
      if (lane == 0) a.ssq_out[tl] = q;
    } else if (t == 0) {
      const int64_t r = (int64_t)tl * 16 + g;
      if (direct) {  // ra, rb: unclamped where r, r + 8 < d_out
        if (r < W.d_out) a.y[m][ra] = a.accumulate ? __ldcg(a.y[m] + ra) + ya : ya;  // L2: see the chain
        if (r + 8 < W.d_out) a.y[m][rb] = a.accumulate ? __ldcg(a.y[m] + rb) + yb : yb;
      } else {
        // local: this warp's unit is the block's unit `warp` (nothing else held across the loop)
        float* slot = LT ? reinterpret_cast<float*>(smem + a.local_off) + warp * 16
                            : a.part + ((int64_t)tl * a.n_units + k) * 16;
        slot[g] = ya;
        slot[g + 8] = yb;
      }
    }
  };
  uint32_t ct = t_begin, ck = k_begin;  // compute cursor
  for (int i = 0; i < n_mine; ++i) {
    if constexpr (bulk)
      mbar_wait(bars + i % R, (uint32_t)(i / R) & 1u);  // unit i's slot image has landed
    else
      cp_wait<R - 1>();  // unit i's group has landed (this lane's copies)
    __syncwarp();      // every lane's copies of unit i visible
    compute(ct, ck, ring + (i % R) * SLOT);  // read in place
    advance(ct, ck);
    __syncwarp();  // every lane done with the slot: refill it with unit i + R
    if (i + R < n_mine) {
      issue(lt, lk, i % R);
      advance(lt, lk);
    }
    cp_commit();
  }
  end_bars();
  // the next linears' weights into L2 (TcArgs::next), once this warp's units are done: they fill
  // the HBM time the launch's tail leaves idle (other warps' last units, the merge, the
  // compensation) instead of competing with its stream (pieces dealt warp-first)
  if (a.next.n) l2_prefetch(a.next, (int64_t)lane * a.wb + w, a.wb * 32);
  // every unit's sums are in lp: the block's first warps finish its tiles, two each (the Local
  // instance with a.local 0, DDRT_TC_ONE, runs the k-major merge below)
  if (Local && LT) {
    __syncthreads();
    int64_t t0;
    int nl;
    tc_local_tiles(a, w0, t0, nl);  // (recomputed: not held in registers across the loop)
    const float* lp = reinterpret_cast<const float*>(smem + a.local_off);
    if (a.swiglu_pairs) {  // warp p: pair p, its gate tile in lanes 0-15, its up tile in 16-31
      const int h = nl / 2;
      if (warp < h)
        tc_finish_tiles<true>(a, tc_local_tile(a, t0, nl, warp), tc_local_tile(a, t0, nl, h + warp), a.n_units, lane,
                              lp, lane < 16 ? warp : h + warp);
    } else if (2 * warp < nl) {
      tc_finish_tiles<true>(a, t0 + 2 * warp, 2 * warp + 1 < nl ? t0 + 2 * warp + 1 : -1, a.n_units, lane, lp,
                            lane < 16 ? 2 * warp : 2 * warp + 1);
    }
    return;
  }
  if (direct) {
    if (a.swiglu_pairs) {  // every unit wrote its whole tile: count the tiles in on their pairs
      DDRT_COUNTER_FENCE(a.fence_sc);
      __syncwarp();
      for (int i0 = 0; i0 < n_mine; i0 += 32) {
        const int64_t u = u_begin + i0 + lane;  // n_units == 1: unit u is tile u
        tc_pair_count(a, i0 + lane < n_mine ? u : -1, lane);
      }
    }
    return;
  }
  // Count the warp's units in on their tiles: one fence for all its slot writes, then one atomic
  // per unit (lane-parallel); a unit whose add completes its tile's count has its tile finished
  // by this warp.
  const int64_t e_total = tc_tile_contributors(a);
  DDRT_COUNTER_FENCE(a.fence_sc);
  __syncwarp();
  for (int i0 = 0; i0 < n_mine; i0 += 32) {
    int64_t tile = 0;
    bool last = false;
    if (i0 + lane < n_mine) {
      const int64_t u = u_begin + i0 + lane;
      tile = u - tc_quot(u, a.nt_div) * a.n_tiles;
      last = atomicAdd(a.cnt + tc_cnt_at(tile), 1) == e_total - 1;
    }
    unsigned fin = __ballot_sync(0xffffffffu, last);
    if (fin) DDRT_COUNTER_FENCE(a.fence_sc);
    while (fin) {
      const int l = __ffs(fin) - 1;
      fin &= fin - 1;
      const int l2 = fin ? __ffs(fin) - 1 : l;
      if (fin) fin &= fin - 1;
      const int64_t ta = __shfl_sync(0xffffffffu, tile, l), tb = __shfl_sync(0xffffffffu, tile, l2);
      tc_finish_tiles(a, ta, l2 != l ? tb : -1, a.n_units, lane);
    }
  }
}

// Bulk: the base role's ring on bulk copies (TcArgs::bulk; sm_90+: below it the instantiation
// compiles to a trap, never launched).
template <int B, int G, bool Bulk = false, bool Local = false>
__global__ void __launch_bounds__(kTcThreads, 2) gemv_tc_kernel(const __grid_constant__ TcArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  if constexpr (Bulk) {
    __trap();
  } else
#endif
  {
    // __grid_constant__: the roles read the arguments in place (a reference to a plain kernel
    // parameter would copy all of them to local memory)
    DDRT_DYN_SMEM(uint4, tc_smem);
    pdl_trigger();  // the next GEMV may start streaming its weights as this one's blocks finish
    tc_stamp(a, 0);
    if (tc_block(a) < a.n_tb)
      tc_comp_block(a, reinterpret_cast<uint8_t*>(tc_smem));
    else
      tc_base_block<B, G, Bulk, Local>(a, tc_smem);
    tc_stamp(a, 4);
  }
}

template <int B, int G>
__global__ void __launch_bounds__(kTcThreads, 2) gemv_tc_chain_kernel(const __grid_constant__ TcChainArgs c) {
  DDRT_DYN_SMEM(uint4, tc_smem);
  pdl_trigger();
  for (int s = 0; s < c.n; ++s) {
    tc_stamp(c.s[s], 0);
    tc_base_block<B, G>(c.s[s], tc_smem);
    tc_stamp(c.s[s], 4);
  }
  __syncthreads();
  if (threadIdx.x == 0 && atomicAdd(c.bar + 1, 1u) == gridDim.x - 1) {  // every block is past every barrier
    c.bar[0] = 0;
    c.bar[1] = 0;
  }
}

}  // namespace gpu
}  // namespace ddrt
