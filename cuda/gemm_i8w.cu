// decdec_rt CUDA backend: the prefill matmul's warp-owned kernel (T > 1; uniform 3/4-bit weights with
// unit images; sm_90+), y[T][d_out] = x[T][d_in] W^T. The math is gemm_i8.cu's (its header): x
// quantized per (token, group) into int8 limbs, u8 codes x s8 limbs on mma.m16n8k32, one int32 chain
// per (row, token, limb, group), joined and scaled in fp32 when the group ends. Each output's sums
// run in the same order as there, so the two kernels give the same bits (test_gemm checks it).
//
// Why another kernel: the block-tile kernel decodes one shared A tile per K tile, so every K tile
// ends in a block-wide barrier, and a K tile took ~4 000 cycles there against ~1 000 of tensor work
// (docs/gemv.md). Here no barrier spans the block inside the K loop:
//  - A: each warp owns 16 rows (or 32: two row tiles; warps<>) of the block's and reads their codes straight
//    from their unit images (packed.cuh): lane 4 g + t's 16-byte pieces of a unit hold exactly its
//    A fragment words (rows g, g + 8; lane steps t and 4 + t of a slab, i.e. inputs 4 t.. and
//    16 + 4 t.. of every k32 step, natural order). The pieces come through a private ring of three
//    piece slots per warp, each lane copying (cp.async) and reading back only its own pieces, so a
//    lane waits only for its own copies; the rows' (scale, min) words, which the lanes share, are
//    read after a __syncwarp.
//  - x: the block's limb tiles come through a ring of kStages stages, one cp.async.bulk per stage
//    of a stage image that the x prep writes in the stage's own layout (so one copy, issued by thread
//    0), counted on the stage's full mbarrier. Each thread counts itself out of a stage on the stage's
//    empty mbarrier; thread 0 refills a stage once all threads have left it (it waits for the stage
//    before the one it has just finished, so it seldom waits at all).
// Race freedom: a piece slot is written only by the lane that reads it, after its own reads of the
// slot (program order); a scale slot is rewritten only after a __syncwarp that follows every lane's
// reads of it; an x stage is rewritten (async proxy, behind a proxy fence) only after its empty
// barrier's phase, i.e. after every thread's reads of it and its own arrival (release / acquire:
// every reader arrives, as an arrival releases only the arriving thread's accesses).
//
// Segments: the K loop walks segments of 256 inputs, two x K tiles each: a 3-bit unit's slice (its
// lane steps' words 3 s .. 3 s + 2, s = 0..3; the unit's 1 024 inputs are 4 segments) or a 4-bit
// unit's slab (2 segments of a unit's 512). A 3-bit unit's pieces are the uint4 q = 0, 1, 2 of its
// lane steps' three (slice s needs q = 3 s / 4 .. (3 s + 2) / 4), a 4-bit unit's its two slabs.
#include "gemm_i8.cuh"

