// decdec_rt CUDA backend: launch of one (bits, group) instantiation of the fused tensor-core GEMV
// (gemv_tc.cuh); included by gemv_tc3.cu and gemv_tc4.cu (one file per code width, so the
// instantiations compile in parallel).
#pragma once

#include "gemv_tc.cuh"

namespace ddrt {
namespace gpu {

template <int B, int G>
int tc_blocks_per_sm(size_t smem) {
  if (smem > 48 * 1024 &&
      cudaFuncSetAttribute(gemv_tc_kernel<B, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess)
    return 0;
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gemv_tc_kernel<B, G>, kTcThreads, smem) != cudaSuccess) return 0;
  return n;
}

template <int B, int G>
cudaError_t tc_launch(const TcArgs& a, int grid, size_t smem, bool pdl, cudaStream_t st) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)grid);
  cfg.blockDim = dim3(kTcThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, gemv_tc_kernel<B, G>, a);
}

#define DDRT_GEMV_TC_INSTANTIATE(B, G)                                                        \
  template int tc_blocks_per_sm<B, G>(size_t);                                                \
  template cudaError_t tc_launch<B, G>(const TcArgs&, int, size_t, bool, cudaStream_t);

}  // namespace gpu
}  // namespace ddrt
