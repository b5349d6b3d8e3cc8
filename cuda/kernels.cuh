// decdec_rt CUDA backend: what the kernels see of a weight matrix, and every launcher.
// Launchers enqueue on the given stream and return the launch's cudaError_t; they never throw
// (the backend, cuda_backend.cu, turns errors into CudaError).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "decdec.h"
#include "layout.h"
#include "tc_split.h"
#include "packed.cuh"

namespace ddrt {
namespace gpu {

// A switch or lab knob from the environment (host side): its integer value, dflt when unset or
// not a number. Callers read it once (static) where a graph replays what it chose.
inline int env_int(const char* name, int dflt) {
  const char* e = std::getenv(name);
  if (!e || !*e) return dflt;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  return end == e ? dflt : (int)v;
}

// The fence of the merge counters' release and acquire patterns (the fused GEMV's tile, pair and
// selection counters and its chain barrier, the attention's split counters, the argmax's): writes,
// a fence, then a strong relaxed atomic on the counter (atomicAdd); whoever reads the count that
// completes it: a fence, then the reads. The PTX memory model asks fence.acq_rel.gpu of both
// sides; __threadfence is fence.sc.gpu (SASS MEMBAR.SC.GPU, where fence.acq_rel is MEMBAR.ALL.GPU;
// both then invalidate L1), stronger than any of these patterns needs and, by the PTX ISA, slower.
// fence_sc() (env DDRT_FENCE_SC, host side): 0 (default since its H100 A/B, eighth session: +0.1 %
// llama3-8b, +0.4 % smollm2-135m, two rounds) fence.acq_rel.gpu, 1 __threadfence (the twin);
// kernels take the choice as an argument. The emulator fences in full either way.
inline bool fence_sc() { return env_int("DDRT_FENCE_SC", 0) != 0; }
#ifdef DDRT_CUDA_EMU
#define DDRT_FENCE_ACQ_REL() __threadfence()
#else
#define DDRT_FENCE_ACQ_REL() asm volatile("fence.acq_rel.gpu;" ::: "memory")
#endif
#define DDRT_COUNTER_FENCE(sc)  \
  do {                          \
    if (sc)                     \
      __threadfence();          \
    else                        \
      DDRT_FENCE_ACQ_REL();     \
  } while (0)

// Dynamic shared memory of a kernel: DDRT_DYN_SMEM(uint4, smem) declares uint4* smem (16-byte
// aligned). The CPU emulator (tests/emu) gives each running block its own.
#ifdef DDRT_CUDA_EMU
#define DDRT_DYN_SMEM(type, name) type* const name = static_cast<type*>(::ddrt_emu::dyn_smem())
#else
#define DDRT_DYN_SMEM(type, name) extern __shared__ __align__(16) type name[]
#endif

#ifdef DDRT_CUDA_EMU  // the emulator lands a copy only when a wait_group covers it (the latest allowed)
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  ::ddrt_emu::cp_async(dst, src, 16, valid);
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) { ::ddrt_emu::cp_async(dst, src, 4, true); }
__device__ __forceinline__ void cp_async8z(void* dst, const void* src, bool valid) {
  ::ddrt_emu::cp_async(dst, src, 8, valid);
}
__device__ __forceinline__ void cp_async4z(void* dst, const void* src, bool valid) {
  ::ddrt_emu::cp_async(dst, src, 4, valid);
}
__device__ __forceinline__ void cp_commit() { ::ddrt_emu::cp_commit(); }
template <int N>
__device__ __forceinline__ void cp_wait() { ::ddrt_emu::cp_wait(N); }
__device__ __forceinline__ uint64_t l2_policy(bool evict_first) { return evict_first ? 1 : 0; }
__device__ __forceinline__ void cp_async16_pol(void* dst, const void* src, bool valid, uint64_t) {
  ::ddrt_emu::cp_async(dst, src, 16, valid);
}
#else
// cp.async: 16 bytes global -> shared (zero-filled when !valid), 4 bytes, groups.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src));
}
// 8 / 4 bytes, zero-filled when !valid (src is not read then; pass any valid address)
__device__ __forceinline__ void cp_async8z(void* dst, const void* src, bool valid) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 8 : 0));
}
__device__ __forceinline__ void cp_async4z(void* dst, const void* src, bool valid) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
// An L2 cache policy for the loads of data read once (a GEMV's weights): evict_first, so that a
// weight stream does not push out what is still to be read (activations, lines an L2 prefetch
// brought in ahead of their kernel); else evict_normal, the default of a load without a hint.
__device__ __forceinline__ uint64_t l2_policy(bool evict_first) {
  uint64_t p;
  if (evict_first)
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(p));
  else
    asm("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;\n" : "=l"(p));
  return p;
}
// cp_async16 with an L2 cache policy (l2_policy)
__device__ __forceinline__ void cp_async16_pol(void* dst, const void* src, bool valid, uint64_t pol) {
  const uint32_t d = (uint32_t)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(d), "l"(src),
               "r"(valid ? 16 : 0), "l"(pol));
}
#endif

// ---- mbarriers and bulk copies (sm_90: cp.async.bulk, the TMA's path) ----------------------------
// A bulk copy is one instruction for up to 1 MB, issued by one thread and moved by the SM's copy
// engine, not by the load/store unit whose queue a thread's plain loads wait in (cp.async's
// path). Its completion is counted on an mbarrier in shared memory (8 bytes, 8-byte aligned):
// mbar_init(bar, 1) once; per use, one mbar_expect_tx(bar, bytes) (the one arrival, and the bytes
// the phase waits for), the copies (bulk_g2s), then every reader mbar_wait(bar, parity) with the
// use's parity (0, 1, 0, ... : the phase flips when all its bytes have landed). Device code for
// sm_90+ only: the host takes this path only where device_info().bulk (below sm_90 these trap).
// The emulator models them (tests/emu/cuda_emu.h).
#ifdef DDRT_CUDA_EMU
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) { ::ddrt_emu::mbar_init(bar, count); }
__device__ __forceinline__ void mbar_fence_init() {}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) { ::ddrt_emu::mbar_expect_tx(bar, bytes); }
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t) {
  ::ddrt_emu::bulk_copy(dst, src, bytes, bar);
}
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) { return ::ddrt_emu::mbar_try_wait(bar, parity); }
__device__ __forceinline__ void fence_proxy_async_smem() {}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) { ::ddrt_emu::mbar_expect_tx(bar, 0); }
__device__ __forceinline__ void mbar_inval(uint64_t* bar) { ::ddrt_emu::mbar_inval(bar); }
#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)), "r"(count)
               : "memory");
}
// makes the inits visible to the copy engine (before the first copy that completes on them)
__device__ __forceinline__ void mbar_fence_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)),
               "r"(bytes)
               : "memory");
}
// bytes (a multiple of 16) from src (16-byte aligned) to shared dst (16-byte aligned), counted on
// bar, with the L2 cache policy pol (l2_policy)
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar, uint64_t pol) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::"r"(
          (uint32_t)__cvta_generic_to_shared(dst)),
      "l"(src), "r"(bytes), "r"((uint32_t)__cvta_generic_to_shared(bar)), "l"(pol)
      : "memory");
}
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t ok;
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(ok)
      : "r"((uint32_t)__cvta_generic_to_shared(bar)), "r"(parity)
      : "memory");
  return ok != 0;
}
// orders this thread's earlier shared-memory accesses (the generic proxy's: reads of a ring slot)
// before its later bulk copies (the async proxy's: the slot's refill)
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// one arrival on bar (no bytes): a reader's "done with this slot" on a ring's empty barrier
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)) : "memory");
}
// ends bar's life as an mbarrier (no copy or arrival pending on it), before its bytes are used
// for anything else (PTX: mbarrier.inval)
__device__ __forceinline__ void mbar_inval(uint64_t* bar) {
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)) : "memory");
}
#else
__device__ __forceinline__ void mbar_init(uint64_t*, int) { __trap(); }
__device__ __forceinline__ void mbar_fence_init() { __trap(); }
__device__ __forceinline__ void mbar_expect_tx(uint64_t*, uint32_t) { __trap(); }
__device__ __forceinline__ void bulk_g2s(void*, const void*, uint32_t, uint64_t*, uint64_t) { __trap(); }
__device__ __forceinline__ bool mbar_try_wait(uint64_t*, uint32_t) {
  __trap();
  return true;
}
__device__ __forceinline__ void fence_proxy_async_smem() { __trap(); }
__device__ __forceinline__ void mbar_arrive(uint64_t*) { __trap(); }
__device__ __forceinline__ void mbar_inval(uint64_t*) { __trap(); }
#endif
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  while (!mbar_try_wait(bar, parity)) {
  }
}

