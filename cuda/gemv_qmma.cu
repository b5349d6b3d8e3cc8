// decdec_rt CUDA backend: launches of the tensor-core quantized GEMV (gemv_qmma.cuh).
#include "gemv_qmma.cuh"

namespace ddrt {
namespace gpu {

template <int B, int G>
cudaError_t gemv_qmma_run(const GemvArgs& a, cudaStream_t st) {
  const size_t smem = mma_smem_bytes(a.W.d_in, B, G);
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(gemv_qmma_kernel<B, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
  }
  const int64_t blocks = (a.W.d_out + kMmaTiles * 16 - 1) / (kMmaTiles * 16);
  gemv_qmma_kernel<B, G><<<(unsigned)blocks, kMmaThreads, smem, st>>>(a);
  return cudaGetLastError();
}

template cudaError_t gemv_qmma_run<3, 32>(const GemvArgs&, cudaStream_t);
template cudaError_t gemv_qmma_run<3, 64>(const GemvArgs&, cudaStream_t);
template cudaError_t gemv_qmma_run<3, 128>(const GemvArgs&, cudaStream_t);
template cudaError_t gemv_qmma_run<4, 32>(const GemvArgs&, cudaStream_t);
template cudaError_t gemv_qmma_run<4, 64>(const GemvArgs&, cudaStream_t);
template cudaError_t gemv_qmma_run<4, 128>(const GemvArgs&, cudaStream_t);

}  // namespace gpu
}  // namespace ddrt
