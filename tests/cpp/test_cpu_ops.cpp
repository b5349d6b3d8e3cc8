// CPU reference backend and DecDEC selection, checked against naive versions written here
// straight from the definitions (double accumulation, an independent bit-level packer,
// sort-based selection).
//
//   test_cpu_ops           the tests (ctest)
//   test_cpu_ops --bench   times SmolLM2-135M-shaped matmuls (3-bit g128, f16 lm head), T=1 and T=64
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend.h"
#include "check.h"
#include "decdec.h"
#include "layout.h"

using namespace ddrt;
using ddrt_test::nmse;

namespace {

std::mt19937_64 rng(12345);

float randn() { return std::normal_distribution<float>(0.0f, 1.0f)(rng); }
int randint(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
std::vector<float> randn_vec(size_t n) {
  std::vector<float> v(n);
  for (auto& x : v) x = randn();
  return v;
}

// ---- independent packer: places each bit of each code where layout.h says it goes ----------
void set_bit(uint8_t* p, int bit, int value) {
  if (value) p[bit / 8] |= (uint8_t)(1u << (bit % 8));
}

// One block of 32 codes of `bits` bits.
void pack_block(const int* c, int bits, uint8_t* blk) {
  memset(blk, 0, 4 * bits);
  for (int j = 0; j < 32; ++j) {
    if (bits == 3) {
      for (int k = 0; k < 2; ++k) set_bit(blk, 8 * (j % 8) + 2 * (j / 8) + k, (c[j] >> k) & 1);
      set_bit(blk, 8 * (8 + j / 8) + j % 8, (c[j] >> 2) & 1);
    } else {
      const int n = 4 * bits;
      for (int k = 0; k < bits; ++k) set_bit(blk, 8 * (j % n) + bits * (j / n) + k, (c[j] >> k) & 1);
    }
  }
}

// A matrix of any matrix type with its exact (double) dequantized values.
struct TestMatrix {
  TensorType type;
  int64_t d_out, d_in;
  std::vector<uint8_t> bytes;  // tensor_bytes(type, {d_out, d_in})
  std::vector<double> w;       // [d_out][d_in], dequantized
};

void put16(std::vector<uint8_t>& b, size_t off, uint16_t v) { memcpy(b.data() + off, &v, 2); }

TestMatrix make_matrix(TensorType type, int64_t d_out, int64_t d_in) {
  TestMatrix m{type, d_out, d_in, {}, std::vector<double>(d_out * d_in)};
  const int64_t shape[2] = {d_out, d_in};
  m.bytes.assign(tensor_bytes(type, 2, shape), 0);
  if (is_float(type)) {
    for (int64_t i = 0; i < d_out * d_in; ++i) {
      const float v = randn();
      if (type == TensorType::F32) {
        memcpy(m.bytes.data() + 4 * i, &v, 4);
        m.w[i] = v;
      } else if (type == TensorType::F16) {
        put16(m.bytes, 2 * i, f32_to_f16(v));
        m.w[i] = f16_to_f32(f32_to_f16(v));
      } else {
        uint32_t u;
        memcpy(&u, &v, 4);
        put16(m.bytes, 2 * i, (uint16_t)(u >> 16));
        m.w[i] = bf16_to_f32((uint16_t)(u >> 16));
      }
    }
    return m;
  }
  const int bits = type_bits(type), g = type_group(type);
  const int64_t rcb = row_code_bytes(d_in, bits), tables = d_out * rcb;
  std::vector<int> codes(d_out * n_blocks(d_in) * 32, 0);  // padded codes stay 0
  for (int64_t o = 0; o < d_out; ++o)
    for (int64_t i = 0; i < d_in; ++i) codes[o * n_blocks(d_in) * 32 + i] = randint(0, (1 << bits) - 1);
  for (int64_t o = 0; o < d_out; ++o)
    for (int64_t b = 0; b < n_blocks(d_in); ++b)
      pack_block(&codes[(o * n_blocks(d_in) + b) * 32], bits, m.bytes.data() + o * rcb + b * 4 * bits);
  if (is_uniform(type)) {
    const int64_t ng = n_groups(d_in, g);
    for (int64_t k = 0; k < d_out * ng; ++k) {
      put16(m.bytes, tables + 2 * k, f32_to_f16(0.05f + 0.1f * std::fabs(randn())));
      put16(m.bytes, tables + 2 * (d_out * ng + k), f32_to_f16(randn()));
    }
    for (int64_t o = 0; o < d_out; ++o)
      for (int64_t i = 0; i < d_in; ++i) {
        uint16_t s, mn;
        memcpy(&s, m.bytes.data() + tables + 2 * (o * ng + i / g), 2);
        memcpy(&mn, m.bytes.data() + tables + 2 * (d_out * ng + o * ng + i / g), 2);
        m.w[o * d_in + i] = (double)f16_to_f32(s) * codes[o * n_blocks(d_in) * 32 + i] + (double)f16_to_f32(mn);
      }
  } else {
    const int nl = 1 << bits;
    for (int64_t k = 0; k < d_out * nl; ++k) put16(m.bytes, tables + 2 * k, f32_to_f16(randn()));
    for (int64_t o = 0; o < d_out; ++o)
      for (int64_t i = 0; i < d_in; ++i) {
        uint16_t v;
        memcpy(&v, m.bytes.data() + tables + 2 * (o * nl + codes[o * n_blocks(d_in) * 32 + i]), 2);
        m.w[o * d_in + i] = f16_to_f32(v);
      }
  }
  return m;
}

// DecDEC data of a linear: residual codes, packed rows, scales, calibration.
struct TestResidual {
  std::vector<int> c;            // [d_in][d_out], -7..7
  std::vector<uint8_t> rows;     // [d_in][res_row_bytes(d_out)]
  std::vector<uint16_t> scale;   // f16 [d_out]
  std::vector<float> thresholds; // [d_in], descending
  std::vector<int32_t> ranking;  // [d_in], a permutation
};

TestResidual make_residual(int64_t d_out, int64_t d_in) {
  TestResidual r;
  r.c.resize(d_in * d_out);
  r.rows.assign(d_in * res_row_bytes(d_out), 0);
  for (int64_t i = 0; i < d_in; ++i)
    for (int64_t o = 0; o < res_row_bytes(d_out) * 2; ++o) {
      const int code = o < d_out ? randint(-7, 7) : 0;
      if (o < d_out) r.c[i * d_out + o] = code;
      for (int k = 0; k < 4; ++k) set_bit(&r.rows[i * res_row_bytes(d_out)], 4 * o + k, ((code + 8) >> k) & 1);
    }
  for (int64_t o = 0; o < d_out; ++o) r.scale.push_back(f32_to_f16(0.01f + 0.01f * std::fabs(randn())));
  for (int64_t i = 0; i < d_in; ++i) r.thresholds.push_back(std::fabs(randn()) * 3);
  std::sort(r.thresholds.begin(), r.thresholds.end(), std::greater<float>());
  r.ranking.resize(d_in);
  std::iota(r.ranking.begin(), r.ranking.end(), 0);
  std::shuffle(r.ranking.begin(), r.ranking.end(), rng);
  return r;
}

LinearDesc desc_of(const TestMatrix& m, const TestResidual* r, const char* name = "test.linear") {
  LinearDesc d;
  d.name = name;
  d.type = m.type;
  d.d_out = m.d_out;
  d.d_in = m.d_in;
  d.data = m.bytes.data();
  if (r) {
    d.residual = r->rows.data();
    d.residual_scale = r->scale.data();
    d.thresholds = r->thresholds.data();
    d.ranking = r->ranking.data();
  }
  return d;
}

const TensorType kAllMatrixTypes[] = {
    TensorType::F32,      TensorType::F16,      TensorType::BF16,     TensorType::UQ2_G32,
    TensorType::UQ2_G64,  TensorType::UQ2_G128, TensorType::UQ3_G32,  TensorType::UQ3_G64,
    TensorType::UQ3_G128, TensorType::UQ4_G32,  TensorType::UQ4_G64,  TensorType::UQ4_G128,
    TensorType::UQ8_G32,  TensorType::UQ8_G64,  TensorType::UQ8_G128, TensorType::LUT3,
    TensorType::LUT4};

// ---- brute-force selection: stable sort of the non-NaN channels of each chunk by a key ------
std::vector<int32_t> brute_select(const DecdecCall& call, int64_t pos, const std::vector<float>& x,
                                  const float* thresholds, const std::vector<int32_t>& ranking) {
  const int64_t d_in = x.size();
  std::vector<int32_t> out;
  if (call.mode == DecdecMode::Off) return out;
  std::vector<int32_t> rank_pos(d_in);
  for (int64_t p = 0; p < (int64_t)ranking.size(); ++p) rank_pos[ranking[p]] = (int32_t)p;
  float floors[kBuckets];
  if (call.mode == DecdecMode::Approx) approx_floors(thresholds, d_in, total_k(call.k_chunk, d_in), floors);
  for (int64_t c0 = 0; c0 < d_in; c0 += kChunk) {
    const int len = (int)std::min<int64_t>(kChunk, d_in - c0);
    std::vector<std::pair<double, int32_t>> v;  // (key, channel); smaller key first
    for (int64_t i = c0; i < c0 + len; ++i) {
      if (std::isnan(x[i])) continue;
      double key = 0;
      switch (call.mode) {
        case DecdecMode::Exact: key = -std::fabs((double)x[i]); break;
        case DecdecMode::Approx: key = approx_bucket(floors, std::fabs(x[i])); break;
        case DecdecMode::Static: key = rank_pos[i]; break;
        default: key = (double)random_key(call.seed, call.linear_id, pos, i); break;
      }
      v.push_back({key, (int32_t)i});
    }
    std::vector<int32_t> chunk;
    if (call.mode == DecdecMode::Random) {  // compare the keys as integers (double loses bits)
      std::vector<std::pair<uint64_t, int32_t>> u;
      for (auto& e : v) u.push_back({random_key(call.seed, call.linear_id, pos, e.second), e.second});
      std::sort(u.begin(), u.end());
      for (size_t s = 0; s < u.size() && (int)s < chunk_k(call.k_chunk, len); ++s) chunk.push_back(u[s].second);
    } else {
      std::sort(v.begin(), v.end());
      for (size_t s = 0; s < v.size() && (int)s < chunk_k(call.k_chunk, len); ++s) chunk.push_back(v[s].second);
    }
    std::sort(chunk.begin(), chunk.end());
    out.insert(out.end(), chunk.begin(), chunk.end());
  }
  return out;
}

std::vector<int32_t> run_select(const DecdecCall& call, int64_t pos, const std::vector<float>& x,
                                const float* thresholds, const std::vector<int32_t>& ranking) {
  std::vector<int32_t> rank_pos(x.size());
  for (size_t p = 0; p < ranking.size(); ++p) rank_pos[ranking[p]] = (int32_t)p;
  std::vector<int32_t> out(total_k(call.k_chunk, x.size()) + 1, -1);
  const int64_t n = select_channels(call, pos, x.data(), x.size(), thresholds, rank_pos.data(), out.data());
  out.resize(n);
  return out;
}

// ---- tests -----------------------------------------------------------------------------------
void test_block_codes() {
  for (int bits : {2, 3, 4, 8}) {
    bool ok = true;
    for (int rep = 0; rep < 200; ++rep) {
      int c[32];
      for (int& v : c) v = randint(0, (1 << bits) - 1);
      uint8_t blk[32];
      pack_block(c, bits, blk);
      for (int j = 0; j < 32; ++j) ok &= block_code(blk, bits, j) == c[j];
    }
    CHECK_MSG(ok, "block_code vs bit packer, bits=" + std::to_string(bits));
  }
  bool ok = true;
  TestResidual r = make_residual(13, 9);
  for (int64_t i = 0; i < 9; ++i)
    for (int64_t o = 0; o < 13; ++o) ok &= res_code(&r.rows[i * res_row_bytes(13)], o) == r.c[i * 13 + o];
  CHECK_MSG(ok, "res_code vs bit packer");
  CHECK(r.rows[res_row_bytes(13) - 1] >> 4 == kResZero);  // a missing odd last element: nibble 8
}

// y_ref[t][o] = sum_i W[o][i] x[t][i] + (S_t) sum_{j in S_t} r[o][j] x[t][j], in double.
std::vector<float> naive_matmul(const TestMatrix& m, const std::vector<float>& x, int T, const TestResidual* r,
                                const DecdecCall& call) {
  std::vector<float> y(T * m.d_out);
  for (int t = 0; t < T; ++t) {
    std::vector<float> xt(x.begin() + t * m.d_in, x.begin() + (t + 1) * m.d_in);
    std::vector<int32_t> S;
    if (r) S = brute_select(call, call.pos0 + t, xt, r->thresholds.data(), r->ranking);
    for (int64_t o = 0; o < m.d_out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < m.d_in; ++i) acc += m.w[o * m.d_in + i] * xt[i];
      for (int32_t j : S) acc += (double)f16_to_f32(r->scale[o]) * r->c[j * m.d_out + o] * xt[j];
      y[t * m.d_out + o] = (float)acc;
    }
  }
  return y;
}

std::vector<float> run_matmul(Backend& be, const Linear& L, const std::vector<float>& x, int T, const DecdecCall& call) {
  std::vector<float> y(T * L.d_out, NAN);
  be.matmul(L, y.data(), x.data(), T, call);
  return y;
}

void test_matmul_all_types(Backend& be) {
  const int64_t shapes[][2] = {{7, 45}, {33, 200}, {5, 1100}, {64, 128}, {3, 31}};
  for (TensorType type : kAllMatrixTypes)
    for (auto& sh : shapes) {
      TestMatrix m = make_matrix(type, sh[0], sh[1]);
      auto L = be.load_linear(desc_of(m, nullptr), ResidualPlacement::Host);
      for (int T : {1, 3, 5}) {
        std::vector<float> x = randn_vec(T * m.d_in);
        const double e = nmse(run_matmul(be, *L, x, T, {}).data(), naive_matmul(m, x, T, nullptr, {}).data(), T * m.d_out);
        CHECK_MSG(e < 1e-10, "matmul type " + std::to_string((int)type) + " " + std::to_string(sh[0]) + "x" +
                                 std::to_string(sh[1]) + " T=" + std::to_string(T) + " nmse " + std::to_string(e));
      }
      // embed = dequantized rows
      std::vector<int32_t> ids = {0, (int32_t)m.d_out - 1, (int32_t)m.d_out / 2};
      std::vector<float> out(3 * m.d_in), ref(3 * m.d_in);
      be.embed(*L, out.data(), ids.data(), 3);
      for (int t = 0; t < 3; ++t)
        for (int64_t i = 0; i < m.d_in; ++i) ref[t * m.d_in + i] = (float)m.w[ids[t] * m.d_in + i];
      CHECK_MSG(nmse(out.data(), ref.data(), out.size()) < 1e-12, "embed type " + std::to_string((int)type));
    }
}

void test_decdec_matmul(Backend& be) {
  for (TensorType type : {TensorType::UQ3_G128, TensorType::F16, TensorType::LUT4})
    for (auto sh : {std::pair<int64_t, int64_t>{37, 1100}, {64, 300}, {9, 2048}}) {
      TestMatrix m = make_matrix(type, sh.first, sh.second);
      TestResidual r = make_residual(m.d_out, m.d_in);
      auto L = be.load_linear(desc_of(m, &r), ResidualPlacement::Host);
      const int T = 5;
      std::vector<float> x = randn_vec(T * m.d_in);
      // exact at k_chunk = 1024 selects every channel: y = (W_deq + R_deq) x
      DecdecCall all{DecdecMode::Exact, 1024, 0, 0, 0};
      std::vector<float> ref(T * m.d_out);
      for (int t = 0; t < T; ++t)
        for (int64_t o = 0; o < m.d_out; ++o) {
          double acc = 0;
          for (int64_t i = 0; i < m.d_in; ++i)
            acc += (m.w[o * m.d_in + i] + (double)f16_to_f32(r.scale[o]) * r.c[i * m.d_out + o]) * x[t * m.d_in + i];
          ref[t * m.d_out + o] = (float)acc;
        }
      double e = nmse(run_matmul(be, *L, x, T, all).data(), ref.data(), ref.size());
      CHECK_MSG(e < 1e-10, "exact k_chunk=1024 == (W + R) x, nmse " + std::to_string(e));
      for (DecdecMode mode : {DecdecMode::Exact, DecdecMode::Approx, DecdecMode::Static, DecdecMode::Random})
        for (int kc : {1, 8, 100}) {
          DecdecCall call{mode, kc, 77, 12, 40};
          std::vector<float> y = run_matmul(be, *L, x, T, call);
          e = nmse(y.data(), naive_matmul(m, x, T, &r, call).data(), y.size());
          CHECK_MSG(e < 1e-10, std::string("decdec matmul mode ") + mode_name(mode) + " k_chunk " +
                                   std::to_string(kc) + " nmse " + std::to_string(e));
          // prefill == decode: row t of a T-row call is the T=1 call at position pos0 + t
          double worst = 0;
          for (int t = 0; t < T; ++t) {
            DecdecCall one = call;
            one.pos0 = call.pos0 + t;
            std::vector<float> xt(x.begin() + t * m.d_in, x.begin() + (t + 1) * m.d_in);
            std::vector<float> yt = run_matmul(be, *L, xt, 1, one);
            worst = std::max(worst, nmse(yt.data(), y.data() + t * m.d_out, m.d_out));
          }
          CHECK_MSG(worst < 1e-10, std::string("T=1 vs T=5 rows, mode ") + mode_name(mode));
        }
    }
}

void test_select_channels() {
  const DecdecMode modes[] = {DecdecMode::Exact, DecdecMode::Approx, DecdecMode::Static, DecdecMode::Random};
  for (int64_t d_in : {1, 100, 1024, 1500, 3000})
    for (int variant = 0; variant < 3; ++variant) {  // 0 normal, 1 many ties, 2 ties + NaN
      std::vector<float> x(d_in);
      for (auto& v : x) v = variant == 0 ? randn() : (float)randint(-2, 2) * 0.5f;
      if (variant == 2)
        for (int64_t i = 0; i < d_in; i += 3) x[i] = NAN;
      TestResidual r = make_residual(1, d_in);
      // thresholds from the data itself so the buckets are populated
      std::vector<float> ax(d_in);
      for (int64_t i = 0; i < d_in; ++i) ax[i] = std::isnan(x[i]) ? 0.0f : std::fabs(x[i]) * 1.1f;
      std::sort(ax.begin(), ax.end(), std::greater<float>());
      if (variant == 0) r.thresholds = ax;
      for (DecdecMode mode : modes)
        for (int kc : {1, 5, 64, 700, 1024, 5000}) {
          DecdecCall call{mode, kc, 99, 3, 7};
          const auto got = run_select(call, 7, x, r.thresholds.data(), r.ranking);
          const auto want = brute_select(call, 7, x, r.thresholds.data(), r.ranking);
          CHECK_MSG(got == want, std::string("select ") + mode_name(mode) + " d_in " + std::to_string(d_in) +
                                     " k_chunk " + std::to_string(kc) + " variant " + std::to_string(variant));
          bool no_nan = true;
          for (int32_t i : got) no_nan &= !std::isnan(x[i]);
          CHECK(no_nan);
          if (variant == 0 && mode != DecdecMode::Approx) CHECK((int64_t)got.size() == total_k(kc, d_in));
        }
    }
  // exact on a hand-made case: ties go to the lowest index
  std::vector<float> x = {1, -3, 3, 0.5f, NAN, -3};
  DecdecCall call{DecdecMode::Exact, 400, 0, 0, 0};  // chunk_k(400, 6) = 2
  CHECK((run_select(call, 0, x, nullptr, {}) == std::vector<int32_t>{1, 2}));
  // random depends on position, seed and linear
  std::vector<float> z = randn_vec(1024);
  DecdecCall rc{DecdecMode::Random, 16, 1, 2, 0};
  const auto a = run_select(rc, 0, z, nullptr, {});
  CHECK(a != run_select(rc, 1, z, nullptr, {}));
  rc.seed = 2;
  CHECK(a != run_select(rc, 0, z, nullptr, {}));
  // missing calibration data and bad names
  CHECK_THROWS(run_select({DecdecMode::Approx, 8, 0, 0, 0}, 0, z, nullptr, {}), InvalidArgument);
  int32_t buf[64];
  CHECK_THROWS(select_channels({DecdecMode::Static, 8, 0, 0, 0}, 0, z.data(), 1024, nullptr, nullptr, buf), InvalidArgument);
  CHECK(select_channels({DecdecMode::Off, 8, 0, 0, 0}, 0, z.data(), 1024, nullptr, nullptr, buf) == 0);
  for (DecdecMode m : modes) CHECK(parse_mode(mode_name(m)) == m);
  CHECK(parse_mode("off") == DecdecMode::Off);
  CHECK_THROWS(parse_mode("topk"), InvalidArgument);
}

void test_errors(Backend& be) {
  TestMatrix m = make_matrix(TensorType::UQ4_G32, 8, 64);
  auto L = be.load_linear(desc_of(m, nullptr, "blk.3.ffn_up"), ResidualPlacement::Host);
  std::vector<float> x = randn_vec(64), y(8);
  bool named = false;
  try {
    be.matmul(*L, y.data(), x.data(), 1, {DecdecMode::Exact, 8, 0, 0, 0});
  } catch (const InvalidArgument& e) {
    named = std::string(e.what()).find("blk.3.ffn_up") != std::string::npos;
  }
  CHECK_MSG(named, "DecDEC without a residual throws InvalidArgument naming the linear");
  TestResidual r = make_residual(8, 64);
  r.ranking[0] = r.ranking[1];
  CHECK_THROWS(be.load_linear(desc_of(m, &r), ResidualPlacement::Host), InvalidArgument);
  LinearDesc bad = desc_of(m, nullptr);
  bad.type = TensorType::RES4;
  CHECK_THROWS(be.load_linear(bad, ResidualPlacement::Host), InvalidArgument);
  CHECK_THROWS(be.alloc((size_t)1 << 62), OutOfMemory);
  for (KvType type : {KvType::F32, KvType::F16}) {
    auto kv = be.create_kv_cache(1, 4, 1, 8, type);
    CHECK(kv->type == type);
    std::vector<float> q(8 * 5), o(8 * 5);
    CHECK_THROWS(be.attention(*kv, 0, o.data(), q.data(), q.data(), q.data(), 5, 1, 0), ContextOverflow);
    CHECK_THROWS(be.create_kv_cache(1, 0, 1, 8, type), InvalidArgument);
  }
  CHECK_THROWS(be.create_kv_cache(1, 4, 1, 8, (KvType)7), InvalidArgument);
  // 2^60 f32 or 2^61 f16 elements per cache: 2^63 bytes for keys and values, named in the error
  for (auto [type, n_kv] : {std::pair{KvType::F32, 1 << 14}, std::pair{KvType::F16, 1 << 15}}) {
    std::string what;
    try {
      be.create_kv_cache(1 << 15, 1 << 16, n_kv, 1 << 15, type);
    } catch (const OutOfMemory& e) {
      what = e.what();
    }
    CHECK_MSG(what.find("9223372036854775808 bytes") != std::string::npos, "OutOfMemory: '" + what + "'");
  }
}

void test_elementwise_ops(Backend& be) {
  const int T = 3, dim = 77;
  std::vector<float> x = randn_vec(T * dim), w = randn_vec(dim), out(T * dim), ref(T * dim);
  be.rmsnorm(out.data(), x.data(), w.data(), T, dim, 1e-5f);
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < dim; ++i) ss += (double)x[t * dim + i] * x[t * dim + i];
    for (int i = 0; i < dim; ++i) ref[t * dim + i] = (float)(x[t * dim + i] / std::sqrt(ss / dim + 1e-5) * w[i]);
  }
  CHECK(nmse(out.data(), ref.data(), out.size()) < 1e-10);

  std::vector<float> g = randn_vec(1001), u = randn_vec(1001), s(1001), sref(1001);
  be.swiglu(s.data(), g.data(), u.data(), 1001);
  for (int i = 0; i < 1001; ++i) sref[i] = (float)(g[i] / (1 + std::exp(-(double)g[i])) * u[i]);
  CHECK(nmse(s.data(), sref.data(), 1001) < 1e-10);

  std::vector<float> a = randn_vec(1001), aref(1001);
  for (int i = 0; i < 1001; ++i) aref[i] = (float)((double)a[i] + g[i]);
  be.add(a.data(), g.data(), 1001);
  CHECK(nmse(a.data(), aref.data(), 1001) < 1e-12);

  const int nh = 3, hd = 10, half = hd / 2;
  const int64_t pos0 = 17;
  std::vector<float> inv(half), rx = randn_vec(T * nh * hd), rref(rx.size());
  for (int i = 0; i < half; ++i) inv[i] = (float)std::pow(10000.0, -2.0 * i / hd);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < nh; ++h)
      for (int i = 0; i < half; ++i) {
        const double ang = (double)((float)(pos0 + t) * inv[i]);
        const double x0 = rx[(t * nh + h) * hd + i], x1 = rx[(t * nh + h) * hd + i + half];
        rref[(t * nh + h) * hd + i] = (float)(x0 * std::cos(ang) - x1 * std::sin(ang));
        rref[(t * nh + h) * hd + i + half] = (float)(x0 * std::sin(ang) + x1 * std::cos(ang));
      }
  be.rope(rx.data(), T, nh, hd, pos0, inv.data());
  CHECK(nmse(rx.data(), rref.data(), rx.size()) < 1e-10);
}

