// decdec_rt CUDA backend, host side: repacking into the GPU layouts (host_prep.cpp). Layout definitions: packed.cuh.
#pragma once

#include <cstdint>

#include "decdec.h"
#include "layout.h"
#include "packed.cuh"

namespace ddrt {
namespace gpu {

// File codes [d_out][row_code_bytes] -> GPU codes [d_out][row_vecs(d_in, bits) * 4] words.
void repack_codes(const uint8_t* file_codes, int64_t d_out, int64_t d_in, int bits, uint32_t* out);
// (scale, min) fp16 pairs [rows][n_groups] -> one word each, [rows][stride] (stride =
// sm_row_groups >= n_groups, the rest 0): scale in the low half (a __half2's .x), min high.
void interleave_scales(const uint16_t* scales, const uint16_t* mins, int64_t rows, int64_t n_groups,
                       int64_t stride, uint32_t* out);
// Rows of row_bytes -> rows of pitch bytes, the rest of each row set to `fill`.
void pad_rows(const uint8_t* src, int64_t rows, int64_t row_bytes, int64_t pitch, uint8_t fill, uint8_t* dst);

}  // namespace gpu
}  // namespace ddrt
