// decdec_rt CUDA backend: quantized GEMV instantiations for 3-bit codes (one file per width
// keeps each nvcc invocation short).
#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

DDRT_GEMV_Q_INSTANTIATE(3, false)
DDRT_GEMV_Q_INSTANTIATE(3, true)
DDRT_GEMV_PREP_INSTANTIATE(3)

}  // namespace gpu
}  // namespace ddrt