// Weights that kernels after this one will stream, to be brought into L2 while this one runs
// (its own loads leave HBM idle: attention at decode moves a few MB in ~12 us). A hint: nothing
// reads the lines it brings, and nothing waits for them, so it can never change a result.
struct L2Hint {
  static constexpr int kMax = 6;
  const char* p[kMax] = {};
  int64_t bytes[kMax] = {};  // p 16-byte aligned, bytes a multiple of 16
  int n = 0;
  int64_t total() const {
    int64_t t = 0;
    for (int i = 0; i < n; ++i) t += bytes[i];
    return t;
  }
};
constexpr int64_t kL2Piece = 16384;  // bytes per prefetch instruction
// bytes at p into L2 (p 16-byte aligned, bytes a multiple of 16): on sm_90 by
// cp.async.bulk.prefetch.L2 (the copy engine moves it, the thread goes on at once); before sm_90
// (and on the emulator) nothing.
__device__ __forceinline__ void l2_prefetch_bytes(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
#elif defined(DDRT_CUDA_EMU)
  // the emulator reads the range's ends, so that a range outside its buffer fails there (the
  // GPU's prefetch of a bad address may fault), and checks the alignment the instruction needs
  if ((reinterpret_cast<uintptr_t>(p) & 15) != 0 || bytes % 16 != 0 || bytes == 0) std::abort();
  const char* c = static_cast<const char*>(p);
  volatile char ends = static_cast<char>(c[0] ^ c[bytes - 1]);
  (void)ends;
#else
  (void)p;
  (void)bytes;
#endif
}
// Thread i of n issues its pieces of the hint's ranges (piece j goes to thread j % n).
__device__ __forceinline__ void l2_prefetch(const L2Hint& h, int64_t i, int64_t n) {
  for (int r = 0; r < h.n; ++r) {
    const int64_t pieces = (h.bytes[r] + kL2Piece - 1) / kL2Piece;
    for (int64_t j = i; j < pieces; j += n) {
      const int64_t off = j * kL2Piece;
      const int64_t left = h.bytes[r] - off;
      l2_prefetch_bytes(h.p[r] + off, (uint32_t)(left < kL2Piece ? left : kL2Piece));
    }
  }
}

// x on the int8 tensor cores (the batch-1 GEMV, gemv_tc.cuh, and the T > 1 matmul, gemm_i8.cu):
// per group, X = round(x * kXq / max|x|) (~24 bits), split into three balanced base-256 digits
// (limbs) in [-128, 127] with X = 65536 hi + 256 mid + lo; |X| <= kXq keeps |hi| <= 123.
constexpr float kXq = 8.0e6f;
struct XLimbs { int hi, mid, lo; };
// inv = kXq / max|x| of the group (0 for an all-zero group)
__device__ __forceinline__ XLimbs x_limbs(float v, float inv) {
  const int X = max(-(int)kXq, min((int)kXq, __float2int_rn(v * inv)));
  const int lo = ((X + 128) & 255) - 128, X1 = (X - lo) >> 8;
  const int mid = ((X1 + 128) & 255) - 128;
  return {(X1 - mid) >> 8, mid, lo};
}
// Two limbs (the prefill matmul's default; DDRT_I8_LIMBS=3 for three): X = round(x * kXq2 / max|x|) (~16 bits: still
// 16 times finer than an fp16 x) = 256 hi + lo, |X| <= kXq2 keeps |hi| <= 125; mid is 0.
constexpr float kXq2 = 32000.0f;
__device__ __forceinline__ XLimbs x_limbs2(float v, float inv) {
  const int X = max(-(int)kXq2, min((int)kXq2, __float2int_rn(v * inv)));
  const int lo = ((X + 128) & 255) - 128;
  return {(X - lo) >> 8, 0, lo};
}

