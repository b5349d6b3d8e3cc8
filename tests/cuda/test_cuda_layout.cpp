// The CUDA backend's repacked weight layout (cuda/packed.cuh), checked on the host (no GPU
// needed): every code survives repack_codes, both through the slow reader (packed_code, used by
// the tiled matmul and embed) and through the GEMV's fast decoder (code_f, the magic-exponent
// trick), which must give the exact code as a float; codes past d_in decode to 0; code_place
// inverts code_index. Scale rows are padded to whole rounds with zero words. The fused GEMV's
// work split and tile-merge bookkeeping (tc_split.h).
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "check.h"
#include "host_prep.h"
#include "tc_split.h"

using namespace ddrt;
using namespace ddrt::gpu;

namespace {

// quad_i8 of every quad of one lane step: byte i is exactly code 4j + i << the class shift (the
// unsigned int8 A fragment of the tensor-core GEMV). Returns the number of wrong bytes.
template <int B, class F>
int check_frags(const uint32_t* wd, F code) {
  int bad = 0;
  for (int j = 0; j < step_codes(B) / 4; ++j) {
    const uint32_t a = quad_i8<B>(wd, j);
    const int sh = class_shift<B>(quad_class<B>(j));
    for (int i = 0; i < 4; ++i) bad += ((a >> (8 * i)) & 0xFFu) != (uint32_t)code(4 * j + i) << sh;
  }
  return bad;
}

template <int B>
void check_width(int64_t d_out, int64_t d_in, std::mt19937& rng) {
  std::vector<uint8_t> file(d_out * row_code_bytes(d_in, B));
  for (auto& b : file) b = (uint8_t)rng();
  const int64_t rv = row_vecs(d_in, B);
  std::vector<uint32_t> packed(d_out * rv * 4);
  repack_codes(file.data(), d_out, d_in, B, packed.data());
  const int C = step_codes(B), NW = step_words(B);
  int64_t bad_slow = 0, bad_fast = 0, bad_pad = 0, bad_place = 0, bad_frag = 0;
  for (int64_t o = 0; o < d_out; ++o) {
    const uint8_t* frow = file.data() + o * row_code_bytes(d_in, B);
    const uint32_t* prow = packed.data() + o * rv * 4;
    for (int64_t s = 0; s < rv / step_vecs(B); ++s) {
      uint32_t wd[12], wsh[12];
      for (int k = 0; k < NW; ++k) {
        wd[k] = prow[4 * vec_index(s, k / 4, B) + k % 4];
        wsh[k] = wd[k] >> kShift;
      }
      for (int c = 0; c < C; ++c) {
        const int64_t i = code_index(s, c, B);
        int64_t s2;
        int c2;
        code_place(i, B, &s2, &c2);
        bad_place += s2 != s || c2 != c;
        const float fast = code_f<B>(wd, wsh, c);
        if (i >= d_in) {
          bad_pad += fast != 0.0f;
          continue;
        }
        const int ref = block_code(frow + (i / kBlockCodes) * block_bytes(B), B, (int)(i % kBlockCodes));
        bad_slow += packed_code(prow, B, i) != ref;
        bad_fast += fast != (float)ref;
      }
      if (B == 3 || B == 4) bad_frag += check_frags<B>(wd, [&](int c) { return step_code(wd, B, c); });
    }
  }
  const std::string what = "bits " + std::to_string(B) + " d_in " + std::to_string(d_in);
  CHECK_MSG(bad_slow == 0, what + ": packed_code mismatches " + std::to_string(bad_slow));
  CHECK_MSG(bad_fast == 0, what + ": code_f mismatches " + std::to_string(bad_fast));
  CHECK_MSG(bad_frag == 0, what + ": quad_i8 mismatches " + std::to_string(bad_frag));
  CHECK_MSG(bad_place == 0, what + ": code_place is not the inverse of code_index " + std::to_string(bad_place));
  CHECK_MSG(bad_pad == 0, what + ": padding codes not zero " + std::to_string(bad_pad));
}

}  // namespace

