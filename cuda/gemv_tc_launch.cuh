// decdec_rt CUDA backend: launch of one (bits, group) instantiation of the fused tensor-core GEMV
// (gemv_tc.cuh); included by gemv_tc3.cu and gemv_tc4.cu (one file per code width, so the
// instantiations compile in parallel).
#pragma once

#include "gemv_tc.cuh"

namespace ddrt {
namespace gpu {

// whether a launch runs the block-local instantiation: its plan is block-local, or DDRT_TC_ONE
// sends every bulk-ring launch there (gemv_tc_one)
inline bool tc_local_inst(bool local, bool bulk) { return local || (bulk && gemv_tc_one()); }

template <int B, int G>
int tc_blocks_per_sm(size_t smem, bool bulk, bool local) {
  // The launch limit is set to the device's opt-in maximum, not to this plan's need: plans are
  // cached per linear, and a limit lowered by a later, smaller plan failed an earlier plan's
  // launches (invalid argument).
  int dev = 0, max_smem = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
    return 0;
  auto k = tc_local_inst(local, bulk) ? gemv_tc_kernel<B, G, true, true> : bulk ? gemv_tc_kernel<B, G, true> : gemv_tc_kernel<B, G, false>;
  if (smem > (size_t)max_smem || cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem) != cudaSuccess)
    return 0;
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, kTcThreads, smem) != cudaSuccess) return 0;
  return n;
}

template <int B, int G>
cudaError_t tc_launch(const TcArgs& a, int grid, size_t smem, cudaStream_t st) {
  if (tc_local_inst(a.local > 0, a.bulk))  // (a.local: with bulk only, gemv_tc_plan)
    return launch_pdl(gemv_tc_kernel<B, G, true, true>, dim3((unsigned)grid), dim3(kTcThreads), smem, st, a);
  return a.bulk ? launch_pdl(gemv_tc_kernel<B, G, true>, dim3((unsigned)grid), dim3(kTcThreads), smem, st, a)
                : launch_pdl(gemv_tc_kernel<B, G, false>, dim3((unsigned)grid), dim3(kTcThreads), smem, st, a);
}

// the chain kernel's resident blocks per SM at this shared memory (0: it cannot launch)
template <int B, int G>
int tc_chain_blocks_per_sm(size_t smem) {
  int dev = 0, max_smem = 0, n = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
      smem > (size_t)max_smem ||
      cudaFuncSetAttribute(gemv_tc_chain_kernel<B, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem) !=
          cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, gemv_tc_chain_kernel<B, G>, kTcThreads, smem) != cudaSuccess)
    return 0;
  return n;
}

template <int B, int G>
cudaError_t tc_chain_launch(const TcChainArgs& c, int grid, size_t smem, cudaStream_t st) {
  return launch_pdl(gemv_tc_chain_kernel<B, G>, dim3((unsigned)grid), dim3(kTcThreads), smem, st, c);
}

template <int B, int G>
cudaError_t tc_pack_launch(const TcArgs& a, uint4* units, cudaStream_t st) {
  const int64_t blocks = (a.n_tiles * a.n_units + kTcWarps - 1) / kTcWarps;
  return launch_plain(tc_pack_kernel<B, G>, dim3((unsigned)blocks), dim3(kTcThreads), 0, st, a, units);
}

#define DDRT_GEMV_TC_INSTANTIATE(B, G)                                                        \
  template int tc_blocks_per_sm<B, G>(size_t, bool, bool);                                      \
  template cudaError_t tc_pack_launch<B, G>(const TcArgs&, uint4*, cudaStream_t);             \
  template cudaError_t tc_launch<B, G>(const TcArgs&, int, size_t, cudaStream_t);             \
  template int tc_chain_blocks_per_sm<B, G>(size_t);                                          \
  template cudaError_t tc_chain_launch<B, G>(const TcChainArgs&, int, size_t, cudaStream_t);

}  // namespace gpu
}  // namespace ddrt