// d += a b: A 16x32 unsigned bytes (row), B 32x8 signed bytes (col), int32 accumulation.
// kOrdered (asm volatile): the MMAs keep their program order against other volatile asm (the
// GEMV relies on its issue order); otherwise the compiler may schedule them freely (pure register
// operations), which lets the prefill GEMM overlap them with its other work.
#ifdef DDRT_CUDA_EMU
template <bool kOrdered = true>
__device__ __forceinline__ void mma_i8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1) {
  ::ddrt_emu::mma_m16n8k32_u8s8(d, {a0, a1, a2, a3}, {b0, b1});
}
__device__ __forceinline__ void mma_i8_z(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  d[0] = d[1] = d[2] = d[3] = 0;
  ::ddrt_emu::mma_m16n8k32_u8s8(d, {a0, a1, a2, a3}, {b0, b1});
}
__device__ __forceinline__ void ldsm4(uint32_t* r, const void* p) { ::ddrt_emu::ldmatrix_x4(r, p); }
#else
#define DDRT_MMA_I8 "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
template <bool kOrdered = true>
__device__ __forceinline__ void mma_i8(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1) {
  if constexpr (kOrdered)
    asm volatile(DDRT_MMA_I8 "{%0,%1,%2,%3};"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  else
    asm(DDRT_MMA_I8 "{%0,%1,%2,%3};"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// d = a b (accumulating from zero), unordered.
__device__ __forceinline__ void mma_i8_z(int (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm(DDRT_MMA_I8 "{%10,%10,%10,%10};"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(0));
}
#undef DDRT_MMA_I8
// ldmatrix x4: four 8x8 matrices of 16-bit elements (8 rows of 16 bytes each) from shared memory.
__device__ __forceinline__ void ldsm4(uint32_t* r, const void* p) {
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
#endif

// Programmatic dependent launch (sm_90): lets the next kernel, when it is launched with the PDL
// attribute (the fused GEMV), start its prologue (weight loads) while this one finishes; that
// kernel waits (griddepcontrol.wait) for this one's completion before reading its results.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Waits until the kernels this one depends on have finished and their writes are visible. Every
// kernel started by launch_pdl calls it before it touches memory that earlier kernels write, and
// calls it unconditionally: a kernel that exited without waiting would let its own dependents
// run before the kernels it skipped waiting for (the chain of waits is what orders the stream).
__device__ __forceinline__ void grid_dep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// silu(g) * u, the one formula of swiglu_kernel and of the GEMV that takes its input as (gate, up)
// (IEEE division and expf, no contraction possible: the same bits wherever it is computed).
__device__ __forceinline__ float swiglu1(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// The current device's properties the launchers need (cached per thread and device).
struct DeviceInfo {
  int n_sm = 0, max_smem = 0;
  bool pdl = false;  // programmatic dependent launch (sm_90+)
  bool bulk = false;  // mbarriers with transaction counts and cp.async.bulk (sm_90+)
};
const DeviceInfo& device_info();

// kernel<<<grid, block, smem, st>>>(args...) with programmatic dependent launch where the device
// has it: the kernel may start while the previous one finishes (its launch latency hidden), so it
// must begin with grid_dep_wait() (see above); pdl_trigger() in the previous kernel lets it start.
template <typename... P, typename... A>
cudaError_t launch_pdl(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A... args) {
#ifdef DDRT_CUDA_EMU
  return ::ddrt_emu::launch(grid, block, smem, st, [=] { kernel(args...); });
#else
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = device_info().pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
#endif
}
// kernel<<<grid, block, smem, st>>>(args...), without PDL (its first loads wait for the previous kernel)
template <typename... P, typename... A>
cudaError_t launch_plain(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A... args) {
#ifdef DDRT_CUDA_EMU
  return ::ddrt_emu::launch(grid, block, smem, st, [=] { kernel(args...); });
#else
  kernel<<<grid, block, smem, st>>>(args...);
  return cudaGetLastError();
#endif
}

// A weight matrix on the GPU (device pointers), by value in kernel parameters.
struct DevLinear {
  TensorType type = TensorType::F32;
  int bits = 0, group = 0;       // quantized: code width; uniform: group size
  int64_t d_out = 0, d_in = 0;
  const uint4* codes = nullptr;  // quantized: [d_out][row_vecs(d_in, bits)] (packed.cuh)
  int64_t row_vecs = 0;
  const __half2* sm = nullptr;   // uniform: [d_out][n_groups] (scale, min)
  int64_t n_groups = 0;          // row stride of sm: sm_row_groups (packed.cuh), >= real groups
  const float* lut = nullptr;    // LUT: [d_out][2^bits]
  const void* fdata = nullptr;   // float types: [d_out][row_stride] elements, zero padded
  int64_t row_stride = 0;        // float types: a multiple of 8 elements
  // uniform 3/4-bit on sm_90+ (the bulk ring; env DDRT_TC_BULK=0 off): the codes and scales as the
  // fused GEMV's unit images, [tiles][units][tc_slot_vecs] (gemv_tc_pack), or null. Where they
  // exist, codes and sm are null: the weights are on the GPU once, and the row layout's other
  // readers go through row_vec / row_word / row_sm below.
  const uint4* units = nullptr;
};

// The row layout of a quantized linear, wherever its weights live: vector v of row o (v <
// row_vecs), word w of lane step s of row o, and the (scale, min) word of row o, group gi (gi <
// n_groups). From codes / sm, or, where the weights live only as unit images (DevLinear::units),
// from the images (tc_unit_code_word / tc_unit_scale_word: each 16-byte piece of an image is one
// vector of the row layout), with zeros past the images' last chunk and group, as the row layout's
// padding holds. For the readers other than the fused GEMV and the prefill GEMM (the CUDA-core
// GEMV, the bf16 GEMM, the slow reader and embed).
template <int B>
__device__ __forceinline__ int64_t image_word(const DevLinear& W, int64_t o, int64_t s, int w) {
  const int64_t n_units = tc_tile_units(W.d_in, B);
  const int64_t ci = (s / 32) * 8 + (s % 32) / 4;  // the step's chunk
  return ci < n_units * tc_unit_chunks(B) ? tc_unit_code_word<B>(o, s, w, n_units, W.group) : -1;
}
template <int B>
__device__ __forceinline__ uint4 row_vec(const DevLinear& W, int64_t o, int64_t v) {
  if constexpr (B == 3 || B == 4) {
    if (!W.codes) {
      constexpr int V = step_vecs(B);
      const int64_t wi = image_word<B>(W, o, (v / (32 * V)) * 32 + v % 32, 4 * (int)((v % (32 * V)) / 32));
      return wi < 0 ? make_uint4(0u, 0u, 0u, 0u) : W.units[wi / 4];
    }
  }
  return W.codes[o * W.row_vecs + v];
}
template <int B>
__device__ __forceinline__ uint32_t row_word(const DevLinear& W, int64_t o, int64_t s, int w) {
  if constexpr (B == 3 || B == 4) {
    if (!W.codes) {
      const int64_t wi = image_word<B>(W, o, s, w);
      return wi < 0 ? 0u : reinterpret_cast<const uint32_t*>(W.units)[wi];
    }
  }
  return reinterpret_cast<const uint32_t*>(W.codes + o * W.row_vecs)[4 * vec_index(s, w / 4, B) + w % 4];
}
__device__ __forceinline__ __half2 row_sm(const DevLinear& W, int64_t o, int64_t gi) {
  if (W.sm) return W.sm[o * W.n_groups + gi];
  const int64_t n_units = tc_tile_units(W.d_in, W.bits);
  uint32_t v = 0u;
  if (gi < n_units * tc_unit_groups(W.bits, W.group))
    v = reinterpret_cast<const uint32_t*>(W.units)[W.bits == 3 ? tc_unit_scale_word<3>(o, gi, n_units, W.group)
                                                               : tc_unit_scale_word<4>(o, gi, n_units, W.group)];
  __half2 h;
  memcpy(&h, &v, 4);
  return h;
}

// DecDEC data of one linear on the GPU.
struct DevResidual {
  const uint8_t* rows = nullptr;  // [d_in][row_pitch] RES4 rows (device or mapped host memory)
  int64_t row_pitch = 0;          // bytes, res_row_bytes(d_out) rounded up to 16
  const float* rscale = nullptr;  // [d_out]
  const int32_t* rank_pos = nullptr;  // [d_in] or null
};

// The L2 prefetch hint (L2Hint) for these weights: their ranges in order (per matrix: weights or
// codes, then scales or table), cut at `budget` bytes in all, each a multiple of 16 bytes;
// unaligned buffers and any past L2Hint::kMax ranges are left out.
L2Hint l2_hint_for(const DevLinear* const* Ws, int n, int64_t budget);

// ---- GEMV, T = 1 (gemv_q*.cu, gemv_f.cu) ------------------------------------------------------
// y[d_out] = W x[d_in] for a quantized W (gemv_q.cuh): one warp per gemv_q_rows(W) rows.
cudaError_t launch_gemv_q(const DevLinear& W, float* y, const float* x, cudaStream_t st);
int gemv_q_rows(const DevLinear& W);
// The GEMV lab's knob: rows per warp (1, 2 or 4) for every later launch; 0 restores the default.
void gemv_q_force_rows(int rows_per_warp);
// y[d_out] = W x[d_in] for F32/F16/BF16 W; x must be 16-byte aligned. cnt: kGemvFCounters
// zeroed counters (the row-group queue; every launch leaves them zero; at most one launch using
// them in flight), or null for the static split.
constexpr int kGemvFCounters = 2;
cudaError_t launch_gemv_f(const DevLinear& W, float* y, const float* x, int n_sm, unsigned* cnt, cudaStream_t st);
// Rows per warp of the float GEMV (1 or 2; anything else: the default, env DDRT_GEMV_F_ROWS or 2):
// lab, tests.
void gemv_f_force_rows(int rows_per_warp);
// The float GEMV's row-group queue on (1) or off (0: the static split, its twin); -1: the default
// (env DDRT_GEMV_F_QUEUE=1 / 0 on / off; unset: on where a warp's row group is >= 8 KB, e.g. the
// Llama-3 lm head, off for SmolLM2's): lab, tests.
void gemv_f_force_queue(int on);

// ---- tiled matmul, any T, any type (gemm.cu, gemm_tc.cu) -------------------------------------
// y[T][d_out] = x[T][d_in] W^T: the tensor-core kernel where it supports the type, else the simple
// one. scratch: gemm_scratch_bytes(W, T) bytes of device memory, 16-byte aligned (the split x).
// limbs: the int8 kernel's limbs of x (2 or 3; 0: the default, gemm_i8.cu's i8_limbs).
size_t gemm_scratch_bytes(const DevLinear& W, int T);
cudaError_t launch_gemm(const DevLinear& W, float* y, const float* x, int T, void* scratch, cudaStream_t st,
                        int limbs = 0);
// The simple fp32 kernel (any type): F32 weights, and the twin the tests and the bench compare with.
cudaError_t launch_gemm_simple(const DevLinear& W, float* y, const float* x, int T, cudaStream_t st);
// Tensor cores (mma.sync, near-fp32 precision, see gemm_tc.cu): every matrix type but F32.
bool gemm_tc_supports(TensorType t);
size_t gemm_tc_scratch_bytes(const DevLinear& W, int T);
cudaError_t launch_gemm_tc(const DevLinear& W, float* y, const float* x, int T, void* scratch, cudaStream_t st);
// T > 1, a q/k/v or gate/up group: whether launch_gemm_i8_group takes it (not while forced simple).
bool gemm_group_fusable(const DevLinear* const* Ws, int n);
// Test/bench knob: true sends every later launch_gemm to the simple kernel; false restores.
void gemm_force_simple(bool on);
// Uniform 2/3/4-bit weights on int8 tensor cores (gemm_i8.cu): the default for those types where
// the device has the shared memory (gemm_i8_supported); the tensor-core kernel above is its twin.
bool gemm_i8_supported(const DevLinear& W);
size_t gemm_i8_scratch_bytes(const DevLinear& W, int T);
cudaError_t launch_gemm_i8(const DevLinear& W, float* y, const float* x, int T, void* scratch, cudaStream_t st,
                           int limbs = 0);
// Matrices that share x (q/k/v, gate/up: same type, d_in and layout), in one launch with one
// preparation of x; the count of group launches (n >= 2) made so far, for the tests.
bool gemm_i8_groupable(const DevLinear* const* Ws, int n);
cudaError_t launch_gemm_i8_group(const DevLinear* const* Ws, float* const* ys, int n, const float* x, int T,
                                 void* scratch, cudaStream_t st, int limbs = 0);
int64_t gemm_i8_group_launches();
// Test/bench knob: false sends uniform types to the bf16 tensor-core kernel (gemm_tc.cu); true restores.
void gemm_i8_enable(bool on);
bool gemm_i8_enabled();
// The int8 matmul's x limbs: 2 (~16 bits, the default: a third fewer MMAs, 15-18 % faster on the
// H100) or 3 (~24 bits, env DDRT_I8_LIMBS=3: a tiny model's prefill logits within 1e-4 of the CPU's);
// gemm_i8_force_limbs(2 or 3) for the tests, 0: the environment.
void gemm_i8_force_limbs(int limbs);
// Its warps per block: 16 (32 rows x 16 tokens each, the default) or 8 (64 rows x 16 tokens, env
// DDRT_I8_WARPS=8, the twin: the same results bit for bit); gemm_i8_force_warps(8 or 16), 0: the
// environment.
void gemm_i8_force_warps(int warps);
// The warp-owned int8 kernel (gemm_i8w.cu: no block-wide barrier in the K loop; 3/4-bit members
// with unit images, sm_90+), the default where it takes the weights (env DDRT_I8_OWN=0: the
// block-tile kernel); the same bits as the block-tile kernel.
// gemm_i8_force_own(1 or 0) for the tests, -1: the environment.
void gemm_i8_force_own(int own);
int64_t gemm_i8w_launches();  // its launches so far, for the tests
// Its warps: 8 (16 rows x 64 tokens each, the default) or 16 (16 rows x 32 tokens, 4 per scheduler,
// env DDRT_I8_OWN_WARPS=16, where the shared memory allows: not at three limbs or group 32 at 3
// bits); the same bits. gemm_i8w_force_warps(8 or 16), 0: the environment.
void gemm_i8w_force_warps(int warps);
// Its rows per warp: 16 (the default at 3 bits) or 32 (8 warps of 32 rows x 32 tokens, the default
// at 4 bits, where 16 warps would fit; each x fragment read from shared memory feeds two row tiles'
// MMAs); env DDRT_I8_OWN_ROWS=16 or 32 for both; the same bits. gemm_i8w_force_rows(16 or 32), 0: the
// environment (before the warps' choice).
void gemm_i8w_force_rows(int rows);
// out[t] = row ids[t] of W dequantized; ids: HOST array of T ints (passed by value in launches).
// id_dev (T == 1 only, may be null): read the id from device memory instead (decode graphs).
cudaError_t launch_embed(const DevLinear& W, float* out, const int32_t* ids, int T, cudaStream_t st,
                         const int32_t* id_dev = nullptr);
// out[0] = argmax of x[0..n) (lowest index on ties; NaN never wins). scratch: kArgmaxScratch
// bytes of device memory, zeroed once before the first launch (it holds a counter that every
// launch leaves at 0).
constexpr int kArgmaxBlocks = 264;
constexpr size_t kArgmaxScratch = kArgmaxBlocks * 8 + 16;
cudaError_t launch_argmax(const float* x, int n, int32_t* out, void* scratch, cudaStream_t st);
// The end of a recorded greedy decode step (one thread): the step slots become the next step's,
// *id = *next (the step's argmax) and *pos += 1, and *next is logged: log[1 + log[0]++] while
// log[0] < cap. So graph replays launched back to back decode without the host
// (CudaBackend::replay_n).
cudaError_t launch_step_advance(int64_t* pos, int32_t* id, const int32_t* next, int32_t* log, int cap,
                                cudaStream_t st);

// ---- DecDEC compensation (decdec.cu) ---------------------------------------------------------
struct CompParams {
  DecdecCall call;
  float floors[kBuckets];  // approx mode (approx_floors on the host)
  int64_t kmax = 0;        // total_k(k_chunk, d_in)
  int k_full = 0;          // chunk_k(k_chunk, 1024): slots per chunk (the last chunk may use fewer)
  const int64_t* pos_dev = nullptr;  // non-null: call.pos0 is read from here (decode graphs)
};
// The separate-kernel compensation (T > 1, the twins), in two parts: select + gather (reads x,
// writes sel [T][kmax]; then y[t][o] += rscale[o] * (R[:, S_t] x[t][S_t])[o] when add, else
// partial[t][o] = that term; the side stream runs it beside the base GEMV) and reduce
// (y += partial; after both).
cudaError_t launch_comp_select_gather(const DevLinear& W, const DevResidual& R, const CompParams& p,
                                      const float* x, int T, int32_t* sel, float* out, bool add, cudaStream_t st);
cudaError_t launch_comp_reduce(const DevLinear& W, const CompParams& p, float* y, int T, const float* partial,
                               cudaStream_t st);

// ---- fused tensor-core GEMV with in-launch compensation, T = 1 (gemv_tc*.cu) ----------------
// Uniform 3/4-bit, group 32/64/128. DecDEC compensation (TcComp) runs in n_tb blocks of the
// same launch (gemv_tc.cuh says how and why it is race-free). Scratch: part (tc_part_floats
// floats) and cnt (tc_cnt_ints(n_tiles) ints, zero before the first launch; every launch leaves
// them 0).
//
// One launch may run a group of up to kTcMaxMembers linears that read the same x (q/k/v, gate/up):
// same type and d_in, outputs concatenated in order (member m owns the group's rows
// [row0[m], row0[m+1]), each boundary a multiple of 32, so no 16-row tile and no 32-output
// compensation vector straddles two members). With DecDEC the members share one selection (the
// caller checks that their selection inputs are equal), so one compensation chain serves all.
constexpr int kTcMaxMembers = 3;
struct TcComp {
  DevResidual R[kTcMaxMembers];  // per member: rows, row_pitch, rscale (host-mapped or device)
  CompParams p;
  int32_t* sel = nullptr;         // [kmax] global: written by launch_comp_select before the launch
                                  // (select_here false) or by the launch's own blocks (true)
  bool select_here = false;       // approx with non-increasing floors: select inside the launch
  float* cpart = nullptr;         // [sum of d_out] scratch
  float* sel_xs = nullptr;        // [kmax] scratch beside sel: the selection's x values (TcArgs::sel_xs)
};
struct TcPlan {
  int grid = 0, n_tb = 0;
  // chunk-major compensation: the chunks of d_in, and the blocks per segment (n_tb = comp_cb x
  // segments; block b takes chunks b % comp_cb + i comp_cb); comp_ch 0: segment-major
  int64_t comp_ch = 0, comp_cb = 0;
  int64_t n_units = 0, n_tiles = 0, wb = 0, seg_vecs = 0;
  int64_t ring_off = 0;  // uint4 offset of the base role's unit ring in shared memory
  size_t smem = 0;
  int resident = 0;  // the resident capacity (blocks) the split was made for; grid <= resident
  // > 0: the block-local merge (TcArgs::local): tiles per block; each base warp one unit
  int local = 0;
  int64_t local_off = 0;  // uint4 offset of its partial sums in shared memory (after the ring)
  bool local_pairs = false;  // made for a gate/up pair launch (TcArgs::swiglu_pairs): whole pairs per block
  bool ok = false;  // false: the shape does not fit (shared memory); use the other kernels
};
bool gemv_tc_supports(const DevLinear& W);
// Test/bench knob: false sends T = 1 quantized calls to the CUDA-core GEMV + separate
// compensation kernels (the twins); true (default) restores. Env DDRT_GEMV_TC=0 starts false.
void gemv_tc_enable(bool on);
bool gemv_tc_enabled();
// The timeline lab: later launches write %globaltimer stamps (gemv_tc.cuh) to `stamps` (device
// memory, grid * kTcStamps entries); null stops it. Per block (thread 0): 0 start, 1 after the
// dependency wait, 2 base: x ready / compensation: selection published, 3 compensation: gather +
// reduce done, 4 end; compensation: 5 its own chunks selected, 6 the selection (and x) read back;
// 7: the SM the block ran on, plus 1; 8 (base blocks): (x slabs staged + 1) << 32 | units held;
// (compensation blocks) thread 0's x values of its last selected chunk loaded and bucketed.
// Blocks in role order (compensation blocks first, tc_block).
// stride > 0: each later launch, and each stage of a chain launch (its slots 0 and 4: the stage's
// start and end), writes the region after the previous one's (stamps + i * stride).
// regions > 0: at most that many regions (later launches write none; a grid wider than stride /
// kTcStamps blocks writes none but takes its region).
constexpr int kTcStamps = 9;
void gemv_tc_stamps(unsigned long long* stamps, int64_t stride = 0, int64_t regions = 0);
bool gemv_tc_stamping();  // whether the next launch takes a stamp region
// The next launch's region for a grid of `blocks` (null: not stamping, or the grid does not fit the
// stride, whose region is skipped all the same), and the regions taken so far (the backend names
// each launch that took one). The decode attention stamps too: 0 start, 1 after the wait, 2 its split
// counted in, 4 end.
unsigned long long* stamp_region(int64_t blocks);
int64_t stamp_regions_taken();
__device__ __forceinline__ unsigned long long globaltimer_now() {
  unsigned long long t;
#ifdef DDRT_CUDA_EMU
  t = ::ddrt_emu::globaltimer_ns();
#else
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
#endif
  return t;
}
// The SM this thread runs on (0 in the emulator).
__device__ __forceinline__ unsigned sm_id() {
  unsigned sm = 0;
#ifndef DDRT_CUDA_EMU
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
#endif
  return sm;
}
// A simple kernel's step-timeline stamps (its stamp_region, null when not stamping): thread 0 of
// each block writes slot 0 (start; and slot 7, its SM + 1, as the fused GEMV does), 1 (its
// dependency wait passed), 4 (end); the lm head GEMV, the attention and argmax take them, so that
// the timeline covers the step's tail after the last layer.
struct BlockStamps {
  unsigned long long* p;
  __device__ void at(int slot) const {
    if (p && threadIdx.x == 0) {
      unsigned long long* b =
          p + ((int64_t)blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x * kTcStamps + (int64_t)blockIdx.x * kTcStamps;
      b[slot] = globaltimer_now();
      if (slot == 0) b[7] = sm_id() + 1;
    }
  }
};
struct BlockEndStamp {  // slot 4 on every way out of a block
  const BlockStamps& s;
  __device__ ~BlockEndStamp() { s.at(4); }
};
// n_tb: compensation blocks (0: none; clamped to a quarter of the grid), kmax: total_k. W: the
// launch's shape (for a group: d_out = the members' total).
// chunk_major: compensation block b selects chunk b % n_ch itself and gathers its rows for the
// segment b / n_ch (whole-row slices, no exchange of selections between blocks); n_tb is then
// rounded to a multiple of the chunk count. Its cpart holds one term per chunk: n_ch x d_out floats.
// local: the block-local merge where it fits (TcArgs::local: DecDEC off, 2 <= units per tile <=
// kTcWarps, every block resident at once with one ring slot per warp); the caller asks for it only
// where the launch has no compensation, and a chain never takes such a plan. Otherwise (or where
// it does not fit) the k-major plan. local 2: only where the blocks are at most one per SM.
// pairs: the launch is a gate/up pair's (TcArgs::swiglu_pairs): blocks own whole pairs (an even
// number of tiles per block: 1, 2 or 4 units per tile; one unit too, joined in the block instead of
// by the pair counters).
TcPlan gemv_tc_plan(const DevLinear& W, int n_tb, int64_t kmax, bool chunk_major = false, int local = 0,
                    bool pairs = false);
// The block-local merge, lab knob (env DDRT_TC_LOCAL: 0 off, the default; 1 where every block is
// resident at once; 2 where they are at most one per SM, the faster): force a mode, -1 back to
// the environment; and the launches that ran it so far (the tests).
void gemv_tc_local_force(int mode);
int gemv_tc_local();
int64_t gemv_tc_local_launches();
// Lab knob (env DDRT_TC_LOCAL_EXT: 0 off, the default; 1): the block-local merge, where on, also
// for gate/up pair launches and launches whose x is a deferred attention's; force 1 / 0, -1: the
// environment.
void gemv_tc_local_ext_force(int mode);
bool gemv_tc_local_ext();
// Lab knob (env DDRT_TC_ONE: 0 off, the default; 1): every bulk-ring launch runs the block-local
// merge's instantiation (gemv_tc_kernel<B, G, true, true>, which runs a k-major plan too where
// a.local is 0), so that a decode step alternates no kernel functions: the twenty-sixth session's
// step timeline suggested that the launches beside a block-local one slow down when the two
// instances alternate (instruction cache); this tells. Force 1 / 0, -1: the environment.
void gemv_tc_one_force(int mode);
bool gemv_tc_one();
// The bulk ring (TcArgs::bulk): whether uniform 3/4-bit linears live as unit images instead of
// codes and scales (on by default where device_info().bulk; env DDRT_TC_BULK=0 off; force 1 / 0,
// -1: the environment), their bytes, and the packing of W's (codes and scales on the device) into
// units (zeroed first; bytes gemv_tc_units_bytes(W)), on st.
bool gemv_tc_bulk_wanted();
void gemv_tc_bulk_force(int mode);
size_t gemv_tc_units_bytes(const DevLinear& W);
cudaError_t gemv_tc_pack(const DevLinear& W, uint4* units, cudaStream_t st);
// DDRT_COMP_CHUNKS=1 (off until measured): the fused GEMV's compensation chunk-major; force 1 / 0,
// -1: the environment (read per call).
bool gemv_tc_comp_chunks();
void gemv_tc_comp_chunks_force(int mode);
int64_t gemv_tc_chunk_launches();  // launches with chunk-major compensation so far (the tests)
// Test hook: the next n calls of the backend's fused GEMV path refuse (as a plan that does not fit
// would), so that the callers' fallbacks run; gemv_tc_refuse_take() counts one down.
void gemv_tc_refuse_next(int n);
bool gemv_tc_refuse_take();
// Segment-major approx compensation (TcArgs::sel_xs): the selection's x values published with it
// (on by default; env DDRT_COMP_XS=0 off); force: 1 on, 0 off, -1 back to the env. And the launches that ran
// that way so far (the tests).
void gemv_tc_comp_xs_force(int mode);
bool gemv_tc_comp_xs();
int64_t gemv_tc_xs_launches();
// The approx selection inside the fused launch with three barriers instead of five (TcArgs::sel_fast;
// env DDRT_SEL_FAST=1; the same selection); force as above; launches that selected that way.
void gemv_tc_sel_fast_force(int mode);
bool gemv_tc_sel_fast();
int64_t gemv_tc_sel_fast_launches();
// With the norm inside the launch (q/k/v, gate/up): the selecting block's own chunk from the x it
// loaded for the norm's sum and the norm weights loaded before the dependency wait, instead of
// loading x and the weights again once the norm factor is known (TcArgs::sel_reuse; on by default,
// env DDRT_SEL_REUSE=0 off; the same selection); force as above; launches that did.
void gemv_tc_sel_reuse_force(int mode);
bool gemv_tc_sel_reuse();
int64_t gemv_tc_sel_reuse_launches();
inline size_t tc_part_floats(const TcPlan& p) { return (size_t)p.n_tiles * p.n_units * 16; }
// Default compensation blocks for a linear (or a group's shape).
int tc_default_n_tb(const DevLinear& W);
// Whether W[0..n) can run as one launch (n <= kTcMaxMembers, each supported, same type, group
// and d_in, every member but the last with d_out % 32 == 0); the group's shape in *shape.
bool gemv_tc_groupable(const DevLinear* const* W, int n, DevLinear* shape);
// Test counters: launches of groups (n >= 2) so far; launches with an rmsnorm input or y +=.
int64_t gemv_tc_group_launches();
int64_t gemv_tc_io_launches();
// ... and launches whose norm read the producer's sums (TcIo::ssq_in).
int64_t gemv_tc_parts_launches();
// Whether the backend passes the norm's sums from producer to consumer (TcIo::ssq_out, ssq_in; lab,
// off by default, env DDRT_NORM_PARTS=1 on); force 1 / 0, -1: the environment (tests).
bool gemv_tc_norm_parts();
void gemv_tc_norm_parts_force(int mode);
// Splits of a decode attention query at most (attn_kernel's merge holds their weights per head).
constexpr int kAttnMaxSplits = 64;
// Positions per split of a decode attention query that sees n positions (attn_kernel); its active
// splits are ceil(n / len). kAttnMinLen: positions per split at least.
constexpr int kAttnMinLen = 16;
__host__ __device__ inline int64_t attn_split_len(int64_t n, int splits) {
  const int64_t L = (n + splits - 1) / splits;
  return L < kAttnMinLen ? kAttnMinLen : L;
}
// A decode attention (T = 1) whose splits' merge is left to the consumer GEMV (launch_attention
// with defer; TcIo::attn): where more than one split is active, the attention writes only each
// split's (max, sum) and unnormalised output to its scratch, and the o projection's blocks merge
// the splits of the heads they stage as they read x: the merging block's counter, its L2 round
// trips and its stores leave the attention's critical path. With one active split the attention
// wrote its output to x as usual, and the GEMV reads x. po == nullptr: nothing deferred.
struct AttnDefer {
  const float* po = nullptr;   // [n_heads][splits][head_dim] the splits' unnormalised outputs
  const float* pml = nullptr;  // [n_heads][splits][2] their (max, sum)
  int splits = 0, head_dim = 0;
  int64_t pos0 = 0;                   // the query's position (T = 1) ...
  const int64_t* pos_dev = nullptr;   // ... or where the decode graph's step keeps it
};
// Whether the fused GEMV of d can take a deferred attention's output as x (TcIo::attn): groups of 128
inline bool tc_attn_defer_supports(const DevLinear& d) { return d.group == 128; }
// How a fused GEMV reads its input and writes its result (at most one of up and nw):
struct TcIo {
  const float* up = nullptr;  // non-null: the input is swiglu1(x, up) (x the gate), computed where x is read
  const float* nw = nullptr;  // non-null: the input is rmsnorm(x) * nw with eps (x: the residual stream)
  float eps = 0.0f;
  // with nw: the sums of x^2 over its 16-row tiles, ssq_n = ceil(d_in / 16) of them, as the
  // launch that last added into x wrote them (ssq_out), instead of every block reading all of x
  const float* ssq_in = nullptr;
  int64_t ssq_n = 0;
  // with accumulate, one member: each tile's finisher writes the sum of squares of its 16 final
  // rows of y to ssq_out[tile] (ceil(d_out / 16) floats), for the next launch's ssq_in
  float* ssq_out = nullptr;
  bool accumulate = false;    // y[m] += the result (y: the residual stream), not y[m] =
  // a gate/up pair (n = 2, equal d_out, a multiple of 16; not with accumulate): y[0] =
  // swiglu1(y[0], y[1]) afterwards, computed by the launch's tile finishers (TcArgs::swiglu_pairs)
  bool swiglu_pairs = false;
  // the weights of the linears after this one: the base warps prefetch them into L2 once their
  // units are done (a hint: no result depends on it)
  L2Hint next;
  // non-null po: x is a deferred attention's output (AttnDefer): one member, no up / nw, no
  // compensation, head_dim 64 or 128 dividing d_in (tc_fill checks)
  AttnDefer attn;
};
// Whether an accumulating launch's outputs overlap its inputs (x, up, nw over d_in): every block
// reads the inputs while the tiles' finishers add into y, so launch_gemv_tc refuses that (the
// backend then runs the ops in sequence).
bool tc_io_aliases(const DevLinear* const* W, float* const* y, int n, const float* x, int64_t d_in, const TcIo& io);
// y[m] = W[m] x (+ compensation) for the n members; n = 1 is the plain GEMV.
cudaError_t launch_gemv_tc(const DevLinear* const* W, float* const* y, int n, const float* x, const TcPlan& plan,
                           float* part, int* cnt, const TcComp* comp, cudaStream_t st, const TcIo& io = {});
// Chained launches (env DDRT_TC_CHAIN=1, off until measured on a GPU; gemv_tc.cuh says how): the
// backend queues consecutive fused GEMV launches without compensation and flushes them before any
// other work on its stream. tc_chain_add queues one as the next stage (false: it cannot join the
// queued ones: full, compensation, another code width or group size, another resident grid);
// tc_chain_flush launches the queue: one stage as the plain kernel, more as one chain launch (each
// alone where the chain kernel does not hold the grid); bar: 2 unsigned, zero, left zero.
struct TcChainQueue;
TcChainQueue* tc_chain_new();
void tc_chain_free(TcChainQueue* q);
int tc_chain_size(const TcChainQueue* q);
bool tc_chain_add(TcChainQueue* q, const DevLinear* const* W, float* const* y, int n, const float* x,
                  const TcPlan& plan, float* part, int* cnt, const TcIo& io);
cudaError_t tc_chain_flush(TcChainQueue* q, unsigned* bar, cudaStream_t st);
int64_t gemv_tc_chain_launches();  // test counter: chain launches of 2 or more stages
// The selection alone (sel [kmax]; the non-approx modes' pre-kernel of launch_gemv_tc).
cudaError_t launch_comp_select(const DevLinear& W, const DevResidual& R, const CompParams& p, const float* x,
                               int32_t* sel, cudaStream_t st);

// ---- elementwise, norm, rope, attention (ops.cu) ---------------------------------------------
cudaError_t launch_rmsnorm(float* out, const float* x, const float* w, int T, int dim, float eps, cudaStream_t st);
// pos_dev (may be null): read pos0 from device memory instead (decode graphs).
cudaError_t launch_rope(float* x, int T, int n_heads, int head_dim, int64_t pos0, const float* inv_freq,
                        cudaStream_t st, const int64_t* pos_dev = nullptr);
// x += y, then out = rmsnorm(x) * w (one launch when rows are float4-aligned).
cudaError_t launch_add_rmsnorm(float* out, float* x, const float* y, const float* w, int T, int dim, float eps,
                               cudaStream_t st);
// rope of q and k in one launch (pos_dev as launch_rope).
cudaError_t launch_rope_qk(float* q, float* k, int T, int n_q, int n_k, int head_dim, int64_t pos0,
                           const float* inv_freq, cudaStream_t st, const int64_t* pos_dev = nullptr);
cudaError_t launch_swiglu(float* out, const float* gate, const float* up, size_t n, cudaStream_t st);
cudaError_t launch_add(float* x, const float* y, size_t n, cudaStream_t st);
// KV cache layout: [n_layers][max_seq][n_kv_heads][head_dim] fp32 (as the CPU backend).
// pos_dev non-null: pos0 is read from device memory (decode graphs); the split count then does
// not depend on the position (splits past the current length do nothing).
struct AttnShape {
  int T, n_heads, n_kv_heads, head_dim;
  int64_t pos0;
  const int64_t* pos_dev = nullptr;
  bool kv_f16 = false;  // the cache's K and V are __half (KvType::F16), else float
};
// Scratch floats, splits, and zeroed counters (left zeroed by every launch) for attention.
int attn_splits(const AttnShape& s);
int64_t attn_scratch_floats(const AttnShape& s);
int64_t attn_counters(const AttnShape& s);
// A KV cache element (AttnShape::kv_f16): float, or __half rounded to nearest even when stored
// (kv_st) and read back exactly (kv_ld); kv_round: a value as a later read of it returns, which the
// attention kernels apply to the chunk's own keys and values read from k / v, so every position is
// attended as stored (the CPU reference's meaning, backend.h)
__device__ __forceinline__ float kv_ld(float x) { return x; }
__device__ __forceinline__ float kv_ld(__half x) { return __half2float(x); }
template <typename KT>
__device__ __forceinline__ KT kv_st(float x) {
  if constexpr (sizeof(KT) == 2) return __float2half_rn(x);
  else return x;
}
template <typename KT>
__device__ __forceinline__ float kv_round(float x) {
  return kv_ld(kv_st<KT>(x));
}
// four consecutive elements (16-byte aligned floats, 8-byte aligned halves)
template <typename KT>
__device__ __forceinline__ float4 kv_ld4(const KT* p) {
  if constexpr (sizeof(KT) == 4) {
    return *reinterpret_cast<const float4*>(p);
  } else {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    const KT* h = reinterpret_cast<const KT*>(&u);
    return make_float4(kv_ld(h[0]), kv_ld(h[1]), kv_ld(h[2]), kv_ld(h[3]));
  }
}
template <typename KT>
__device__ __forceinline__ void kv_st4(KT* p, float4 v) {
  if constexpr (sizeof(KT) == 4) {
    *reinterpret_cast<float4*>(p) = v;
  } else {
    uint2 u;
    KT* h = reinterpret_cast<KT*>(&u);
    h[0] = kv_st<KT>(v.x);
    h[1] = kv_st<KT>(v.y);
    h[2] = kv_st<KT>(v.z);
    h[3] = kv_st<KT>(v.w);
    *reinterpret_cast<uint2*>(p) = u;
  }
}
template <typename KT>
__device__ __forceinline__ float4 kv_round4(float4 v) {
  return make_float4(kv_round<KT>(v.x), kv_round<KT>(v.y), kv_round<KT>(v.z), kv_round<KT>(v.w));
}
// Stores k, v ([T][n_kv_heads * head_dim]) at positions pos0.. of one layer's cache (K, V:
// [max_seq][n_kv_heads * head_dim] of float or __half, s.kv_f16) and writes out ([T][n_heads * head_dim]): attention of q over
// positions 0..pos0+t for query t, in one launch. inv_freq non-null: rope of q and k first (as
// launch_rope_qk; only where attn_fuses_rope(s)).
bool attn_fuses_rope(const AttnShape& s);
// The decode / split kernel loads each warp's first cached key and value rows before its
// dependency wait: attn_prefetch_force(1) on, 0 off, -1 the environment: on unless
// DDRT_ATTN_PREFETCH=0 (H100 A/B: smollm2-135m decode 969 -> 1017 tok/s, llama3-8b +0.3 %); 2 (the
// default, env DDRT_ATTN_PREFETCH=1 the twin) also the second batch's rows, into shared memory
// (8-warp blocks).
void attn_prefetch_force(int mode);
// The merging block's early loads of the split outputs (attn_kernel's merge_pre): 1 the first 16
// splits beside the (max, sum) loads, 2 (the default) the next 16 too by the threads the merge
// leaves idle (the same bits), 0 none; -1 the environment (DDRT_ATTN_MERGE_PRE, default 2).
void attn_merge_pre_force(int mode);
// Warps per decode / split attention block: attn_warps_force(8) eight where the block's shared
// arrays fit (heads per block x head_dim <= 1024), else four; 4 four (the twin); -1 the
// environment (eight where they fit unless DDRT_ATTN_WARPS=4). H100, context 512: +2.0 %
// llama3-8b, +2.2 % smollm2-135m decode (with their split targets, attn_splits).
void attn_warps_force(int warps);
// Prefill attention over query tiles (attn_tiled.cu): each key / value row read once per 64 query
// rows instead of once per query. Applies (attn_tiled_applies) to T >= kAttnTiledMinT, head_dim
// 64 or 128, no rope inside, 16-byte aligned pointers. attn_tiled_force(1) or env
// DDRT_ATTN_TILED=1: wherever it applies; attn_tiled_force(0) / DDRT_ATTN_TILED=0: never;
// attn_tiled_force(2), or -1 with the env unset (the default): where it applies and the grid has
// kAttnTiledMinBlocks blocks
// (H100, prefill of 512: llama3-8b, 256 blocks, 6166 -> 6777 tok/s; smollm2-135m, 75 blocks on
// 132 SMs, 69.9k -> 64.7k with the tiles, so it keeps the split kernel). launch_attention takes
// it where it applies. attn_tiled_launches: a test counter. It has no split over keys: a short
// chunk after a long prefix (few tiles, each walking every key) stays on the split kernel, i.e.
// when on it applies when the grid has kAttnTiledMinBlocks blocks or the prefix is at most
// kAttnTiledMaxPrefix * T positions.
constexpr int kAttnTiledMinT = 32, kAttnTiledRows = 64, kAttnTiledMinBlocks = 128, kAttnTiledMaxPrefix = 4;
void attn_tiled_force(int mode);
int64_t attn_tiled_launches();
bool attn_tiled_applies(const AttnShape& s, const void* const* ptrs, int n_ptrs);
cudaError_t launch_attention_tiled(float* out, const float* q, const float* k, const float* v, void* K, void* V,
                                   const AttnShape& s, cudaStream_t st);
// deferred non-null (T = 1, the split kernel with more than one split possible, head_dim 64 or
// 128): the merge of the splits is left to the consumer (AttnDefer; *deferred says where the
// partials are, or po == nullptr where the launch wrote out itself)
cudaError_t launch_attention(float* out, const float* q, const float* k, const float* v, void* K, void* V,
                             const AttnShape& s, float* scratch, unsigned* counters, cudaStream_t st,
                             const float* inv_freq = nullptr, const L2Hint& hint = L2Hint(),
                             AttnDefer* deferred = nullptr);
// The deferred merge (AttnDefer): attn_defer_force(2) auto (the default: launches of at most
// kAttnDeferMaxSplits splits), 1 wherever the kernels allow, 0 never, -1 the environment
// (DDRT_ATTN_DEFER, the same values). attn_defer_on: whether a decode attention may defer at all.
constexpr int kAttnDeferMaxSplits = 24;
void attn_defer_force(int mode);
int attn_defer_mode();
bool attn_defer_on();
int64_t attn_defer_launches();  // test counter: GEMV launches that merged a deferred attention

}  // namespace gpu
}  // namespace ddrt
