// The zero-copy lab: what shape of gather reads residual rows from host memory fastest?
//
// The fused GEMV's compensation blocks (cuda/gemv_tc.cuh, tc_comp_block) read the selected
// residual rows by zero-copy 16-byte loads, block b taking the bytes [b S, (b + 1) S) of every
// selected row (S = 16 seg_vecs). Inside the GEMV that gather ran at 16-25 GB/s (BENCHMARKS) where
// a plain stream of mapped memory reaches ~51. This lab times the gather alone, one launch per
// selection (a fresh random set of rows each time, so nothing is an L2 hit), over:
//   S      the slice of a row one block reads (64 ... 2048 bytes),
//   off    the slice's byte offset from a 128-byte boundary (0: whole 128-byte lines; 16: every
//          slice straddles lines, as seg_vecs = 7 gives on most blocks),
//   U      the 16-byte loads each thread has in flight (the kernel has 4),
//   k      the rows selected, and the row's bytes Rb (2048: a 4096-output matrix; 14336: the
//          Llama-3-8B gate/up group),
// and prints GB/s of the rows' bytes (the launch's fixed cost, an empty launch of the same grid,
// subtracted) beside the raw time. `stream` is the plain contiguous read for reference.
// Build and run on the GPU machine:
//   nvcc -O3 -std=c++17 -arch=sm_90 tools/lab/zc_lab.cu -o /tmp/zc_lab && /tmp/zc_lab
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "lab_check.h"

namespace {

constexpr int kThreads = 256;

// block b: bytes [off + b S, off + (b + 1) S) of each selected row (clipped to the row); thread ->
// (16-byte vector v of the slice, row split rs); U loads in flight per thread
template <int U>
__global__ void gather_kernel(const uint8_t* rows, int64_t pitch, const int* sel, int k, int S, int off, int rb,
                              uint32_t* out) {
  const int nv = S / 16, n_rs = kThreads / nv, rs = threadIdx.x / nv, v = threadIdx.x % nv;
  const int64_t b0 = (int64_t)off + (int64_t)blockIdx.x * S + 16 * v;
  uint32_t acc = 0;
  if (rs < n_rs && b0 + 16 <= off + rb) {
    for (int s0 = rs; s0 < k; s0 += U * n_rs) {
      uint4 r[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int s = s0 + u * n_rs;
        r[u] = s < k ? *reinterpret_cast<const uint4*>(rows + (int64_t)sel[s] * pitch + b0) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) acc += r[u].x ^ r[u].y ^ r[u].z ^ r[u].w;
    }
  }
  if (acc == 0x12345678u) out[0] = acc;  // keeps the loads
}

// whole rows: warp w of the grid takes rows w, w + warps, ...; 512 bytes a warp load, U in flight
template <int U>
__global__ void rows_kernel(const uint8_t* rows, int64_t pitch, const int* sel, int k, int rb, uint32_t* out) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = ((int64_t)blockIdx.x * kThreads + threadIdx.x) >> 5, warps = (int64_t)gridDim.x * kThreads / 32;
  const int per_row = rb / 512;  // 512-byte pieces per row
  uint32_t acc = 0;
  const int64_t pieces = (int64_t)k * per_row;
  for (int64_t p0 = warp; p0 < pieces; p0 += U * warps) {
    uint4 r[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t p = p0 + u * warps;
      r[u] = p < pieces ? *reinterpret_cast<const uint4*>(rows + (int64_t)sel[p / per_row] * pitch + (p % per_row) * 512 +
                                                           16 * lane)
                        : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) acc += r[u].x ^ r[u].y ^ r[u].z ^ r[u].w;
  }
  if (acc == 0x12345678u) out[0] = acc;
}

__global__ void stream_kernel(const uint4* p, int64_t n, uint32_t* out) {
  uint32_t acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < n; i += (int64_t)gridDim.x * kThreads) {
    const uint4 r = p[i];
    acc += r.x ^ r.y ^ r.z ^ r.w;
  }
  if (acc == 0x12345678u) out[0] = acc;
}

__global__ void empty_kernel(uint32_t* out) {
  if (out == nullptr) out[0] = 1;
}

}  // namespace