namespace ddrt {
namespace gpu {
namespace {

constexpr int kBM = 128, kBN = 64, kBK = 128, kStages = 4, kRowTiles = kBM / 16;
// NH token parts per block and RT row tiles per warp: warps of 16 RT rows x 64 / NH tokens (NH = 2:
// each warp reads its rows' pieces itself, the NH warps of a row tile the same ones). The shapes:
// (NH, RT) = (1, 1): 8 warps of 16 x 64; (2, 1): 16 warps of 16 x 32; (2, 2): 8 warps of 32 x 32.
template <int NH, int RT>
constexpr int warps() { return kRowTiles / RT * NH; }
constexpr int kLd = kBK + 16;  // bytes per limb row of an x stage (144: ldmatrix conflict free)
// An x stage: limb rows (2 u + l: token u's lo / hi; 2 kBN + m: the mid rows, three limbs) x kLd,
// then (sx, sum x) of the tile's groups [kBK / group][kBN] (float2; room for group 32).
template <int L>
constexpr int x_rows() { return (L == 3 ? 3 : 2) * kBN; }
template <int L>
constexpr int stage_bytes() { return x_rows<L>() * kLd + (kBK / 32) * kBN * 8; }
constexpr int kPiece = 4 * 32 * 16;  // a warp's piece slot: 4 uint4 per lane
constexpr int kPieceSlots = 3;
// a warp's scale slot: its 16 rows' (scale, min) words of one unit (nu groups per row)
__host__ __device__ constexpr int scale_slot_bytes(int nu) { return 16 * nu * 4; }
// (warps x RT = kRowTiles x NH: RT = 2 needs the shared memory of NH = 2 at RT = 1)
__host__ __device__ constexpr int smem_bytes(int L, int NH, int nu) {
  return kStages * (L == 3 ? stage_bytes<3>() : stage_bytes<2>()) +
         kRowTiles * NH * (kPieceSlots * kPiece + 2 * scale_slot_bytes(nu)) + 2 * kStages * 8;
}

// The stage images of x: [token block][K tile][stage_bytes<L>] (written by xs_prep_kernel).
struct XS {
  unsigned char* st;
  int64_t nk;  // K tiles of kBK inputs (x past d_in: zeros)
  int n_tb;    // token blocks of kBN (tokens past T: zeros)
  int gshift;  // log2 of the group (32, 64 or 128)
};

// The mid row of token u (three limbs): the block-tile kernel's order (gemm_i8.cu, issue), so that a
// lane's column pair of mid tile v holds the tokens of its (lo, hi) tiles 2 v, 2 v + 1.
__device__ __forceinline__ int mid_row(int u) {
  const int r = u % 16;
  return 2 * kBN + 16 * (u / 16) + 8 * ((r / 4) / 2) + 2 * (r % 4) + (r / 4) % 2;
}

// One warp per (token, group) of every token block: max |x| and sum, then the limbs into the stage
// image (and the row pads' zeros with the tile's last group).
template <int L>
__global__ void xs_prep_kernel(XS p, const float* x, int64_t d_in, int T, int group) {
  constexpr float kQ = L == 3 ? kXq : kXq2;
  constexpr int SB = stage_bytes<L>();
  const int lane = threadIdx.x % 32;
  const int64_t n_xg = (p.nk * kBK) >> p.gshift;
  const int64_t unit = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (unit >= n_xg * p.n_tb * kBN) return;
  const int t = (int)(unit / n_xg);
  const int64_t gi = unit % n_xg, i0 = gi * group;
  const float* xt = x + (int64_t)t * d_in;
  const bool live = t < T;
  float mx, sum;
  group_max_sum(xt, i0, group, d_in, live, lane, mx, sum);
  const float inv = mx > 0.0f ? kQ / mx : 0.0f;
  const int u = t % kBN, k0 = (int)(i0 % kBK);
  unsigned char* S = p.st + ((int64_t)(t / kBN) * p.nk + i0 / kBK) * SB;
  const int mr = mid_row(u);
  for (int c = lane; c < group; c += 32) {
    const float v = live && i0 + c < d_in ? xt[i0 + c] : 0.0f;
    const XLimbs l = L == 3 ? x_limbs(v, inv) : x_limbs2(v, inv);
    S[(2 * u) * kLd + k0 + c] = (unsigned char)(int8_t)l.lo;
    S[(2 * u + 1) * kLd + k0 + c] = (unsigned char)(int8_t)l.hi;
    if (L == 3) S[mr * kLd + k0 + c] = (unsigned char)(int8_t)l.mid;
  }
  if (k0 + group == kBK && lane < kLd - kBK) {  // the rows' pads (never read; copied with the stage)
    S[(2 * u) * kLd + kBK + lane] = 0;
    S[(2 * u + 1) * kLd + kBK + lane] = 0;
    if (L == 3) S[mr * kLd + kBK + lane] = 0;
  }
  if (lane == 0)
    reinterpret_cast<float2*>(S + x_rows<L>() * kLd)[(k0 >> p.gshift) * kBN + u] = make_float2(mx / kQ, sum);
}

// The 4 A registers of k32 step JJ (0..7) of a segment, from the words w[i] of the lane's 4 lane
// steps (i = 2 c + h: chunk c, row half h; a0..a3 = rows g / g + 8 x inputs 4 t.. / 16 + 4 t..).
template <int B, int NW>
__device__ __forceinline__ void a_regs(const uint32_t (&w)[4][NW], int jj, uint32_t (&a)[4]) {
#define DDRT_A_CASE(J) \
  case J:              \
    for (int i = 0; i < 4; ++i) a[i] = quad_u8<B, J>(w[i]); \
    break;
  switch (jj) {
    DDRT_A_CASE(0) DDRT_A_CASE(1) DDRT_A_CASE(2) DDRT_A_CASE(3)
    DDRT_A_CASE(4) DDRT_A_CASE(5) DDRT_A_CASE(6) default: for (int i = 0; i < 4; ++i) a[i] = quad_u8<B, 7>(w[i]);
  }
#undef DDRT_A_CASE
}

// L limbs of x (2: lo, hi; 3: and mid); B 3 or 4 bits; NH token parts and RT row tiles per warp
// (warps<NH, RT>()); G128: group 128, the K tile (a step's group start and end known at compile time:
// no predicated twin MMAs). RT = 2: each B fragment feeds the MMAs of two row tiles, half the
// shared-memory reads of x per MMA.
template <int B, int L, int NH, int RT, bool G128>
__global__ void __launch_bounds__(32 * warps<NH, RT>(), 1) gemm_i8w_kernel(I8Members G, XS xs, int T, int group) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // sm_90+ only (bulk copies; gemm_i8w_takes): no code for the older targets
#else
  constexpr int V = step_vecs(B), UC = tc_unit_chunks(B), SPU = B == 3 ? 4 : 2, NP = B == 3 ? 3 : 2;
  constexpr int SB = stage_bytes<L>(), NW = B == 3 ? 3 : 4, kWarps = warps<NH, RT>(), kWT = kRowTiles / RT;
  constexpr int NT = 16 / NH;  // n8 (lo, hi) tiles per warp: its 64 / NH tokens, 4 each
  DDRT_DYN_SMEM(unsigned char, smem);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
  const int rt = warp % kWT, th = warp / kWT;  // the warp's row tiles (RT rt ..) and token part
  const int tw0 = th * (kBN / NH);             // its first token in the block
  // this block's member (selects with constant indices: no copy of G to local memory)
  const int by = (int)blockIdx.y;
  const int m = (G.n > 1 && by >= G.tile0[1]) + (G.n > 2 && by >= G.tile0[2]);
  static_assert(kTcMaxMembers == 3, "member selection below");
  const uint4* const units = m == 0 ? G.units[0] : m == 1 ? G.units[1] : G.units[2];
  const int64_t d_out = m == 0 ? G.d_out[0] : m == 1 ? G.d_out[1] : G.d_out[2];
  float* const y = m == 0 ? G.y[0] : m == 1 ? G.y[1] : G.y[2];
  const int64_t tile0 = (int64_t)(by - (m == 0 ? 0 : m == 1 ? G.tile0[1] : G.tile0[2])) * kRowTiles + rt * RT;
  const int64_t n_tiles = (d_out + 15) / 16;
  const int nu = tc_unit_groups(B, group), slot_vecs = tc_slot_vecs(B, group);
  // a row tile past the member's last reads that last tile and stores nothing
  const uint4* img[RT];
#pragma unroll
  for (int r = 0; r < RT; ++r) img[r] = units + (tile0 + r < n_tiles ? tile0 + r : n_tiles - 1) * G.n_units * slot_vecs;
  const int nk = (int)xs.nk, nseg = (nk + 1) / 2, n_pieces = B == 3 ? NP * ((nseg + SPU - 1) / SPU) : nseg;
  const int gmask = group - 1, ssb = scale_slot_bytes(nu);

