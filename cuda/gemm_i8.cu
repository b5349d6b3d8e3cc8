// decdec_rt CUDA backend: the T > 1 matmul (prefill) for uniform 2/3/4-bit weights on int8 tensor
// cores, y[T][d_out] = x[T][d_in] W^T.
//
// Math. W[o][i] = s_og q_oi + m_og (g: the group of input i). x is quantized once per call, per
// (token t, group g), to X_ti = round(x_ti / sx_tg) with |X| <= kXq (sx_tg = max_g |x_t| / kXq, ~24
// bits, as the batch-1 GEMV's) and split into three balanced int8 limbs X = 65536 hi + 256 mid + lo:
//   y[t][o] = sum_g ( s_og sx_tg P_otg + m_og sum_{i in g} x_ti ),   P_otg = sum_{i in g} q_oi X_ti.
// mma.m16n8k32 (u8 codes x s8 limbs, int32). B columns: per warp, 4 n8 tiles of (lo, hi) pairs
// (column 2u + l: token u's lo / hi) and 2 n8 tiles of mid limbs whose tokens are ordered so that a
// thread's column pair (2q, 2q + 1) holds the same tokens as its (lo, hi) tiles 2 v, 2 v + 1 (tile v:
// tokens 8 v + {0, 4, 1, 5, 2, 6, 3, 7}). So each thread's C fragments hold a token's three limb
// sums, all run as MMA chains through a group (each exact in int32: |sum| <= 255 * 128 * 128), and
// when the group ends P = 65536 hi + 256 mid + lo is formed in fp32 and its term applied. (Two limbs,
// the default: X = 256 hi + lo with |X| <= kXq2 (~16 bits), no mid tiles, a third fewer MMAs; they
// keep the op tests' NMSE, move a tiny model's logits ~5e-4 (relative) from the CPU's; three limbs
// with DDRT_I8_LIMBS=3.) The only
// error is x's rounding (|dx| <= sx / 2) and fp32's; the bf16 hi + lo kernel, gemm_tc.cu, is this
// kernel's twin in the tests and takes the other types.
//
// Block: 128 rows x 64 tokens, 8 warps of 64 rows x 16 tokens (48 limb columns); K tiles of 128
// inputs (kSteps = 4 k32 steps; H100 A/B: 5-11 % faster than tiles of 64, which need 120 instead
// of 192 KB of shared memory: DDRT_I8_STEPS=2). Tile kt covers inputs k0 = 128 kt .. k0 + 127, which
// are quads j .. j + 3 (4 | j) of the 8 lane steps b of one octet slab of every row (packed.cuh:
// quad j of step b = inputs 32 j + 4 b .. + 3 of the slab), so a k32 step is quad j of steps 0..7:
// 32 consecutive inputs, A's natural k order. A ring of kStages stages, filled by cp.async, holds
// per K tile the x limb tiles ([token][lo, hi][k], then the mid rows) and, for each k32 step's
// group, the tokens' (sx, sum x) and the rows' (scale, min). The raw words of the codes change
// every 256 inputs (kPeriod tiles: a 3-bit slice's 3 words, a 4-bit lane step's vector, a 2-bit
// step's word pair), so they are copied once per period into one of two raw buffers, with the
// stage of the period's first tile. Iteration kt: wait for stage kt + 1, one barrier, issue stage
// kt + kStages - 1 (into the slot of tile kt - 1, which everyone has finished), then the MMAs of
// tile kt, with tile kt + 1's quads decoded into the unsigned-byte A tile not in use (two A
// buffers) between the first k32 step's fragment loads and its MMAs.
#include <algorithm>

#include "gemm_i8.cuh"

