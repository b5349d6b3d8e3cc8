// decdec_rt CUDA backend: how the fused GEMV (gemv_tc.cuh) splits its base work among warps, and
// who merges each tile. Host and device (tests/cuda/test_cuda_layout.cpp checks it on the host).
//
// U = n_tiles * n_units units; unit u is column k = u / n_tiles (one unit's input codes) of tile
// u % n_tiles: k-major, so a warp's consecutive units are the same input codes of consecutive
// tiles, and a block's range spans a column or two — it stages only that slice of x (staging all
// of x in each of the grid's blocks took 4-7 us of a ~15 us launch: every block read the same L2
// lines). Warp w takes the contiguous range [tc_range_begin(w), tc_range_begin(w + 1)),
// floor(w U / wb) .. — at least one unit each (wb <= U).
// Every unit is one contribution to its tile, in slot k: a tile has exactly n_units base
// contributors, whoever holds them.
#pragma once

#include <cstdint>

#include "common.h"

namespace ddrt {
namespace gpu {

// Tile t's arrival counter in the counter array: one per 128-byte line (t * 32 ints), so that the
// burst of per-unit atomics at the end of a launch spreads over L2 slices instead of queueing on
// a few lines (measured: a tail of some blocks finishing ~10 us late). Counters for tiles
// 0..n_tiles - 1, then the selection's two at tc_cnt_at(n_tiles) and + 1, then (TcArgs::
// swiglu_pairs) one per gate/up tile pair p < n_tiles / 2 at tc_pair_at(n_tiles, p).
DDRT_HD int64_t tc_cnt_at(int64_t tile) { return tile * 32; }
DDRT_HD int64_t tc_pair_at(int64_t n_tiles, int64_t p) { return tc_cnt_at(n_tiles + 1 + p); }
inline int64_t tc_cnt_ints(int64_t n_tiles) { return tc_pair_at(n_tiles, n_tiles / 2); }

// A divisor fixed per launch (the base warps wb, the tiles n_tiles): n / d as a multiply-high and
// a shift (Granlund & Montgomery). The fused GEMV's warps split their units with it before their
// first weight copy, where a 64-bit division is ~30 dependent instructions on a cold instruction
// cache (ncu, BENCHMARKS 2026-12-05 sixth session). m = ceil(2^(31 + l) / d), l = ceil(log2 d):
// exact for 0 <= n < 2^31 (m d - 2^(31 + l) < d, so n (m d - 2^p) < 2^p); larger n divide plainly.
struct TcDiv {
  int64_t d = 1;
  uint32_t m = 0, s = 0;
};
inline TcDiv tc_div(int64_t d) {
  TcDiv f;
  f.d = d;
  if (d > 1 && d < (int64_t(1) << 31)) {
    int l = 0;
    while ((int64_t(1) << l) < d) ++l;
    f.m = (uint32_t)(((uint64_t(1) << (31 + l)) + (uint64_t)d - 1) / (uint64_t)d);
    f.s = (uint32_t)(l - 1);
  }
  return f;
}
DDRT_HD int64_t tc_quot(int64_t n, const TcDiv& f) {
  if (f.m == 0 || n >= (int64_t(1) << 31)) return n / f.d;  // d == 1 (or too large), n >= 2^31
#ifdef __CUDA_ARCH__
  return (int64_t)(__umulhi((uint32_t)n, f.m) >> f.s);
#else
  return (int64_t)((((uint64_t)(uint32_t)n * f.m) >> 32) >> f.s);
#endif
}

DDRT_HD int64_t tc_range_begin(int64_t w, int64_t U, const TcDiv& wb) { return tc_quot(w * U, wb); }

// The slabs [*s0, *s1) of x that base warps [w0, w1) need (the units' chunks k * uc .. k * uc +
// uc - 1, two chunks per slab); empty (*s0 == *s1) when the warps have no units.
DDRT_HD void tc_block_slabs(int64_t w0, int64_t w1, const TcDiv& n_tiles, int64_t U, const TcDiv& wb, int uc,
                            int64_t n_slabs, int64_t* s0, int64_t* s1) {
  if (w1 > wb.d) w1 = wb.d;
  const int64_t ub0 = w0 < w1 ? tc_range_begin(w0, U, wb) : 0, ub1 = w0 < w1 ? tc_range_begin(w1, U, wb) : 0;
  if (ub1 <= ub0) {
    *s0 = *s1 = 0;
    return;
  }
  const int64_t ci0 = tc_quot(ub0, n_tiles) * uc, ci1 = (tc_quot(ub1 - 1, n_tiles) + 1) * uc;
  *s0 = ci0 / 2;
  *s1 = (ci1 + 1) / 2 < n_slabs ? (ci1 + 1) / 2 : n_slabs;
}

}  // namespace gpu
}  // namespace ddrt
