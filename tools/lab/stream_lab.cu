// The weight-streaming pattern lab: how fast can a batch-1 GEMV's *loads* go, by layout and depth?
//
// Streams the code bytes of a 3-bit g128 matrix (d_out x d_in) the way the fused tensor-core GEMV
// does (persistent grid, 16-row x 512-code units, warp w owning a contiguous unit range, D units in
// flight per warp, 6 uint4 per lane per unit) and folds them into an XOR so nothing is optimized
// away. Layouts:
//   rows    the file's row-major layout as the kernel reads it now: lane (g, t) loads rows g and
//           g + 8, 64-byte pieces (4 lanes x 16 B) per row per load instruction
//   unit    the unit-contiguous repack: unit u is one 3072-byte block, load q of the warp reads
//           512 contiguous bytes (lane L: uint4 q * 32 + L)
//   rowsKM  rows, with units numbered k-major (unit u = column u / n_tiles of tile u % n_tiles)
// Build and run:  nvcc -O3 -std=c++17 -arch=sm_90 -Icpp -Icuda tools/lab/stream_lab.cu -o /tmp/stream_lab && /tmp/stream_lab
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "gemv_q.cuh"
#include "lab_check.h"

using ddrt::gpu::ld_stream;  // the kernels' streaming load (gemv_q.cuh)

struct Shape {
  int64_t d_out, d_in, row_vecs, n_units, n_tiles;
};

// ALU: extra dependent integer ops per loaded word (models the decode work)
template <int D, bool UNIT, int ALU, bool KM = false>
__global__ void __launch_bounds__(256) stream_kernel(const uint4* __restrict__ codes, Shape s, int64_t wb,
                                                     uint32_t* out) {
  constexpr int V = 3;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t w = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
  if (w >= wb) return;
  const int64_t U = s.n_tiles * s.n_units;
  const int64_t u0 = w * U / wb, u1 = (w + 1) * U / wb;
  uint32_t acc = 0;
  auto load = [&](int64_t u, uint4 (&v)[2][V]) {
    if (UNIT) {
      const uint4* p = codes + u * 6 * 32 + lane;
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int q = 0; q < V; ++q) v[h][q] = ld_stream(p + (h * V + q) * 32);
    } else {
      const int64_t tile = KM ? u % s.n_tiles : u / s.n_units, k = KM ? u / s.n_tiles : u % s.n_units;
      const int64_t ra = tile * 16 + g, rb = ra + 8;
      const int64_t off = (k >> 3) * 32 * V + 4 * (k & 7) + t;
#pragma unroll
      for (int q = 0; q < V; ++q) {
        v[0][q] = ld_stream(codes + ra * s.row_vecs + off + 32 * q);
        v[1][q] = ld_stream(codes + rb * s.row_vecs + off + 32 * q);
      }
    }
  };
  uint4 buf[D][2][V];
#pragma unroll
  for (int p = 0; p < D; ++p)
    if (u0 + p < u1) load(u0 + p, buf[p]);
  for (int64_t i0 = u0; i0 < u1; i0 += D) {
#pragma unroll
    for (int p = 0; p < D; ++p) {
      if (i0 + p < u1) {
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int q = 0; q < V; ++q) {
            uint32_t x = buf[p][h][q].x ^ buf[p][h][q].y ^ buf[p][h][q].z ^ buf[p][h][q].w;
#pragma unroll
            for (int a = 0; a < ALU; ++a) x = (x >> 3) * 0x9E3779B1u + (uint32_t)a;
            acc += x;
          }
        if (i0 + p + D < u1) load(i0 + p + D, buf[p]);
      }
    }
  }
  if (acc == 0x12345678u) out[0] = acc;  // practically never: keeps the loads alive
}

template <int D, bool UNIT, int ALU, bool KM = false>
double run(const uint4* base, int64_t copy_vecs, int copies, Shape s, int blocks, uint32_t* out) {
  const int64_t wb = std::min<int64_t>((int64_t)blocks * 8, s.n_tiles * s.n_units);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaStream_t st;
  cudaStreamCreate(&st);
  const int n = 32;
  cudaGraph_t gr;
  cudaGraphExec_t ge;
  cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed);
  for (int i = 0; i < n; ++i)
    stream_kernel<D, UNIT, ALU, KM><<<(unsigned)((wb + 7) / 8), 256, 0, st>>>(base + (i % copies) * copy_vecs, s, wb, out);
  cudaStreamEndCapture(st, &gr);
  cudaGraphInstantiate(&ge, gr, 0);
  for (int i = 0; i < 3; ++i) cudaGraphLaunch(ge, st);
  std::vector<float> ms;
  for (int i = 0; i < 30; ++i) {
    cudaEventRecord(e0, st);
    cudaGraphLaunch(ge, st);
    cudaEventRecord(e1, st);
    cudaEventSynchronize(e1);
    float t;
    cudaEventElapsedTime(&t, e0, e1);
    ms.push_back(t / n);
  }
  std::sort(ms.begin(), ms.end());
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(gr);
  cudaStreamDestroy(st);
  return 1000.0 * ms[ms.size() / 2];
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  const int64_t shapes[][2] = {{4096, 14336}, {14336, 4096}, {4096, 4096}, {6144, 4096}, {28672, 4096}};
  const int copies = 8;
  int64_t max_vecs = 0;
  for (auto& sh : shapes) max_vecs = std::max(max_vecs, sh[0] * sh[1] * 3 / 8 / 16);
  uint4* buf;
  CK(cudaMalloc(&buf, (size_t)max_vecs * copies * 16));
  CK(cudaMemset(buf, 0x5a, (size_t)max_vecs * copies * 16));
  uint32_t* out;
  CK(cudaMalloc(&out, 4));
  std::printf("%-12s %-6s %3s %4s %7s %9s %8s\n", "shape", "layout", "D", "alu", "blk/SM", "us", "GB/s");
  for (auto& sh : shapes) {
    Shape s{sh[0], sh[1], sh[1] * 3 / 8 / 16, sh[1] / 512, sh[0] / 16};
    const double bytes = (double)sh[0] * sh[1] * 3 / 8;
    auto line = [&](const char* lay, int D, int alu, int bps, double us) {
      std::printf("%5lldx%-6lld %-6s %3d %4d %7d %9.2f %8.0f\n", (long long)sh[0], (long long)sh[1], lay, D, alu,
                  bps, us, bytes / (us * 1e3));
    };
    line("rowsKM", 2, 0, 2, run<2, false, 0, true>(buf, max_vecs, copies, s, sms * 2, out));
    for (int bps : {2, 4}) {
      line("rows", 2, 0, bps, run<2, false, 0>(buf, max_vecs, copies, s, sms * bps, out));
      line("unit", 2, 0, bps, run<2, true, 0>(buf, max_vecs, copies, s, sms * bps, out));
      line("rows", 4, 0, bps, run<4, false, 0>(buf, max_vecs, copies, s, sms * bps, out));
      line("unit", 4, 0, bps, run<4, true, 0>(buf, max_vecs, copies, s, sms * bps, out));
      line("unit", 2, 8, bps, run<2, true, 8>(buf, max_vecs, copies, s, sms * bps, out));
      line("unit", 4, 8, bps, run<4, true, 8>(buf, max_vecs, copies, s, sms * bps, out));
    }
    line("unit", 2, 0, 1, run<2, true, 0>(buf, max_vecs, copies, s, sms, out));
    line("unit", 8, 0, 1, run<8, true, 0>(buf, max_vecs, copies, s, sms, out));
  }
  CK(cudaGetLastError());
  return 0;
}
