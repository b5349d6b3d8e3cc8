// decdec_rt CUDA backend: quantized GEMV instantiations for 8-bit codes (one file per width
// keeps each nvcc invocation short).
#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

DDRT_GEMV_Q_INSTANTIATE(8, 1)
DDRT_GEMV_Q_INSTANTIATE(8, 2)
DDRT_GEMV_Q_INSTANTIATE(8, 4)


}  // namespace gpu
}  // namespace ddrt