namespace ddrt {
namespace gpu {
namespace {

#ifndef DDRT_I8_STEPS  // k32 steps per K tile: 4 (192 KB of shared memory), 2 (120 KB; a lab build)
#define DDRT_I8_STEPS 4
#endif
constexpr int kSteps = DDRT_I8_STEPS;
constexpr int kBM = 128, kBN = 64, kBK = 32 * kSteps, kStages = 4, kPeriod = 256 / kBK;
// Threads of a block: warps of MI m16 row tiles x 16 tokens (MI = 2: 16 warps of 32 rows, the
// default; MI = 4: 8 warps of 64 rows, env DDRT_I8_WARPS=8, the twin): 16 warps put 4 per scheduler
// to hide the barrier, fragment and epilogue latencies, with half the accumulators per thread and a
// quarter more fragment loads per MMA. H200, eighteenth session: 3-11 % faster on every prefill
// shape (uq3 4096x4096 150.7 -> 141.0 us, uq4 4096x14336 446.6 -> 403.4), llama3-8b prefill
// 7810 -> 7992 tok/s.
template <int MI>
constexpr int i8_threads() { return 32 * (kBM / (16 * MI)) * (kBN / 16); }
constexpr int kLd = kBK + 16;  // bytes per row of the A and x tiles (80 / 144: ldmatrix conflict free)

// Shared memory: the ring's stages, two raw buffers, two A tiles (byte offsets).
constexpr int kXTile = 3 * kBN * kLd;            // rows 2 u + l: token u's lo / hi; 2 kBN + m: mid
constexpr int kOffXq = kXTile;                   // float2 (sx, sum x) [kSteps k32 steps][kBN]
constexpr int kOffSm = kOffXq + kSteps * kBN * 8;  // __half2 (scale, min) [kSteps][kBM]
constexpr int kStage = kOffSm + kSteps * kBM * 4;
constexpr int kRawUnits = kBM * 8;               // (row, lane step b)
constexpr int kRaw = kRawUnits * 16;             // one raw buffer: a uint4 slot per unit (3-bit: 3
                                                 // words of it, 4-bit 4, 2-bit 2)
constexpr int kATile = kBM * kLd;
constexpr int kSmem = kStages * kStage + 2 * kRaw + 2 * kATile;

// The quantized x: limbs lo, hi, mid [T][kp] (int8, zero past d_in), q [n_xgroups][T] (sx, sum x).
struct XQ {
  int8_t *lo, *hi, *mid;
  float2* q;
  int64_t kp;  // K tiles * 64
  int64_t n_xg;
  int gshift;  // log2 of the group size (32, 64 or 128)
};
__host__ __device__ constexpr int64_t k_tiles(int64_t d_in) { return (d_in + kBK - 1) / kBK; }
XQ carve(void* scratch, int64_t d_in, int group, int T) {
  XQ p;
  p.kp = k_tiles(d_in) * kBK;
  p.n_xg = (p.kp + group - 1) / group;
  p.gshift = group == 32 ? 5 : group == 64 ? 6 : 7;
  p.lo = static_cast<int8_t*>(scratch);
  p.hi = p.lo + (int64_t)T * p.kp;
  p.mid = p.hi + (int64_t)T * p.kp;
  p.q = reinterpret_cast<float2*>(p.mid + (int64_t)T * p.kp);
  return p;
}

// One warp per (token, group): max |x| and sum over the group, then the limbs (L = 2: no mid).
template <int L>
__global__ void xq_prep_kernel(XQ p, const float* x, int64_t d_in, int T, int group) {
  constexpr float kQ = L == 3 ? kXq : kXq2;
  const int lane = threadIdx.x % 32;
  const int64_t unit = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (unit >= p.n_xg * T) return;
  const int t = (int)(unit / p.n_xg);
  const int64_t g = unit % p.n_xg, i0 = g * group;
  const float* xt = x + (int64_t)t * d_in;
  float mx, sum;
  group_max_sum(xt, i0, group, d_in, true, lane, mx, sum);
  const float inv = mx > 0.0f ? kQ / mx : 0.0f;
  for (int c = lane; c < group && i0 + c < p.kp; c += 32) {
    const float v = i0 + c < d_in ? xt[i0 + c] : 0.0f;
    const XLimbs l = L == 3 ? x_limbs(v, inv) : x_limbs2(v, inv);
    const int64_t at = (int64_t)t * p.kp + i0 + c;
    p.lo[at] = (int8_t)l.lo;
    if (L == 3) p.mid[at] = (int8_t)l.mid;
    p.hi[at] = (int8_t)l.hi;
  }
  if (lane == 0) p.q[g * T + t] = make_float2(mx / kQ, sum);
}

// A thread's units of a tile's decode (quads j .. j + kSteps - 1 of every (row, lane step), J8 = j %
// 8 uniform over the block): every raw slot loaded first (one 16-byte load each), then the quads
// extracted and stored into the A tile [row][k] (quad j + i at k 32 i + 4 b).
template <int B, int J8, int NT>
__device__ __forceinline__ void decode_units(const uint4* raw, unsigned char* A, int tid) {
  constexpr int U = kRawUnits / NT;
  uint4 v[U];
#pragma unroll
  for (int u = 0; u < U; ++u) v[u] = raw[tid + u * NT];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int e = tid + u * NT, row = e / 8, b = e % 8;
    const uint32_t w[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
    uint32_t* dst = reinterpret_cast<uint32_t*>(A + row * kLd + 4 * b);
    dst[0] = quad_u8<B, J8>(w);
    dst[8] = quad_u8<B, J8 + 1>(w);
    if (kSteps == 4) {
      dst[16] = quad_u8<B, (J8 + 2) % 8>(w);
      dst[24] = quad_u8<B, (J8 + 3) % 8>(w);
    }
  }
}

// L = 3 limbs of x (lo, hi pairs and mid tiles), or 2 (no mid rows, tiles or MMAs; X = 256 hi + lo);
// MI m16 row tiles per warp (i8_threads)
template <int B, int L, int MI>
__global__ void __launch_bounds__(i8_threads<MI>(), 1) gemm_i8_kernel(DevLinear W, I8Members G, XQ xq, int T) {
  constexpr int64_t C = step_codes(B);
  constexpr int kThreads = i8_threads<MI>(), WR = 16 * MI, NWM = kBM / WR;  // rows per warp, row warps
  static_assert((L * kBN * (kBK / 16)) % kThreads == 0 && (kSteps * 128) % kThreads == 0 &&
                    kRawUnits % kThreads == 0,
                "the copies divide evenly among the threads");
  DDRT_DYN_SMEM(unsigned char, smem);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % NWM, wn = warp / NWM;  // warp tile: rows wm*WR.., tokens wn*16..
  const int t0 = blockIdx.x * kBN;
  // this block's member (selects with constant indices: no copy of G to local memory); W below:
  // its codes, scales and rows
  const int by = (int)blockIdx.y;
  const int m = (G.n > 1 && by >= G.tile0[1]) + (G.n > 2 && by >= G.tile0[2]);
  static_assert(kTcMaxMembers == 3, "member selection below");
  W.codes = m == 0 ? G.codes[0] : m == 1 ? G.codes[1] : G.codes[2];
  W.sm = m == 0 ? G.sm[0] : m == 1 ? G.sm[1] : G.sm[2];
  W.d_out = m == 0 ? G.d_out[0] : m == 1 ? G.d_out[1] : G.d_out[2];
  float* const y = m == 0 ? G.y[0] : m == 1 ? G.y[1] : G.y[2];
  const int64_t o0 = (int64_t)(by - (m == 0 ? 0 : m == 1 ? G.tile0[1] : G.tile0[2])) * kBM;
  const int nk = (int)(xq.kp / kBK);
  const uint32_t* codes = reinterpret_cast<const uint32_t*>(W.codes);
  const uint32_t* units = (B == 3 || B == 4) ? reinterpret_cast<const uint32_t*>(m == 0 ? G.units[0] : m == 1 ? G.units[1] : G.units[2]) : nullptr;
  const int group = 1 << xq.gshift;
  // the images' geometry, once (no division per K tile; B 3 or 4)
  const TcUnitGeom ug = tc_unit_geom<(B == 3 || B == 4) ? B : 3>(G.n_units, group);
  // Where row o's word w of lane step s lies, from the images or the codes (o < d_out; the images: B
  // 3 or 4): a row part plus a (lane step, word) part in both layouts (tc_unit_code_word, and the
  // row layout's o row_vecs 4 + vec_index), so a thread's row parts, which do not change along K,
  // are computed once (rows below) and each K tile adds only its lane-step part (step_word).
  const uint32_t* const wsrc = ((B == 3 || B == 4) && units) ? units : codes;
  auto row_word = [&](int64_t o) -> int64_t {
    if constexpr (B == 3 || B == 4)
      if (units) return tc_unit_code_word<B>(o, 0, 0, ug);
    return o * W.row_vecs * 4;
  };
  auto step_word = [&](int64_t s, int w) -> int64_t {
    if constexpr (B == 3 || B == 4)
      if (units) return tc_unit_code_word<B>(0, s, w, ug);
    return 4 * vec_index(s, w / 4, B) + w % 4;
  };
  // the same split for the rows' (scale, min) word of group gi (tc_unit_scale_word, whose constant
  // term, the scale words' place in a slot, goes with the row part; W.sm's o n_groups + gi)
  auto row_scale = [&](int64_t o) -> int64_t {
    if constexpr (B == 3 || B == 4)
      if (units) return tc_unit_scale_word<B>(o, 0, ug);
    return o * W.n_groups;
  };
  auto group_scale = [&](int64_t gi) -> int64_t {
    if constexpr (B == 3 || B == 4)
      if (units) return tc_unit_scale_word<B>(0, gi, ug) - tc_unit_scale_word<B>(0, 0, ug);
    return gi;
  };
  const uint32_t* const ssrc0 = ((B == 3 || B == 4) && units) ? units : reinterpret_cast<const uint32_t*>(W.sm);
  // this thread's row parts: raw units (row e / 8, lane step e % 8: the same step for every u, as
  // kThreads % 8 == 0) and (scale, min) rows (e % 128); rows past d_out read row 0, zero-filled.
  // 32-bit word indices: a matrix's words are fewer than 2^32 (gemm_i8_supported)
  constexpr int kRawPer = kRawUnits / kThreads, kSmPer = kSteps * 128 / kThreads;
  uint32_t raw_row[kRawPer], sm_row[kSmPer];
#pragma unroll
  for (int u = 0; u < kRawPer; ++u) {
    const int64_t o = o0 + (tid + u * kThreads) / 8;
    raw_row[u] = (uint32_t)row_word(o < W.d_out ? o : 0);
  }
#pragma unroll
  for (int u = 0; u < kSmPer; ++u) {
    const int64_t o = o0 + (tid + u * kThreads) % 128;
    sm_row[u] = (uint32_t)row_scale(o < W.d_out ? o : 0);
  }
  unsigned char* const R0 = smem + kStages * kStage;  // raw buffers
  unsigned char* const A0 = R0 + 2 * kRaw;           // A tiles

  // cp.async of K tile kt into ring slot `slot` (and of its period's raw words at a period's start)
  auto issue = [&](int kt, int slot) {
    unsigned char* S = smem + slot * kStage;
    const int k0 = kt * kBK;  // d_in < 2^31 (layout.h)
#pragma unroll
    for (int u = 0; u < L * kBN * (kBK / 16) / kThreads; ++u) {  // x limbs: 64 tokens x L limbs x kBK / 16 chunks
      const int e = tid + u * kThreads, q = e % (kBK / 16);
      int n = e / (kBK / 16), tok;  // n: the tile row
      const int8_t* base;
      if (n < 2 * kBN) {  // (lo, hi) rows 2 u + l
        tok = n / 2;
        base = n % 2 ? xq.hi : xq.lo;
      } else {  // mid row of warp w's tokens: 16 w + 8 v + p holds token 16 w + 4 nt + qq
        const int m = n - 2 * kBN, w = m / 16, v = (m % 16) / 8, p = m % 8;
        tok = 16 * w + 4 * (2 * v + p % 2) + p / 2;
        base = xq.mid;
      }
      const int t = min(t0 + tok, T - 1);  // tokens past T: any valid row, their outputs are not stored
      cp_async16(S + n * kLd + 16 * q, base + (int64_t)t * xq.kp + k0 + 16 * q, true);
    }
#pragma unroll
    for (int u = 0; u < kSteps * 128 / kThreads; ++u) {
      const int e = tid + u * kThreads, h = e / 128, r = e % 128;  // k32 step h: (sx, sum x), (scale, min)
      const int g = (k0 + 32 * h) >> xq.gshift;
      if (r < kBN) cp_async8z(S + kOffXq + (h * kBN + r) * 8, xq.q + (int64_t)g * T + min(t0 + r, T - 1), true);
      const bool ok = o0 + r < W.d_out;
      cp_async4z(S + kOffSm + (h * kBM + r) * 4, ssrc0 + (ok ? sm_row[u] + group_scale(g) : 0), ok);
    }
    if (kt % kPeriod != 0) return;
    // the period's raw words: lane step s of round rr, octet a; first word fw
    const int rr = k0 / (32 * (int)C), a = (k0 % (32 * (int)C)) / (8 * (int)C);
    const int j = (k0 % (8 * (int)C)) / 32;
    const int fw = B == 3 ? 3 * (j / 8) : B == 4 ? 0 : 2 * (j / 8);
    uint32_t* raw = reinterpret_cast<uint32_t*>(R0 + ((kt / kPeriod) % 2) * kRaw);
#pragma unroll
    const int64_t s = (int64_t)rr * 32 + 8 * a + tid % 8;  // this thread's lane step (b = e % 8 = tid % 8)
    int64_t sw[B == 3 ? 3 : 1];                            // its words' lane-step parts
#pragma unroll
    for (int i = 0; i < (B == 3 ? 3 : 1); ++i) sw[i] = step_word(s, fw + i);
#pragma unroll
    for (int u = 0; u < kRawPer; ++u) {  // 128 rows x 8 lane steps
      const int e = tid + u * kThreads;
      const bool ok = o0 + e / 8 < W.d_out;
      if (B == 3) {
#pragma unroll
        for (int i = 0; i < 3; ++i) cp_async4z(raw + 4 * e + i, wsrc + raw_row[u] + sw[i], ok);
      } else if (B == 4) {
        cp_async16(raw + 4 * e, wsrc + raw_row[u] + sw[0], ok);
      } else {
        cp_async8z(raw + 4 * e, wsrc + raw_row[u] + sw[0], ok);
      }
    }
  };
  // the raw words of tile kt -> unsigned-byte A tile [row][k]
  auto decode = [&](int kt, unsigned char* A) {
    const uint4* raw = reinterpret_cast<const uint4*>(R0 + ((kt / kPeriod) % 2) * kRaw);
    switch ((kt * kBK % (8 * (int)C)) / 32 % 8) {  // j % 8: uniform over the block (kSteps | j)
      case 0: decode_units<B, 0, kThreads>(raw, A, tid); break;
      case 2: decode_units<B, kSteps == 2 ? 2 : 0, kThreads>(raw, A, tid); break;
      case 4: decode_units<B, 4, kThreads>(raw, A, tid); break;
      default: decode_units<B, kSteps == 2 ? 6 : 4, kThreads>(raw, A, tid); break;
    }
  };

  // P[mi][nt]: rows (lane / 4, + 8) of m16 tile mi x token wn*16 + 4 nt + lane % 4: (lo, hi, lo, hi);
  // M[mi][v]: mid limbs of the same rows x tokens 4 (2 v) + lane % 4, 4 (2 v + 1) + lane % 4
  int P[MI][4][4], M[MI][2][4];
  float acc[MI][4][2] = {};  // [mi][nt][row half]

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) issue(s, s);
    cp_commit();
  }
  cp_wait<kStages - 2>();
  __syncthreads();
  decode(0, A0);
  bool fresh = true;  // the next k32 step starts a group
  for (int kt = 0; kt < nk; ++kt) {
    cp_wait<kStages - 3>();  // tile kt + 1 has landed (this thread's copies)
    __syncthreads();         // ... everyone's; and everyone is done with tile kt - 1
    if (kt + kStages - 1 < nk) issue(kt + kStages - 1, (kt + kStages - 1) % kStages);
    cp_commit();
    const unsigned char* S = smem + (kt % kStages) * kStage;
    const unsigned char* A = A0 + (kt % 2) * kATile;
#pragma unroll
    for (int h = 0; h < kSteps; ++h) {
      uint32_t af[MI][4], bf[4][2], bm[2][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) ldsm4(af[mi], A + (wm * WR + mi * 16 + lane % 16) * kLd + 32 * h + (lane / 16) * 16);
#pragma unroll
      for (int np = 0; np < 2; ++np) {  // limb columns wn*32 + 16 np .. + 15: n8 tiles 2 np, 2 np + 1
        const int n = wn * 32 + np * 16 + lane % 8 + (lane / 16) * 8;
        uint32_t r[4];
        ldsm4(r, S + n * kLd + 32 * h + ((lane / 8) % 2) * 16);
        bf[2 * np][0] = r[0], bf[2 * np][1] = r[1], bf[2 * np + 1][0] = r[2], bf[2 * np + 1][1] = r[3];
      }
      if (L == 3) {  // mid rows 2 kBN + 16 wn ..: n8 tiles v = 0, 1
        const int n = 2 * kBN + wn * 16 + lane % 8 + (lane / 16) * 8;
        uint32_t r[4];
        ldsm4(r, S + n * kLd + 32 * h + ((lane / 8) % 2) * 16);
        bm[0][0] = r[0], bm[0][1] = r[1], bm[1][0] = r[2], bm[1][1] = r[3];
      }
      // tile kt + 1's decode (the other A buffer) while this step's fragments arrive
      if (h == 0 && kt + 1 < nk) decode(kt + 1, A0 + ((kt + 1) % 2) * kATile);
      if (fresh) {
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
            mma_i8_z(P[mi][nt], af[mi][0], af[mi][1], af[mi][2], af[mi][3], bf[nt][0], bf[nt][1]);
#pragma unroll
          for (int v = 0; v < 2; ++v)
            if (L == 3) mma_i8_z(M[mi][v], af[mi][0], af[mi][1], af[mi][2], af[mi][3], bm[v][0], bm[v][1]);
        }
      } else {
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
            mma_i8<false>(P[mi][nt], af[mi][0], af[mi][1], af[mi][2], af[mi][3], bf[nt][0], bf[nt][1]);
#pragma unroll
          for (int v = 0; v < 2; ++v)
            if (L == 3) mma_i8<false>(M[mi][v], af[mi][0], af[mi][1], af[mi][2], af[mi][3], bm[v][0], bm[v][1]);
        }
      }
      const int kend = kt * kBK + 32 * (h + 1);
      fresh = (kend & ((1 << xq.gshift) - 1)) == 0 || kend == (int)xq.kp;
      if (fresh) {  // the group ends: acc += s sx (65536 hi + 256 mid + lo, or 256 hi + lo) + m sum x
        const __half2* sm = reinterpret_cast<const __half2*>(S + kOffSm) + h * kBM;
        const float2* xs = reinterpret_cast<const float2*>(S + kOffXq) + h * kBN;
        float2 v[4];
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) v[nt] = xs[wn * 16 + 4 * nt + lane % 4];
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) {
            const float2 f = __half22float2(sm[wm * WR + mi * 16 + lane / 4 + 8 * hr]);
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
              // two limbs: 256 hi + lo joined in int32 (|hi sum| <= 15 * 125 * 128, so |256 hi + lo| <
              // 2^26: exact), one conversion: the same rounding of the same integer as the fp32
              // fmaf(256, hi, lo) (both exact operands, one rounding), an I2F and an FFMA fewer
              const float p =
                  L == 3 ? fmaf(65536.0f, (float)P[mi][nt][2 * hr + 1],
                                fmaf(256.0f, (float)M[mi][nt / 2][2 * hr + nt % 2], (float)P[mi][nt][2 * hr]))
                         : (float)(P[mi][nt][2 * hr + 1] * 256 + P[mi][nt][2 * hr]);
              float& c = acc[mi][nt][hr];
              c = fmaf(f.x * v[nt].x, p, fmaf(f.y, v[nt].y, c));
            }
          }
      }
    }
  }

