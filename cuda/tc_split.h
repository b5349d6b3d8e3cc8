// decdec_rt CUDA backend: how the fused GEMV (gemv_tc.cuh) splits its base work among warps, and
// who merges each tile. Host and device (tests/cuda/test_cuda_layout.cpp checks it on the host).
//
// U units (unit u = tile * n_units + k) over wb warps (wb <= U): warp w takes the contiguous range
// [tc_range_begin(w), tc_range_begin(w + 1)), floor(w U / wb) .. — at least one unit each.
// A tile is met by the warp holding its first unit and by every warp starting inside it; warp w's
// slot there is w - tc_first_warp(tile), and tc_e_base(tile) warps meet it (its base
// contributors). No tile is met by more than tc_max_slots() warps.
#pragma once

#include <cstdint>

#include "common.h"

namespace ddrt {
namespace gpu {

DDRT_HD int64_t tc_range_begin(int64_t w, int64_t U, int64_t wb) { return w * U / wb; }
// The first warp whose range starts at or after unit u.
DDRT_HD int64_t first_warp_at(int64_t u, int64_t U, int64_t wb) { return (u * wb + U - 1) / U; }
DDRT_HD int64_t tc_first_warp(int64_t tile, int64_t n_units, int64_t U, int64_t wb) {
  return first_warp_at(tile * n_units + 1, U, wb) - 1;
}
DDRT_HD int64_t tc_e_base(int64_t tile, int64_t n_units, int64_t U, int64_t wb) {
  return first_warp_at(tile * n_units + n_units, U, wb) - tc_first_warp(tile, n_units, U, wb);
}
// Slots per tile to allocate (an upper bound of tc_e_base over tiles).
DDRT_HD int64_t tc_max_slots(int64_t n_units, int64_t U, int64_t wb) { return (n_units * wb + U - 1) / U + 1; }

}  // namespace gpu
}  // namespace ddrt
