// decdec_rt CUDA backend: quantized GEMV instantiations for 8-bit codes (one file per width
// keeps each nvcc invocation short).
#include "gemv_q.cuh"

namespace ddrt {
namespace gpu {

DDRT_GEMV_Q_INSTANTIATE(8, false)
DDRT_GEMV_PREP_INSTANTIATE(8)

}  // namespace gpu
}  // namespace ddrt