#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int64_t o = o0 + wm * WR + mi * 16 + lane / 4 + 8 * hr;
        const int t = t0 + wn * 16 + 4 * nt + lane % 4;
        if (o < W.d_out && t < T) y[(int64_t)t * W.d_out + o] = acc[mi][nt][hr];
      }
}

int g_i8_warps = 0;  // gemm_i8_force_warps; 0: the environment
int i8_warps() {
  static const int env = env_int("DDRT_I8_WARPS", 16) == 8 ? 8 : 16;
  return g_i8_warps ? g_i8_warps : env;
}

template <int B, int L, int MI>
cudaError_t launch_warps(const XQ& xq, const DevLinear& W, const I8Members& G, int T, cudaStream_t st) {
  cudaError_t err = cudaFuncSetAttribute(gemm_i8_kernel<B, L, MI>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (err != cudaSuccess) return err;
  // token tiles fastest: the blocks that share a row tile run together and share its codes in L2
  const dim3 grid((unsigned)((T + kBN - 1) / kBN), (unsigned)G.tile0[G.n]);
  return launch_plain(gemm_i8_kernel<B, L, MI>, grid, i8_threads<MI>(), kSmem, st, W, G, xq, T);
}

int g_i8_own = -1;  // gemm_i8_force_own; -1: the environment
bool i8_own() {
  // on by default: the prefill matmuls take 30-38 % less time than the block-tile kernel's on the
  // H200, 40-43 % less at 3 bits on the H100 (BENCHMARKS 2026-12-07, twentieth session);
  // DDRT_I8_OWN=0 the block-tile kernel (the twin)
  static const bool env = env_int("DDRT_I8_OWN", 1) == 1;
  return g_i8_own >= 0 ? g_i8_own == 1 : env;
}

template <int B, int L>
cudaError_t launch_limbs(const DevLinear& W, const I8Members& G, const float* x, int T, void* scratch,
                         cudaStream_t st) {
  // the warp-owned kernel (gemm_i8w.cu, DDRT_I8_OWN=1) where it takes the members (3/4 bits with
  // unit images, sm_90+): the same bits
  if ((B == 3 || B == 4) && i8_own() && gemm_i8w_takes(W)) return launch_gemm_i8w(W, G, x, T, scratch, st, L);
  const XQ xq = carve(scratch, W.d_in, W.group, T);
  const int64_t units = xq.n_xg * T;
  cudaError_t err =
      launch_plain(xq_prep_kernel<L>, (unsigned)((units + 7) / 8), 256, 0, st, xq, x, W.d_in, T, W.group);
  if (err != cudaSuccess) return err;
  if constexpr (kSteps == 4)  // 16 warps: K tiles of 4 k32 steps (a step's 128 (scale, min) copies per thread)
    if (i8_warps() == 16) return launch_warps<B, L, 2>(xq, W, G, T, st);
  return launch_warps<B, L, 4>(xq, W, G, T, st);  // 8 warps (DDRT_I8_WARPS=8; the lab build DDRT_I8_STEPS=2)
}

int g_i8_limbs = 0;  // gemm_i8_force_limbs; 0: the environment
int i8_limbs() {
  // two limbs by default: 15-18 % faster matmuls on the H100 (BENCHMARKS 2026-12-05, both the
  // third and fourth sessions), x still ~16 bits per group (finer than an fp16 x); DDRT_I8_LIMBS=3:
  // ~24 bits, the CPU reference's agreement to 1e-4 on the tiny models' logits (the tests' twin)
  static const int env = env_int("DDRT_I8_LIMBS", 2) == 3 ? 3 : 2;
  return g_i8_limbs ? g_i8_limbs : env;
}
template <int B>
cudaError_t launch_bits(const DevLinear& W, const I8Members& G, const float* x, int T, void* scratch,
                        cudaStream_t st, int limbs) {
  return (limbs ? limbs : i8_limbs()) == 2 ? launch_limbs<B, 2>(W, G, x, T, scratch, st) : launch_limbs<B, 3>(W, G, x, T, scratch, st);
}

bool g_i8_on = true;
int64_t g_i8_group_launches = 0;

}  // namespace

