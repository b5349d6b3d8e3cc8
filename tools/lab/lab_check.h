// The standalone labs' CUDA error check (tools/lab/*.cu): print where and why, and leave main.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>

#define CK(x)                                                                \
  do {                                                                       \
    cudaError_t e_ = (x);                                                    \
    if (e_ != cudaSuccess) {                                                 \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      return 1;                                                              \
    }                                                                        \
  } while (0)
