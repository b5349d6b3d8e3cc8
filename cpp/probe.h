// decdec_rt: the GPU's bandwidth limits that decide where DecDEC's compensation stops hiding
// (the knee, DESIGN.md §2 and §5): HBM streaming read, zero-copy reads of pinned mapped host
// memory (streaming and a gather of residual-sized rows) and pinned host-to-device memcpy.
// No CUDA headers here: cuda/probe.cu implements it, cpp/stub/no_cuda.cpp stands in without CUDA.
#pragma once

#include <cstdint>
#include <string>

namespace ddrt {

struct BandwidthProbe {
  std::string gpu_name;
  double hbm_read_gbs = 0;          // read-only kernel over a device buffer of hbm_bytes
  double zero_copy_gbs = 0;         // the same kernel over mapped pinned host memory (zero_copy_bytes)
  double zero_copy_gather_gbs = 0;  // gather_rows random rows of gather_row_bytes from that host buffer
  double zero_copy_gather_us = 0;   // time of one such gather (one kernel, back-to-back launches)
  double h2d_memcpy_gbs = 0;        // cudaMemcpy of zero_copy_bytes pinned host -> device
  int64_t hbm_bytes = 0, zero_copy_bytes = 0, gather_rows = 0, gather_row_bytes = 0;
  int reps = 0;                     // timed runs per number (the median is reported)
};

// Measures the numbers above on CUDA device `device` (GB = 1e9 bytes). Takes about a second and
// 2 GiB of free device memory. Throws CudaError when CUDA is unavailable or a call fails,
// OutOfMemory when a buffer cannot be allocated. Restores the caller's current device.
BandwidthProbe measure_bandwidth(int device);

}  // namespace ddrt