float round_f16(float x) { return f16_to_f32(f32_to_f16(x)); }
std::string sci(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", x);
  return b;
}

// Causal GQA attention over a prefix written by earlier calls, then a T-token call. The
// reference attends over the keys and values as the cache stores them (F16: rounded).
void test_attention(Backend& be, KvType type) {
  const int n_layers = 2, max_seq = 40, hkv = 2, nh = 6, hd = 12, layer = 1;
  auto kv = be.create_kv_cache(n_layers, max_seq, hkv, hd, type);
  std::vector<float> K, V;  // all positions written so far, as stored: [pos][hkv*hd]
  double worst = 0;
  int64_t pos = 0;
  for (int T : {7, 1, 5}) {
    std::vector<float> q = randn_vec(T * nh * hd), k = randn_vec(T * hkv * hd), v = randn_vec(T * hkv * hd);
    std::vector<float> out(T * nh * hd), ref(T * nh * hd);
    for (size_t i = 0; i < k.size(); ++i) {
      K.push_back(type == KvType::F16 ? round_f16(k[i]) : k[i]);
      V.push_back(type == KvType::F16 ? round_f16(v[i]) : v[i]);
    }
    be.attention(*kv, layer, out.data(), q.data(), k.data(), v.data(), T, nh, pos);
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < nh; ++h) {
        const int kh = h / (nh / hkv);
        const int64_t n = pos + t + 1;
        std::vector<double> sc(n);
        double mx = -1e300, sum = 0;
        for (int64_t p = 0; p < n; ++p) {
          double s = 0;
          for (int i = 0; i < hd; ++i) s += (double)q[(t * nh + h) * hd + i] * K[(p * hkv + kh) * hd + i];
          sc[p] = s / std::sqrt((double)hd);
          mx = std::max(mx, sc[p]);
        }
        for (auto& s : sc) sum += (s = std::exp(s - mx));
        for (int i = 0; i < hd; ++i) {
          double acc = 0;
          for (int64_t p = 0; p < n; ++p) acc += sc[p] / sum * V[(p * hkv + kh) * hd + i];
          ref[(t * nh + h) * hd + i] = (float)acc;
        }
      }
    worst = std::max(worst, nmse(out.data(), ref.data(), out.size()));
    pos += T;
  }
  CHECK_MSG(worst < 1e-10, std::string(type == KvType::F16 ? "f16" : "f32") + " attention nmse " + sci(worst));
}

