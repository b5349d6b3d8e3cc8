// decdec_rt CUDA backend: dispatch of the CUDA-core quantized GEMV (kernel in gemv_q.cuh) by code
// width, group and rows per warp: every quantized type, and the twin of the fused tensor-core
// GEMV (gemv_tc.cuh) for uniform 3/4-bit.
#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

namespace {
int g_forced_rows = 0;  // gemv_q_force_rows (the GEMV lab); 0: gemv_q_rows decides

template <int B, int GJ>
cudaError_t run_rows(const GemvArgs& a, int R, cudaStream_t st) {
  switch (R) {
    case 1: return gemv_q_run<B, GJ, 1>(a, st);
    case 2: return gemv_q_run<B, GJ, 2>(a, st);
    case 4: return gemv_q_run<B, GJ, 4>(a, st);
  }
  return cudaErrorInvalidValue;
}
template <int B>
cudaError_t run_group(const GemvArgs& a, int R, cudaStream_t st) {
  switch (a.W.group) {
    case 32: return run_rows<B, 1>(a, R, st);
    case 64: return run_rows<B, 2>(a, R, st);
    case 128: return run_rows<B, 4>(a, R, st);
  }
  return cudaErrorInvalidValue;
}
}  // namespace

void gemv_q_force_rows(int rows_per_warp) { g_forced_rows = rows_per_warp; }

int gemv_q_rows(const DevLinear& W) {
  if (g_forced_rows > 0) return g_forced_rows;
  return W.d_out >= 2048 ? 4 : W.d_out >= 512 ? 2 : 1;
}

cudaError_t launch_gemv_q(const DevLinear& W, float* y, const float* x, cudaStream_t st) {
  const GemvArgs a{W, y, x};
  const int R = gemv_q_rows(W);
  const bool lut = is_lut(W.type);
  switch (W.bits) {
    case 2: return run_group<2>(a, R, st);
    case 3: return lut ? run_rows<3, 0>(a, R, st) : run_group<3>(a, R, st);
    case 4: return lut ? run_rows<4, 0>(a, R, st) : run_group<4>(a, R, st);
    case 8: return run_group<8>(a, R, st);
  }
  return cudaErrorInvalidValue;
}

}  // namespace gpu
}  // namespace ddrt