  // per warp: kPieceSlots piece slots of RT pieces (one per row tile), 2 scale slots of RT tiles' words
  unsigned char* const X0 = smem;
  unsigned char* const P0 = smem + kStages * SB + warp * RT * kPieceSlots * kPiece;
  unsigned char* const C0 = smem + kStages * SB + kWarps * RT * kPieceSlots * kPiece + warp * RT * 2 * ssb;
  uint64_t* const full =
      reinterpret_cast<uint64_t*>(smem + kStages * SB + kWarps * RT * (kPieceSlots * kPiece + 2 * ssb));
  uint64_t* const empty = full + kStages;

  // piece pi of this warp's rows into piece slot pi % 3 (and, with a unit's first piece, the unit's
  // (scale, min) words into scale slot unit % 2)
  auto issue_piece = [&](int pi) {
    const int k = pi / NP, q = pi % NP;
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      const uint4* src = img[r] + (int64_t)k * slot_vecs;
      uint4* dst = reinterpret_cast<uint4*>(P0 + ((pi % kPieceSlots) * RT + r) * kPiece);
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // lane step (chunk c, half h): 3 bits: its uint4 q; 4 bits: slab q's chunks
        const int c = B == 3 ? i / 2 : 2 * q + i / 2, h = i % 2, v = B == 3 ? q : 0;
        cp_async16(dst + i * 32 + lane, src + ((c * 2 + h) * V + v) * 32 + lane, true);
      }
      if (q == 0) {
        const uint4* ss = src + UC * 2 * V * 32;
        uint4* sd = reinterpret_cast<uint4*>(C0 + ((k % 2) * RT + r) * ssb);
        for (int j = lane; j < 4 * nu; j += 32) cp_async16(sd + j, ss + j, true);
      }
    }
  };
  const uint64_t pol = l2_policy(false);
  const int64_t xs0 = (int64_t)blockIdx.x * nk;
  auto issue_x = [&](int kt) {  // thread 0: K tile kt into stage kt % kStages
    const int sl = kt % kStages;
    mbar_expect_tx(full + sl, SB);
    bulk_g2s(X0 + sl * SB, xs.st + (xs0 + kt) * SB, SB, full + sl, pol);
  };

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full + s, 1);
      mbar_init(empty + s, kWarps * 32);
    }
    mbar_fence_init();
  }
  __syncthreads();
  if (tid == 0)
    for (int kt = 0; kt < kStages && kt < nk; ++kt) issue_x(kt);