void gemm_i8_enable(bool on) { g_i8_on = on; }
void gemm_i8_force_limbs(int limbs) { g_i8_limbs = limbs == 2 || limbs == 3 ? limbs : 0; }
void gemm_i8_force_own(int own) { g_i8_own = own == 0 || own == 1 ? own : -1; }
void gemm_i8_force_warps(int warps) { g_i8_warps = warps == 8 || warps == 16 ? warps : 0; }
bool gemm_i8_enabled() { return g_i8_on; }

bool gemm_i8_supported(const DevLinear& W) {
  if (!is_uniform(W.type) || (W.bits != 2 && W.bits != 3 && W.bits != 4)) return false;
  if ((W.group != 32 && W.group != 64 && W.group != 128) || (W.d_out + kBM - 1) / kBM > 65535) return false;
  // the kernel indexes a matrix's code and scale words in 32 bits: a bound with room for the images'
  // padding to whole units (4 words per scale word; only matrices of several GB reach it)
  if ((W.d_out + 15) / 16 * 16 * (W.row_vecs * 4 + 4 * W.n_groups) >= (int64_t)1 << 32) return false;
  return device_info().max_smem >= kSmem;
}

size_t gemm_i8_scratch_bytes(const DevLinear& W, int T) {
  const int64_t kp = k_tiles(W.d_in) * kBK, n_xg = (kp + W.group - 1) / W.group;
  const size_t tile = (size_t)T * (3 * kp + n_xg * sizeof(float2));
  // the warp-owned kernel's stage images where it would run (the switch is read per call)
  return i8_own() && gemm_i8w_takes(W) ? std::max(tile, gemm_i8w_scratch_bytes(W, T)) : tile;
}