// The F16 cache rounds keys and values when it stores them and changes nothing else: its output
// is bit for bit the F32 cache's fed the same keys and values rounded beforehand. Fed raw ones,
// the F32 cache differs from it, by about the rounding (binary16 keeps 11 significant bits).
void test_attention_f16(Backend& be) {
  const int max_seq = 64, hkv = 2, nh = 8, hd = 64;
  auto h16 = be.create_kv_cache(1, max_seq, hkv, hd, KvType::F16);
  auto rounded = be.create_kv_cache(1, max_seq, hkv, hd, KvType::F32);  // fed rounded k, v
  auto raw = be.create_kv_cache(1, max_seq, hkv, hd, KvType::F32);      // fed k, v as they are
  int64_t pos = 0;
  bool same_as_rounded = true, same_as_raw = true;
  double worst = 0;
  for (int T : {9, 1, 1, 20, 3}) {  // prefill chunks and decode steps over the earlier ones
    std::vector<float> q = randn_vec(T * nh * hd), k = randn_vec(T * hkv * hd), v = randn_vec(T * hkv * hd);
    std::vector<float> kr(k.size()), vr(v.size());
    for (size_t i = 0; i < k.size(); ++i) {
      kr[i] = round_f16(k[i]);
      vr[i] = round_f16(v[i]);
    }
    std::vector<float> o16(q.size()), o_rounded(q.size()), o_raw(q.size());
    be.attention(*h16, 0, o16.data(), q.data(), k.data(), v.data(), T, nh, pos);
    be.attention(*rounded, 0, o_rounded.data(), q.data(), kr.data(), vr.data(), T, nh, pos);
    be.attention(*raw, 0, o_raw.data(), q.data(), k.data(), v.data(), T, nh, pos);
    same_as_rounded = same_as_rounded && memcmp(o16.data(), o_rounded.data(), o16.size() * 4) == 0;
    same_as_raw = same_as_raw && memcmp(o16.data(), o_raw.data(), o16.size() * 4) == 0;
    worst = std::max(worst, nmse(o16.data(), o_raw.data(), o16.size()));
    pos += T;
  }
  CHECK_MSG(same_as_rounded, "f16 cache == f32 cache of rounded k, v, bit for bit");
  CHECK_MSG(!same_as_raw, "f16 cache output differs from the f32 cache's on unrounded k, v");
  CHECK_MSG(worst > 0 && worst < 1e-5, "f16 vs f32 cache nmse " + sci(worst));
}

