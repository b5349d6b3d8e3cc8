// decdec_rt CUDA backend: dispatch of the quantized GEMV (kernel in gemv_q.cuh) by code width.
#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

namespace {
int g_max_smem(int* out) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(out, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  return (int)e;
}
}  // namespace

size_t gemv_q_smem(const DevLinear& W) {
  int max_smem = 0;
  if (g_max_smem(&max_smem) != 0) return 0;
  const size_t need = gemv_q_smem_bytes(W, true);
  return need <= (size_t)max_smem ? need : 0;
}

int64_t gemv_prep_floats(const DevLinear& W) { return n_steps(W.d_in, W.bits) * span_floats(W.bits); }
int64_t gemv_prep_sums(const DevLinear& W) { return n_steps(W.d_in, W.bits) * step_slices(W.bits); }

cudaError_t launch_gemv_prep(const DevLinear& W, const float* x, float* xprep, float* sxprep, cudaStream_t st) {
  switch (W.bits) {
    case 2: return gemv_prep_run<2>(x, W.d_in, xprep, sxprep, st);
    case 3: return gemv_prep_run<3>(x, W.d_in, xprep, sxprep, st);
    case 4: return gemv_prep_run<4>(x, W.d_in, xprep, sxprep, st);
    case 8: return gemv_prep_run<8>(x, W.d_in, xprep, sxprep, st);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_gemv_q(const DevLinear& W, float* y, const float* x, const float* xprep,
                          const float* sxprep, int rows_per_warp, int n_blocks, cudaStream_t st) {
  (void)rows_per_warp;
  const GemvArgs a{W, y, x, xprep, sxprep};
  const size_t smem = gemv_q_smem_bytes(W, xprep == nullptr);
  const bool lut = is_lut(W.type);
  switch (W.bits) {
    case 2: return gemv_q_run<2, false>(a, n_blocks, smem, st);
    case 3: return lut ? gemv_q_run<3, true>(a, n_blocks, smem, st) : gemv_q_run<3, false>(a, n_blocks, smem, st);
    case 4: return lut ? gemv_q_run<4, true>(a, n_blocks, smem, st) : gemv_q_run<4, false>(a, n_blocks, smem, st);
    case 8: return gemv_q_run<8, false>(a, n_blocks, smem, st);
  }
  return cudaErrorInvalidValue;
}

cudaError_t gemv_q_grid(const DevLinear& W, bool staged, int n_sm, int* rows_per_warp, int* n_blocks) {
  const size_t smem = gemv_q_smem_bytes(W, staged);
  const bool lut = is_lut(W.type);
  int per_sm = 0;
  cudaError_t e = cudaErrorInvalidValue;
  switch (W.bits) {
    case 2: e = gemv_q_blocks_per_sm<2, false>(staged, smem, &per_sm); break;
    case 3: e = lut ? gemv_q_blocks_per_sm<3, true>(staged, smem, &per_sm)
                    : gemv_q_blocks_per_sm<3, false>(staged, smem, &per_sm); break;
    case 4: e = lut ? gemv_q_blocks_per_sm<4, true>(staged, smem, &per_sm)
                    : gemv_q_blocks_per_sm<4, false>(staged, smem, &per_sm); break;
    case 8: e = gemv_q_blocks_per_sm<8, false>(staged, smem, &per_sm); break;
  }
  if (e != cudaSuccess) return e;
  if (per_sm < 1) per_sm = 1;
  // whole rows per warp, as few rounds as the resident warps allow, no idle tail round
  const int64_t resident = (int64_t)per_sm * n_sm * kGemvWarps;
  const int64_t rpw = (W.d_out + resident - 1) / resident;
  const int64_t warps = (W.d_out + rpw - 1) / rpw;
  *rows_per_warp = (int)rpw;
  *n_blocks = (int)((warps + kGemvWarps - 1) / kGemvWarps);
  return cudaSuccess;
}

}  // namespace gpu
}  // namespace ddrt
