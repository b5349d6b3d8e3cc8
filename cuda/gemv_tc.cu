// decdec_rt CUDA backend: planning and dispatch of the fused tensor-core GEMV (gemv_tc.cuh).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "gemv_tc.cuh"

namespace ddrt {
namespace gpu {

template <int B, int G>
int tc_blocks_per_sm(size_t smem, bool bulk, bool local = false);
template <int B, int G>
cudaError_t tc_launch(const TcArgs& a, int grid, size_t smem, cudaStream_t st);
template <int B, int G>
cudaError_t tc_pack_launch(const TcArgs& a, uint4* units, cudaStream_t st);
template <int B, int G>
int tc_chain_blocks_per_sm(size_t smem);
template <int B, int G>
cudaError_t tc_chain_launch(const TcChainArgs& c, int grid, size_t smem, cudaStream_t st);

namespace {

// f(std::integral_constant<int, G>{}) for the group size's instantiation; dflt where there is none
template <class R, class F>
R by_group(int group, R dflt, F&& f) {
  switch (group) {
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 128: return f(std::integral_constant<int, 128>{});
  }
  return dflt;
}
template <int B>
int blocks_per_sm(int group, size_t smem, bool bulk, bool local = false) {
  return by_group(group, 0, [&](auto G) { return tc_blocks_per_sm<B, decltype(G)::value>(smem, bulk, local); });
}
template <int B>
cudaError_t launch(int group, const TcArgs& a, int grid, size_t smem, cudaStream_t st) {
  return by_group(group, cudaErrorInvalidValue, [&](auto G) { return tc_launch<B, decltype(G)::value>(a, grid, smem, st); });
}
template <int B>
int chain_blocks_per_sm(int group, size_t smem) {
  return by_group(group, 0, [&](auto G) { return tc_chain_blocks_per_sm<B, decltype(G)::value>(smem); });
}
template <int B>
cudaError_t chain_launch(int group, const TcChainArgs& c, int grid, size_t smem, cudaStream_t st) {
  return by_group(group, cudaErrorInvalidValue,
                  [&](auto G) { return tc_chain_launch<B, decltype(G)::value>(c, grid, smem, st); });
}

int g_tc_enabled = -1;  // -1: from the environment on first use
}  // namespace

void gemv_tc_enable(bool on) { g_tc_enabled = on ? 1 : 0; }
namespace {
unsigned long long* g_tc_stamps = nullptr;
unsigned long long* g_tc_stamps_end = nullptr;  // past the last region (null: no bound)
int64_t g_tc_stamp_stride = 0;
int64_t g_stamp_taken = 0;  // regions taken (stamp_regions_taken)
}
void gemv_tc_stamps(unsigned long long* stamps, int64_t stride, int64_t regions) {
  g_tc_stamps = stamps;
  g_tc_stamp_stride = stamps ? stride : 0;
  g_tc_stamps_end = stamps && regions > 0 ? stamps + regions * stride : nullptr;
}
bool gemv_tc_stamping() { return g_tc_stamps != nullptr && (!g_tc_stamps_end || g_tc_stamps < g_tc_stamps_end); }
int64_t stamp_regions_taken() { return g_stamp_taken; }
unsigned long long* stamp_region(int64_t blocks) {
  if (!gemv_tc_stamping()) return nullptr;
  unsigned long long* r = g_tc_stamps;
  g_tc_stamps += g_tc_stamp_stride;  // the next launch writes the next region
  ++g_stamp_taken;
  return g_tc_stamp_stride == 0 || blocks * kTcStamps <= g_tc_stamp_stride ? r : nullptr;
}
// DDRT_GEMV_TC=0: never the fused GEMV (the CUDA-core kernel and the separate DecDEC kernels)
bool gemv_tc_enabled() {
  if (g_tc_enabled < 0) g_tc_enabled = env_int("DDRT_GEMV_TC", 1) == 0 ? 0 : 1;
  return g_tc_enabled == 1;
}

bool gemv_tc_supports(const DevLinear& W) {
  return !is_lut(W.type) && (W.bits == 3 || W.bits == 4) && (W.group == 32 || W.group == 64 || W.group == 128);
}

namespace {
int g_tc_bulk = -1;
}
void gemv_tc_bulk_force(int mode) { g_tc_bulk = mode; }
bool gemv_tc_bulk_wanted() {
  // on by default where the device has bulk copies since its H100 A/B (BENCHMARKS 2026-12-06: decode
  // llama3-8b 3-bit +4.4 %, smollm2-135m -0.6 %); DDRT_TC_BULK=0 off (the codes, the cp.async ring)
  return (g_tc_bulk >= 0 ? g_tc_bulk == 1 : env_int("DDRT_TC_BULK", 1) == 1) && device_info().bulk;
}
size_t gemv_tc_units_bytes(const DevLinear& W) {
  if (!gemv_tc_supports(W)) return 0;
  return (size_t)((W.d_out + 15) / 16 * tc_tile_units(W.d_in, W.bits)) * tc_slot_vecs(W.bits, W.group) * 16;
}
cudaError_t gemv_tc_pack(const DevLinear& W, uint4* units, cudaStream_t st) {
  if (!gemv_tc_supports(W)) return cudaErrorInvalidValue;
  const cudaError_t z = cudaMemsetAsync(units, 0, gemv_tc_units_bytes(W), st);
  if (z != cudaSuccess) return z;
  TcArgs a;
  a.W = W;
  for (int m = 0; m < kTcMaxMembers; ++m) {
    a.row0[m] = m == 0 ? 0 : INT64_MAX;
    a.codes[m] = m == 0 ? W.codes : nullptr;
    a.sm[m] = m == 0 ? W.sm : nullptr;
  }
  a.n_tiles = (W.d_out + 15) / 16;
  a.n_units = tc_tile_units(W.d_in, W.bits);
  return by_group(W.group, cudaErrorInvalidValue, [&](auto G) {
    return W.bits == 3 ? tc_pack_launch<3, decltype(G)::value>(a, units, st)
                       : tc_pack_launch<4, decltype(G)::value>(a, units, st);
  });
}

int tc_default_n_tb(const DevLinear& W) {
  const int64_t nv = (W.d_out + 31) / 32;
  return (int)std::min<int64_t>(32, nv);
}

namespace {
// the compensation's off-by-default switches: forced (1 on, 0 off) or, at -1, the environment
int g_comp_chunks = -1, g_comp_xs = -1, g_sel_fast = -1, g_sel_reuse = -1;
bool forced_or_env(int forced, const char* env) { return forced >= 0 ? forced == 1 : env_int(env, 0) == 1; }
}  // namespace
void gemv_tc_comp_chunks_force(int mode) { g_comp_chunks = mode; }
bool gemv_tc_comp_chunks() { return forced_or_env(g_comp_chunks, "DDRT_COMP_CHUNKS"); }
void gemv_tc_comp_xs_force(int mode) { g_comp_xs = mode; }
// on by default since its H100 A/Bs (approx k_chunk 8, llama3-8b 3-bit): +2.2 % over two rounds
// (twenty-third session), +0.8 % over four (twenty-fourth; every round above the default's); the
// same y bit for bit (decdec_twins); env DDRT_COMP_XS=0 the twin
bool gemv_tc_comp_xs() { return g_comp_xs >= 0 ? g_comp_xs == 1 : env_int("DDRT_COMP_XS", 1) != 0; }
void gemv_tc_sel_fast_force(int mode) { g_sel_fast = mode; }
bool gemv_tc_sel_fast() { return forced_or_env(g_sel_fast, "DDRT_SEL_FAST"); }
void gemv_tc_sel_reuse_force(int mode) { g_sel_reuse = mode; }
namespace {
int g_local = -1, g_local_ext = -1, g_one = -1;
int64_t g_local_launches = 0;
}  // namespace
void gemv_tc_local_force(int mode) { g_local = mode; }
void gemv_tc_local_ext_force(int mode) { g_local_ext = mode; }
// (twenty-fifth session: the gate/up pairs joined in the block save the pair counters' fence,
// atomic and L2 reads; H100, twenty-sixth session, with DDRT_TC_LOCAL=2: smollm2-135m -11.3 % at
// 3 bits, +31.9 % at 4, where every fused launch is block-local)
bool gemv_tc_local_ext() { return forced_or_env(g_local_ext, "DDRT_TC_LOCAL_EXT"); }
// Off by default until racecheck is clean on it. Its H100 A/B (twenty-fourth session, two rounds
// each): mode 2 smollm2-135m +4.6 % at 3 bits, +14.0 % at 4 (its down projection, and q/k/v at 4
// bits); llama3-8b unchanged (no launch qualifies). Mode 1 also took llama3-8b's 3-bit q/k/v (192
// blocks, two on some SMs): -2.1 %. Correct on the GPU (test_cuda_ops gemv_local: bitwise the
// k-major merge's y; memcheck clean), but racecheck reports hazards in its launches alone (warp w's
// mbarrier init against warp w + 1's expect_tx; BENCHMARKS, twenty-fourth and twenty-sixth
// sessions), which the emulator's per-block barrier check does not reproduce. Since it became its
// own instantiation, mode 2 measured -11.6 % at 3 bits (twenty-sixth session).
int gemv_tc_local() { return g_local >= 0 ? g_local : env_int("DDRT_TC_LOCAL", 0); }
int64_t gemv_tc_local_launches() { return g_local_launches; }
void gemv_tc_one_force(int mode) { g_one = mode; }
bool gemv_tc_one() {
  static const bool one = env_int("DDRT_TC_ONE", 0) == 1;  // (read once: every launch asks)
  return g_one >= 0 ? g_one == 1 : one;
}
// on by default since its H100 A/B (fifteenth session: llama3-8b approx k_chunk 8 +1.1 % over two
// rounds; gate/up's selection ends ~1 us earlier); env DDRT_SEL_REUSE=0 the twin
bool gemv_tc_sel_reuse() { return g_sel_reuse >= 0 ? g_sel_reuse == 1 : env_int("DDRT_SEL_REUSE", 1) != 0; }

// 32-output vectors (16 bytes of a residual row) a compensation segment is a multiple of: 8 (one
// 128-byte line) by default; env DDRT_COMP_SEG_ALIGN=1 the unaligned split (the twin)
int64_t tc_seg_align() {
  static const int a = env_int("DDRT_COMP_SEG_ALIGN", 8);
  return a >= 1 ? a : 1;
}

TcPlan gemv_tc_plan(const DevLinear& W, int n_tb, int64_t kmax, bool chunk_major, int local, bool pairs) {
  TcPlan p;
  const DeviceInfo& dev = device_info();
  if (!gemv_tc_supports(W) || dev.n_sm == 0) return p;
  const int64_t nv = (W.d_out + 31) / 32;
  p.n_tiles = (W.d_out + 15) / 16;
  const int64_t uc = tc_unit_chunks(W.bits);
  p.n_units = tc_tile_units(W.d_in, W.bits);
  const int64_t n_ch = (W.d_in + kChunk - 1) / kChunk;
  const bool bulk = W.units != nullptr;
  // the block-local merge (TcArgs::local; on the bulk ring only, its one instantiation besides the
  // default's): kTcWarps / n_units whole tiles per block, one unit per
  // warp, all of x staged, one ring slot per warp, then the partial sums; only where every block
  // is resident at once (a second wave would start only as the first ends; local 2: at most one
  // block per SM) and a tile has more than one unit (one unit writes its tile directly already)
  // or the launch is a gate/up pair's (whole pairs per block: an even number of tiles)
  const int T = p.n_units >= 1 && p.n_units <= kTcWarps ? (int)(kTcWarps / p.n_units) : 0;
  if (local > 0 && bulk && n_tb == 0 && T > 0 &&
      (pairs ? T % 2 == 0 && p.n_tiles % 2 == 0 : p.n_units >= 2)) {
    const int64_t blocks = pairs ? (p.n_tiles / 2 + T / 2 - 1) / (T / 2) : (p.n_tiles + T - 1) / T;
    const int64_t ring_off = (int64_t)tc_base_smem(mma_slabs(W.d_in, W.bits), W.bits, W.group) / 16;
    const int64_t local_off = ring_off + (int64_t)tc_ring_bytes(W.bits, W.group, bulk, 1) / 16;
    const size_t smem = (size_t)(local_off * 16 + (int64_t)T * p.n_units * 16 * 4);
    const int per_sm = smem > (size_t)dev.max_smem ? 0
                       : W.bits == 3          ? blocks_per_sm<3>(W.group, smem, bulk, true)
                                              : blocks_per_sm<4>(W.group, smem, bulk, true);
    if (per_sm > 0 && blocks <= (int64_t)(local == 2 ? 1 : per_sm) * dev.n_sm) {
      p.local = T;
      p.grid = (int)blocks;
      p.resident = per_sm * dev.n_sm;
      p.wb = blocks * kTcWarps;  // (the next linears' L2 prefetch is dealt over every warp)
      p.ring_off = ring_off;
      p.local_off = local_off;
      p.local_pairs = pairs;
      p.smem = smem;
      p.ok = true;
      return p;
    }
  }
  // segment-major: the vectors per block for `blocks` blocks, rounded up to whole 128-byte lines of
  // a residual row (tc_seg_align): the zero-copy gather reads each selected row's slice of the
  // segment, and a slice that starts or ends inside a line costs a second PCIe request for it
  // (tools/lab/zc_lab.cu, H100: 4096-output rows, 64-byte slices over 32 blocks 38 GB/s, 128-byte
  // ones over 16 blocks 50; gate/up's 112-byte slices over 128 blocks 37, 128-byte ones over 112
  // blocks 52; the link streams at 51)
  const int64_t align = tc_seg_align();
  auto seg_of = [&](int64_t blocks) {
    const int64_t v = (nv + blocks - 1) / blocks;
    return std::min(nv, (v + align - 1) / align * align);
  };
  // chunk-major: n_tb blocks = comp_cb (chunks at a time: all of them where the blocks allow) x
  // segments of seg_vecs vectors (at least one segment)
  auto chunk_split = [&](int64_t blocks) {
    p.comp_cb = std::max<int64_t>(1, std::min<int64_t>(n_ch, blocks));
    int64_t segs = std::max<int64_t>(1, std::min<int64_t>(blocks / p.comp_cb, nv));
    segs = std::max(segs, (nv + 3999) / 4000);
    p.seg_vecs = (nv + segs - 1) / segs;
    segs = (nv + p.seg_vecs - 1) / p.seg_vecs;  // no segment without outputs
    return (int)(p.comp_cb * segs);
  };
  if (n_tb > 0 && chunk_major) {
    p.comp_ch = n_ch;
    n_tb = chunk_split(n_tb);
  } else if (n_tb > 0) {
    // a segment's tile list lives in the block's reduction buffer: at most 4000 vectors each
    n_tb = (int)std::min<int64_t>(std::max<int64_t>(n_tb, (nv + 3999) / 4000), nv);
    p.seg_vecs = seg_of(n_tb);
    n_tb = (int)((nv + p.seg_vecs - 1) / p.seg_vecs);  // no block without outputs
  }
  const int64_t n_slabs = mma_slabs(W.d_in, W.bits);
  const size_t comp_smem = n_tb > 0 ? tc_comp_smem(kmax, p.seg_vecs) : 0;
  // Base blocks stage only the x slabs their units span (tc_split.h), which depends on the grid,
  // which depends on the shared memory per block: start from a guess of 2 slabs and redo the
  // split with the widest block's need until the occupancy it allows holds it.
  const size_t ring = tc_ring_bytes(W.bits, W.group, bulk);
  size_t smem = std::max(tc_base_smem(std::min<int64_t>(n_slabs, 2), W.bits, W.group) + ring, comp_smem);
  int per_sm = 0;
  for (int round = 0; round < 4; ++round) {
    if (smem > (size_t)dev.max_smem) return p;
    per_sm = W.bits == 3 ? blocks_per_sm<3>(W.group, smem, bulk) : blocks_per_sm<4>(W.group, smem, bulk);
    if (per_sm <= 0) return p;
    // lab knob DDRT_TC_BLOCKS_PER_SM=N: at most N blocks per SM (a grid below the resident capacity
    // leaves room for the next kernel's blocks, launched early by PDL, to start streaming beside it)
    static const int cap = env_int("DDRT_TC_BLOCKS_PER_SM", 0);
    if (cap > 0) per_sm = std::min(per_sm, cap);
    p.grid = dev.n_sm * per_sm;
    p.resident = p.grid;
    int tb = std::min(n_tb, p.grid / 4);
    if (p.comp_ch > 0) {  // chunk-major: fewer segments, then fewer chunks at a time
      if (tb > 0 && tb < n_tb) tb = chunk_split(tb);
      p.n_tb = tb;
    } else {
      p.seg_vecs = tb > 0 && tb * p.seg_vecs < nv ? seg_of(tb) : p.seg_vecs;  // wider segments
      p.n_tb = tb > 0 ? (int)((nv + p.seg_vecs - 1) / p.seg_vecs) : 0;
    }
    const int64_t U = p.n_tiles * p.n_units;
    p.wb = std::min<int64_t>((int64_t)(p.grid - p.n_tb) * kTcWarps, U);
    int64_t widest = 0;
    const TcDiv wb_div = tc_div(p.wb), nt_div = tc_div(p.n_tiles);
    for (int64_t w0 = 0; w0 < p.wb; w0 += kTcWarps) {
      int64_t s0, s1;
      tc_block_slabs(w0, w0 + kTcWarps, nt_div, U, wb_div, (int)uc, n_slabs, &s0, &s1);
      widest = std::max(widest, s1 - s0);
    }
    p.ring_off = (int64_t)tc_base_smem(widest, W.bits, W.group) / 16;
    p.smem = std::max((size_t)p.ring_off * 16 + ring, p.n_tb > 0 ? tc_comp_smem(kmax, p.seg_vecs) : 0);
    if (p.smem > (size_t)dev.max_smem) return p;
    const int fits = W.bits == 3 ? blocks_per_sm<3>(W.group, p.smem, bulk) : blocks_per_sm<4>(W.group, p.smem, bulk);
    if (fits >= per_sm) break;  // the grid is resident at once
    smem = p.smem;
    if (round == 3) return p;
  }
  // a small matrix has fewer units than the grid has warps (wb == U): launch only the blocks that
  // hold one (every block costs its launch and its shared-memory setup)
  p.grid = (int)std::min<int64_t>(p.grid, p.n_tb + (p.wb + kTcWarps - 1) / kTcWarps);
  p.ok = true;
  return p;
}

bool gemv_tc_groupable(const DevLinear* const* W, int n, DevLinear* shape) {
  if (n < 1 || n > kTcMaxMembers) return false;
  DevLinear g = *W[0];
  for (int m = 0; m < n; ++m) {
    const DevLinear& w = *W[m];
    if (!gemv_tc_supports(w) || w.type != g.type || w.group != g.group || w.d_in != g.d_in ||
        w.row_vecs != g.row_vecs || w.n_groups != g.n_groups || (w.units == nullptr) != (g.units == nullptr))
      return false;
    if (m + 1 < n && w.d_out % 32 != 0) return false;
    if (m > 0) g.d_out += w.d_out;
  }
  *shape = g;
  return true;
}

namespace {
int64_t g_xs_launches = 0, g_fast_launches = 0, g_reuse_launches = 0, g_defer_launches = 0;
int64_t g_group_launches = 0, g_io_launches = 0, g_chain_launches = 0, g_chunk_launches = 0, g_parts_launches = 0;
int g_norm_parts = -1;  // gemv_tc_norm_parts_force
}
int64_t gemv_tc_parts_launches() { return g_parts_launches; }
void gemv_tc_norm_parts_force(int mode) { g_norm_parts = mode < 0 ? -1 : mode != 0; }
// off by default: its H100 A/B (twelfth session, two rounds) was neutral, llama3-8b 3-bit +0.4 %,
// smollm2-135m -0.4 %, and the step timeline's q/k/v staging unchanged (4.6 us from the median
// wait to the median x staged, 4.5 before): reading all of x per block is not what holds the
// staging (the weights' copies issued before it are the likelier queue); env DDRT_NORM_PARTS=1 on
bool gemv_tc_norm_parts() {
  static const bool env = env_int("DDRT_NORM_PARTS", 0) != 0;
  return g_norm_parts < 0 ? env : g_norm_parts != 0;
}
int64_t gemv_tc_chunk_launches() { return g_chunk_launches; }
namespace {
int g_refuse_next = 0;  // gemv_tc_refuse_next (tests)
}
void gemv_tc_refuse_next(int n) { g_refuse_next = n > 0 ? n : 0; }
bool gemv_tc_refuse_take() {
  if (g_refuse_next == 0) return false;
  --g_refuse_next;
  return true;
}
int64_t gemv_tc_xs_launches() { return g_xs_launches; }
int64_t gemv_tc_sel_fast_launches() { return g_fast_launches; }
int64_t gemv_tc_sel_reuse_launches() { return g_reuse_launches; }
int64_t attn_defer_launches() { return g_defer_launches; }
int64_t gemv_tc_chain_launches() { return g_chain_launches; }

bool tc_io_aliases(const DevLinear* const* W, float* const* y, int n, const float* x, int64_t d_in, const TcIo& io) {
  if (!io.accumulate) return false;
  const auto overlaps = [](const float* p, int64_t np, const float* q, int64_t nq) {
    return p && q && p < q + nq && q < p + np;
  };
  for (int m = 0; m < n; ++m)
    if (overlaps(y[m], W[m]->d_out, x, d_in) || overlaps(y[m], W[m]->d_out, io.up, d_in) ||
        overlaps(y[m], W[m]->d_out, io.nw, d_in))
      return true;
  return false;
}
int64_t gemv_tc_group_launches() { return g_group_launches; }
int64_t gemv_tc_io_launches() { return g_io_launches; }

namespace {
// A launch's arguments from the caller's (launch_gemv_tc's checks); false: invalid.
bool tc_fill(TcArgs& a, const DevLinear* const* W, float* const* y, int n, const float* x, const TcPlan& plan,
             float* part, int* cnt, const TcComp* comp, const TcIo& io) {
  if (!plan.ok || !gemv_tc_groupable(W, n, &a.W) || (io.up && io.nw)) return false;
  // A pre-kernel's selection (comp without select_here) ranks x as it is, not swiglu(x, up) or
  // rmsnorm(x) * nw as the compensation reads it.
  if ((io.up || io.nw) && comp && !comp->select_here) return false;
  if (tc_io_aliases(W, y, n, x, a.W.d_in, io)) return false;
  if (io.swiglu_pairs && (n != 2 || io.accumulate || W[0]->d_out != W[1]->d_out || W[0]->d_out % 16 != 0 ||
                          (y[0] < y[1] + W[1]->d_out && y[1] < y[0] + W[0]->d_out)))
    return false;
  // the norm's sums from the producer: one per 16 rows of x; written only by a one-member
  // accumulating launch (its tiles are x's rows of the next launch)
  if ((io.ssq_in && (!io.nw || io.ssq_n != (a.W.d_in + 15) / 16)) || (io.ssq_out && (!io.accumulate || n != 1)))
    return false;
  // a deferred attention's output as x: one plain member, heads of 64 or 128 (whole in a warp's
  // 128-channel slots: tc_attn_x4)
  if (io.attn.po && (n != 1 || !tc_attn_defer_supports(a.W) || io.up || io.nw || comp ||
                     (io.attn.head_dim != 64 && io.attn.head_dim != 128) || a.W.d_in % io.attn.head_dim != 0 ||
                     io.attn.splits < 2 || io.attn.splits > kAttnMaxSplits || !io.attn.pml))
    return false;
  a.attn = io.attn;
  a.ssq_in = io.ssq_in;
  a.ssq_n = io.ssq_in ? io.ssq_n : 0;
  a.ssq_out = io.ssq_out;
  a.swiglu_pairs = io.swiglu_pairs;
  static const bool sc = fence_sc();
  a.fence_sc = sc;
  a.x = x;
  a.up = io.up;
  a.nw = io.nw;
  a.eps = io.eps;
  a.accumulate = io.accumulate;
  a.next = io.next;
  int64_t r = 0;
  for (int m = 0; m < kTcMaxMembers; ++m) {
    a.row0[m] = m == 0 ? 0 : m < n ? r : INT64_MAX;
    a.codes[m] = m < n ? W[m]->codes : nullptr;
    a.sm[m] = m < n ? W[m]->sm : nullptr;
    a.units[m] = m < n ? W[m]->units : nullptr;
    a.y[m] = m < n ? y[m] : nullptr;
    if (comp && m < n) a.R[m] = comp->R[m];
    if (m < n) r += W[m]->d_out;
  }
  a.bulk = a.W.units != nullptr;  // every member has its images (gemv_tc_groupable)
  a.n_tb = comp ? plan.n_tb : 0;
  a.n_units = plan.n_units;
  a.n_tiles = plan.n_tiles;
  a.wb = plan.wb;
  a.wb_div = tc_div(plan.wb);
  a.nt_div = tc_div(plan.n_tiles);
  a.part = part;
  a.cnt = cnt;
  a.seg_vecs = plan.seg_vecs;
  a.comp_ch = comp ? plan.comp_ch : 0;
  a.comp_cb = plan.comp_cb;
  a.ring_off = plan.ring_off;
  // the block-local merge: no compensation (the caller asks for such a plan only without it:
  // gemv_tc_plan), and a plan made for gate/up pairs exactly where the launch has them
  if (plan.local > 0 && (comp || io.swiglu_pairs != plan.local_pairs)) return false;
  a.local = plan.local;
  a.local_off = plan.local_off;
  a.stamps = stamp_region(plan.grid);  // a region per launch (or chain stage) while stamping
  // ring slots each base warp issues before the dependency wait (lab knob DDRT_TC_PRE; a separate
  // depth for compensating launches measured no better: BENCHMARKS 2026-11-22 day; none in the
  // launches under 12 MB only, where x's staging outlasts the weights' stream, lost too: H200,
  // eighteenth session, llama3-8b -1.7 %, smollm2-135m -2.6 %)
  static const int pre = env_int("DDRT_TC_PRE", 1);
  a.pre = pre;
  static const int rs_pre = env_int("DDRT_RS_PRE", 0);  // lab knob: TcArgs::rs_pre
  a.rs_pre = rs_pre;
  // TcArgs::evict_first, on by default since its two-round H100 A/B (BENCHMARKS 2026-12-05 fifth
  // session, no L2 prefetch: llama3-8b 3-bit 330.3 -> 350.4 tok/s, 4-bit 300.0 -> 317.6, smollm2
  // unchanged); DDRT_W_EVICT=0 off
  static const bool evict_first = env_int("DDRT_W_EVICT", 1) == 1;
  a.evict_first = evict_first;
  // TcArgs::early_issue, on at every width: H200 round of 2026-12-05 (sixth session) llama3-8b
  // 3-bit 370.8 -> 394.0 tok/s, smollm2-135m 818 -> 921; 4-bit end to end on the H100 (seventh
  // session, two rounds) 320.3 -> 335.0, although the GEMV lab had measured 4-bit 4096x14336 and
  // 14336x4096 4 % slower with it; env DDRT_TC_EARLY=0 off
  static const bool early = env_int("DDRT_TC_EARLY", 1) != 0;
  a.early_issue = early;
  // lab knob DDRT_COMP_PAIR (TcArgs::comp_pair): 1 pairs at the SM count; S > 1 at S (the tests:
  // the emulator's grids are too small for its 4 SMs); only where both halves fit the grid
  static const int pair = env_int("DDRT_COMP_PAIR", 0);
  const int S = pair == 1 ? device_info().n_sm : pair, h = (a.n_tb + 1) / 2;
  a.comp_pair = pair > 0 && a.n_tb > 1 && S >= h && plan.grid >= S + (a.n_tb - h) ? S : 0;
  if (comp) {
    a.p = comp->p;
    a.sel = comp->sel;
    a.select_here = comp->select_here;
    a.cpart = comp->cpart;
    // lab knobs (TcArgs::sel_xs, sel_fast): the selection's x values published with it (segment-major)
    a.sel_xs = gemv_tc_comp_xs() && a.select_here && a.comp_ch == 0 ? comp->sel_xs : nullptr;
    a.sel_fast = gemv_tc_sel_fast();
    a.sel_reuse = gemv_tc_sel_reuse() && a.select_here && a.comp_ch == 0 && a.nw != nullptr && a.ssq_in == nullptr;
  } else if (plan.n_tb > 0) {
    return false;  // a plan with compensation blocks needs the compensation
  }
  if (n > 1) ++g_group_launches;
  if (io.nw || io.accumulate) ++g_io_launches;
  if (io.ssq_in) ++g_parts_launches;
  if (a.comp_ch > 0) ++g_chunk_launches;
  if (a.sel_xs) ++g_xs_launches;
  if (a.sel_fast && a.select_here) ++g_fast_launches;
  if (a.sel_reuse) ++g_reuse_launches;
  if (a.attn.po) ++g_defer_launches;
  if (a.local) ++g_local_launches;
  return true;
}
cudaError_t launch_one(const TcArgs& a, const TcPlan& plan, cudaStream_t st) {
  return a.W.bits == 3 ? launch<3>(a.W.group, a, plan.grid, plan.smem, st)
                       : launch<4>(a.W.group, a, plan.grid, plan.smem, st);
}
}  // namespace

cudaError_t launch_gemv_tc(const DevLinear* const* W, float* const* y, int n, const float* x, const TcPlan& plan,
                           float* part, int* cnt, const TcComp* comp, cudaStream_t st, const TcIo& io) {
  TcArgs a;
  if (!tc_fill(a, W, y, n, x, plan, part, cnt, comp, io)) return cudaErrorInvalidValue;
  return launch_one(a, plan, st);
}

struct TcChainQueue {
  TcArgs a[kTcChainMax];
  TcPlan plan[kTcChainMax];
  int n = 0;
};
TcChainQueue* tc_chain_new() { return new TcChainQueue; }
void tc_chain_free(TcChainQueue* q) { delete q; }
int tc_chain_size(const TcChainQueue* q) { return q->n; }

bool tc_chain_add(TcChainQueue* q, const DevLinear* const* W, float* const* y, int n, const float* x,
                  const TcPlan& plan, float* part, int* cnt, const TcIo& io) {
  if (q->n == kTcChainMax || !plan.ok || plan.n_tb > 0 || plan.local > 0 || io.attn.po) return false;
  if (q->n > 0) {
    const TcArgs& h = q->a[0];
    DevLinear shape;
    if (!gemv_tc_groupable(W, n, &shape) || shape.bits != h.W.bits || shape.group != h.W.group ||
        plan.resident != q->plan[0].resident)
      return false;
  }
  TcArgs a;
  if (!tc_fill(a, W, y, n, x, plan, part, cnt, nullptr, io)) return false;
  q->a[q->n] = a;
  q->plan[q->n] = plan;
  ++q->n;
  return true;
}

cudaError_t tc_chain_flush(TcChainQueue* q, unsigned* bar, cudaStream_t st) {
  const int n = q->n;
  q->n = 0;
  if (n == 0) return cudaSuccess;
  const int bits = q->a[0].W.bits, group = q->a[0].W.group, grid = q->plan[0].resident;
  // one layout for every stage: the widest x-slab area of them, then the rings
  int64_t ring_off = 0;
  for (int s = 0; s < n; ++s) ring_off = std::max(ring_off, q->plan[s].ring_off);
  const size_t smem = (size_t)ring_off * 16 + tc_ring_bytes(bits, group);  // the chain: the cp.async ring
  const DeviceInfo& dev = device_info();
  const int fits = n < 2 || dev.n_sm == 0 ? 0
                   : bits == 3           ? chain_blocks_per_sm<3>(group, smem)
                                         : chain_blocks_per_sm<4>(group, smem);
  if (n < 2 || bar == nullptr || (int64_t)fits * dev.n_sm < grid) {
    for (int s = 0; s < n; ++s) {
      const cudaError_t e = launch_one(q->a[s], q->plan[s], st);
      if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
  }
  TcChainArgs c;
  for (int s = 0; s < n; ++s) {
    c.s[s] = q->a[s];
    c.s[s].ring_off = ring_off;
    c.s[s].bar = s > 0 ? bar : nullptr;
    c.s[s].bar_target = (unsigned)(s * grid);
  }
  c.n = n;
  c.bar = bar;
  ++g_chain_launches;
  return bits == 3 ? chain_launch<3>(group, c, grid, smem, st) : chain_launch<4>(group, c, grid, smem, st);
}

}  // namespace gpu
}  // namespace ddrt
