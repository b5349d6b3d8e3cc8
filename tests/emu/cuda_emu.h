// decdec_rt CUDA emulator: the kernels of cuda/ compiled as plain C++ and run on the CPU, so that
// CI (no GPU) runs the CUDA op tests too. Force-included (-include) ahead of every translation
// unit of the emulated backend (CMake option DECDEC_CUDA_EMU); the rest is in cuda_emu.cpp.
//
// What it models: a grid of blocks, each on a worker OS thread of its own while it runs (so the
// one kernel whose blocks wait for each other, the fused GEMV's compensation, can); a block's
// threads as fibers of that worker, switched only at the synchronizing points (__syncthreads,
// warp collectives, __nanosleep); shared memory as the worker's thread_local storage; warp
// collectives (shuffles, ballot, match, mma, ldmatrix) completed by the last lane to arrive; the
// device memory, streams, events and graphs of the runtime as host memory and in-order execution.
// What it does not model: timing, the memory model's weaker orders (cp.async copies at issue, every
// store is seen at once), lanes of a warp in lockstep between collectives. A kernel that passes
// here can still race on a GPU (compute-sanitizer's job); one that fails here is wrong.
#pragma once

#define DDRT_CUDA_EMU 1

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

namespace ddrt_emu {

// the calling fiber's coordinates
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
int lane_id();
// the block's dynamic shared memory (the launch's byte count, 16-byte aligned)
void* dyn_smem();

void syncthreads();
// Warp collective: every lane of mask (less the exited ones) passes `bytes` (<= kSlot) of its own;
// when the last one arrives, each gets the lanes' values (lane i's at slots + i * kSlot, valid until
// its next collective) and which lanes passed one (*arrived).
constexpr size_t kSlot = 32;
const unsigned char* warp_collect(unsigned mask, const void* mine, size_t bytes, unsigned* arrived = nullptr);
void syncwarp(unsigned mask);
// lets the other fibers and blocks run (a spin-wait's pause)
void yield();

// Runs body() once per thread of every block of the grid (the launch is synchronous; while a
// stream captures a graph, it is recorded instead).
cudaError_t launch(dim3 grid, dim3 block, size_t smem, cudaStream_t st, std::function<void()> body);

// cp.async of this thread: the source is read at issue; the bytes land in shared memory when a
// cp_wait(n) leaves at most n newer committed groups pending (so reading them earlier sees the old
// contents, as it may on a GPU).
void cp_async(void* dst, const void* src, int bytes, bool valid);
void cp_commit();
void cp_wait(int n);

// mbarriers and bulk copies (sm_90's cp.async.bulk, the TMA's path), per running block: a barrier
// is a record beside the block's shared memory, keyed by its address there (its 8 bytes hold a
// mark, checked at every use: a kernel that overwrites a live barrier fails). A bulk copy reads its
// source at issue and lands its bytes when a wait completes its barrier's phase (all arrivals in,
// the bytes expected all copied), so reading them before the wait sees the old contents, as it may
// on a GPU. A wait that cannot complete (arrivals missing, bytes not yet issued) lets the other
// fibers run, and fails the block if it never can; a block that exits with copies in flight fails.
void mbar_init(void* bar, int count);
void mbar_expect_tx(void* bar, uint32_t bytes);
void mbar_inval(void* bar);  // the barrier's record gone: a later use fails until an init
void bulk_copy(void* dst, const void* src, uint32_t bytes, void* bar);
bool mbar_try_wait(void* bar, uint32_t parity);

// Warp-level matrix operations, as the PTX instructions define their fragments.
void mma_m16n8k32_u8s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
void mma_m16n8k16_f32(float* c, const uint32_t* a, const uint32_t* b, bool bf16);
void ldmatrix_x4(uint32_t* r, const void* row_addr);
uint64_t globaltimer_ns();

template <class T>
T shfl_idx(unsigned mask, T v, int src) {
  static_assert(sizeof(T) <= kSlot, "shuffle of a value over 32 bytes");
  const unsigned char* s = warp_collect(mask, &v, sizeof(T));
  T out;
  std::memcpy(&out, s + (src & 31) * kSlot, sizeof(T));
  return out;
}

}  // namespace ddrt_emu