bool gemm_i8_groupable(const DevLinear* const* Ws, int n) {
  if (n < 1 || n > kTcMaxMembers) return false;
  int64_t tiles = 0;
  for (int m = 0; m < n; ++m) {
    const DevLinear& W = *Ws[m];
    if (!gemm_i8_supported(W) || W.type != Ws[0]->type || W.d_in != Ws[0]->d_in || W.row_vecs != Ws[0]->row_vecs ||
        W.n_groups != Ws[0]->n_groups || (W.units == nullptr) != (Ws[0]->units == nullptr))
      return false;
    tiles += (W.d_out + kBM - 1) / kBM;
  }
  return tiles <= 65535;
}

int64_t gemm_i8_group_launches() { return g_i8_group_launches; }

cudaError_t launch_gemm_i8_group(const DevLinear* const* Ws, float* const* ys, int n, const float* x, int T,
                                 void* scratch, cudaStream_t st, int limbs) {
  if (limbs != 0 && limbs != 2 && limbs != 3) return cudaErrorInvalidValue;
  if (!gemm_i8_groupable(Ws, n)) return cudaErrorInvalidValue;
  I8Members G{};
  G.n = n;
  for (int m = 0; m < n; ++m) {
    G.codes[m] = Ws[m]->codes, G.units[m] = Ws[m]->units, G.sm[m] = Ws[m]->sm, G.y[m] = ys[m], G.d_out[m] = Ws[m]->d_out;
    G.tile0[m + 1] = G.tile0[m] + (int)((Ws[m]->d_out + kBM - 1) / kBM);
  }
  if (n > 1) ++g_i8_group_launches;
  const DevLinear& W = *Ws[0];
  G.n_units = tc_tile_units(W.d_in, W.bits);
  switch (W.bits) {
    case 2: return launch_bits<2>(W, G, x, T, scratch, st, limbs);
    case 3: return launch_bits<3>(W, G, x, T, scratch, st, limbs);
    case 4: return launch_bits<4>(W, G, x, T, scratch, st, limbs);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_gemm_i8(const DevLinear& W, float* y, const float* x, int T, void* scratch, cudaStream_t st,
                           int limbs) {
  const DevLinear* Ws[1] = {&W};
  return launch_gemm_i8_group(Ws, &y, 1, x, T, scratch, st, limbs);
}

}  // namespace gpu
}  // namespace ddrt
