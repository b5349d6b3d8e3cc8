// decdec_rt: reference DecDEC channel selection (rules in decdec.h).
//
// NaN activations are never candidates, in every mode: a chunk then yields fewer than k_c
// channels when it has fewer than k_c non-NaN values (exact/static/random pick among the
// non-NaN channels; approx puts NaN in no bucket).
//
// The approx bucket floors are computed without contracting a - (a-b)*c into an FMA, so the
// numpy mirror (python/decdec_rt/quant.py) reproduces them bit for bit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "decdec.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"

namespace ddrt {

namespace {

// Chooses the k channels of idx[0..n) that come first under `before` (a strict weak order
// that breaks ties by index), and writes them ascending to out. Returns how many.
template <class Before>
int64_t take_first(std::vector<int32_t>& idx, int64_t k, Before before, int32_t* out) {
  const int64_t n = (int64_t)idx.size();
  if (k > n) k = n;
  if (k <= 0) return 0;
  if (k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), before);
  std::sort(idx.begin(), idx.begin() + k);
  std::copy(idx.begin(), idx.begin() + k, out);
  return k;
}

// Channels [c0, c0+len) of x that are not NaN.
void candidates(const float* x, int64_t c0, int len, std::vector<int32_t>& idx) {
  idx.clear();
  for (int64_t i = c0; i < c0 + len; ++i)
    if (!std::isnan(x[i])) idx.push_back((int32_t)i);
}

// approx mode, one chunk: whole buckets from the top while they fit, then the boundary
// bucket in ascending channel order.
int64_t approx_chunk(const float* x, int64_t c0, int len, int kc, const float* floors, int32_t* out) {
  int count[kBuckets + 1] = {0};
  for (int64_t i = c0; i < c0 + len; ++i) ++count[approx_bucket(floors, std::fabs(x[i]))];
  int full = 0, taken = 0;  // buckets 0..full-1 are taken whole
  while (full < kBuckets && taken + count[full] <= kc) taken += count[full++];
  int rest = full < kBuckets ? kc - taken : 0;  // from bucket `full`, lowest index first
  int64_t n = 0;
  for (int64_t i = c0; i < c0 + len; ++i) {
    const int j = approx_bucket(floors, std::fabs(x[i]));
    if (j < full) {
      out[n++] = (int32_t)i;
    } else if (j == full && rest > 0) {
      out[n++] = (int32_t)i;
      --rest;
    }
  }
  return n;
}

}  // namespace

int64_t select_channels(const DecdecCall& call, int64_t pos, const float* x, int64_t d_in,
                        const float* thresholds, const int32_t* rank_pos, int32_t* out) {
  if (call.mode == DecdecMode::Off || call.k_chunk <= 0 || d_in <= 0) return 0;
  if (call.mode == DecdecMode::Approx && !thresholds)
    throw InvalidArgument("DecDEC approx mode needs calibration thresholds, and there are none");
  if (call.mode == DecdecMode::Static && !rank_pos)
    throw InvalidArgument("DecDEC static mode needs a calibration ranking, and there is none");
  if (call.mode != DecdecMode::Exact && call.mode != DecdecMode::Approx &&
      call.mode != DecdecMode::Static && call.mode != DecdecMode::Random)
    throw InvalidArgument("unknown DecDEC mode " + std::to_string((int)call.mode));

  float floors[kBuckets];
  if (call.mode == DecdecMode::Approx) approx_floors(thresholds, d_in, total_k(call.k_chunk, d_in), floors);

  std::vector<int32_t> idx;
  std::vector<uint64_t> key;
  int64_t n = 0;
  for (int64_t c0 = 0; c0 < d_in; c0 += kChunk) {
    const int len = (int)std::min<int64_t>(kChunk, d_in - c0);
    const int kc = chunk_k(call.k_chunk, len);
    if (call.mode == DecdecMode::Approx) {
      n += approx_chunk(x, c0, len, kc, floors, out + n);
      continue;
    }
    candidates(x, c0, len, idx);
    if (call.mode == DecdecMode::Exact) {
      n += take_first(idx, kc, [x](int32_t a, int32_t b) {
        const float fa = std::fabs(x[a]), fb = std::fabs(x[b]);
        return fa > fb || (fa == fb && a < b);
      }, out + n);
    } else if (call.mode == DecdecMode::Static) {
      n += take_first(idx, kc, [rank_pos](int32_t a, int32_t b) {
        return rank_pos[a] < rank_pos[b] || (rank_pos[a] == rank_pos[b] && a < b);
      }, out + n);
    } else {  // Random
      key.assign(len, 0);
      for (int32_t i : idx) key[i - c0] = random_key(call.seed, call.linear_id, pos, i);
      const uint64_t* kp = key.data();
      n += take_first(idx, kc, [kp, c0](int32_t a, int32_t b) {
        const uint64_t ka = kp[a - c0], kb = kp[b - c0];
        return ka < kb || (ka == kb && a < b);
      }, out + n);
    }
  }
  return n;
}

void reference_approx_floors(const float* thresholds, int64_t d_in, int64_t k, float* floors) {
  approx_floors(thresholds, d_in, k, floors);
}

const char* mode_name(DecdecMode m) {
  switch (m) {
    case DecdecMode::Off: return "off";
    case DecdecMode::Exact: return "exact";
    case DecdecMode::Approx: return "approx";
    case DecdecMode::Static: return "static";
    case DecdecMode::Random: return "random";
  }
  return "unknown";
}

DecdecMode parse_mode(const std::string& s) {
  for (DecdecMode m : {DecdecMode::Off, DecdecMode::Exact, DecdecMode::Approx, DecdecMode::Static,
                       DecdecMode::Random})
    if (s == mode_name(m)) return m;
  throw InvalidArgument("unknown DecDEC mode '" + s + "' (expected off, exact, approx, static or random)");
}

}  // namespace ddrt