#pragma unroll
  for (int pi = 0; pi < kPieceSlots; ++pi) {  // one commit group each (empty past the last piece)
    if (pi < n_pieces) issue_piece(pi);
    cp_commit();
  }

  // P[r][nt]: rows (g, g + 8) of row tile r x token tw0 + 4 nt + t: (lo, hi, lo, hi); M[r][v]: mid
  // limbs of the same rows x tokens tw0 + 4 (2 v) + t, tw0 + 4 (2 v + 1) + t
  int P[RT][NT][4], M[RT][L == 3 ? NT / 2 : 1][4];
  float acc[RT][NT][2] = {};  // [r][nt][row half]
  // 3 bits: the words of the last piece read that later slices still need (slice s reads words 3 s ..
  // 3 s + 2 of the lane steps' 12, the pieces' uint4 q = 0..2 read whole, once: conflict free)
  uint32_t keep[RT][4][3];
  for (int k = 0; k * SPU < nseg; ++k) {
#pragma unroll
    for (int s = 0; s < SPU; ++s) {  // s known at compile time: the slices' word selection in registers
      const int sg = k * SPU + s;
      if (sg >= nseg) break;
      // one commit group per segment (below): all but the newest two done = this segment's pieces in
      cp_wait<2>();
      __syncwarp();  // ... and every lane's scale copies visible
      uint32_t w[RT][4][NW];
#pragma unroll
      for (int r = 0; r < RT; ++r)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if constexpr (B == 3) {
            // slice s: piece s (s < 3) read whole; words 3 s .. 3 s + 2 from it and the kept ones
            uint32_t nw[4] = {0, 0, 0, 0};
            if (s < 3) {
              const uint4 v = reinterpret_cast<const uint4*>(P0 + (s * RT + r) * kPiece)[i * 32 + lane];
              nw[0] = v.x, nw[1] = v.y, nw[2] = v.z, nw[3] = v.w;
            }
#pragma unroll
            for (int wi = 0; wi < 3; ++wi) {
              const int W = 3 * s + wi;  // word W of the 12: piece W / 4, word W % 4
              const int j = W % 4 - (4 - s);  // a kept word: piece s - 1's word 4 - s + j (below)
              w[r][i][wi] = W / 4 == s ? nw[W % 4] : keep[r][i][j < 0 ? 0 : j];
            }
            // keep piece s's words past this slice's: 3 - s .. 3 (s = 0: word 3; 1: 2, 3; 2: 1..3)
#pragma unroll
            for (int j = 0; j < 3; ++j)
              if (s < 3 && j < s + 1) keep[r][i][j] = nw[3 - s + j];
          } else {
            const uint4 v = reinterpret_cast<const uint4*>(P0 + ((sg % kPieceSlots) * RT + r) * kPiece)[i * 32 + lane];
            w[r][i][0] = v.x, w[r][i][1] = v.y, w[r][i][2] = v.z, w[r][i][3] = v.w;
          }
        }
      const int kq = k * nu;  // the unit's first group
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int kt = 2 * sg + hf;
        if (kt >= nk) break;
        mbar_wait(full + kt % kStages, (uint32_t)(kt / kStages) & 1u);  // tile kt's stage has landed
        const unsigned char* S = X0 + (kt % kStages) * SB;
#pragma unroll
        for (int h = 0; h < 4; ++h) {
          const int kabs = kt * kBK + 32 * h;
          uint32_t a[RT][4];
#pragma unroll
          for (int r = 0; r < RT; ++r) a_regs<B, NW>(w[r], 4 * hf + h, a[r]);
          // the step starts / ends a group (G128: the group is the K tile, both known here)
          const bool fresh = G128 ? h == 0 : (kabs & gmask) == 0;
          const bool ends = G128 ? h == 3 : ((kabs + 32) & gmask) == 0;
          // the step's B fragments, all loaded before its MMAs (their latencies overlap)
          uint32_t rb[NT / 2][4], rm[L == 3 ? NT / 4 : 1][4];
#pragma unroll
          for (int np = 0; np < NT / 2; ++np)  // limb rows 2 tw0 + 16 np ..: n8 tiles 2 np, 2 np + 1
            ldsm4(rb[np], S + (2 * tw0 + np * 16 + lane % 8 + (lane / 16) * 8) * kLd + 32 * h + ((lane / 8) % 2) * 16);
          if constexpr (L == 3) {
#pragma unroll
            for (int q16 = 0; q16 < NT / 4; ++q16)  // mid rows of tokens tw0 + 16 q16 ..: tiles 2 q16, 2 q16 + 1
              ldsm4(rm[q16], S + (2 * kBN + tw0 + q16 * 16 + lane % 8 + (lane / 16) * 8) * kLd + 32 * h + ((lane / 8) % 2) * 16);
          }
#pragma unroll
          for (int r = 0; r < RT; ++r) {
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) mma_pair(P[r][2 * np], P[r][2 * np + 1], a[r], rb[np], fresh);
            if constexpr (L == 3) {
#pragma unroll
              for (int q16 = 0; q16 < NT / 4; ++q16) mma_pair(M[r][2 * q16], M[r][2 * q16 + 1], a[r], rm[q16], fresh);
            }
          }
          if (ends) {  // the group ends: acc += s sx P + m sum x (gemm_i8.cu's order)
            const int gr = (kabs >> xs.gshift) - kq;
            float2 f[RT][2];
#pragma unroll
            for (int r = 0; r < RT; ++r) {
              const __half2* sc = reinterpret_cast<const __half2*>(C0 + ((k % 2) * RT + r) * ssb);
              f[r][0] = __half22float2(sc[g * nu + gr]);
              f[r][1] = __half22float2(sc[(g + 8) * nu + gr]);
            }
            const float2* xq = reinterpret_cast<const float2*>(S + x_rows<L>() * kLd) + ((32 * h) >> xs.gshift) * kBN;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              const float2 v = xq[tw0 + 4 * nt + t];
#pragma unroll
              for (int r = 0; r < RT; ++r)
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                  const float p =
                      L == 3 ? fmaf(65536.0f, (float)P[r][nt][2 * hr + 1],
                                    fmaf(256.0f, (float)M[r][(nt / 2) % (L == 3 ? NT / 2 : 1)][2 * hr + nt % 2],
                                         (float)P[r][nt][2 * hr]))
                             : (float)(P[r][nt][2 * hr + 1] * 256 + P[r][nt][2 * hr]);
                  float& c = acc[r][nt][hr];
                  c = fmaf(f[r][hr].x * v.x, p, fmaf(f[r][hr].y, v.y, c));
                }
            }
          }
        }
        // every lane counts itself out of the stage: an arrival (release) orders only the arriving
        // thread's own reads before the refill (thread 0's wait, acquire), so each reader arrives
        mbar_arrive(empty + kt % kStages);
        // thread 0 refills the stage of tile kt - 1 (every warp has most likely left it by now) with
        // tile kt - 1 + kStages
        if (tid == 0 && kt >= 1 && kt - 1 + kStages < nk) {
          mbar_wait(empty + (kt - 1) % kStages, (uint32_t)((kt - 1) / kStages) & 1u);
          fence_proxy_async_smem();
          issue_x(kt - 1 + kStages);
        }
        __syncwarp();
      }
      // the next piece: 3 bits, after slice s >= 1 the next unit's uint4 s - 1 (its slot is free:
      // slice s - 1 read it whole); 4 bits, piece sg + 3 into the slot of segment sg's
      const int pi = B == 3 ? (s >= 1 ? NP * (k + 1) + s - 1 : -1) : sg + kPieceSlots;
      __syncwarp();  // every lane done with the scale slot that a unit's first piece refills
      if (pi >= 0 && pi < n_pieces) issue_piece(pi);
      cp_commit();
    }
  }

  cp_wait<0>();  // the pieces issued past the last segment's needs (none read)
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int64_t o = (tile0 + r) * 16 + g + 8 * hr;
        const int tok = (int)blockIdx.x * kBN + tw0 + 4 * nt + t;
        if (tile0 + r < n_tiles && o < d_out && tok < T) y[(int64_t)tok * d_out + o] = acc[r][nt][hr];
      }
