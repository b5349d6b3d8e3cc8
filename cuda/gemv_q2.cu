// decdec_rt CUDA backend: quantized GEMV instantiations for 2-bit codes (one file per width
// keeps each nvcc invocation short).
#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

DDRT_GEMV_Q_INSTANTIATE(2, 1)
DDRT_GEMV_Q_INSTANTIATE(2, 2)
DDRT_GEMV_Q_INSTANTIATE(2, 4)


}  // namespace gpu
}  // namespace ddrt