// ---- CUDA C++ built-ins ------------------------------------------------------------------------
#define threadIdx (::ddrt_emu::thread_idx())
#define blockIdx (::ddrt_emu::block_idx())
#define blockDim (::ddrt_emu::block_dim())
#define gridDim (::ddrt_emu::grid_dim())

#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#ifndef __grid_constant__
#define __grid_constant__
#endif

// static shared variables: one copy per worker thread, i.e. per running block
#undef __shared__
#define __shared__ static thread_local
// dynamic shared memory: DDRT_DYN_SMEM(type, name) in the kernels (kernels.cuh)

inline void __syncthreads() { ::ddrt_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::ddrt_emu::syncwarp(mask); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) { ::ddrt_emu::yield(); }

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const int l = ::ddrt_emu::lane_id();
  return ::ddrt_emu::shfl_idx(mask, v, (l & ~(width - 1)) + (src & (width - 1)));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int off, int width = 32) {
  const int l = ::ddrt_emu::lane_id();
  return ::ddrt_emu::shfl_idx(mask, v, (l ^ off) & 31);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
  const int l = ::ddrt_emu::lane_id(), base = l & ~(width - 1);
  return ::ddrt_emu::shfl_idx(mask, v, l - (int)d >= base ? l - (int)d : l);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
  const int l = ::ddrt_emu::lane_id(), end = (l & ~(width - 1)) + width;
  return ::ddrt_emu::shfl_idx(mask, v, l + (int)d < end ? l + (int)d : l);
}
namespace ddrt_emu {
// The lanes of the collective whose value satisfies keep(value), as a mask.
template <class T, class F>
unsigned lanes_where(unsigned mask, T v, F keep) {
  unsigned arrived = 0, b = 0;
  const unsigned char* s = warp_collect(mask, &v, sizeof(T), &arrived);
  for (int i = 0; i < 32; ++i) {
    T o;
    std::memcpy(&o, s + i * kSlot, sizeof(T));
    b |= (unsigned)((arrived >> i & 1) && keep(o)) << i;
  }
  return b;
}
}  // namespace ddrt_emu
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return ::ddrt_emu::lanes_where(mask, (int)(pred != 0), [](int p) { return p != 0; });
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T v) {
  return ::ddrt_emu::lanes_where(mask, v, [&](const T& o) { return o == v; });
}

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __float2int_rn(float v) { return (int)std::nearbyint(v); }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned v; std::memcpy(&v, &f, 4); return v; }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
template <class T>
inline T __ldg(const T* p) { return *p; }
template <class T>
inline T __ldcg(const T* p) { return *p; }

inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline float atomicAdd(float* p, float v) {
  unsigned cur = __atomic_load_n(reinterpret_cast<unsigned*>(p), __ATOMIC_SEQ_CST);
  for (;;) {
    const float old = __uint_as_float(cur);
    if (__atomic_compare_exchange_n(reinterpret_cast<unsigned*>(p), &cur, __float_as_uint(old + v), false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return old;
  }
}

using std::isfinite;
using std::isinf;
using std::isnan;

// the runtime's kernel-typed overloads (host compilers see only the const void* ones)
template <class... P>
inline cudaError_t cudaFuncSetAttribute(void (*f)(P...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(f), attr, value);
}
template <class... P>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, void (*f)(P...), int block, size_t smem) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, reinterpret_cast<const void*>(f), block, smem);
}

// CUDA's device-side min / max over mixed integer types
template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) {
  return a < b ? a : b;
}
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) {
  return a < b ? b : a;
}
