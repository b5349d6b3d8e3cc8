// decdec_rt: measured bandwidth limits of a GPU (probe.h), the inputs of the knee model
// k*/1024 = (b_w/4) * (BW_zero_copy / BW_hbm) that tools/decdec_knee.py checks.
//
//   hbm_read        read-only kernel over a 2 GiB device buffer (16-byte loads, 4 in flight per
//                   thread, XOR-folded into a sink so the loads stay)
//   zero_copy       the same kernel over 256 MiB of cudaHostAlloc-mapped memory (its device pointer)
//   zero_copy_gather  256 random 2 KB rows of that host buffer per kernel (one block per row, a
//                   16-byte load per thread), timed over back-to-back launches (no row read twice)
//   h2d_memcpy      cudaMemcpyAsync of the 256 MiB pinned buffer into device memory
// Each number is the median of kReps event-timed runs after kWarmup untimed ones.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.cuh"
#include "probe.h"

namespace ddrt {

namespace {

constexpr size_t kHbmBytes = size_t(2) << 30;        // 2 GiB: far beyond L2
constexpr size_t kHostBytes = size_t(256) << 20;     // 256 MiB pinned mapped host memory
constexpr int kRowBytes = 2048;                      // a residual row of d_out = 4096 (RES4)
constexpr int kGatherRows = 256;                     // rows per gather kernel
constexpr int kGathersPerRun = 16;                   // back-to-back gather launches per timed run
constexpr int kReps = 10, kWarmup = 2;
constexpr int kThreads = 256;
constexpr int kUnroll = 4;                           // independent 16-byte loads in flight per thread
constexpr unsigned kNever = 0x9e3779b9u;             // the sink is written only if the XOR equals this

void check(cudaError_t e, const char* call) {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so the caller's next CUDA call starts clean
  throw CudaError(std::string("bandwidth probe: ") + call + " failed: " + cudaGetErrorString(e));
}
#define DDRT_PROBE_CHECK(call) check((call), #call)

// ---- kernels ----------------------------------------------------------------------------------
__device__ __forceinline__ unsigned fold(const uint4& v) { return v.x ^ v.y ^ v.z ^ v.w; }

// Reads p[0..n) once (grid-stride, kUnroll loads issued before any is used).
__global__ void read_stream(const uint4* __restrict__ p, size_t n, unsigned* sink) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + (kUnroll - 1) * stride < n; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = p[i + u * stride];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= fold(v[u]);
  }
  for (; i < n; i += stride) acc ^= fold(p[i]);
  if (acc == kNever) *sink = acc;
}

// Block b reads row rows[b] of `base` (rows of row_vec uint4), one uint4 per thread per step.
__global__ void gather_rows(const uint4* __restrict__ base, const int32_t* __restrict__ rows, int row_vec,
                            unsigned* sink) {
  const uint4* row = base + (size_t)rows[blockIdx.x] * row_vec;
  unsigned acc = 0;
  for (int j = threadIdx.x; j < row_vec; j += blockDim.x) acc ^= fold(row[j]);
  if (acc == kNever) *sink = acc;
}

// ---- owners (release on every path, errors ignored in destructors) ----------------------------
struct DeviceBuf {
  void* p = nullptr;
  DeviceBuf(size_t bytes, const char* what) {
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
      throw OutOfMemory("bandwidth probe: cudaMalloc of " + std::to_string(bytes) + " bytes (" + what +
                        ") failed");
    }
  }
  ~DeviceBuf() { cudaFree(p); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;
};

struct MappedHostBuf {
  void* host = nullptr;
  void* dev = nullptr;  // the device's view of `host`
  explicit MappedHostBuf(size_t bytes) {
    if (cudaHostAlloc(&host, bytes, cudaHostAllocMapped) != cudaSuccess) {
      cudaGetLastError();
      host = nullptr;
      throw OutOfMemory("bandwidth probe: cudaHostAlloc (mapped) of " + std::to_string(bytes) + " bytes failed");
    }
    DDRT_PROBE_CHECK(cudaHostGetDevicePointer(&dev, host, 0));
  }
  ~MappedHostBuf() { cudaFreeHost(host); }
  MappedHostBuf(const MappedHostBuf&) = delete;
  MappedHostBuf& operator=(const MappedHostBuf&) = delete;
};

struct StreamAndEvents {
  cudaStream_t st = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  StreamAndEvents() {
    DDRT_PROBE_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    DDRT_PROBE_CHECK(cudaEventCreate(&start));
    DDRT_PROBE_CHECK(cudaEventCreate(&stop));
  }
  ~StreamAndEvents() {
    if (stop) cudaEventDestroy(stop);
    if (start) cudaEventDestroy(start);
    if (st) cudaStreamDestroy(st);
  }
  StreamAndEvents(const StreamAndEvents&) = delete;
  StreamAndEvents& operator=(const StreamAndEvents&) = delete;
};

// Makes `device` current for this scope and restores the caller's device afterwards.
struct DeviceScope {
  int prev = -1;
  explicit DeviceScope(int device) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw CudaError(std::string("bandwidth probe: CUDA unavailable: cudaGetDeviceCount failed: ") +
                      cudaGetErrorString(e));
    }
    if (device < 0 || device >= n)
      throw CudaError("bandwidth probe: device 'cuda:" + std::to_string(device) + "' does not exist (" +
                      std::to_string(n) + " CUDA device(s) visible)");
    DDRT_PROBE_CHECK(cudaGetDevice(&prev));
    DDRT_PROBE_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() {
    if (prev >= 0) cudaSetDevice(prev);
  }
};

