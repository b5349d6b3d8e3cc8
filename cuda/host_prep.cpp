// decdec_rt CUDA backend, host side: repacking file layouts into the GPU layouts (packed.cuh).
// Plain C++ (no CUDA headers needed).

#include "host_prep.h"

#include <cstring>

namespace ddrt {
namespace gpu {

void repack_codes(const uint8_t* file_codes, int64_t d_out, int64_t d_in, int bits, uint32_t* out) {
  const int64_t rv = row_vecs(d_in, bits), steps = rv / step_vecs(bits);
  const int64_t file_row = row_code_bytes(d_in, bits);
  const int C = step_codes(bits), NW = step_words(bits);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
  for (int64_t o = 0; o < d_out; ++o) {
    const uint8_t* src = file_codes + o * file_row;
    uint32_t* dst = out + o * rv * 4;
    for (int64_t s = 0; s < steps; ++s) {
      uint32_t w[12] = {0};
      for (int c = 0; c < C; ++c) {
        const int64_t i = code_index(s, c, bits);
        if (i < d_in)
          step_put(w, bits, c, block_code(src + (i / kBlockCodes) * block_bytes(bits), bits, (int)(i % kBlockCodes)));
      }
      for (int k = 0; k < NW; ++k) dst[4 * vec_index(s, k / 4, bits) + k % 4] = w[k];
    }
  }
}

void interleave_scales(const uint16_t* scales, const uint16_t* mins, int64_t rows, int64_t n_groups,
                       int64_t stride, uint32_t* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < stride; ++g)
      out[r * stride + g] =
          g < n_groups ? (uint32_t)scales[r * n_groups + g] | ((uint32_t)mins[r * n_groups + g] << 16) : 0u;
}

void pad_rows(const uint8_t* src, int64_t rows, int64_t row_bytes, int64_t pitch, uint8_t fill, uint8_t* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * pitch, src + r * row_bytes, (size_t)row_bytes);
    std::memset(dst + r * pitch + row_bytes, fill, (size_t)(pitch - row_bytes));
  }
}

}  // namespace gpu
}  // namespace ddrt
