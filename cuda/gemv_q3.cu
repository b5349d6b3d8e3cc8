// decdec_rt CUDA backend: quantized GEMV instantiations for 3-bit codes (one file per width
// keeps each nvcc invocation short).
#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

DDRT_GEMV_Q_INSTANTIATE(3, 1)
DDRT_GEMV_Q_INSTANTIATE(3, 2)
DDRT_GEMV_Q_INSTANTIATE(3, 4)
DDRT_GEMV_Q_INSTANTIATE(3, 0)

}  // namespace gpu
}  // namespace ddrt
