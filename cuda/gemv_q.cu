// decdec_rt CUDA backend: dispatch of the quantized GEMV (kernel in gemv_q.cuh) by code width,
// group and rows per warp.
#include "gemv_qmma.cuh"

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
// The tensor-core kernel (gemv_qmma.cuh) for uniform 3/4-bit weights whose x fits in shared memory.
template <int B>
cudaError_t run_mma(const GemvArgs& a, cudaStream_t st) {
  switch (a.W.group) {
    case 32: return gemv_qmma_run<B, 32>(a, st);
    case 64: return gemv_qmma_run<B, 64>(a, st);
    case 128: return gemv_qmma_run<B, 128>(a, st);
  }
  return cudaErrorInvalidValue;
}
bool use_mma(const DevLinear& W) {
  static int max_smem = -1;  // opt-in shared memory per block of the current device
  // Only where it measured faster (BENCHMARKS.md, H200): 3-bit with d_out <= 8192. 4-bit and
  // tall matrices stay on the CUDA-core kernel.
  if (g_forced_rows != 0 || is_lut(W.type) || W.bits != 3 || W.d_out > 8192) return false;
  if (max_smem < 0) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
      max_smem = 0;
  }
  return mma_smem_bytes(W.d_in, W.bits, W.group) <= (size_t)max_smem;
}
}  // namespace

void gemv_q_force_rows(int rows_per_warp) { g_forced_rows = rows_per_warp; }

int gemv_q_rows(const DevLinear& W) {
  if (g_forced_rows > 0) return g_forced_rows;
  return W.d_out >= 2048 ? 4 : W.d_out >= 512 ? 2 : 1;
}

cudaError_t launch_gemv_q(const DevLinear& W, float* y, const float* x, cudaStream_t st) {
  const GemvArgs a{W, y, x};
  if (use_mma(W)) return W.bits == 3 ? run_mma<3>(a, st) : run_mma<4>(a, st);
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
