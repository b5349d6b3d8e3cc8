// decdec_rt CPU backend, internal: a weight matrix as the CPU backend holds it, and the
// kernels that use it (cpu_matmul.cpp). The packed codes are used in place (layout.h, straight
// from the memory-mapped file); only the small per-group / per-row tables are widened to fp32.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend.h"

namespace ddrt {
namespace cpu {

struct CpuLinear : Linear {
  LinearDesc desc;              // pointers into the mapping (it outlives the backend)
  int bits = 0, group = 0;      // quantized types: code width; uniform types: group size
  const uint8_t* codes = nullptr;  // [d_out][row_code_bytes(d_in, bits)] (quantized types)
  std::vector<float> scale;     // uniform: [d_out][n_groups]
  std::vector<float> mn;        // uniform: [d_out][n_groups]
  std::vector<float> lut;       // LUT: [d_out][2^bits]
  std::vector<float> rscale;    // residual: [d_out]
  std::vector<int32_t> rank_pos;  // static ranking: rank_pos[i] = position of channel i
};

// Validates desc and builds the CPU view (throws InvalidArgument naming the linear).
std::unique_ptr<CpuLinear> load_linear(const LinearDesc& desc);

// out[0..d_in) = row o of W, dequantized.
void dequant_row(const CpuLinear& W, int64_t o, float* out);

// y[T][d_out] = W x[T][d_in] (+ DecDEC compensation per row when call.mode != Off).
void matmul(const CpuLinear& W, float* y, const float* x, int T, const DecdecCall& call, int n_threads);

// dst[0..n) = fp16 src[0..n) widened.
void f16_to_f32_n(const uint16_t* src, float* dst, int64_t n);

}  // namespace cpu
}  // namespace ddrt