#endif
}

int g_own_warps = 0;  // gemm_i8w_force_warps; 0: the environment (DDRT_I8_OWN_WARPS: 8, or 16 where it fits)
int g_own_rows = 0;   // gemm_i8w_force_rows; 0: the environment (DDRT_I8_OWN_ROWS: 16 or 32; unset: by bits)
// The block's shape: 0: 8 warps of 16 rows x 64 tokens; 1: 16 warps of 16 x 32; 2: 8 warps of 32 x 32
// (1 and 2 where the shared memory allows: NH = 2's)
int own_shape(int B, int L, int nu) {
  // 8 warps of 64 tokens by default: Llama-3-8B 3-bit prefill 12 178 tok/s against 11 511 with 16
  // warps of 32 tokens on the H200 (BENCHMARKS 2026-12-07, twentieth session). 32 rows per warp by
  // default at 4 bits: every 4-bit matmul 4-6 % faster on the H100, prefill 12 821 -> 13 236 tok/s;
  // at 3 bits 16 (32 rows: 4096x14336 10 % slower, prefill 12 709 -> 12 510)
  // (rows set: they choose; else 16 warps asked for: shape 1; else the bits' default)
  static const int env_w = env_int("DDRT_I8_OWN_WARPS", 0);
  static const int env_r = env_int("DDRT_I8_OWN_ROWS", 0);
  const int rows = g_own_rows ? g_own_rows : env_r == 16 || env_r == 32 ? env_r : 0;
  const int want = g_own_warps ? g_own_warps : env_w == 8 || env_w == 16 ? env_w : 0;
  if (smem_bytes(L, 2, nu) > device_info().max_smem) return 0;
  if (rows) return rows == 32 ? 2 : want == 16 ? 1 : 0;
  return want == 16 ? 1 : want == 8 ? 0 : B == 4 ? 2 : 0;
}

