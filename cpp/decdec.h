// decdec_rt: DecDEC channel selection, the one definition shared by every backend.
//
// For an input vector x of length d_in, the compensation adds R[:, S] x[S] to y = W_q x,
// where S holds about k = k_chunk * d_in / 1024 channels. x is cut into chunks of kChunk = 1024
// channels (the last may be shorter); chunk c of length L gets k_c = chunk_k(k_chunk, L).
//
// Modes
//   off     S is empty.
//   exact   per chunk, the k_c channels of largest |x|; ties: lowest index first.
//   approx  per chunk, the bucketed top-k of DESIGN.md §2 (below); deterministic tie rule.
//   static  per chunk, the k_c channels ranked first by the calibration ranking.
//   random  per chunk, k_c channels chosen by a seeded hash of (seed, linear, position, channel).
//
// approx, precisely. thresholds t[i] (length d_in, calibration) = max over calibration tokens
// of the (i+1)-th largest |x| of the whole input vector. With k = total_k(k_chunk, d_in):
//   a = t[0], b = t[k-1]; floor[0] = a; floor[j] = a - (a-b) * j/15 for j = 1..15 (floor[15] = b);
//   floor[j] = b - b * (j-15)/16 for j = 16..31 (floor[31] = 0).
//   Channel i is in bucket j = the smallest j with |x_i| >= floor[j] (bucket 0 = [a, inf)).
//   In each chunk: whole buckets are taken from bucket 0 upward while the running count stays
//   <= k_c; the rest of k_c comes from the first bucket that did not fit, in ascending channel
//   index. (NaN |x| falls in no bucket and is never selected.)
#pragma once

#include <cstdint>
#include <string>

#include "layout.h"

namespace ddrt {

enum class DecdecMode : int32_t { Off = 0, Exact = 1, Approx = 2, Static = 3, Random = 4 };

// The four linear kinds that get their own k_chunk (and tuner choice).
enum LinearKind : int32_t { kQKV = 0, kO = 1, kGateUp = 2, kDown = 3, kNumKinds = 4 };

// Channels selected in a chunk of `len` channels: round(k_chunk * len / 1024), at least 1
// when k_chunk > 0, at most len. k_chunk <= 0 selects nothing.
DDRT_HD int chunk_k(int k_chunk, int len) {
  if (k_chunk <= 0 || len <= 0) return 0;
  int64_t k = ((int64_t)k_chunk * len + kChunk / 2) / kChunk;
  if (k < 1) k = 1;
  if (k > len) k = len;
  return (int)k;
}

DDRT_HD int64_t total_k(int k_chunk, int64_t d_in) {
  int64_t k = 0;
  for (int64_t c0 = 0; c0 < d_in; c0 += kChunk) {
    const int64_t len = d_in - c0 < kChunk ? d_in - c0 : kChunk;
    k += chunk_k(k_chunk, (int)len);
  }
  return k;
}

// Bucket floors for approx mode (see above). floors has kBuckets entries.
DDRT_HD void approx_floors(const float* thresholds, int64_t d_in, int64_t k, float* floors) {
  const float a = thresholds[0];
  const float b = thresholds[(k >= 1 ? (k <= d_in ? k : d_in) : 1) - 1];
  floors[0] = a;
  for (int j = 1; j <= 15; ++j) floors[j] = a - (a - b) * ((float)j / 15.0f);
  for (int j = 16; j < kBuckets; ++j) floors[j] = b - b * ((float)(j - 15) / 16.0f);
}

// Bucket of a magnitude v (>= 0), or kBuckets when v is NaN (never selected).
DDRT_HD int approx_bucket(const float* floors, float v) {
  for (int j = 0; j < kBuckets; ++j)
    if (v >= floors[j]) return j;
  return kBuckets;
}

// 64-bit mixer (splitmix64 finaliser).
DDRT_HD uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// random mode: channel i's key; the k_c channels of a chunk with the SMALLEST keys are chosen
// (ties: lowest index). linear_id = layer * 7 + slot (q,k,v,o,gate,up,down), pos = token position.
DDRT_HD uint64_t random_key(uint64_t seed, uint32_t linear_id, int64_t pos, int64_t i) {
  return mix64(mix64(mix64(seed ^ ((uint64_t)linear_id << 32)) ^ (uint64_t)pos) ^ (uint64_t)i);
}

// What one linear call needs to know to compensate. Row t of a T-row call is the token at
// position pos0 + t.
struct DecdecCall {
  DecdecMode mode = DecdecMode::Off;
  int32_t k_chunk = 0;
  uint64_t seed = 0;
  uint32_t linear_id = 0;
  int64_t pos0 = 0;
  // Blocks given to the compensation inside the GPU GEMV launch (0: the backend's default).
  // A speed knob only: every n_tb gives the same numbers. The CPU backend ignores it.
  int32_t n_tb = 0;
};

// approx_floors as the reference computes them (decdec.cpp is compiled without FMA
// contraction, so every backend that computes floors on the host gets the same bits).
void reference_approx_floors(const float* thresholds, int64_t d_in, int64_t k, float* floors);

// Reference selection (host). Writes the selected channel indices of x (length d_in) to `out`
// (capacity total_k(k_chunk, d_in)), ascending, and returns how many. `thresholds` is needed
// for approx, `rank_pos` (rank_pos[i] = position of channel i in the static ranking) for static.
// Throws InvalidArgument when a mode's calibration data is missing. (decdec.cpp)
int64_t select_channels(const DecdecCall& call, int64_t pos, const float* x, int64_t d_in,
                        const float* thresholds, const int32_t* rank_pos, int32_t* out);

const char* mode_name(DecdecMode m);
// Parses "off" | "exact" | "approx" | "static" | "random"; throws InvalidArgument otherwise.
DecdecMode parse_mode(const std::string& s);

}  // namespace ddrt
