// decdec_rt core: error types and small numeric helpers shared by every part of the core.
// No CUDA headers here: this file is included by the CPU reference and by the CUDA backend.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

// Functions that must compile for both host and device (selection rules, packed-layout
// accessors) are marked DDRT_HD. nvcc defines __CUDACC__; the plain C++ build sees nothing.
#if defined(__CUDACC__)
#define DDRT_HD __host__ __device__ __forceinline__
#define DDRT_HDC __host__ __device__ constexpr
#else
#define DDRT_HD inline
#define DDRT_HDC constexpr
#endif

namespace ddrt {

// ---- errors -------------------------------------------------------------------------------
// Library code throws these and never exits. The Python bindings map each to an exception
// class of the same name (all subclasses of decdec_rt.Error).
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The model file is malformed: message names the field and the byte offset.
struct FormatError : Error {
  using Error::Error;
};
// A file to open does not exist (the bindings map it to FileNotFoundError).
struct FileNotFound : Error {
  using Error::Error;
};
// A caller passed something invalid (shape, mode, token id, ...). Maps to ValueError too.
struct InvalidArgument : Error {
  using Error::Error;
};
// The context window is full.
struct ContextOverflow : Error {
  using Error::Error;
};
// An allocation failed (host or device).
struct OutOfMemory : Error {
  using Error::Error;
};
// A CUDA runtime call failed or the CUDA backend is unavailable.
struct CudaError : Error {
  using Error::Error;
};

// ---- half precision ----------------------------------------------------------------------
// IEEE binary16 <-> float, bit exact with numpy's float16 (round to nearest even).
DDRT_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      uint32_t e = 113, m = man;
      while ((m & 0x400u) == 0) { m <<= 1; --e; }
      bits = sign | (e << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

DDRT_HD uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // overflow -> inf
  if (ax < 0x38800000u) {                                     // subnormal or zero in f16
    if (ax < 0x33000000u) return (uint16_t)sign;
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return (uint16_t)(sign | r);
  }
  uint32_t r = ((ax >> 13) - (112u << 10));
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return (uint16_t)(sign | r);
}

DDRT_HD float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

}  // namespace ddrt