// ---- benchmark: SmolLM2-135M shapes, 3-bit g128 linears + f16 tied lm head ------------------
// Best of `reps` timings (ms) of one pass over the linears and the head: the machine is shared,
// so the minimum is the least noisy estimate.
double bench_ms(Backend& be, const std::vector<std::unique_ptr<Linear>>& lins, const Linear* head, int T, int reps) {
  std::vector<float> x = randn_vec((size_t)T * 1536), y((size_t)T * 49152);
  double best = 1e30;
  for (int r = 0; r <= reps; ++r) {  // the first pass warms up
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& L : lins) be.matmul(*L, y.data(), x.data(), T, {});
    if (head) be.matmul(*head, y.data(), x.data(), T, {});
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::min(best, ms);
  }
  return best;
}

int bench() {
  const int64_t dim = 576, hidden = 1536, kv = 192;
  const int64_t shapes[7][2] = {{dim, dim}, {kv, dim}, {kv, dim}, {dim, dim}, {hidden, dim}, {hidden, dim}, {dim, hidden}};
  std::vector<TestMatrix> mats;
  for (int l = 0; l < 30; ++l)
    for (auto& s : shapes) mats.push_back(make_matrix(TensorType::UQ3_G128, s[0], s[1]));
  TestMatrix head = make_matrix(TensorType::F16, 49152, dim);
  std::printf("SmolLM2-135M shapes: 210 uq3_g128 linears + f16 lm head 49152x576 (best of N)\n");
  for (int threads : {1, 0}) {
    auto be = make_cpu_backend(threads);
    std::vector<std::unique_ptr<Linear>> lins;
    for (auto& m : mats) lins.push_back(be->load_linear(desc_of(m, nullptr), ResidualPlacement::Host));
    auto H = be->load_linear(desc_of(head, nullptr, "output"), ResidualPlacement::Host);
    for (int T : {1, 64}) {
      const int reps = T == 1 ? 30 : 4;
      const double lin = bench_ms(*be, lins, nullptr, T, reps), head_ms = bench_ms(*be, {}, H.get(), T, reps);
      std::printf("%-16s T=%-3d linears %8.2f ms + lm head %7.2f ms = %8.2f ms -> %7.1f tok/s\n", be->name().c_str(),
                  T, lin, head_ms, lin + head_ms, 1000.0 * T / (lin + head_ms));
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--bench") return bench();
  auto be = make_cpu_backend(0);
  test_block_codes();
  test_select_channels();
  test_matmul_all_types(*be);
  test_decdec_matmul(*be);
  test_elementwise_ops(*be);
  test_attention(*be, KvType::F32);
  test_attention(*be, KvType::F16);
  test_attention_f16(*be);
  test_errors(*be);
  return ddrt_test::check_summary();
}