// The fused GEMV's work split (tc_split.h), against a direct walk of every warp's range: ranges
// cover every unit once and none is empty, so each tile gets exactly n_units contributions, one
// per column (slot); and the x slabs a block of 8 warps stages cover every chunk of its units.
bool check_split(int64_t n_tiles, int64_t n_slabs, int uc, int64_t warps) {
  const int64_t n_units = (2 * n_slabs + uc - 1) / uc, U = n_tiles * n_units, wb = std::min(warps, U);
  const TcDiv wb_div = tc_div(wb), nt_div = tc_div(n_tiles);
  std::vector<std::vector<int>> seen(n_tiles, std::vector<int>(n_units, 0));
  int64_t next = 0;
  for (int64_t w = 0; w < wb; ++w) {
    const int64_t b = tc_range_begin(w, U, wb_div), e = tc_range_begin(w + 1, U, wb_div);
    if (b != w * U / wb || e != (w + 1) * U / wb) return false;  // floor(w U / wb), as documented
    if (b != next || e <= b) return false;
    next = e;
    int64_t s0, s1;
    tc_block_slabs(w / 8 * 8, w / 8 * 8 + 8, nt_div, U, wb_div, uc, n_slabs, &s0, &s1);
    for (int64_t u = b; u < e; ++u) {
      ++seen[u % n_tiles][u / n_tiles];
      for (int64_t ci = u / n_tiles * uc; ci < (u / n_tiles + 1) * uc && ci < 2 * n_slabs; ++ci)
        if (ci / 2 < s0 || ci / 2 >= s1) return false;
    }
  }
  if (next != U) return false;
  for (auto& row : seen)
    for (int c : row)
      if (c != 1) return false;
  return true;
}

// tc_quot (multiply-high and shift) against '/': every divisor's edges (multiples and their
// neighbours, 2^31 - 1, the 64-bit fallback above it) and random pairs over the whole range.
bool check_quot(std::mt19937& rng) {
  std::vector<int64_t> ds = {1, 2, 3, 5, 7, 8, 16, 100, 132, 264, 1056, 2111, 2112, 4000, 65535, 65536, 65537,
                             (int64_t(1) << 30) - 1, int64_t(1) << 30, (int64_t(1) << 30) + 1, (int64_t(1) << 31) - 1,
                             int64_t(1) << 31, int64_t(3) << 31};
  std::uniform_int_distribution<int64_t> any_d(1, (int64_t(1) << 31) - 1), any_n(0, (int64_t(1) << 31) - 1);
  for (int i = 0; i < 2000; ++i) ds.push_back(std::max<int64_t>(1, any_d(rng) >> (rng() % 31)));
  for (int64_t d : ds) {
    const TcDiv f = tc_div(d);
    std::vector<int64_t> ns = {0, 1, d - 1, d, d + 1, 2 * d - 1, 2 * d, (int64_t(1) << 31) - 1, int64_t(1) << 31,
                               (int64_t(1) << 31) + 7, int64_t(5) << 40};
    const int64_t last = ((int64_t(1) << 31) - 1) / d * d;  // the largest multiple below 2^31
    ns.insert(ns.end(), {last - 1, last, last + 1});
    for (int i = 0; i < 50; ++i) ns.push_back(any_n(rng));
    for (int64_t n : ns)
      if (n >= 0 && tc_quot(n, f) != n / d) {
        std::fprintf(stderr, "  tc_quot(%lld, %lld) = %lld, not %lld\n", (long long)n, (long long)d,
                     (long long)tc_quot(n, f), (long long)(n / d));
        return false;
      }
  }
  return true;
}