// ---- timing -----------------------------------------------------------------------------------
// Median milliseconds of enqueue(run) between two events, over kReps runs after kWarmup.
double median_ms(StreamAndEvents& se, const std::function<void(int run)>& enqueue) {
  std::vector<float> ms;
  for (int r = 0; r < kWarmup + kReps; ++r) {
    DDRT_PROBE_CHECK(cudaEventRecord(se.start, se.st));
    enqueue(r);
    DDRT_PROBE_CHECK(cudaGetLastError());  // launch errors
    DDRT_PROBE_CHECK(cudaEventRecord(se.stop, se.st));
    DDRT_PROBE_CHECK(cudaEventSynchronize(se.stop));
    float t = 0;
    DDRT_PROBE_CHECK(cudaEventElapsedTime(&t, se.start, se.stop));
    if (r >= kWarmup) ms.push_back(t);
  }
  std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
  return ms[ms.size() / 2];
}

double gbs(double bytes, double ms) { return bytes / (ms * 1e-3) / 1e9; }

// Blocks that fill the device with read_stream.
int stream_grid() {
  int dev = 0, sms = 0, per_sm = 0;
  DDRT_PROBE_CHECK(cudaGetDevice(&dev));
  DDRT_PROBE_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  DDRT_PROBE_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, read_stream, kThreads, 0));
  return sms * std::max(per_sm, 1);
}

double stream_read_gbs(StreamAndEvents& se, const void* p, size_t bytes, unsigned* sink) {
  const int grid = stream_grid();
  const double ms = median_ms(se, [&](int) {
    DDRT_PROBE_CHECK(gpu::launch_plain(read_stream, grid, kThreads, 0, se.st, (const uint4*)p, bytes / sizeof(uint4), sink));
  });
  return gbs((double)bytes, ms);
}

// rows [runs * kGathersPerRun * kGatherRows]: distinct random rows of the host buffer, so that no
// row is read twice (a second read could hit in L2).
std::vector<int32_t> random_rows(int64_t n_rows, size_t count) {
  std::vector<int32_t> all((size_t)n_rows);
  std::iota(all.begin(), all.end(), 0);
  uint64_t s = 0x2545F4914F6CDD1Dull;
  for (size_t i = all.size() - 1; i > 0; --i) {  // Fisher-Yates with xorshift64*
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    std::swap(all[i], all[(s * 0x2545F4914F6CDD1Dull) % (i + 1)]);
  }
  all.resize(count);
  return all;
}

// Returns the time of one gather in microseconds (median run / kGathersPerRun).
double gather_us(StreamAndEvents& se, const MappedHostBuf& host, unsigned* sink) {
  const int64_t n_rows = (int64_t)(kHostBytes / kRowBytes);
  const size_t per_run = (size_t)kGathersPerRun * kGatherRows;
  const std::vector<int32_t> rows = random_rows(n_rows, per_run * (kWarmup + kReps));
  DeviceBuf d_rows(rows.size() * sizeof(int32_t), "gather row indices");
  DDRT_PROBE_CHECK(cudaMemcpy(d_rows.p, rows.data(), rows.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  const int row_vec = kRowBytes / (int)sizeof(uint4);
  const double ms = median_ms(se, [&](int run) {
    const int32_t* r = (const int32_t*)d_rows.p + run * per_run;
    for (int g = 0; g < kGathersPerRun; ++g)
      DDRT_PROBE_CHECK(gpu::launch_plain(gather_rows, kGatherRows, row_vec, 0, se.st, (const uint4*)host.dev,
                                         r + g * kGatherRows, row_vec, sink));
  });
  return ms * 1e3 / kGathersPerRun;
}

}  // namespace

BandwidthProbe measure_bandwidth(int device) {
  DeviceScope scope(device);
  BandwidthProbe out;
  cudaDeviceProp prop{};
  DDRT_PROBE_CHECK(cudaGetDeviceProperties(&prop, device));
  out.gpu_name = prop.name;
  out.hbm_bytes = (int64_t)kHbmBytes;
  out.zero_copy_bytes = (int64_t)kHostBytes;
  out.gather_rows = kGatherRows;
  out.gather_row_bytes = kRowBytes;
  out.reps = kReps;

  StreamAndEvents se;
  DeviceBuf sink(sizeof(unsigned), "sink");
  DeviceBuf dev(kHbmBytes, "2 GiB HBM read buffer");  // [kHbmBytes]
  MappedHostBuf host(kHostBytes);                     // [kHostBytes], pinned and mapped
  DDRT_PROBE_CHECK(cudaMemsetAsync(dev.p, 1, kHbmBytes, se.st));
  std::fill((uint8_t*)host.host, (uint8_t*)host.host + kHostBytes, (uint8_t)1);  // touch every page
  DDRT_PROBE_CHECK(cudaStreamSynchronize(se.st));

  out.hbm_read_gbs = stream_read_gbs(se, dev.p, kHbmBytes, (unsigned*)sink.p);
  out.zero_copy_gbs = stream_read_gbs(se, host.dev, kHostBytes, (unsigned*)sink.p);
  out.zero_copy_gather_us = gather_us(se, host, (unsigned*)sink.p);
  out.zero_copy_gather_gbs = (double)kGatherRows * kRowBytes / (out.zero_copy_gather_us * 1e-6) / 1e9;
  const double ms = median_ms(
      se, [&](int) { DDRT_PROBE_CHECK(cudaMemcpyAsync(dev.p, host.host, kHostBytes, cudaMemcpyHostToDevice, se.st)); });
  out.h2d_memcpy_gbs = gbs((double)kHostBytes, ms);
  return out;
}

}  // namespace ddrt