int main() {
  constexpr int64_t kPitch = 14336 + 128, kRows = 16384;  // 237 MB of mapped host memory
  uint8_t* host = nullptr;
  CK(cudaHostAlloc(&host, (size_t)(kPitch * kRows), cudaHostAllocMapped));
  std::memset(host, 0x5a, (size_t)(kPitch * kRows));
  uint8_t* rows = nullptr;
  CK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&rows), host, 0));
  constexpr int kReps = 40, kMaxK = 512;
  std::mt19937 rng(7);
  std::vector<int> sel_h((size_t)kReps * kMaxK);
  {
    std::vector<int> all(kRows);
    std::iota(all.begin(), all.end(), 0);
    for (int r = 0; r < kReps; ++r) {
      std::shuffle(all.begin(), all.end(), rng);
      std::sort(all.begin(), all.begin() + kMaxK);  // the kernel's selections are in channel order
      std::copy(all.begin(), all.begin() + kMaxK, sel_h.begin() + (size_t)r * kMaxK);
    }
  }
  int* sel = nullptr;
  uint32_t* out = nullptr;
  CK(cudaMalloc(&sel, sel_h.size() * 4));
  CK(cudaMalloc(&out, 4));
  CK(cudaMemcpy(sel, sel_h.data(), sel_h.size() * 4, cudaMemcpyHostToDevice));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  // median over 3 rounds of the mean over kReps launches, each on its own selection
  auto time_us = [&](auto launch) -> double {
    std::vector<double> t;
    launch(0);
    for (int round = 0; round < 3; ++round) {
      cudaEventRecord(e0);
      for (int r = 0; r < kReps; ++r) launch(r);
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      t.push_back(1000.0 * ms / kReps);
    }
    std::sort(t.begin(), t.end());
    return t[1];
  };
  {
    const int64_t n = (int64_t)128 << 20;
    const double us = time_us([&](int) { stream_kernel<<<132 * 8, kThreads>>>(reinterpret_cast<const uint4*>(rows), n / 16, out); });
    std::printf("stream 128 MiB: %.1f us, %.1f GB/s\n", us, n / us / 1e3);
  }
  std::printf("%-7s %6s %5s %5s %4s %2s %7s %9s %8s %8s\n", "kind", "Rb", "k", "S", "off", "U", "blocks", "bytes", "us", "GB/s");
  auto row = [&](const char* kind, int rb, int k, int S, int off, int U, int blocks, double us, double us0) {
    const double bytes = (double)rb * k;
    std::printf("%-7s %6d %5d %5d %4d %2d %7d %9.0f %8.2f %8.1f\n", kind, rb, k, S, off, U, blocks, bytes, us,
                bytes / std::max(us - us0, 1e-3) / 1e3);
  };
  for (int rb : {2048, 14336}) {
    for (int k : {24, 84, 336}) {
      for (int S : {64, 112, 128, 256, 512, 1024, 2048}) {
        if (S > rb) continue;
        const int blocks = (rb + S - 1) / S;
        const double us0 = time_us([&](int) { empty_kernel<<<blocks, kThreads>>>(out); });
        for (int off : {0, 16}) {
          for (int U : {4, 8}) {
            const double us = time_us([&](int r) {
              const int* s = sel + (size_t)r * kMaxK;
              if (U == 4)
                gather_kernel<4><<<blocks, kThreads>>>(rows, kPitch, s, k, S, off, rb, out);
              else
                gather_kernel<8><<<blocks, kThreads>>>(rows, kPitch, s, k, S, off, rb, out);
            });
            row("slice", rb, k, S, off, U, blocks, us, us0);
          }
        }
      }
      for (int blocks : {8, 32, 132}) {
        const double us0 = time_us([&](int) { empty_kernel<<<blocks, kThreads>>>(out); });
        for (int U : {2, 4}) {
          const double us = time_us([&](int r) {
            const int* s = sel + (size_t)r * kMaxK;
            if (U == 2)
              rows_kernel<2><<<blocks, kThreads>>>(rows, kPitch, s, k, rb, out);
            else
              rows_kernel<4><<<blocks, kThreads>>>(rows, kPitch, s, k, rb, out);
          });
          row("rows", rb, k, rb, 0, U, blocks, us, us0);
        }
      }
    }
  }
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  return 0;
}
