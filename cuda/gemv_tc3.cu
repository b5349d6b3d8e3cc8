// decdec_rt CUDA backend: the fused tensor-core GEMV (gemv_tc.cuh) for 3-bit codes.
#include "gemv_tc_launch.cuh"

namespace ddrt {
namespace gpu {
DDRT_GEMV_TC_INSTANTIATE(3, 32)
DDRT_GEMV_TC_INSTANTIATE(3, 64)
DDRT_GEMV_TC_INSTANTIATE(3, 128)
}  // namespace gpu
}  // namespace ddrt