int main() {
  std::mt19937 rng(7);
  std::mt19937 qrng(11);  // its own stream: the checks below keep their inputs
  CHECK(check_quot(qrng));
  bool split_ok = true;
  for (int64_t n_tiles : {1, 2, 3, 36, 64, 256, 384, 896})
    for (int64_t n_slabs : {1, 2, 7, 8, 14, 28})
      for (int uc : {1, 2, 4})
        for (int64_t warps : {1, 5, 8, 100, 1056, 2112, 4000})
          if (!check_split(n_tiles, n_slabs, uc, warps)) {
            std::fprintf(stderr, "  split n_tiles %lld n_slabs %lld uc %d warps %lld wrong\n", (long long)n_tiles,
                         (long long)n_slabs, uc, (long long)warps);
            split_ok = false;
          }
  CHECK(split_ok);
  for (int64_t d_in : {1, 31, 32, 33, 100, 127, 128, 129, 1000, 4096, 4100, 4096 + 128 + 5}) {
    check_width<2>(3, d_in, rng);
    check_width<3>(3, d_in, rng);
    check_width<4>(3, d_in, rng);
    check_width<8>(3, d_in, rng);
  }
  // residual rows padded to a 16-byte pitch keep their bytes and get code-0 nibbles after
  std::vector<uint8_t> src(5 * 7), dst(5 * 16);
  for (auto& b : src) b = (uint8_t)rng();
  pad_rows(src.data(), 5, 7, 16, 0x88, dst.data());
  bool ok = true;
  for (int r = 0; r < 5; ++r)
    for (int k = 0; k < 16; ++k) ok &= dst[r * 16 + k] == (k < 7 ? src[r * 7 + k] : 0x88);
  CHECK(ok);
  // scale words: (scale, min) interleaved per row, padded to the stride with 0
  const uint16_t sc[6] = {1, 2, 3, 4, 5, 6}, mn[6] = {7, 8, 9, 10, 11, 12};
  std::vector<uint32_t> sm(2 * 5, 0xffffffffu);
  interleave_scales(sc, mn, 2, 3, 5, sm.data());
  const uint32_t want[10] = {1 | 7u << 16, 2 | 8u << 16, 3 | 9u << 16, 0, 0, 4 | 10u << 16, 5 | 11u << 16, 6 | 12u << 16, 0, 0};
  CHECK(std::equal(sm.begin(), sm.end(), want));
  CHECK(sm_row_groups(4096 + 5, 3, 128) == 2 * 4096 / 128 && sm_row_groups(100, 4, 32) == 1024 / 32);
  // the unit images' (scale, min) word by TcUnitGeom's shift against the same position by division,
  // for every group that has images (a unit's groups per row must be a power of two)
  bool geom_ok = true;
  auto scale_by_div = [](int bits, int64_t o, int64_t gi, int64_t n_units, int group) {
    const int nu = tc_unit_groups(bits, group);
    const int64_t base = ((o / 16) * n_units + gi / nu) * tc_slot_vecs(bits, group);
    return (base + tc_unit_chunks(bits) * 2 * step_vecs(bits) * 32) * 4 + (o % 16) * nu + gi % nu;
  };
  for (int group : {32, 64, 128})
    for (int64_t n_units : {1, 4, 14}) {
      const TcUnitGeom g3 = tc_unit_geom<3>(n_units, group), g4 = tc_unit_geom<4>(n_units, group);
      geom_ok &= (1 << g3.nu_shift) == g3.nu && (1 << g4.nu_shift) == g4.nu;
      for (int64_t o : {0, 5, 15, 16, 37, 4095})
        for (int64_t gi = 0; gi < n_units * g3.nu; gi += 3) {
          geom_ok &= tc_unit_scale_word<3>(o, gi, g3) == scale_by_div(3, o, gi, n_units, group);
          if (gi < n_units * g4.nu) geom_ok &= tc_unit_scale_word<4>(o, gi, g4) == scale_by_div(4, o, gi, n_units, group);
        }
    }
  CHECK(geom_ok);
  // the prefill GEMM adds a thread's row part (computed once) to each K tile's lane-step part: both
  // positions split that way, the scale word's constant term (the scale words' place in a slot)
  // counted once
  bool pos_split_ok = true;
  for (int group : {32, 64, 128})
    for (int64_t n_units : {1, 4, 14}) {
      const TcUnitGeom g3 = tc_unit_geom<3>(n_units, group), g4 = tc_unit_geom<4>(n_units, group);
      for (int64_t o : {0, 5, 15, 16, 37, 4095}) {
        for (int64_t s = 0; s < n_units * 32; s += 5)
          for (int w = 0; w < 12; ++w) {
            pos_split_ok &= tc_unit_code_word<3>(o, s, w, g3) == tc_unit_code_word<3>(o, 0, 0, g3) + tc_unit_code_word<3>(0, s, w, g3);
            if (w < 4 && s < n_units * 16)
              pos_split_ok &= tc_unit_code_word<4>(o, s, w, g4) == tc_unit_code_word<4>(o, 0, 0, g4) + tc_unit_code_word<4>(0, s, w, g4);
          }
        for (int64_t gi = 0; gi < n_units * g3.nu; gi += 3) {
          pos_split_ok &= tc_unit_scale_word<3>(o, gi, g3) ==
                      tc_unit_scale_word<3>(o, 0, g3) + tc_unit_scale_word<3>(0, gi, g3) - tc_unit_scale_word<3>(0, 0, g3);
          if (gi < n_units * g4.nu)
            pos_split_ok &= tc_unit_scale_word<4>(o, gi, g4) ==
                        tc_unit_scale_word<4>(o, 0, g4) + tc_unit_scale_word<4>(0, gi, g4) - tc_unit_scale_word<4>(0, 0, g4);
        }
      }
    }
  CHECK(pos_split_ok);
  return ddrt_test::check_summary();
}