template <int B, int L, int NH, int RT, bool G128>
cudaError_t launch_kernel(const I8Members& G, const XS& xs, int T, int group, cudaStream_t st) {
  const int smem = smem_bytes(L, NH, tc_unit_groups(B, group));
  cudaError_t err =
      cudaFuncSetAttribute(gemm_i8w_kernel<B, L, NH, RT, G128>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  // token blocks fastest: a row tile's blocks share its codes in L2
  const dim3 grid((unsigned)xs.n_tb, (unsigned)G.tile0[G.n]);
  return launch_plain(gemm_i8w_kernel<B, L, NH, RT, G128>, grid, 32 * warps<NH, RT>(), smem, st, G, xs, T, group);
}
template <int B, int L, int NH, int RT>
cudaError_t launch_shape(const I8Members& G, const XS& xs, int T, int group, cudaStream_t st) {
  return group == kBK ? launch_kernel<B, L, NH, RT, true>(G, xs, T, group, st)
                      : launch_kernel<B, L, NH, RT, false>(G, xs, T, group, st);
}

template <int B, int L>
cudaError_t launch_bl(const DevLinear& W, const I8Members& G, const float* x, int T, void* scratch, cudaStream_t st) {
  XS xs;
  xs.st = static_cast<unsigned char*>(scratch);
  xs.nk = (W.d_in + kBK - 1) / kBK;
  xs.n_tb = (T + kBN - 1) / kBN;
  xs.gshift = W.group == 32 ? 5 : W.group == 64 ? 6 : 7;
  const int64_t units = ((xs.nk * kBK) >> xs.gshift) * xs.n_tb * kBN;
  const cudaError_t err =
      launch_plain(xs_prep_kernel<L>, (unsigned)((units + 7) / 8), 256, 0, st, xs, x, W.d_in, T, W.group);
  if (err != cudaSuccess) return err;
  if constexpr (L == 2) {  // (three limbs: NH = 2 never fits the shared memory, own_shape)
    const int shape = own_shape(B, L, tc_unit_groups(B, W.group));
    if (shape == 1) return launch_shape<B, L, 2, 1>(G, xs, T, W.group, st);
    if (shape == 2) return launch_shape<B, L, 2, 2>(G, xs, T, W.group, st);
  }
  return launch_shape<B, L, 1, 1>(G, xs, T, W.group, st);
}

int64_t g_launches = 0;

}  // namespace

