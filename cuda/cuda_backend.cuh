// decdec_rt CUDA backend: what tests and benchmarks may reach beyond the Backend interface.
#pragma once

#include <cuda_runtime.h>

#include "backend.h"

namespace ddrt {

// The stream every op of a CUDA backend runs on (for event timing and graph capture).
// Throws InvalidArgument when `b` is not a CUDA backend.
cudaStream_t cuda_stream_of(Backend& b);
// The side-stream DecDEC twin (env DDRT_DECDEC_PARALLEL=1 at construction) on or off, for tests.
void cuda_set_decdec_parallel(Backend& b, bool on);
// The bytes the attention prefetches into L2 for the hinted linears (DDRT_L2_PF_MB), for tests;
// a negative value restores the environment's.
void cuda_set_l2_prefetch(Backend& b, int64_t attn_bytes);

}  // namespace ddrt