int64_t gemm_i8w_launches() { return g_launches; }
void gemm_i8w_force_warps(int warps) { g_own_warps = warps == 8 || warps == 16 ? warps : 0; }
void gemm_i8w_force_rows(int rows) { g_own_rows = rows == 16 || rows == 32 ? rows : 0; }

bool gemm_i8w_takes(const DevLinear& W) {
  if ((W.bits != 3 && W.bits != 4) || !is_uniform(W.type) || W.units == nullptr) return false;
  if (W.group != 32 && W.group != 64 && W.group != 128) return false;
  const DeviceInfo& d = device_info();
  return d.bulk && d.max_smem >= smem_bytes(3, 1, tc_unit_groups(W.bits, W.group));
}

size_t gemm_i8w_scratch_bytes(const DevLinear& W, int T) {
  return (size_t)((W.d_in + kBK - 1) / kBK) * (size_t)((T + kBN - 1) / kBN) * stage_bytes<3>();
}

cudaError_t launch_gemm_i8w(const DevLinear& W, const I8Members& G, const float* x, int T, void* scratch,
                            cudaStream_t st, int limbs) {
  if (!gemm_i8w_takes(W) || (limbs != 2 && limbs != 3)) return cudaErrorInvalidValue;
  ++g_launches;
  if (W.bits == 3) return limbs == 2 ? launch_bl<3, 2>(W, G, x, T, scratch, st) : launch_bl<3, 3>(W, G, x, T, scratch, st);
  return limbs == 2 ? launch_bl<4, 2>(W, G, x, T, scratch, st) : launch_bl<4, 3>(W, G, x, T, scratch, st);
}

}  // namespace gpu
}  // namespace ddrt
