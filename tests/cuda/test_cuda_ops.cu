// CUDA backend vs the CPU reference, op by op (NMSE on fresh random inputs, outputs poisoned with
// NaN before every run so an unwritten element fails). Exit code 77 (skip) without a GPU.
//   test_cuda_ops           the tests (DDRT_TEST_ONLY=gemv_group,decdec: those alone; names in main)
//   test_cuda_ops --bench        the GEMV lab: batch-1 GEMV, groups and DecDEC timings (bench() below)
//   test_cuda_ops --bench-groups the q/k/v and gate/up groups alone (bench_groups)
//   test_cuda_ops --bench-gemv   the GEMV timings alone (the default kernels)
//   test_cuda_ops --bench-rows   the same after the CUDA-core GEMV's rows-per-warp variants (1, 2, 4)
//   test_cuda_ops --bench-decdec the DecDEC table alone (compensation in the GEMV launch, per k_chunk)
//   test_cuda_ops --bench-gemm   the T > 1 matmul: tensor-core kernel vs its simple twin (bench_gemm)
//   test_cuda_ops --bench-stamps the fused GEMV's timeline per role (bench_stamps)
//   test_cuda_ops --bench-chain  a decode layer's GEMVs as separate launches vs one chain (bench_chain)
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend.h"
#include "check.h"
#include "cuda_backend.cuh"
#include "kernels.cuh"
#include "probe.h"

using namespace ddrt;
using ddrt_test::nmse;

namespace {

std::mt19937_64 rng(20250101);

float urand(float a, float b) { return std::uniform_real_distribution<float>(a, b)(rng); }
float nrand() { return std::normal_distribution<float>(0.0f, 1.0f)(rng); }
std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = scale * nrand();
  return v;
}
uint16_t h(float f) { return f32_to_f16(f); }

// A random linear in the file layout, with DecDEC data; owns the bytes LinearDesc points at.
struct HostLinear {
  std::vector<uint8_t> data, residual;
  std::vector<uint16_t> rscale;
  std::vector<float> thresholds;
  std::vector<int32_t> ranking;
  LinearDesc desc;
};

std::unique_ptr<HostLinear> make_linear(TensorType t, int64_t d_out, int64_t d_in, bool decdec) {
  auto L = std::make_unique<HostLinear>();
  const int64_t shape[2] = {d_out, d_in};
  L->data.resize(tensor_bytes(t, 2, shape));
  if (is_float(t)) {
    for (int64_t i = 0; i < d_out * d_in; ++i) {
      const float w = 0.05f * nrand();
      if (t == TensorType::F32) memcpy(&L->data[4 * i], &w, 4);
      else {
        uint16_t b = t == TensorType::F16 ? h(w) : (uint16_t)([&] { uint32_t u; memcpy(&u, &w, 4); return u >> 16; }());
        memcpy(&L->data[2 * i], &b, 2);
      }
    }
  } else {
    const int bits = type_bits(t);
    const int64_t cb = d_out * row_code_bytes(d_in, bits);
    for (int64_t i = 0; i < cb; ++i) L->data[i] = (uint8_t)rng();
    uint8_t* tab = L->data.data() + cb;
    if (is_uniform(t)) {
      const int64_t n = d_out * n_groups(d_in, type_group(t));
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t s = h(urand(0.5f, 1.5f) * 0.1f / (float)((1 << bits) - 1)), m = h(urand(-0.05f, 0.0f));
        memcpy(tab + 2 * i, &s, 2);
        memcpy(tab + 2 * (n + i), &m, 2);
      }
    } else {
      for (int64_t i = 0; i < (d_out << bits); ++i) {
        const uint16_t v = h(0.05f * nrand());
        memcpy(tab + 2 * i, &v, 2);
      }
    }
  }
  L->desc.name = std::string("w_") + std::to_string((int)t);
  L->desc.type = t;
  L->desc.d_out = d_out;
  L->desc.d_in = d_in;
  L->desc.data = L->data.data();
  if (decdec) {
    const int64_t rb = res_row_bytes(d_out);
    L->residual.resize(d_in * rb);
    for (int64_t i = 0; i < d_in; ++i)
      for (int64_t o = 0; o < d_out; o += 2) {
        const int c0 = (int)(rng() % 15) - 7, c1 = o + 1 < d_out ? (int)(rng() % 15) - 7 : 0;
        L->residual[i * rb + o / 2] = (uint8_t)((c0 + 8) | ((c1 + 8) << 4));
      }
    L->rscale.resize(d_out);
    for (auto& s : L->rscale) s = h(urand(0.002f, 0.006f));
    std::vector<float> a = randn(d_in);  // thresholds: sorted |x| of a sample, a little widened
    for (auto& v : a) v = 1.2f * std::fabs(v);
    std::sort(a.begin(), a.end(), std::greater<float>());
    L->thresholds = a;
    L->ranking.resize(d_in);
    std::iota(L->ranking.begin(), L->ranking.end(), 0);
    std::shuffle(L->ranking.begin(), L->ranking.end(), rng);
    L->desc.residual = L->residual.data();
    L->desc.residual_scale = L->rscale.data();
    L->desc.thresholds = L->thresholds.data();
    L->desc.ranking = L->ranking.data();
  }
  return L;
}

// Device buffer of the backend under test, freed on scope exit.
struct Buf {
  Backend* b;
  void* p;
  size_t n;  // floats
  Buf(Backend& be, size_t floats) : b(&be), p(be.alloc(floats * 4)), n(floats) {}
  ~Buf() { b->free(p); }
  float* f() const { return static_cast<float*>(p); }
  void put(const std::vector<float>& v) { b->upload(p, v.data(), v.size() * 4); }
  void poison() { put(std::vector<float>(n, NAN)); }
  std::vector<float> get() const {
    std::vector<float> v(n);
    b->download(v.data(), p, n * 4);
    return v;
  }
};

bool report(const std::string& what, double err, double tol) {
  const bool ok = err <= tol;
  if (!ok) std::fprintf(stderr, "  %-60s nmse %.3e (tol %.0e)\n", what.c_str(), err, tol);
  ddrt_test::record(ok, what.c_str(), __FILE__, __LINE__);
  return ok;
}

const TensorType kAllTypes[] = {
    TensorType::F32,     TensorType::F16,     TensorType::BF16,    TensorType::UQ2_G32, TensorType::UQ2_G64,
    TensorType::UQ2_G128, TensorType::UQ3_G32, TensorType::UQ3_G64, TensorType::UQ3_G128, TensorType::UQ4_G32,
    TensorType::UQ4_G64, TensorType::UQ4_G128, TensorType::UQ8_G32, TensorType::UQ8_G64, TensorType::UQ8_G128,
    TensorType::LUT3,    TensorType::LUT4};

// NMSE tolerance of a matmul of T tokens against the CPU: T > 1 runs the int8 prefill matmul,
// which quantizes x to ~16 bits in two limbs by default (test_gemm holds that kernel to 1e-7 and
// its three-limb twin to 1e-8); T = 1, the GEMVs, ~24 bits: 1e-8.
double tol_mm(int T) { return T > 1 ? 1e-7 : 1e-8; }

std::vector<float> cpu_matmul(Backend& cpu, const Linear& W, const std::vector<float>& x, int T, const DecdecCall& c) {
  std::vector<float> y((size_t)T * W.d_out, NAN);
  cpu.matmul(W, y.data(), x.data(), T, c);
  return y;
}
std::vector<float> gpu_matmul(Backend& gpu, const Linear& W, const std::vector<float>& x, int T, const DecdecCall& c) {
  Buf bx(gpu, x.size()), by(gpu, (size_t)T * W.d_out);
  bx.put(x);
  by.poison();
  gpu.matmul(W, by.f(), bx.f(), T, c);
  return by.get();
}

size_t W_rows(const Linear& W) { return (size_t)W.d_out; }

void test_matmul(Backend& cpu, Backend& gpu) {
  // 8449 rows: more row pairs than the float GEMV's capped grid has warps (each warp loops)
  const int64_t shapes[][2] = {{37, 45}, {64, 1000}, {130, 4100}, {5, 33}, {300, 257}, {2051, 1100}, {8449, 40}};
  for (TensorType t : kAllTypes)
    for (auto& s : shapes) {
      auto L = make_linear(t, s[0], s[1], false);
      auto Wc = cpu.load_linear(L->desc, ResidualPlacement::Host);
      auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
      for (int T : {1, 7}) {
        const auto x = randn((size_t)T * s[1]);
        const auto yc = cpu_matmul(cpu, *Wc, x, T, {});
        const auto yg = gpu_matmul(gpu, *Wg, x, T, {});
        const std::string what =
            "matmul " + std::string(type_name(t)) + " " + std::to_string(s[0]) + "x" + std::to_string(s[1]);
        report(what + " T=" + std::to_string(T), nmse(yg.data(), yc.data(), yc.size()), tol_mm(T));
        if (T == 1) {  // the fused tensor-core GEMV (the default) vs its CUDA-core twin
          const auto y_fused = gpu_matmul(gpu, *Wg, x, T, {});
          report(what + " T=1 fused vs CPU", nmse(y_fused.data(), yc.data(), yc.size()), 1e-8);
          gpu::gemv_tc_enable(false);
          const auto y_twin = gpu_matmul(gpu, *Wg, x, T, {});
          gpu::gemv_tc_enable(true);
          report(what + " T=1 vs CUDA-core twin", nmse(y_fused.data(), y_twin.data(), yc.size()), 1e-8);
        }
        if (T == 1) {  // x not 16-byte aligned
          Buf bx(gpu, x.size() + 1), by(gpu, W_rows(*Wg));
          std::vector<float> x1(1, 0.0f);
          x1.insert(x1.end(), x.begin(), x.end());
          bx.put(x1);
          by.poison();
          gpu.matmul(*Wg, by.f(), bx.f() + 1, 1, {});
          const auto y1 = by.get();
          report(what + " T=1 unaligned x", nmse(y1.data(), yc.data(), yc.size()), 1e-8);
        }
        if (T == 1 && is_float(t)) {  // the float GEMV two rows per warp (odd row counts: a half pair)
          gpu::gemv_f_force_rows(2);
          const auto y2 = gpu_matmul(gpu, *Wg, x, T, {});
          gpu::gemv_f_force_rows(1);
          const auto y1 = gpu_matmul(gpu, *Wg, x, T, {});
          gpu::gemv_f_force_rows(0);
          report(what + " T=1 two rows per warp", nmse(y2.data(), yc.data(), yc.size()), 1e-8);
          // each row's sum runs in the same order at R = 1 and 2: equal bit for bit
          const bool same = std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0;
          ddrt_test::record(same, (what + " T=1 two rows per warp == one row per warp").c_str(), __FILE__, __LINE__);
          // the row-group queue (default) against the static split, its twin: the same sums, bit for
          // bit; twice in a row with the queue, so the second launch sees the counters the first left
          gpu::gemv_f_force_queue(0);
          const auto ys = gpu_matmul(gpu, *Wg, x, T, {});
          gpu::gemv_f_force_queue(1);
          const auto yq1 = gpu_matmul(gpu, *Wg, x, T, {});
          const auto yq2 = gpu_matmul(gpu, *Wg, x, T, {});
          gpu::gemv_f_force_queue(-1);
          const bool q1 = std::memcmp(ys.data(), yq1.data(), ys.size() * sizeof(float)) == 0;
          const bool q2 = std::memcmp(ys.data(), yq2.data(), ys.size() * sizeof(float)) == 0;
          ddrt_test::record(q1, (what + " T=1 row-group queue == static split").c_str(), __FILE__, __LINE__);
          ddrt_test::record(q2, (what + " T=1 row-group queue, second launch == static split").c_str(), __FILE__,
                            __LINE__);
        }
      }
    }
}

// The fused GEMV at sizes that stress its split: x in > 48 KB of shared memory, tiles shared by
// many warps, one warp over many tiles, tall and wide; repeated launches (the tile counters must
// come back to 0 after each).
void test_gemv_tc_shapes(Backend& cpu, Backend& gpu) {
  const int64_t shapes[][2] = {{64, 14400}, {4100, 300}, {16, 4096}, {6144, 4096}, {33, 28672}};
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G128, TensorType::UQ3_G32, TensorType::UQ4_G64})
    for (auto& s : shapes) {
      auto L = make_linear(t, s[0], s[1], false);
      auto Wc = cpu.load_linear(L->desc, ResidualPlacement::Host);
      auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
      for (int rep = 0; rep < 2; ++rep) {
        const auto x = randn((size_t)s[1]);
        const auto yc = cpu_matmul(cpu, *Wc, x, 1, {});
        const auto yg = gpu_matmul(gpu, *Wg, x, 1, {});
        report("gemv tc " + std::string(type_name(t)) + " " + std::to_string(s[0]) + "x" + std::to_string(s[1]) +
                   " rep " + std::to_string(rep),
               nmse(yg.data(), yc.data(), yc.size()), 1e-8);
      }
    }
  // plans are cached per linear: a plan needing more shared memory (wide compensation segments),
  // then a smaller one, then the first again must still launch (the launch limit once followed
  // the latest plan: invalid argument)
  {
    auto Lb = make_linear(TensorType::UQ4_G128, 28672, 512, true), Ls = make_linear(TensorType::UQ4_G128, 64, 512, true);
    auto Bc = cpu.load_linear(Lb->desc, ResidualPlacement::Host), Bg = gpu.load_linear(Lb->desc, ResidualPlacement::Host);
    auto Sc = cpu.load_linear(Ls->desc, ResidualPlacement::Host), Sg = gpu.load_linear(Ls->desc, ResidualPlacement::Host);
    DecdecCall wide;
    wide.mode = DecdecMode::Approx;
    wide.k_chunk = 16;
    wide.n_tb = 4;
    const auto x = randn(512);
    for (int rep = 0; rep < 2; ++rep) {
      report("gemv tc plan cache, wide compensation rep " + std::to_string(rep),
             nmse(gpu_matmul(gpu, *Bg, x, 1, wide).data(), cpu_matmul(cpu, *Bc, x, 1, wide).data(), 28672), 1e-8);
      report("gemv tc plan cache, small rep " + std::to_string(rep),
             nmse(gpu_matmul(gpu, *Sg, x, 1, {}).data(), cpu_matmul(cpu, *Sc, x, 1, {}).data(), 64), 1e-8);
    }
  }
}

// DDRT_TEST_SHARD=i/n: the tests that take it (decdec and gemv_bulk, the slowest under racecheck)
// run only their cases i, i + n, i + 2n, ... (one running count over both), so that n processes
// together cover them (tools/gpu_sanitize.sh: RACE_TESTS="decdec@0/4 decdec@1/4 ..."). Unset: all.
struct Shard {
  long i = 0, n = 1, seen = 0;
};
Shard& shard() {
  static Shard s = [] {
    Shard r;
    const char* e = std::getenv("DDRT_TEST_SHARD");
    if (e && *e) {
      char* end = nullptr;
      r.i = std::strtol(e, &end, 10);
      if (!end || *end != '/' || (r.n = std::strtol(end + 1, &end, 10)) < 1 || *end || r.i < 0 || r.i >= r.n)
        throw std::runtime_error(std::string("DDRT_TEST_SHARD: expected i/n with 0 <= i < n, got '") + e + "'");
    }
    return r;
  }();
  return s;
}
bool shard_mine() {  // the next case of a sharded test: this process's?
  Shard& s = shard();
  return s.seen++ % s.n == s.i;
}
bool shard_first() { return shard().i == 0; }  // the cases a sharded test runs once (its error checks)

// The bulk ring (TcArgs::bulk, the default on sm_90) against its twin, the cp.async ring: the same
// linear loaded twice, as codes (force 0) and as unit images alone (force 1), gives bitwise the
// same y (the same slot contents, tc_unit_pieces, and the same math in the same order), alone and
// as a fused group, DecDEC off and on; and both match the CPU. The images' bytes are counted in the
// device bytes and the codes are not kept beside them; the row layout's other readers on the
// images alone match themselves on the codes. Needs sm_90 (a note and nothing else below it).
void test_gemv_bulk(Backend& cpu, Backend& gpu) {
  if (!gpu::device_info().bulk) {
    std::printf("gemv bulk: the device has no cp.async.bulk (sm_90+), not tested\n");
    return;
  }
  struct S { TensorType t; std::vector<int64_t> d_out; int64_t d_in; };
  const S cases[] = {{TensorType::UQ3_G128, {4100}, 300},     {TensorType::UQ4_G128, {33}, 28672},
                     {TensorType::UQ3_G32, {64}, 1500},       {TensorType::UQ4_G64, {6144}, 4096},
                     {TensorType::UQ3_G64, {96, 32, 70}, 2500}, {TensorType::UQ4_G32, {256, 64}, 4100},
                     {TensorType::UQ3_G128, {2048, 2048}, 1024}};
  for (const S& c : cases) {
    if (!shard_mine()) continue;
    const int n = (int)c.d_out.size();
    std::vector<std::unique_ptr<HostLinear>> L;
    std::vector<std::unique_ptr<Linear>> Wc, Wp, Wb;  // CPU, cp.async ring, bulk ring
    for (int m = 0; m < n; ++m) {
      L.push_back(make_linear(c.t, c.d_out[m], c.d_in, true));
      if (m > 0) {
        L[m]->thresholds = L[0]->thresholds;
        L[m]->ranking = L[0]->ranking;
        L[m]->desc.thresholds = L[m]->thresholds.data();
        L[m]->desc.ranking = L[m]->ranking.data();
      }
      Wc.push_back(cpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      gpu::gemv_tc_bulk_force(0);
      Wp.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      const size_t before = gpu.device_bytes();
      gpu::gemv_tc_bulk_force(1);
      Wb.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      gpu::gemv_tc_bulk_force(-1);
      gpu::DevLinear shape;
      shape.type = c.t, shape.bits = type_bits(c.t), shape.group = type_group(c.t), shape.d_out = c.d_out[m], shape.d_in = c.d_in;
      const size_t img = gpu::gemv_tc_units_bytes(shape);
      CHECK_MSG(img > 0 && gpu.device_bytes() >= before + img, "gemv bulk: the unit images are not in the device bytes");
      // the images are the weights' only copy: the codes (row layout) are not kept beside them
      const size_t code_bytes = (size_t)(c.d_out[m] * gpu::row_vecs(c.d_in, shape.bits) * 16);
      CHECK_MSG(gpu.device_bytes() < before + img + code_bytes, "gemv bulk: the codes stayed beside the unit images");
    }
    const int T = 5;  // T tokens: the prefill GEMM reads the images too
    const auto xt = randn((size_t)T * c.d_in);
    const std::vector<float> x(xt.begin(), xt.begin() + c.d_in);
    Buf bx(gpu, x.size()), bxt(gpu, xt.size());
    bx.put(x);
    bxt.put(xt);
    for (DecdecMode mode : {DecdecMode::Off, DecdecMode::Approx, DecdecMode::Exact}) {
      DecdecCall calls[3];
      for (int m = 0; m < n; ++m) {
        calls[m].mode = mode;
        calls[m].k_chunk = mode == DecdecMode::Off ? 0 : 16;
        calls[m].linear_id = (uint32_t)m;
      }
      std::vector<std::vector<float>> y[2];
      for (int v = 0; v < 2; ++v) {
        const auto& W = v == 0 ? Wp : Wb;
        const Linear* w[3];
        std::vector<std::unique_ptr<Buf>> ys;
        float* yp[3];
        for (int m = 0; m < n; ++m) {
          w[m] = W[m].get();
          ys.push_back(std::make_unique<Buf>(gpu, (size_t)c.d_out[m]));
          ys[m]->poison();
          yp[m] = ys[m]->f();
        }
        const int64_t launches = gpu::gemv_tc_group_launches();
        if (n == 1)
          gpu.matmul(*w[0], yp[0], bx.f(), 1, calls[0]);
        else
          gpu.matmul_group(w, yp, n, bx.f(), 1, calls);
        CHECK_MSG(n == 1 || gpu::gemv_tc_group_launches() > launches, "gemv bulk: the group did not fuse");
        for (int m = 0; m < n; ++m) y[v].push_back(ys[m]->get());
        if (mode == DecdecMode::Exact) continue;
        std::vector<std::unique_ptr<Buf>> yts;  // T tokens (after the T = 1 rows: y[v][n + m])
        float* ytp[3];
        for (int m = 0; m < n; ++m) {
          yts.push_back(std::make_unique<Buf>(gpu, (size_t)T * c.d_out[m]));
          yts[m]->poison();
          ytp[m] = yts[m]->f();
        }
        if (n == 1)
          gpu.matmul(*w[0], ytp[0], bxt.f(), T, calls[0]);
        else
          gpu.matmul_group(w, ytp, n, bxt.f(), T, calls);
        for (int m = 0; m < n; ++m) y[v].push_back(yts[m]->get());
      }
      for (int m = 0; m < n; ++m) {
        const std::string what = std::string("gemv bulk ") + type_name(c.t) + " " + std::to_string(c.d_out[m]) + "x" +
                                 std::to_string(c.d_in) + " member " + std::to_string(m) + " of " + std::to_string(n) +
                                 " " + mode_name(mode);
        CHECK_MSG(std::memcmp(y[0][m].data(), y[1][m].data(), y[0][m].size() * 4) == 0,
                  what + ": the bulk ring's y differs from the cp.async ring's");
        const auto yc = cpu_matmul(cpu, *Wc[m], x, 1, calls[m]);
        report(what, nmse(y[1][m].data(), yc.data(), yc.size()), 1e-8);
        if (mode == DecdecMode::Exact) continue;
        CHECK_MSG(std::memcmp(y[0][n + m].data(), y[1][n + m].data(), y[0][n + m].size() * 4) == 0,
                  what + " T=5: the prefill's y from the images differs from the codes'");
        const auto yct = cpu_matmul(cpu, *Wc[m], xt, T, calls[m]);
        report(what + " T=5", nmse(y[1][n + m].data(), yct.data(), yct.size()), tol_mm(T));
      }
    }
    // The row layout's other readers on the images alone (row_vec / row_word / row_sm): the
    // CUDA-core GEMV (T = 1), the bf16 GEMM and the slow matmul (T = 5), and embed, bitwise equal
    // to the same kernels on the codes
    for (int m = 0; m < n; ++m) {
      const std::string what = std::string("gemv bulk ") + type_name(c.t) + " " + std::to_string(c.d_out[m]) + "x" +
                               std::to_string(c.d_in) + " images alone: ";
      struct Twin { const char* name; int T; bool tc, i8, simple; };
      const Twin twins[] = {{"the CUDA-core GEMV", 1, false, true, false},
                            {"the bf16 GEMM", T, true, false, false},
                            {"the slow matmul", T, true, true, true}};
      for (const Twin& tw : twins) {
        std::vector<float> yy[2];
        for (int v = 0; v < 2; ++v) {
          Buf by(gpu, (size_t)tw.T * c.d_out[m]);
          by.poison();
          gpu::gemv_tc_enable(tw.tc);
          gpu::gemm_i8_enable(tw.i8);
          gpu::gemm_force_simple(tw.simple);
          gpu.matmul(*(v == 0 ? Wp : Wb)[m], by.f(), tw.T == 1 ? bx.f() : bxt.f(), tw.T, DecdecCall{});
          gpu::gemv_tc_enable(true);
          gpu::gemm_i8_enable(true);
          gpu::gemm_force_simple(false);
          yy[v] = by.get();
        }
        CHECK_MSG(std::memcmp(yy[0].data(), yy[1].data(), yy[0].size() * 4) == 0,
                  what + tw.name + " differs from its result on the codes");
        const auto yc = cpu_matmul(cpu, *Wc[m], tw.T == 1 ? x : xt, tw.T, DecdecCall{});
        report(what + tw.name, nmse(yy[1].data(), yc.data(), yc.size()), tol_mm(tw.T));
      }
      const int32_t ids[3] = {0, (int32_t)(c.d_out[m] / 2), (int32_t)(c.d_out[m] - 1)};
      std::vector<float> e[2];
      for (int v = 0; v < 2; ++v) {
        Buf be(gpu, (size_t)3 * c.d_in);
        be.poison();
        gpu.embed(*(v == 0 ? Wp : Wb)[m], be.f(), ids, 3);
        e[v] = be.get();
      }
      CHECK_MSG(std::memcmp(e[0].data(), e[1].data(), e[0].size() * 4) == 0, what + "embed differs from its rows on the codes");
    }
  }
}

// Groups (q/k/v, gate/up): matmul_group vs the CPU reference member by member, DecDEC off and on
// (shared selection inputs), with the fused launch counted (gemv_tc_group_launches) where the
// group qualifies and not where it must fall back (a boundary not a multiple of 32, random mode,
// members whose thresholds differ).
void test_gemv_group(Backend& cpu, Backend& gpu) {
  struct G { std::vector<int64_t> d_out; int64_t d_in; bool fusable; };
  const G groups[] = {{{96, 32, 70}, 2500, true}, {{256, 64, 64}, 4100, true}, {{2048, 2048}, 1024, true},
                      {{33, 64}, 300, false}};
  const DecdecMode modes[] = {DecdecMode::Off, DecdecMode::Exact, DecdecMode::Approx, DecdecMode::Static,
                              DecdecMode::Random};
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G64})
    for (const G& gr : groups) {
      const int n = (int)gr.d_out.size();
      std::vector<std::unique_ptr<HostLinear>> L;
      std::vector<std::unique_ptr<Linear>> Wc, Wg;
      for (int m = 0; m < n; ++m) {
        L.push_back(make_linear(t, gr.d_out[m], gr.d_in, true));
        if (m > 0) {  // one selection for the group: the same calibration data
          L[m]->thresholds = L[0]->thresholds;
          L[m]->ranking = L[0]->ranking;
          L[m]->desc.thresholds = L[m]->thresholds.data();
          L[m]->desc.ranking = L[m]->ranking.data();
        }
        Wc.push_back(cpu.load_linear(L[m]->desc, ResidualPlacement::Host));
        Wg.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      }
      const Linear* wg[3];
      for (int m = 0; m < n; ++m) wg[m] = Wg[m].get();
      const auto x = randn((size_t)gr.d_in);
      Buf bx(gpu, x.size());
      bx.put(x);
      for (DecdecMode mode : modes)
        for (int kc : {8, 64}) {
          if (mode == DecdecMode::Off && kc != 8) continue;
          DecdecCall calls[3];
          std::vector<std::unique_ptr<Buf>> ys;
          float* yp[3];
          for (int m = 0; m < n; ++m) {
            calls[m].mode = mode;
            calls[m].k_chunk = mode == DecdecMode::Off ? 0 : kc;
            calls[m].seed = 99;
            calls[m].linear_id = (uint32_t)m;
            calls[m].pos0 = 3;
            calls[m].n_tb = kc == 64 ? 3 : 0;
            ys.push_back(std::make_unique<Buf>(gpu, (size_t)gr.d_out[m]));
            ys[m]->poison();
            yp[m] = ys[m]->f();
          }
          const int64_t before = gpu::gemv_tc_group_launches();
          gpu.matmul_group(wg, yp, n, bx.f(), 1, calls);
          const bool fused = gpu::gemv_tc_group_launches() > before;
          const std::string what = std::string("gemv group ") + type_name(t) + " d_in " + std::to_string(gr.d_in) +
                                   " members " + std::to_string(n) + " " + mode_name(mode) + " k_chunk " +
                                   std::to_string(kc);
          CHECK_MSG(fused == (gr.fusable && mode != DecdecMode::Random), what + ": fused launch " + (fused ? "ran" : "did not run"));
          for (int m = 0; m < n; ++m) {
            const auto yc = cpu_matmul(cpu, *Wc[m], x, 1, calls[m]);
            const auto yg = ys[m]->get();
            report(what + " member " + std::to_string(m), nmse(yg.data(), yc.data(), yc.size()), 1e-8);
          }
        }
      if (n < 2 || !gr.fusable) continue;
      // members whose thresholds differ select differently: approx must fall back, still right
      auto other = make_linear(t, gr.d_out[1], gr.d_in, true);
      auto Wo_c = cpu.load_linear(other->desc, ResidualPlacement::Host);
      auto Wo_g = gpu.load_linear(other->desc, ResidualPlacement::Host);
      const Linear* wmix[2] = {Wg[0].get(), Wo_g.get()};
      DecdecCall calls[2];
      for (auto& c : calls) c.mode = DecdecMode::Approx, c.k_chunk = 16;
      Buf y0(gpu, (size_t)gr.d_out[0]), y1(gpu, (size_t)gr.d_out[1]);
      float* yp[2] = {y0.f(), y1.f()};
      const int64_t before = gpu::gemv_tc_group_launches();
      gpu.matmul_group(wmix, yp, 2, bx.f(), 1, calls);
      CHECK_MSG(gpu::gemv_tc_group_launches() == before, "gemv group: members with different thresholds fused");
      report("gemv group, different thresholds, member 1",
             nmse(y1.get().data(), cpu_matmul(cpu, *Wo_c, x, 1, calls[1]).data(), (size_t)gr.d_out[1]), 1e-8);
    }
}

// T > 1 (the tensor-core kernels: int8 for uniform types, gemm_i8.cu; bf16 for the rest, gemm_tc.cu) vs the CPU: odd sizes, group tails (d_in % g != 0),
// sizes under one tile, every type; then the fast kernel vs its simple twin at a prefill size.
// Tolerance 1e-8 as the GEMV's: gemm_tc splits x into bf16/fp16 hi + lo halves, gemm_i8 quantizes it
// per group to ~24 bits (three int8 limbs, as the GEMV) and both apply scales in fp32.
// DDRT_TEST_RACE=1: the racecheck-sized variant of the slow tests (gemm, decdec): a few small
// shapes and token counts, every kernel path still taken once (racecheck slows shared-memory
// kernels so much that the full tests do not finish in a device call).
bool race_sized() {
  const char* e = std::getenv("DDRT_TEST_RACE");
  return e && e[0] == '1';
}

void test_gemm(Backend& cpu, Backend& gpu) {
  using Shapes = std::vector<std::array<int64_t, 2>>;
  const Shapes shapes = race_sized() ? Shapes{{37, 45}, {130, 300}}
                                     : Shapes{{37, 45}, {130, 4100}, {5, 33}, {300, 257}, {129, 1000}, {259, 672}};
  const std::vector<int> Ts = race_sized() ? std::vector<int>{2, 64} : std::vector<int>{2, 7, 64, 300};
  auto vs_cpu = [&](const std::vector<TensorType>& types, const std::string& label, double tol) {
    for (TensorType t : types)
      for (auto& s : shapes) {
        auto L = make_linear(t, s[0], s[1], false);
        auto Wc = cpu.load_linear(L->desc, ResidualPlacement::Host);
        auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
        for (int T : Ts) {
          const auto x = randn((size_t)T * s[1]);
          const auto yc = cpu_matmul(cpu, *Wc, x, T, {});
          const auto yg = gpu_matmul(gpu, *Wg, x, T, {});
          report(label + type_name(t) + " " + std::to_string(s[0]) + "x" + std::to_string(s[1]) + " T=" +
                     std::to_string(T),
                 nmse(yg.data(), yc.data(), yc.size()), tol);
        }
      }
  };
  // three limbs (DDRT_I8_LIMBS=3) against the CPU at 1e-8 and as the twins below; the default two
  // limbs at the end
  gpu::gemm_i8_force_limbs(3);
  vs_cpu(std::vector<TensorType>(std::begin(kAllTypes), std::end(kAllTypes)), "gemm ", 1e-8);
  // the block-tile kernel (gemm_i8.cu) for the checks below; the warp-owned kernel (gemm_i8w.cu, the
  // default where it takes the weights) is compared with it bit for bit
  gpu::gemm_i8_force_own(0);
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G64, TensorType::F16, TensorType::LUT4}) {
    const int64_t d_out = race_sized() ? 200 : 1000, d_in = race_sized() ? 1024 : 4096;
    const int T = race_sized() ? 96 : 512;
    auto L = make_linear(t, d_out, d_in, false);
    auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
    const auto x = randn((size_t)T * d_in, 3.0f);
    const auto fast = gpu_matmul(gpu, *Wg, x, T, {});
    gpu::gemm_force_simple(true);
    const auto slow = gpu_matmul(gpu, *Wg, x, T, {});
    gpu::gemm_force_simple(false);
    report(std::string("gemm tensor cores vs simple twin ") + type_name(t) + " " + std::to_string(d_out) + "x" +
               std::to_string(d_in) + " T=" + std::to_string(T),
           nmse(fast.data(), slow.data(), slow.size()), 1e-8);
    if (!is_uniform(t)) continue;
    gpu::gemm_i8_enable(false);  // uniform types: the int8 kernel (default) vs the bf16 hi + lo one
    const auto bf = gpu_matmul(gpu, *Wg, x, T, {});
    gpu::gemm_i8_enable(true);
    report(std::string("gemm int8 vs bf16 tensor cores ") + type_name(t) + " " + std::to_string(d_out) + "x" +
               std::to_string(d_in) + " T=" + std::to_string(T),
           nmse(fast.data(), bf.data(), bf.size()), 1e-8);
    // two limbs of x (the default, ~16 bits): its own rounding, NMSE ~1e-9 against the twin
    gpu::gemm_i8_force_limbs(3);
    const auto three = gpu_matmul(gpu, *Wg, x, T, {});
    gpu::gemm_i8_force_limbs(2);
    const auto two = gpu_matmul(gpu, *Wg, x, T, {});
    gpu::gemm_i8_force_limbs(3);
    const std::string what = std::string(type_name(t)) + " " + std::to_string(d_out) + "x" + std::to_string(d_in) +
                             " T=" + std::to_string(T);
    report("gemm int8 two limbs vs bf16 tensor cores " + what, nmse(two.data(), bf.data(), bf.size()), 1e-7);
    CHECK_MSG(two != three, "gemm int8 two limbs: the same bits as three " + what);
    // the twin of the default 16 warps of 32 rows: 8 warps of 64 rows (DDRT_I8_WARPS=8); each
    // output's sums in the same order, so the same bits
    gpu::gemm_i8_force_warps(8);
    const auto three8 = gpu_matmul(gpu, *Wg, x, T, {});
    gpu::gemm_i8_force_limbs(2);
    const auto two8 = gpu_matmul(gpu, *Wg, x, T, {});
    gpu::gemm_i8_force_limbs(3);
    gpu::gemm_i8_force_warps(16);
    const auto three16 = gpu_matmul(gpu, *Wg, x, T, {});
    gpu::gemm_i8_force_warps(0);
    CHECK_MSG(three16 == three, "gemm int8: forced 16 warps not the default's bits " + what);
    CHECK_MSG(three8 == three, "gemm int8 8 warps, three limbs: not the same bits as 16 warps " + what);
    CHECK_MSG(two8 == two, "gemm int8 8 warps, two limbs: not the same bits as 16 warps " + what);
    // the warp-owned kernel (gemm_i8w.cu, DDRT_I8_OWN=1; 3/4 bits with unit images, sm_90+): each
    // output's sums in the same order as the block-tile kernel's, so the same bits
    if (t == TensorType::UQ3_G128 || t == TensorType::UQ4_G64) {
      gpu::gemm_i8_force_own(1);
      const int64_t before = gpu::gemm_i8w_launches();
      const auto three_own = gpu_matmul(gpu, *Wg, x, T, {});
      // taken where the weights have unit images: sm_90+ unless DDRT_TC_BULK=0 (then the tile kernel)
      CHECK_MSG((gpu::gemm_i8w_launches() > before) == gpu::gemv_tc_bulk_wanted(),
                "gemm int8 warp-owned: taken iff the weights have unit images " + what);
      gpu::gemm_i8_force_limbs(2);
      const auto two_own = gpu_matmul(gpu, *Wg, x, T, {});
      // its three shapes whatever the default by bits: 8 warps of 16 rows x 64 tokens, 16 warps of
      // 16 x 32, 8 warps of 32 x 32 (two row tiles per warp)
      gpu::gemm_i8w_force_rows(16);
      const auto two_own8 = gpu_matmul(gpu, *Wg, x, T, {});
      gpu::gemm_i8w_force_warps(16);
      const auto two_own16 = gpu_matmul(gpu, *Wg, x, T, {});
      gpu::gemm_i8w_force_warps(0);
      gpu::gemm_i8w_force_rows(32);
      const auto two_own32 = gpu_matmul(gpu, *Wg, x, T, {});
      gpu::gemm_i8w_force_rows(0);
      gpu::gemm_i8_force_limbs(3);
      gpu::gemm_i8_force_own(0);
      CHECK_MSG(three_own == three, "gemm int8 warp-owned, three limbs: not the block-tile kernel's bits " + what);
      CHECK_MSG(two_own == two, "gemm int8 warp-owned, two limbs: not the block-tile kernel's bits " + what);
      CHECK_MSG(two_own8 == two, "gemm int8 warp-owned 8 warps of 16 rows, two limbs: not the block-tile kernel's bits " + what);
      CHECK_MSG(two_own16 == two, "gemm int8 warp-owned 16 warps, two limbs: not the block-tile kernel's bits " + what);
      CHECK_MSG(two_own32 == two, "gemm int8 warp-owned 32 rows per warp, two limbs: not the block-tile kernel's bits " + what);
    }
  }
  // the block-tile kernel at two limbs (the default) on the odd shapes and group tails, against the CPU
  gpu::gemm_i8_force_limbs(2);
  vs_cpu({TensorType::UQ3_G128, TensorType::UQ4_G32, TensorType::UQ2_G64}, "gemm int8 two limbs ", 1e-7);
  gpu::gemm_i8_force_warps(8);  // and its 8-warp twin (DDRT_I8_WARPS=8)
  vs_cpu({TensorType::UQ3_G128, TensorType::UQ4_G32}, "gemm int8 two limbs 8 warps ", 1e-7);
  gpu::gemm_i8_force_warps(0);
  gpu::gemm_i8_force_own(1);  // the warp-owned kernel on the odd shapes and group tails, both limb counts
  vs_cpu({TensorType::UQ3_G128, TensorType::UQ4_G32, TensorType::UQ3_G64}, "gemm int8 two limbs warp-owned ", 1e-7);
  gpu::gemm_i8w_force_rows(16);  // 16 rows per warp (the 3-bit default) at both warp counts
  vs_cpu({TensorType::UQ4_G128, TensorType::UQ4_G32}, "gemm int8 two limbs warp-owned 16 rows ", 1e-7);
  gpu::gemm_i8w_force_warps(16);
  vs_cpu({TensorType::UQ3_G128, TensorType::UQ4_G64}, "gemm int8 two limbs warp-owned 16 warps ", 1e-7);
  gpu::gemm_i8w_force_warps(0);
  gpu::gemm_i8w_force_rows(32);  // 32 rows per warp (the 4-bit default)
  vs_cpu({TensorType::UQ3_G128, TensorType::UQ4_G32, TensorType::UQ3_G64}, "gemm int8 two limbs warp-owned 32 rows ", 1e-7);
  gpu::gemm_i8w_force_rows(0);
  gpu::gemm_i8_force_limbs(3);
  vs_cpu({TensorType::UQ3_G32, TensorType::UQ4_G128}, "gemm int8 three limbs warp-owned ", 1e-8);
  gpu::gemm_i8_force_own(-1);
  gpu::gemm_i8_force_limbs(0);
}

// T > 1 groups (q/k/v, gate/up shapes) with DecDEC off: one int8 launch for the members where
// they qualify (counted), per-member launches otherwise; every member vs the CPU.
void test_gemm_group(Backend& cpu, Backend& gpu) {
  gpu::gemm_i8_force_own(0);  // the block-tile kernel first, the warp-owned one (the default) against it
  struct G { std::vector<int64_t> d_out; int64_t d_in; };
  const G groups[] = {{{256, 64, 64}, 1000}, {{200, 72, 130}, 4100}, {{2048, 2048}, 1024}};
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G64, TensorType::UQ2_G32, TensorType::LUT3})
    for (const G& gr : groups)
      for (int T : race_sized() ? std::vector<int>{7} : std::vector<int>{7, 70}) {
        const int n = (int)gr.d_out.size();
        std::vector<std::unique_ptr<HostLinear>> L;
        std::vector<std::unique_ptr<Linear>> Wc, Wg;
        const Linear* wg[3];
        std::vector<std::unique_ptr<Buf>> ys;
        float* yp[3];
        DecdecCall calls[3];
        for (int m = 0; m < n; ++m) {
          L.push_back(make_linear(t, gr.d_out[m], gr.d_in, false));
          Wc.push_back(cpu.load_linear(L[m]->desc, ResidualPlacement::Host));
          Wg.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
          wg[m] = Wg[m].get();
          ys.push_back(std::make_unique<Buf>(gpu, (size_t)T * gr.d_out[m]));
          ys[m]->poison();
          yp[m] = ys[m]->f();
        }
        const auto x = randn((size_t)T * gr.d_in);
        Buf bx(gpu, x.size());
        bx.put(x);
        const int64_t before = gpu::gemm_i8_group_launches();
        gpu.matmul_group(wg, yp, n, bx.f(), T, calls);
        const bool fused = gpu::gemm_i8_group_launches() > before;
        const std::string what = std::string("gemm group ") + type_name(t) + " d_in " + std::to_string(gr.d_in) +
                                 " members " + std::to_string(n) + " T=" + std::to_string(T);
        CHECK_MSG(fused == is_uniform(t), what + ": group launch " + (fused ? "ran" : "did not run"));
        std::vector<std::vector<float>> got;
        for (int m = 0; m < n; ++m) {
          const auto yc = cpu_matmul(cpu, *Wc[m], x, T, calls[m]);
          got.push_back(ys[m]->get());
          report(what + " member " + std::to_string(m), nmse(got[m].data(), yc.data(), yc.size()), tol_mm(T));
        }
        if (t != TensorType::UQ3_G128 && t != TensorType::UQ4_G64) continue;
        // the warp-owned kernel (gemm_i8w.cu) on the same group: each member the same bits
        gpu::gemm_i8_force_own(1);
        for (int rows : {16, 32}) {  // and its 32-row warps (two row tiles each; a member's odd last tile)
          gpu::gemm_i8w_force_rows(rows);
          for (int m = 0; m < n; ++m) ys[m]->poison();
          gpu.matmul_group(wg, yp, n, bx.f(), T, calls);
          for (int m = 0; m < n; ++m)
            CHECK_MSG(ys[m]->get() == got[m], what + " member " + std::to_string(m) + ": warp-owned kernel's bits differ (" +
                                                  std::to_string(rows) + " rows per warp)");
        }
        gpu::gemm_i8w_force_rows(0);
        gpu::gemm_i8_force_own(0);
      }
  gpu::gemm_i8_force_own(-1);
}

void test_embed(Backend& cpu, Backend& gpu) {
  for (TensorType t : kAllTypes) {
    auto L = make_linear(t, 50, 77, false);
    auto Wc = cpu.load_linear(L->desc, ResidualPlacement::Host);
    auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
    std::vector<int32_t> ids = {3, 0, 49, 17, 17, 8, 22};
    const int T = (int)ids.size();
    std::vector<float> oc((size_t)T * 77);
    cpu.embed(*Wc, oc.data(), ids.data(), T);
    Buf og(gpu, oc.size());
    og.poison();
    gpu.embed(*Wg, og.f(), ids.data(), T);
    const auto o = og.get();
    report(std::string("embed ") + type_name(t), nmse(o.data(), oc.data(), oc.size()), 1e-12);
  }
}

// DecDEC vs the CPU: every mode, k_chunk, both placements; at T = 1 (the fused GEMV with the
// compensation in the same launch) also several n_tb and the separate-kernel twin.
void test_decdec(Backend& cpu, Backend& gpu) {
  using Shapes = std::vector<std::array<int64_t, 2>>;
  const Shapes shapes = race_sized() ? Shapes{{67, 700}, {64, 1024}} : Shapes{{300, 2500}, {67, 700}, {64, 1024}, {1100, 4100}};
  const std::vector<ResidualPlacement> places =
      race_sized() ? std::vector<ResidualPlacement>{ResidualPlacement::Host}
                   : std::vector<ResidualPlacement>{ResidualPlacement::Host, ResidualPlacement::Device};
  const std::vector<int> Ts = race_sized() ? std::vector<int>{1, 40} : std::vector<int>{1, 7, 40};
  const std::vector<int> kcs = race_sized() ? std::vector<int>{1, 64} : std::vector<int>{1, 8, 64, 1024};
  const DecdecMode modes[] = {DecdecMode::Exact, DecdecMode::Approx, DecdecMode::Static, DecdecMode::Random};
  for (auto& s : shapes)
    for (ResidualPlacement where : places) {
      const TensorType type = s[0] == 67 ? TensorType::UQ4_G64 : s[0] == 1100 ? TensorType::UQ4_G128 : TensorType::UQ3_G128;
      auto L = make_linear(type, s[0], s[1], true);
      auto Wc = cpu.load_linear(L->desc, where);
      auto Wg = gpu.load_linear(L->desc, where);
      for (int T : Ts) {  // 40: the wide gather (T >= 16), and slices when kmax is large
        std::vector<char> mine;  // (mode, k_chunk) cases of this shard (DDRT_TEST_SHARD)
        for (size_t i = 0; i < std::size(modes) * kcs.size(); ++i) mine.push_back(shard_mine());
        if (std::find(mine.begin(), mine.end(), 1) == mine.end()) continue;
        const auto x = randn((size_t)T * s[1]);
        const auto base_c = cpu_matmul(cpu, *Wc, x, T, {});
        gpu::gemm_i8_force_limbs(3);  // a compensated T > 1 call's base matmul keeps three limbs
        const auto base_g = gpu_matmul(gpu, *Wg, x, T, {});
        gpu::gemm_i8_force_limbs(0);
        size_t ci = 0;
        for (DecdecMode m : modes)
          for (int kc : kcs) {
            if (!mine[ci++]) continue;
            DecdecCall c;
            c.mode = m;
            c.k_chunk = kc;
            c.seed = 1234 + kc;
            c.linear_id = 5;
            c.pos0 = 17;
            const auto yc = cpu_matmul(cpu, *Wc, x, T, c);
            const auto yg = gpu_matmul(gpu, *Wg, x, T, c);
            std::vector<float> dc(yc.size()), dg(yc.size());
            for (size_t i = 0; i < yc.size(); ++i) {
              dc[i] = yc[i] - base_c[i];
              dg[i] = yg[i] - base_g[i];
            }
            const std::string what = std::string("decdec ") + mode_name(m) + " k_chunk=" + std::to_string(kc) + " " +
                                     std::to_string(s[0]) + "x" + std::to_string(s[1]) + " T=" + std::to_string(T) +
                                     (where == ResidualPlacement::Host ? " host" : " device");
            report(what + " y", nmse(yg.data(), yc.data(), yc.size()), tol_mm(T));
            // the compensation against its own size; a tiny one (k_chunk 1, small x) against the
            // floor of the base kernels' rounding (with DecDEC on, T = 1 runs the fused kernel,
            // whose base sums in another order than the base-only call)
            double e2 = 0, c2 = 0, y2 = 0;
            for (size_t i = 0; i < yc.size(); ++i) {
              e2 += ((double)dg[i] - dc[i]) * ((double)dg[i] - dc[i]);
              c2 += (double)dc[i] * dc[i];
              y2 += (double)yc[i] * yc[i];
            }
            report(what + " compensation", e2 / (c2 + 1e-6 * y2 + 1e-30), 1e-6);
            cuda_set_decdec_parallel(gpu, true);  // the side-stream twin (the paper's design)
            const auto yp = gpu_matmul(gpu, *Wg, x, T, c);
            cuda_set_decdec_parallel(gpu, false);
            report(what + " side stream", nmse(yp.data(), yc.data(), yc.size()), tol_mm(T));
            if (T != 1) continue;
            for (int n_tb : {1, 3, 40}) {  // the fused launch's compensation blocks: same numbers
              c.n_tb = n_tb;
              const auto yn = gpu_matmul(gpu, *Wg, x, T, c);
              report(what + " n_tb=" + std::to_string(n_tb), nmse(yn.data(), yc.data(), yc.size()), tol_mm(T));
            }
            c.n_tb = 0;
            gpu::gemv_tc_enable(false);  // the separate-kernel twin
            const auto yt = gpu_matmul(gpu, *Wg, x, T, c);
            gpu::gemv_tc_enable(true);
            report(what + " fused vs separate kernels", nmse(yg.data(), yt.data(), yt.size()), 1e-8);
          }
      }
    }
  // errors: a mode without its calibration data, a linear without residual
  if (!shard_first()) return;
  auto L = make_linear(TensorType::UQ4_G128, 16, 64, false);
  auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
  DecdecCall c;
  c.mode = DecdecMode::Exact;
  c.k_chunk = 8;
  Buf bx(gpu, 64), by(gpu, 16);
  CHECK_THROWS(gpu.matmul(*Wg, by.f(), bx.f(), 1, c), InvalidArgument);
}

// The down projection with swiglu in its input: matmul_swiglu (one launch where the fused GEMV
// takes it) against the CPU's swiglu + matmul, and against the GPU's own two ops.
// The segment-major approx compensation's lab knobs against the default (the chunks selected by
// blocks c % n_tb, published, and their x values recomputed by every block from the sel read back):
// the x values published with the selection (gemv_tc_comp_xs_force) and the selection with fewer
// barriers (gemv_tc_sel_fast_force; also chunk-major) must give bitwise the same y: the same
// selection rule on the same x values. Every input form (plain x, rmsnorm(x) w, silu(gate) up), a
// short last chunk, one and several members, one to five chunks; the CPU reference is the decdec
// group's.
void test_decdec_twins(Backend& gpu) {
  struct G { std::vector<int64_t> d_out; int64_t d_in; };
  const std::vector<G> groups = race_sized() ? std::vector<G>{{{96, 40}, 2500}, {{70}, 4100}, {{48}, 1024}}
                                             : std::vector<G>{{{96, 40}, 2500}, {{300}, 4100}, {{1100}, 4096}, {{48}, 1024}};
  const int64_t xs0 = gpu::gemv_tc_xs_launches(), fast0 = gpu::gemv_tc_sel_fast_launches(),
                reuse0 = gpu::gemv_tc_sel_reuse_launches();
  for (const G& gr : groups) {
    const int n = (int)gr.d_out.size();
    std::vector<std::unique_ptr<HostLinear>> L;
    std::vector<std::unique_ptr<Linear>> W;
    for (int m = 0; m < n; ++m) {
      L.push_back(make_linear(TensorType::UQ3_G128, gr.d_out[m], gr.d_in, true));
      if (m > 0) {  // one selection for the group
        L[m]->thresholds = L[0]->thresholds;
        L[m]->desc.thresholds = L[m]->thresholds.data();
      }
      W.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
    }
    const Linear* w[3];
    for (int m = 0; m < n; ++m) w[m] = W[m].get();
    auto x = randn((size_t)gr.d_in), up = randn((size_t)gr.d_in), nw = randn((size_t)gr.d_in);
    for (float& v : x) v *= 5.0f;
    Buf bx(gpu, x.size()), bu(gpu, up.size()), bw(gpu, nw.size()), bxb(gpu, x.size());
    bx.put(x), bu.put(up), bw.put(nw);
    std::vector<std::unique_ptr<Buf>> ys;
    float* yp[3];
    for (int m = 0; m < n; ++m) ys.push_back(std::make_unique<Buf>(gpu, (size_t)gr.d_out[m])), yp[m] = ys[m]->f();
    for (int kc : {2, 8, 64})
      for (int form = 0; form < 3; ++form) {  // plain, rmsnorm, swiglu (one member)
        if (form == 2 && n > 1) continue;
        DecdecCall calls[3];
        for (int m = 0; m < n; ++m) calls[m].mode = DecdecMode::Approx, calls[m].k_chunk = kc, calls[m].n_tb = 3, calls[m].pos0 = 2;
        auto run = [&](int xs, int fast, int chunks, int reuse = 0) {
          gpu::gemv_tc_comp_xs_force(xs);
          gpu::gemv_tc_sel_fast_force(fast);
          gpu::gemv_tc_comp_chunks_force(chunks);
          gpu::gemv_tc_sel_reuse_force(reuse);
          for (int m = 0; m < n; ++m) ys[m]->poison();
          bx.put(x);  // (the unfused matmul_swiglu writes silu(gate) up into gate)
          if (form == 0)
            gpu.matmul_group(w, yp, n, bx.f(), 1, calls);
          else if (form == 1)
            gpu.rmsnorm_matmul_group(w, yp, n, bxb.f(), bx.f(), bw.f(), 1e-5f, 1, calls);
          else
            gpu.matmul_swiglu(*w[0], yp[0], bx.f(), bu.f(), 1, calls[0]);
          std::vector<std::vector<float>> out;
          for (int m = 0; m < n; ++m) out.push_back(ys[m]->get());
          return out;
        };
        const auto ref = run(0, 0, 0), xs = run(1, 0, 0);
        // the selection with fewer barriers: alone, with the published x values, and chunk-major
        // (against chunk-major without it: its terms merge in another order than segment-major's)
        const auto fast = run(0, 1, 0), fast_xs = run(1, 1, 0), chunk = run(0, 0, 1), chunk_fast = run(0, 1, 1);
        // the norm's x reused by the selecting blocks (rmsnorm form; elsewhere it does not apply)
        const auto reuse = run(0, 0, 0, 1), reuse_fast_xs = run(1, 1, 0, 1);
        const std::string what = "decdec_twins d_in " + std::to_string(gr.d_in) + " members " + std::to_string(n) +
                                 " k_chunk " + std::to_string(kc) + " form " + std::to_string(form);
        for (int m = 0; m < n; ++m) {
          CHECK_MSG(std::all_of(ref[m].begin(), ref[m].end(), [](float v) { return std::isfinite(v); }), what + ": y not finite");
          CHECK_MSG(std::memcmp(ref[m].data(), xs[m].data(), ref[m].size() * 4) == 0, what + ": published-x y differs");
          CHECK_MSG(std::memcmp(ref[m].data(), fast[m].data(), ref[m].size() * 4) == 0, what + ": fast-selection y differs");
          CHECK_MSG(std::memcmp(ref[m].data(), fast_xs[m].data(), ref[m].size() * 4) == 0,
                    what + ": fast selection with published x: y differs");
          CHECK_MSG(std::memcmp(chunk[m].data(), chunk_fast[m].data(), ref[m].size() * 4) == 0,
                    what + ": fast chunk-major y differs");
          CHECK_MSG(std::memcmp(ref[m].data(), reuse[m].data(), ref[m].size() * 4) == 0, what + ": reused-x y differs");
          CHECK_MSG(std::memcmp(ref[m].data(), reuse_fast_xs[m].data(), ref[m].size() * 4) == 0,
                    what + ": reused x with the fast selection and published x: y differs");
        }
      }
  }
  gpu::gemv_tc_comp_xs_force(-1);
  gpu::gemv_tc_sel_fast_force(-1);
  gpu::gemv_tc_comp_chunks_force(-1);
  gpu::gemv_tc_sel_reuse_force(-1);
  CHECK_MSG(gpu::gemv_tc_sel_fast_launches() > fast0, "decdec_twins: no launch selected with fewer barriers");
  CHECK_MSG(gpu::gemv_tc_sel_reuse_launches() > reuse0, "decdec_twins: no launch reused the norm's x");
  CHECK_MSG(gpu::gemv_tc_xs_launches() > xs0, "decdec_twins: no launch published the x values");
}

void test_matmul_swiglu(Backend& cpu, Backend& gpu) {
  setenv("DDRT_FUSE_SWIGLU", "1", 1);  // every size (by default only large matrices fuse)
  struct S { TensorType type; int64_t d_out, d_in; };
  const S shapes[] = {{TensorType::UQ3_G128, 300, 2500}, {TensorType::UQ4_G64, 67, 700},
                      {TensorType::UQ3_G64, 1100, 4100}, {TensorType::UQ4_G128, 64, 1026}};
  for (const S& s : shapes) {
    auto L = make_linear(s.type, s.d_out, s.d_in, true);
    auto Wc = cpu.load_linear(L->desc, ResidualPlacement::Host);
    auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
    for (int T : {1, 3})
      for (DecdecMode m : {DecdecMode::Off, DecdecMode::Approx, DecdecMode::Exact}) {
        DecdecCall c;
        c.mode = m;
        c.k_chunk = m == DecdecMode::Off ? 0 : 8;
        auto gate = randn((size_t)T * s.d_in), up = randn((size_t)T * s.d_in);
        for (float& v : gate) v *= 3.0f;  // the sigmoid's whole range
        std::vector<float> yc((size_t)T * s.d_out);
        {
          auto g2 = gate;
          cpu.matmul_swiglu(*Wc, yc.data(), g2.data(), up.data(), T, c);
        }
        Buf bg(gpu, gate.size()), bu(gpu, up.size()), by(gpu, yc.size()), by2(gpu, yc.size());
        bg.put(gate);
        bu.put(up);
        by.poison();
        gpu.matmul_swiglu(*Wg, by.f(), bg.f(), bu.f(), T, c);
        const auto yg = by.get();
        bg.put(gate);
        by2.poison();
        gpu.swiglu(bg.f(), bg.f(), bu.f(), gate.size());
        gpu.matmul(*Wg, by2.f(), bg.f(), T, c);
        const auto y2 = by2.get();
        const std::string what = std::string("matmul_swiglu ") + type_name(s.type) + " " + std::to_string(s.d_out) +
                                 "x" + std::to_string(s.d_in) + " T=" + std::to_string(T) + " " + mode_name(m);
        report(what + " vs cpu", nmse(yg.data(), yc.data(), yc.size()), tol_mm(T));
        report(what + " vs swiglu + matmul", nmse(yg.data(), y2.data(), y2.size()), 1e-12);
      }
  }
  unsetenv("DDRT_FUSE_SWIGLU");
}

// The residual add and the next RMSNorm inside the fused GEMVs around them (engine.cpp's decode
// step): matmul_add / matmul_swiglu_add (y += W x) and rmsnorm_matmul_group (ys = W rmsnorm(x))
// vs the CPU's defaults (the ops in sequence), DecDEC off and on, singles and groups, T = 1
// (fused: the launch counted) and T = 3 (the fallback); fuses_add_norm says so exactly where
// both ends fuse.
void test_fused_add_norm(Backend& cpu, Backend& gpu) {
  setenv("DDRT_FUSE_NORM", "1", 1);  // fuses_add_norm's switch (on by default; =0 turns it off)
  struct G { std::vector<int64_t> d_out; int64_t d_in; };
  const std::vector<G> groups =
      race_sized() ? std::vector<G>{{{96, 32, 70}, 2500}, {{300}, 4100}}
                   : std::vector<G>{{{96, 32, 70}, 2500}, {{2048, 2048}, 1024}, {{300}, 4100}, {{1100}, 4096}, {{64, 64}, 16384}};
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G64, TensorType::F16})
    for (const G& gr : groups) {
      const int n = (int)gr.d_out.size();
      std::vector<std::unique_ptr<HostLinear>> L;
      std::vector<std::unique_ptr<Linear>> Wc, Wg;
      for (int m = 0; m < n; ++m) {
        L.push_back(make_linear(t, gr.d_out[m], gr.d_in, t != TensorType::F16));
        if (m > 0 && t != TensorType::F16) {  // one selection for the group
          L[m]->thresholds = L[0]->thresholds;
          L[m]->desc.thresholds = L[m]->thresholds.data();
        }
        Wc.push_back(cpu.load_linear(L[m]->desc, ResidualPlacement::Host));
        Wg.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      }
      const Linear *wc[3], *wg[3];
      for (int m = 0; m < n; ++m) wc[m] = Wc[m].get(), wg[m] = Wg[m].get();
      const auto nw = randn((size_t)gr.d_in);
      Buf bw(gpu, nw.size());
      bw.put(nw);
      for (DecdecMode mode : {DecdecMode::Off, DecdecMode::Approx, DecdecMode::Exact})
        for (int T : {1, 3}) {
          if (t == TensorType::F16 && mode != DecdecMode::Off) continue;
          DecdecCall calls[3];
          for (int m = 0; m < n; ++m) {
            calls[m].mode = mode;
            calls[m].k_chunk = mode == DecdecMode::Off ? 0 : 8;
            calls[m].n_tb = mode == DecdecMode::Approx ? 3 : 0;
            calls[m].pos0 = 5;
          }
          const std::string what = std::string(type_name(t)) + " d_in " + std::to_string(gr.d_in) + " members " +
                                   std::to_string(n) + " " + mode_name(mode) + " T=" + std::to_string(T);
          const bool want_fused = T == 1 && t != TensorType::F16 && mode != DecdecMode::Exact;
          // rmsnorm_matmul_group
          auto x = randn((size_t)T * gr.d_in);
          for (float& v : x) v *= 7.0f;  // rmsnorm's scale matters
          std::vector<std::vector<float>> yc(n);
          std::vector<float*> ycp(n);
          for (int m = 0; m < n; ++m) yc[m].assign((size_t)T * gr.d_out[m], NAN), ycp[m] = yc[m].data();
          std::vector<float> xbc(x.size());
          cpu.rmsnorm_matmul_group(wc, ycp.data(), n, xbc.data(), x.data(), nw.data(), 1e-5f, T, calls);
          Buf bx(gpu, x.size()), bxb(gpu, x.size());
          bx.put(x);
          std::vector<std::unique_ptr<Buf>> ys;
          float* yp[3];
          for (int m = 0; m < n; ++m) {
            ys.push_back(std::make_unique<Buf>(gpu, (size_t)T * gr.d_out[m]));
            ys[m]->poison();
            yp[m] = ys[m]->f();
          }
          const int64_t before = gpu::gemv_tc_io_launches();
          gpu.rmsnorm_matmul_group(wg, yp, n, bxb.f(), bx.f(), bw.f(), 1e-5f, T, calls);
          const bool fused = gpu::gemv_tc_io_launches() > before;
          CHECK_MSG(fused == want_fused, "rmsnorm_matmul_group " + what + ": fused launch " + (fused ? "ran" : "did not run"));
          for (int m = 0; m < n; ++m)
            report("rmsnorm_matmul_group " + what + " member " + std::to_string(m),
                   nmse(ys[m]->get().data(), yc[m].data(), yc[m].size()), tol_mm(T));
          // fuses_add_norm: the first member as producer (d_in as the consumers' d_out would be
          // in a model does not matter here), the group as consumers
          const bool says = gpu.fuses_add_norm(*wg[0], calls[0], wg, n, calls, T);
          CHECK_MSG(says == want_fused, "fuses_add_norm " + what);
          CHECK_MSG(!cpu.fuses_add_norm(*wc[0], calls[0], wc, n, calls, T), "cpu fuses_add_norm " + what);
          CHECK_MSG(gpu.fuses_norm(wg, n, calls, T) == want_fused, "fuses_norm " + what);
          CHECK_MSG(!cpu.fuses_norm(wc, n, calls, T), "cpu fuses_norm " + what);
          // matmul_add and matmul_swiglu_add of member 0 (swiglu fused at every size and at none)
          for (int variant = 0; variant < 3; ++variant) {
            const int64_t d_out = gr.d_out[0];
            const auto y0 = randn((size_t)T * d_out);
            const auto up = randn((size_t)T * gr.d_in);
            std::vector<float> ref = y0, tmp((size_t)T * d_out), gate = x;
            if (variant == 0) {
              cpu.matmul_add(*wc[0], ref.data(), tmp.data(), x.data(), T, calls[0]);
            } else {
              cpu.matmul_swiglu_add(*wc[0], ref.data(), tmp.data(), gate.data(), up.data(), T, calls[0]);
              setenv("DDRT_FUSE_SWIGLU", variant == 1 ? "1" : "0", 1);
            }
            Buf by(gpu, y0.size()), bt(gpu, y0.size()), bu(gpu, up.size());
            by.put(y0);
            bt.poison();
            bu.put(up);
            bx.put(x);
            const int64_t b2 = gpu::gemv_tc_io_launches();
            if (variant == 0)
              gpu.matmul_add(*wg[0], by.f(), bt.f(), bx.f(), T, calls[0]);
            else
              gpu.matmul_swiglu_add(*wg[0], by.f(), bt.f(), bx.f(), bu.f(), T, calls[0]);
            unsetenv("DDRT_FUSE_SWIGLU");
            const bool f2 = gpu::gemv_tc_io_launches() > b2;
            // exact selects in a pre-kernel that reads x as it is: with swiglu fused, the swiglu runs
            // apart first and the adding GEMV still takes the add
            const bool want2 = T == 1 && t != TensorType::F16;
            const char* names[] = {"matmul_add ", "matmul_swiglu_add (fused) ", "matmul_swiglu_add (swiglu apart) "};
            CHECK_MSG(f2 == want2, std::string(names[variant]) + what + ": adding launch " + (f2 ? "ran" : "did not run"));
            report(names[variant] + what, nmse(by.get().data(), ref.data(), ref.size()), tol_mm(T));
          }
        }
    }
  {  // y += W y (the output is the input): the fused launch would read x while adding into it, so
     // the backend takes the ops in sequence, and the result is the CPU's
    auto L = make_linear(TensorType::UQ3_G128, 1024, 1024, false);
    auto Wc = cpu.load_linear(L->desc, ResidualPlacement::Host);
    auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
    const auto x = randn(1024);
    std::vector<float> ref = x, tmp(1024);
    cpu.matmul_add(*Wc, ref.data(), tmp.data(), x.data(), 1, {});
    Buf bx(gpu, 1024), bt(gpu, 1024);
    bx.put(x);
    bt.poison();
    const int64_t before = gpu::gemv_tc_io_launches();
    gpu.matmul_add(*Wg, bx.f(), bt.f(), bx.f(), 1, {});
    CHECK_MSG(gpu::gemv_tc_io_launches() == before, "matmul_add with y aliasing x took the fused launch");
    report("matmul_add y aliasing x", nmse(bx.get().data(), ref.data(), ref.size()), 1e-8);
  }
  unsetenv("DDRT_FUSE_NORM");
}

// A decode step's o, gate/up, down and the next q/k/v with the add+norm fusion, against the CPU's,
// twice, with swiglu fused and apart:
//  - chain (DDRT_TC_CHAIN=1): they queue up and run as one launch with grid barriers between them
//    (the barrier's counters must come back to 0; swiglu fused: one chain of 4, apart: its launch
//    splits the chain in two);
//  - otherwise the norm's sums pass from each adding launch to the next normalizing one
//    (TcIo::ssq_out / ssq_in: o's to gate/up, down's to q/k/v, counted), with DecDEC off and approx
//    (the compensation blocks finish tiles and read the sums too), and with the sums off (the twin).
void layer_sequence(Backend& cpu, Backend& gpu, bool chain) {
  setenv("DDRT_FUSE_NORM", "1", 1);
  if (chain) setenv("DDRT_TC_CHAIN", "1", 1);
  // a layer of the default size, and one whose every stage holds fewer blocks than the grid can
  // (and whose o and down write whole tiles: the direct path)
  for (const std::array<int64_t, 3>& dims : {std::array<int64_t, 3>{512, 1536, 128}, std::array<int64_t, 3>{128, 256, 32}})
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G64})
  for (int variant = 0; variant < (chain ? 1 : 3); ++variant) {  // parts on, parts on + approx, parts off
    const bool approx = variant == 1;
    gpu::gemv_tc_norm_parts_force(chain ? -1 : variant != 2);
    const int64_t d = dims[0], h = dims[1], kvd = dims[2];
    const int64_t shapes[7][2] = {{d, d}, {h, d}, {h, d}, {d, h}, {d, d}, {kvd, d}, {kvd, d}};  // o gate up down q k v
    std::vector<std::unique_ptr<HostLinear>> L;  // the CPU's linears read these
    std::vector<std::unique_ptr<Linear>> Wc, Wg;
    for (auto& s : shapes) L.push_back(make_linear(t, s[0], s[1], approx));
    for (int m : {2, 5, 6}) {  // approx: one selection per group (gate/up, q/k/v)
      if (!approx) break;
      L[m]->thresholds = L[m == 6 ? 4 : m - 1]->thresholds;
      L[m]->desc.thresholds = L[m]->thresholds.data();
    }
    for (auto& l : L) {
      Wc.push_back(cpu.load_linear(l->desc, ResidualPlacement::Host));
      Wg.push_back(gpu.load_linear(l->desc, ResidualPlacement::Host));
    }
    for (const char* swiglu : {"1", "0"}) {
      setenv("DDRT_FUSE_SWIGLU", swiglu, 1);
      const auto x0 = randn(d), att = randn(d), nw1 = randn(d), nw2 = randn(d);
      // CPU
      std::vector<float> x = x0, tmp(h), xb(d), g(h), u(h), q(d), k(kvd), v(kvd);
      DecdecCall off[3];
      for (DecdecCall& c : off) {  // (approx: the name is the variant's)
        c.mode = approx ? DecdecMode::Approx : DecdecMode::Off;
        c.k_chunk = approx ? 8 : 0;
        c.n_tb = approx ? 3 : 0;
        c.pos0 = 5;
      }
      const Linear* gu_c[2] = {Wc[1].get(), Wc[2].get()};
      const Linear* qkv_c[3] = {Wc[4].get(), Wc[5].get(), Wc[6].get()};
      float* gu_y[2] = {g.data(), u.data()};
      float* qkv_y[3] = {q.data(), k.data(), v.data()};
      cpu.matmul_add(*Wc[0], x.data(), tmp.data(), att.data(), 1, off[0]);
      cpu.rmsnorm_matmul_group(gu_c, gu_y, 2, xb.data(), x.data(), nw1.data(), 1e-5f, 1, off);
      cpu.matmul_swiglu_add(*Wc[3], x.data(), tmp.data(), g.data(), u.data(), 1, off[0]);
      cpu.rmsnorm_matmul_group(qkv_c, qkv_y, 3, xb.data(), x.data(), nw2.data(), 1e-5f, 1, off);
      // GPU, twice
      Buf bx(gpu, d), batt(gpu, d), bn1(gpu, d), bn2(gpu, d), bt(gpu, h), bxb(gpu, d), bg(gpu, h), bu(gpu, h),
          bq(gpu, d), bk(gpu, kvd), bv(gpu, kvd);
      batt.put(att);
      bn1.put(nw1);
      bn2.put(nw2);
      const Linear* gu_g[2] = {Wg[1].get(), Wg[2].get()};
      const Linear* qkv_g[3] = {Wg[4].get(), Wg[5].get(), Wg[6].get()};
      float* gu_gy[2] = {bg.f(), bu.f()};
      float* qkv_gy[3] = {bq.f(), bk.f(), bv.f()};
      for (int rep = 0; rep < 2; ++rep) {
        bx.put(x0);
        for (Buf* b : {&bq, &bk, &bv}) b->poison();
        const int64_t chains = gpu::gemv_tc_chain_launches(), parts = gpu::gemv_tc_parts_launches();
        gpu.matmul_add(*Wg[0], bx.f(), bt.f(), batt.f(), 1, off[0]);
        gpu.rmsnorm_matmul_group(gu_g, gu_gy, 2, bxb.f(), bx.f(), bn1.f(), 1e-5f, 1, off);
        gpu.matmul_swiglu_add(*Wg[3], bx.f(), bt.f(), bg.f(), bu.f(), 1, off[0]);
        gpu.rmsnorm_matmul_group(qkv_g, qkv_gy, 3, bxb.f(), bx.f(), bn2.f(), 1e-5f, 1, off);
        gpu.synchronize();
        const char* names[] = {"norm sums ", "norm sums approx ", "norm sums off "};
        const std::string what = std::string(chain ? "chain " : names[variant]) + type_name(t) + " d " +
                                 std::to_string(d) + (swiglu[0] == '1' ? " swiglu fused" : " swiglu apart") + " rep " +
                                 std::to_string(rep);
        if (chain) {
          const int64_t ran = gpu::gemv_tc_chain_launches() - chains, want = swiglu[0] == '1' ? 1 : 2;
          CHECK_MSG(ran == want, what + ": " + std::to_string(ran) + " chain launches, expected " + std::to_string(want));
        } else {  // gate/up reads o's sums and q/k/v down's (with the swiglu apart too: its launch
                  // comes before down's), none with the sums off
          const int64_t ran = gpu::gemv_tc_parts_launches() - parts;
          const int64_t want = variant == 2 ? 0 : 2;
          CHECK_MSG(ran == want, what + ": " + std::to_string(ran) + " launches read the sums, expected " +
                                     std::to_string(want));
        }
        report(what + " x", nmse(bx.get().data(), x.data(), d), 1e-8);
        report(what + " q", nmse(bq.get().data(), q.data(), d), 1e-8);
        report(what + " k", nmse(bk.get().data(), k.data(), kvd), 1e-8);
        report(what + " v", nmse(bv.get().data(), v.data(), kvd), 1e-8);
      }
      unsetenv("DDRT_FUSE_SWIGLU");
    }
  }
  gpu::gemv_tc_norm_parts_force(-1);
  unsetenv("DDRT_TC_CHAIN");
  unsetenv("DDRT_FUSE_NORM");
}
void test_chain(Backend& cpu, Backend& gpu) { layer_sequence(cpu, gpu, true); }

// The norm's sums from producer to consumer: the layer sequence, and an adding launch of d_out
// rows not a multiple of 16 (its last tile's sum over the rows that exist) before a one-member
// normalizing launch, direct (one unit per tile) and finished (several), against the CPU.
void test_norm_parts(Backend& cpu, Backend& gpu) {
  layer_sequence(cpu, gpu, false);
  setenv("DDRT_FUSE_NORM", "1", 1);
  gpu::gemv_tc_norm_parts_force(1);
  for (int64_t d : {200, 1100})
    for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G64}) {
      auto Lo = make_linear(t, d, d, false), Lc = make_linear(t, 96, d, false);
      auto oc = cpu.load_linear(Lo->desc, ResidualPlacement::Host), og = gpu.load_linear(Lo->desc, ResidualPlacement::Host);
      auto cc = cpu.load_linear(Lc->desc, ResidualPlacement::Host), cg = gpu.load_linear(Lc->desc, ResidualPlacement::Host);
      const auto x0 = randn(d), att = randn(d), nw = randn(d);
      std::vector<float> x = x0, tmp(d), xb(d), y(96);
      const Linear* c1[1] = {cc.get()};
      float* y1[1] = {y.data()};
      DecdecCall off[1];
      cpu.matmul_add(*oc, x.data(), tmp.data(), att.data(), 1, off[0]);
      cpu.rmsnorm_matmul_group(c1, y1, 1, xb.data(), x.data(), nw.data(), 1e-5f, 1, off);
      Buf bx(gpu, d), batt(gpu, d), bn(gpu, d), bt(gpu, d), bxb(gpu, d), by(gpu, 96);
      bx.put(x0);
      batt.put(att);
      bn.put(nw);
      by.poison();
      const Linear* g1[1] = {cg.get()};
      float* gy[1] = {by.f()};
      const int64_t parts = gpu::gemv_tc_parts_launches();
      gpu.matmul_add(*og, bx.f(), bt.f(), batt.f(), 1, off[0]);
      gpu.rmsnorm_matmul_group(g1, gy, 1, bxb.f(), bx.f(), bn.f(), 1e-5f, 1, off);
      const std::string what = std::string("norm sums ") + type_name(t) + " d " + std::to_string(d);
      CHECK_MSG(gpu::gemv_tc_parts_launches() == parts + 1, what + ": the consumer did not read the sums");
      report(what + " x", nmse(bx.get().data(), x.data(), d), 1e-8);
      report(what + " y", nmse(by.get().data(), y.data(), 96), 1e-8);
    }
  gpu::gemv_tc_norm_parts_force(-1);
  unsetenv("DDRT_FUSE_NORM");
}

// The block-local merge (TcArgs::local, DDRT_TC_LOCAL=1) against its twin, the k-major split with
// the counter merge: the same unit sums added in the same order (k ascending), so y is the same
// bit for bit. A plain linear, a q/k/v-like group, the rmsnorm input and y += (accumulate), at 2 to
// 8 units per tile (3 bits: 1024 inputs a unit, 4 bits: 512), tail tiles included; 10 units get no
// local plan. With DDRT_TC_LOCAL_EXT on too, gate/up pairs (rmsnorm_matmul_swiglu: swiglu(gate, up)
// joined in the block) at 1, 2 and 4 units per tile, a last block with fewer pairs included; 5
// units (an odd number of tiles per block) get no local plan. (At most 8 blocks each: the
// emulator's 4 SMs hold that many at once.) Then the other fused-GEMV tests with it on, against
// the CPU, the pairs' and the deferred attention's included.
void test_swiglu_pairs(Backend& cpu, Backend& gpu);  // (below)
void test_attn_defer(Backend& cpu, Backend& gpu);
void test_gemv_local(Backend& cpu, Backend& gpu) {
  // pairs: -1 no gate/up pair run (members of unequal d_out), 0 a pair run on the k-major plan, 1
  // on the block-local one
  struct S { TensorType t; std::vector<int64_t> d_out; int64_t d_in; bool local; int pairs; };
  const S cases[] = {{TensorType::UQ3_G128, {300}, 2048, true, -1},     {TensorType::UQ3_G128, {96, 32, 64}, 2500, true, -1},
                     {TensorType::UQ3_G32, {112}, 8192, true, -1},      {TensorType::UQ4_G64, {64, 64}, 2500, true, 0},
                     {TensorType::UQ4_G128, {33}, 1024, true, -1},      {TensorType::UQ3_G128, {64}, 9300, false, -1},
                     {TensorType::UQ3_G128, {96, 96}, 1000, false, 1},  {TensorType::UQ4_G64, {96, 96}, 576, true, 1},
                     {TensorType::UQ3_G128, {64, 64}, 4000, true, 1}};
  // DDRT_TEST_LOCAL_ONLY=1: the cases whose launches are all block-local with the knob on (under
  // racecheck with DDRT_TEST_LOCAL_MODE=1: no k-major launch, of another shared-memory layout,
  // between them)
  const bool only_local = gpu::env_int("DDRT_TEST_LOCAL_ONLY", 0) == 1;
  for (const S& c : cases) {
    if (only_local && (!c.local || c.pairs == 0)) continue;
    const int n = (int)c.d_out.size();
    std::vector<std::unique_ptr<HostLinear>> L;
    std::vector<std::unique_ptr<Linear>> Wc, Wg;
    const Linear *wc[3], *wg[3];
    for (int m = 0; m < n; ++m) {
      L.push_back(make_linear(c.t, c.d_out[m], c.d_in, false));
      Wc.push_back(cpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      Wg.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      wc[m] = Wc[m].get();
      wg[m] = Wg[m].get();
    }
    auto x = randn((size_t)c.d_in);
    for (float& v : x) v *= 5.0f;
    const auto nw = randn((size_t)c.d_in), y0 = randn((size_t)c.d_out[0]);
    Buf bx(gpu, x.size()), bn(gpu, nw.size()), bxb(gpu, x.size()), bt(gpu, (size_t)c.d_out[0]);
    bx.put(x);
    bn.put(nw);
    DecdecCall off[3];
    const std::string what = std::string("gemv local ") + type_name(c.t) + " d_in " + std::to_string(c.d_in) +
                             " members " + std::to_string(n);
    // [force 0, 1, 2][plain group, rmsnorm group, accumulate, gate/up pair][member]; force 2: the
    // k-major plans through the block-local instantiation (DDRT_TC_ONE)
    std::vector<float> y[3][4][3];
    const int n_kinds = c.pairs >= 0 ? 4 : 3;
    // DDRT_TEST_LOCAL_MODE=0, 1 or 2: that mode alone (under racecheck: whose launches a hazard
    // is; 2 tells the block-local instantiation's code from its plans)
    const char* only_mode = std::getenv("DDRT_TEST_LOCAL_MODE");
    const int lone = only_mode && *only_mode ? std::atoi(only_mode) : -1;
    for (int f = 0; f < 3; ++f) {
      if (lone >= 0 && f != lone) continue;
      gpu::gemv_tc_local_force(f == 1);
      gpu::gemv_tc_local_ext_force(f == 1);
      gpu::gemv_tc_one_force(f == 2);
      const int64_t before = gpu::gemv_tc_local_launches();
      for (int kind = 0; kind < n_kinds; ++kind) {
        std::vector<std::unique_ptr<Buf>> ys;
        float* yp[3];
        for (int m = 0; m < n; ++m) {
          ys.push_back(std::make_unique<Buf>(gpu, (size_t)c.d_out[m]));
          ys[m]->poison();
          yp[m] = ys[m]->f();
        }
        if (kind == 0) gpu.matmul_group(wg, yp, n, bx.f(), 1, off);
        if (kind == 1) gpu.rmsnorm_matmul_group(wg, yp, n, bxb.f(), bx.f(), bn.f(), 1e-5f, 1, off);
        if (kind == 2) {
          ys[0]->put(y0);
          gpu.matmul_add(*wg[0], yp[0], bt.f(), bx.f(), 1, off[0]);
        }
        if (kind == 3) gpu.rmsnorm_matmul_swiglu(wg, yp[0], yp[1], bxb.f(), bx.f(), bn.f(), 1e-5f, 1, off);
        for (int m = 0; m < (kind == 2 ? 1 : n); ++m) y[f][kind][m] = ys[m]->get();
      }
      const int64_t ran = gpu::gemv_tc_local_launches() - before;
      const int64_t want = f == 1 ? (c.local ? 3 : 0) + (c.pairs == 1 ? 1 : 0) : 0;
      CHECK_MSG(ran == want, what + ": " + std::to_string(ran) + " block-local launches with the knob " +
                                 (f == 1 ? "on" : "off") + ", expected " + std::to_string(want));
    }
    gpu::gemv_tc_local_force(-1);
    gpu::gemv_tc_local_ext_force(-1);
    gpu::gemv_tc_one_force(-1);
    // the CPU's y for each kind
    std::vector<float> ref[4][3];
    std::vector<float*> rp(n);
    for (int m = 0; m < n; ++m) ref[0][m].assign((size_t)c.d_out[m], NAN), rp[m] = ref[0][m].data();
    cpu.matmul_group(wc, rp.data(), n, x.data(), 1, off);
    for (int m = 0; m < n; ++m) ref[1][m].assign((size_t)c.d_out[m], NAN), rp[m] = ref[1][m].data();
    std::vector<float> xb(x.size()), tmp((size_t)c.d_out[0]);
    cpu.rmsnorm_matmul_group(wc, rp.data(), n, xb.data(), x.data(), nw.data(), 1e-5f, 1, off);
    ref[2][0] = y0;
    cpu.matmul_add(*wc[0], ref[2][0].data(), tmp.data(), x.data(), 1, off[0]);
    if (n_kinds == 4) {
      for (int m = 0; m < 2; ++m) ref[3][m].assign((size_t)c.d_out[m], NAN);
      cpu.rmsnorm_matmul_swiglu(wc, ref[3][0].data(), ref[3][1].data(), xb.data(), x.data(), nw.data(), 1e-5f, 1, off);
    }
    const char* kinds[4] = {"plain", "rmsnorm input", "accumulate", "gate/up pair"};
    for (int kind = 0; kind < n_kinds && lone < 0; ++kind)
      for (int m = 0; m < (kind == 2 ? 1 : n); ++m) {
        const std::string wm = what + " " + kinds[kind] + " member " + std::to_string(m);
        report(wm + " local vs CPU", nmse(y[1][kind][m].data(), ref[kind][m].data(), ref[kind][m].size()), 1e-8);
        CHECK_MSG(std::memcmp(y[0][kind][m].data(), y[1][kind][m].data(), y[0][kind][m].size() * 4) == 0,
                  wm + ": block-local y differs from the k-major merge's");
        CHECK_MSG(std::memcmp(y[0][kind][m].data(), y[2][kind][m].data(), y[0][kind][m].size() * 4) == 0,
                  wm + ": the k-major plan through the block-local instantiation differs from the default's");
      }
  }
  // the fused GEMV's other tests with the knob on (where a launch allows it; against the CPU);
  // not racecheck-sized (the cases above are the block-local code's)
  if (race_sized()) return;
  gpu::gemv_tc_local_force(1);
  gpu::gemv_tc_local_ext_force(1);
  const int64_t before = gpu::gemv_tc_local_launches();
  test_gemv_tc_shapes(cpu, gpu);
  test_gemv_group(cpu, gpu);
  test_fused_add_norm(cpu, gpu);
  test_norm_parts(cpu, gpu);
  const int64_t pairs0 = gpu::gemv_tc_local_launches();
  test_swiglu_pairs(cpu, gpu);
  CHECK_MSG(gpu::gemv_tc_local_launches() > pairs0, "gemv_local: the gate/up pair tests ran no block-local launch");
  const int64_t defer0 = gpu::gemv_tc_local_launches(), defer_l0 = gpu::attn_defer_launches();
  test_attn_defer(cpu, gpu);
  CHECK_MSG(gpu::gemv_tc_local_launches() > defer0 && gpu::attn_defer_launches() > defer_l0,
            "gemv_local: the deferred attention tests ran no block-local launch");
  CHECK_MSG(gpu::gemv_tc_local_launches() > before, "gemv_local: the other tests ran no block-local launch");
  gpu::gemv_tc_local_force(-1);
  gpu::gemv_tc_local_ext_force(-1);
}

// The gate/up launch writing swiglu(gate, up) into gate (rmsnorm_matmul_swiglu; TcArgs::
// swiglu_pairs: the second tile of each gate/up pair computes it) vs the CPU's two ops: DecDEC off
// and approx (the compensation blocks finish tiles too) and exact (the fallback), one unit per tile
// (the direct path, d_in <= 1024 at 3 bits) and several, T = 1 (counted) and 3, a gate of 48 rows
// (not groupable: the fallback), each twice (the pair
// counters must come back to 0); swiglu_after_gate_up says when the engine takes it.
void test_swiglu_pairs(Backend& cpu, Backend& gpu) {
  setenv("DDRT_FUSE_NORM", "1", 1);
  struct S { int64_t d_out, d_in; };
  const std::vector<S> shapes = race_sized() ? std::vector<S>{{64, 576}, {96, 2500}}
                                             : std::vector<S>{{64, 576}, {1536, 576}, {96, 2500}, {2048, 1024}, {160, 4100}, {48, 300}};
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G64})
    for (const S& sh : shapes) {
      std::vector<std::unique_ptr<HostLinear>> L;
      std::vector<std::unique_ptr<Linear>> Wc, Wg;
      for (int m = 0; m < 3; ++m) {  // gate, up, down
        L.push_back(make_linear(t, m < 2 ? sh.d_out : 40, m < 2 ? sh.d_in : sh.d_out, true));
        if (m == 1) {  // one selection for the group
          L[1]->thresholds = L[0]->thresholds;
          L[1]->desc.thresholds = L[1]->thresholds.data();
        }
        Wc.push_back(cpu.load_linear(L[m]->desc, ResidualPlacement::Host));
        Wg.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      }
      const Linear *wc[2] = {Wc[0].get(), Wc[1].get()}, *wg[2] = {Wg[0].get(), Wg[1].get()};
      const auto nw = randn((size_t)sh.d_in);
      Buf bw(gpu, nw.size());
      bw.put(nw);
      for (DecdecMode mode : {DecdecMode::Off, DecdecMode::Approx, DecdecMode::Exact})
        for (int T : {1, 3}) {
          DecdecCall calls[2];
          for (auto& c : calls) {
            c.mode = mode;
            c.k_chunk = mode == DecdecMode::Off ? 0 : 8;
            c.n_tb = mode == DecdecMode::Approx ? 3 : 0;
            c.pos0 = 5;
          }
          const std::string what = std::string("swiglu pairs ") + type_name(t) + " " + std::to_string(sh.d_out) + "x" +
                                   std::to_string(sh.d_in) + " " + mode_name(mode) + " T=" + std::to_string(T);
          // a group's members but the last end on a 32-output vector (gemv_tc_groupable)
          const bool want = T == 1 && mode != DecdecMode::Exact && sh.d_out % 32 == 0;
          for (const char* env : {"", "0", "1"}) {  // the engine's question: down is small, so unless 0
            if (env[0]) setenv("DDRT_SWIGLU_PAIRS", env, 1);
            const bool says = gpu.swiglu_after_gate_up(wg, calls, *Wg[2], calls[0], T);
            CHECK_MSG(says == (want && env[0] != '0'), "swiglu_after_gate_up " + what + " env " + env);
            unsetenv("DDRT_SWIGLU_PAIRS");
          }
          CHECK_MSG(!cpu.swiglu_after_gate_up(wc, calls, *Wc[2], calls[0], T), "cpu swiglu_after_gate_up " + what);
          auto x = randn((size_t)T * sh.d_in);
          for (float& v : x) v *= 5.0f;
          const size_t n = (size_t)T * sh.d_out;
          std::vector<float> g(n, NAN), u(n, NAN), xb(x.size());
          cpu.rmsnorm_matmul_swiglu(wc, g.data(), u.data(), xb.data(), x.data(), nw.data(), 1e-5f, T, calls);
          Buf bx(gpu, x.size()), bxb(gpu, x.size()), bg(gpu, n), bu(gpu, n);
          bx.put(x);
          for (int rep = 0; rep < 2; ++rep) {
            bg.poison();
            bu.poison();
            const int64_t before = gpu::gemv_tc_io_launches();
            gpu.rmsnorm_matmul_swiglu(wg, bg.f(), bu.f(), bxb.f(), bx.f(), bw.f(), 1e-5f, T, calls);
            const bool fused = gpu::gemv_tc_io_launches() > before;
            const std::string w2 = what + " rep " + std::to_string(rep);
            CHECK_MSG(fused == want, w2 + ": fused launch " + (fused ? "ran" : "did not run"));
            report(w2 + " gate", nmse(bg.get().data(), g.data(), n), tol_mm(T));
            report(w2 + " up", nmse(bu.get().data(), u.data(), n), tol_mm(T));
          }
        }
    }
  unsetenv("DDRT_FUSE_NORM");
}

void test_elementwise(Backend& cpu, Backend& gpu) {
  const int T = 7, dim = 1000;
  const auto x = randn((size_t)T * dim), w = randn(dim), y = randn((size_t)T * dim);
  Buf bx(gpu, x.size()), bw(gpu, dim), by(gpu, y.size()), bo(gpu, x.size());
  bx.put(x);
  bw.put(w);
  by.put(y);
  {  // rmsnorm
    std::vector<float> oc(x.size());
    cpu.rmsnorm(oc.data(), x.data(), w.data(), T, dim, 1e-5f);
    bo.poison();
    gpu.rmsnorm(bo.f(), bx.f(), bw.f(), T, dim, 1e-5f);
    const auto o = bo.get();
    report("rmsnorm", nmse(o.data(), oc.data(), oc.size()), 1e-10);
  }
  {  // swiglu
    std::vector<float> oc(x.size());
    cpu.swiglu(oc.data(), x.data(), y.data(), x.size());
    bo.poison();
    gpu.swiglu(bo.f(), bx.f(), by.f(), x.size());
    const auto o = bo.get();
    report("swiglu", nmse(o.data(), oc.data(), oc.size()), 1e-10);
  }
  {  // add
    std::vector<float> xc = x;
    cpu.add(xc.data(), y.data(), x.size());
    gpu.add(bx.f(), by.f(), x.size());
    const auto o = bx.get();
    report("add", nmse(o.data(), xc.data(), xc.size()), 1e-12);
  }
  {  // rope
    const int nh = 5, hd = 64;
    std::vector<float> q = randn((size_t)T * nh * hd), inv(hd / 2);
    for (int i = 0; i < hd / 2; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / hd);
    Buf bq(gpu, q.size()), bi(gpu, inv.size());
    bq.put(q);
    bi.put(inv);
    for (int64_t pos0 : {0, 123, 4000}) {
      std::vector<float> qc = q;
      cpu.rope(qc.data(), T, nh, hd, pos0, inv.data());
      bq.put(q);
      gpu.rope(bq.f(), T, nh, hd, pos0, bi.f());
      const auto o = bq.get();
      report("rope pos0=" + std::to_string(pos0), nmse(o.data(), qc.data(), qc.size()), 1e-10);
    }
  }
}

// rmsnorm on both code paths (float4 rows and scalar rows) at decode and prefill shapes.
void test_rmsnorm_shapes(Backend& cpu, Backend& gpu) {
  for (int dim : {4096, 1001, 576}) {
    for (int T : {1, 3}) {
      const auto x = randn((size_t)T * dim), w = randn(dim);
      Buf bx(gpu, x.size()), bw(gpu, dim), bo(gpu, x.size());
      bx.put(x);
      bw.put(w);
      std::vector<float> oc(x.size());
      cpu.rmsnorm(oc.data(), x.data(), w.data(), T, dim, 1e-5f);
      bo.poison();
      gpu.rmsnorm(bo.f(), bx.f(), bw.f(), T, dim, 1e-5f);
      const auto o = bo.get();
      report("rmsnorm dim=" + std::to_string(dim) + " T=" + std::to_string(T), nmse(o.data(), oc.data(), oc.size()),
             1e-10);
      // the fused residual add + norm: both outputs (x and the normed rows)
      const auto y = randn(x.size());
      Buf by(gpu, y.size());
      by.put(y);
      std::vector<float> xc = x;
      cpu.add_rmsnorm(oc.data(), xc.data(), y.data(), w.data(), T, dim, 1e-5f);
      bo.poison();
      gpu.add_rmsnorm(bo.f(), bx.f(), by.f(), bw.f(), T, dim, 1e-5f);
      const auto o2 = bo.get(), x2 = bx.get();
      report("add_rmsnorm dim=" + std::to_string(dim) + " T=" + std::to_string(T),
             std::max(nmse(o2.data(), oc.data(), oc.size()), nmse(x2.data(), xc.data(), xc.size())), 1e-10);
    }
  }
  for (int64_t pos0 : {0, 77}) {  // rope of q and k in one launch
    const int T = 3, nq = 9, nk = 3, hd = 64;
    auto q = randn((size_t)T * nq * hd), k = randn((size_t)T * nk * hd);
    std::vector<float> inv(hd / 2);
    for (int i = 0; i < hd / 2; ++i) inv[i] = std::pow(100000.0f, -2.0f * i / hd);
    Buf bq(gpu, q.size()), bk(gpu, k.size()), bi(gpu, inv.size());
    bq.put(q);
    bk.put(k);
    bi.put(inv);
    cpu.rope_qk(q.data(), k.data(), T, nq, nk, hd, pos0, inv.data());
    gpu.rope_qk(bq.f(), bk.f(), T, nq, nk, hd, pos0, bi.f());
    const auto gq = bq.get(), gk = bk.get();
    report("rope_qk pos0=" + std::to_string(pos0),
           std::max(nmse(gq.data(), q.data(), q.size()), nmse(gk.data(), k.data(), k.size())), 1e-10);
  }
}

// argmax (the greedy token of a decode graph): ties go to the lowest index, NaN never wins, and
// the one-launch reduction's counter is left ready for the next launch.
void test_argmax(Backend& cpu, Backend& gpu) {
  std::mt19937 rng(17);
  for (int n : {1, 1000, 128256, 300001}) {
    for (int rep = 0; rep < 3; ++rep) {
      auto x = randn(n);
      if (n > 10 && rep == 1) {  // a tie: the same maximum at two places
        const int a = (int)(rng() % n), b = (int)(rng() % n);
        x[a] = x[b] = 100.0f;
      }
      if (n > 10 && rep == 2) {
        for (int k = 0; k < 50; ++k) x[rng() % n] = NAN;
        x[rng() % n] = INFINITY;
      }
      Buf bx(gpu, x.size()), bo(gpu, 1);
      bx.put(x);
      int32_t want = 0, got = -1;
      cpu.argmax(x.data(), n, &want);
      gpu.argmax(bx.f(), n, reinterpret_cast<int32_t*>(bo.f()));
      gpu.download(&got, bo.f(), sizeof(int32_t));
      CHECK_MSG(got == want, "argmax n=" + std::to_string(n) + " rep=" + std::to_string(rep) + ": gpu " +
                                 std::to_string(got) + " cpu " + std::to_string(want));
    }
  }
}

// Layer 0 of both caches filled at positions [0, pos) by one attention chunk of random q, k, v (the
// CPU's and the GPU's alike), so that a decode step can follow at pos.
void fill_kv(Backend& cpu, Backend& gpu, KVCache& kc, KVCache& kg, int64_t pos, int nh, int nkv, int hd) {
  auto q = randn((size_t)pos * nh * hd), k = randn((size_t)pos * nkv * hd), v = randn((size_t)pos * nkv * hd);
  std::vector<float> oc(q.size());
  Buf bq(gpu, q.size()), bk(gpu, k.size()), bv(gpu, v.size()), bo(gpu, q.size());
  bq.put(q), bk.put(k), bv.put(v);
  cpu.attention(kc, 0, oc.data(), q.data(), k.data(), v.data(), (int)pos, nh, 0);
  gpu.attention(kg, 0, bo.f(), bq.f(), bk.f(), bv.f(), (int)pos, nh, 0);
}

// One layer's caches on both backends holding positions [0, pos) (fill_kv), and rope's
// frequencies for head_dim hd, on the host (inv) and the device (bi); f16 caches (the engine's
// default)
struct KvPair {
  std::unique_ptr<KVCache> kc, kg;
  std::vector<float> inv;
  Buf bi;
  KvPair(Backend& cpu, Backend& gpu, int max_seq, int64_t pos, int nh, int nkv, int hd)
      : kc(cpu.create_kv_cache(1, max_seq, nkv, hd, KvType::F16)),
        kg(gpu.create_kv_cache(1, max_seq, nkv, hd, KvType::F16)), inv(hd / 2),
        bi(gpu, hd / 2) {
    for (int i = 0; i < hd / 2; ++i) inv[i] = std::pow(500000.0f, -2.0f * i / hd);
    bi.put(inv);
    fill_kv(cpu, gpu, *kc, *kg, pos, nh, nkv, hd);
  }
};

// The deferred attention merge (attn_defer_force(1); by default where the launch has at most
// kAttnDeferMaxSplits splits, attn_defer_force(2)): the attention
// leaves its splits' partials and o's fused GEMV merges them where it reads x
// (rope_attention_matmul_add). Against the same call undeferred (the attention's own merge, then
// the same GEMV): the same bits at head_dim 128 (every step of the merge is the attention's),
// within rounding at 64 (the sum L's butterfly over 16 lanes instead of 32); and the CPU's.
// Llama-3-8B's heads, SmolLM2's (576 channels: the last warp's second half past d_in) and a
// smaller GQA, 3 and 4 bits (and g64, which the GEMV leaves to the attention), after 15 cached positions (one split: the attention writes x as
// usual), 40 (3 splits), 512 (20) and 1100 (more than 32 active splits: the second register of
// each lane's split weights at head_dim 128, the third and fourth at 64).
void test_attn_defer(Backend& cpu, Backend& gpu) {
  struct DfCfg { int nh, nkv, hd; TensorType t; };
  for (const DfCfg& c : {DfCfg{32, 8, 128, TensorType::UQ3_G128}, DfCfg{9, 3, 64, TensorType::UQ4_G128},
                         DfCfg{8, 2, 64, TensorType::UQ3_G128}, DfCfg{16, 4, 128, TensorType::UQ4_G128},
                         DfCfg{8, 2, 128, TensorType::UQ4_G64}})
    for (const int64_t pos : {(int64_t)15, (int64_t)40, (int64_t)512, (int64_t)1100}) {
      if (race_sized() && pos > 512) continue;
      KvPair kv(cpu, gpu, 1200, pos, c.nh, c.nkv, c.hd);  // positions [0, pos) in one chunk
      auto &kc = kv.kc, &kg = kv.kg;
      const std::vector<float>& inv = kv.inv;
      Buf& bi = kv.bi;
      const int64_t d_in = (int64_t)c.nh * c.hd, d_out = 272;
      auto L = make_linear(c.t, d_out, d_in, false);
      auto Wc = cpu.load_linear(L->desc, ResidualPlacement::Host);
      auto Wg = gpu.load_linear(L->desc, ResidualPlacement::Host);
      const auto q = randn(d_in), k = randn((size_t)c.nkv * c.hd), v = randn((size_t)c.nkv * c.hd), y0 = randn(d_out);
      std::vector<float> yc = y0, oc(d_in), tc(d_out), qc = q, kcp = k;
      cpu.rope_attention_matmul_add(*kc, 0, oc.data(), qc.data(), kcp.data(), v.data(), 1, c.nh, pos, inv.data(), *Wc,
                                    yc.data(), tc.data(), {});
      std::vector<float> y[4], o[4];
      const std::string what = "attn_defer heads " + std::to_string(c.nh) + "/" + std::to_string(c.nkv) + " hd " +
                               std::to_string(c.hd) + " " + type_name(c.t) + " pos0 " + std::to_string(pos);
      const bool deferrable = pos > 15 && c.t != TensorType::UQ4_G64;  // (more than one split; g128)
      // ... and in the default mode (auto) only where the launch has few enough splits
      const int splits = gpu::attn_splits({1, c.nh, c.nkv, c.hd, pos});
      const bool auto_defers = deferrable && splits <= gpu::kAttnDeferMaxSplits;
      // the same call four times (the step's own k, v rows are rewritten alike): undeferred,
      // deferred, deferred with the fused GEMV refusing its plan (the fallback: the attention
      // runs again undeferred into o, then the GEMV's other path), and in the auto mode
      for (const int run : {0, 1, 2, 3}) {
        const int defer = run == 3 ? 2 : run > 0;
        gpu::attn_defer_force(defer);
        if (run == 2) gpu::gemv_tc_refuse_next(1);
        Buf bq(gpu, q.size()), bk(gpu, k.size()), bv(gpu, v.size()), bo(gpu, q.size()), by(gpu, y0.size()),
            bt(gpu, y0.size());
        bq.put(q), bk.put(k), bv.put(v), by.put(y0);
        bo.poison(), bt.poison();
        const int64_t before = gpu::attn_defer_launches();
        gpu.rope_attention_matmul_add(*kg, 0, bo.f(), bq.f(), bk.f(), bv.f(), 1, c.nh, pos, bi.f(), *Wg, by.f(), bt.f(), {});
        // (groups of 128 only: tc_attn_defer_supports; elsewhere the attention merges as usual)
        const bool merged = gpu::attn_defer_launches() > before,
                   want = (run == 1 && deferrable) || (run == 3 && auto_defers);
        CHECK_MSG(merged == want, what + ": the GEMV " + (merged ? "merged" : "did not merge") + " the splits");
        if (run == 2) CHECK_MSG(!gpu::gemv_tc_refuse_take(), what + ": no fused GEMV was tried (the refusal is left)");
        gpu::gemv_tc_refuse_next(0);
        y[run] = by.get();
        o[run] = bo.get();
      }
      gpu::attn_defer_force(-1);
      // the fallback where the attention had deferred: its output and y as undeferred, bit for bit
      // (the same launches); elsewhere the refusal took the first GEMV path (the unfused twin)
      if (deferrable) {
        CHECK_MSG(std::memcmp(o[2].data(), o[0].data(), o[0].size() * 4) == 0, what + ": the fallback's attention differs");
        CHECK_MSG(std::memcmp(y[2].data(), y[0].data(), y[0].size() * 4) == 0, what + ": the fallback's y differs");
      }
      report(what + " refused GEMV vs CPU", nmse(y[2].data(), yc.data(), yc.size()), 1e-8);
      // auto: the deferred run's bits where it defers, the undeferred run's where it does not
      const std::vector<float>& ya = auto_defers ? y[1] : y[0];
      CHECK_MSG(std::memcmp(y[3].data(), ya.data(), ya.size() * 4) == 0, what + ": auto differs from its mode's run");
      if (c.hd == 128)
        CHECK_MSG(std::memcmp(y[0].data(), y[1].data(), y[0].size() * 4) == 0, what + ": differs from the attention's merge");
      else
        report(what + " vs the attention's merge", nmse(y[1].data(), y[0].data(), y[0].size()), 1e-10);
      report(what + " vs CPU", nmse(y[1].data(), yc.data(), yc.size()), 1e-8);
    }
}

// The split attention kernel's second batch of cached rows loaded before the wait into shared
// memory (DDRT_ATTN_PREFETCH=2) against the first batch only.
void test_attn_prefetch(Backend& cpu, Backend& gpu) {
  // the split kernel's second batch of cached rows loaded before the wait into shared memory
  // (attn_prefetch_force(2)) against the first batch only (1): the same bits, where the splits are
  // longer than one batch (8 warps x 2 positions): Llama-3-8B's and SmolLM2's heads after 512 and
  // 700 cached positions (26 and 36 positions per split at 20 splits), a 4-warp block (4 positions
  // per warp), with and without rope, decode and a short chunk (T 3); and the CPU's output
  struct PfCfg { int nh, nkv, hd, warps; };
  for (const PfCfg& c : {PfCfg{32, 8, 128, -1}, PfCfg{9, 3, 64, -1}, PfCfg{32, 8, 128, 4}, PfCfg{8, 2, 64, -1}})
    for (const int64_t pos : {(int64_t)512, (int64_t)700}) {
      if (race_sized() && pos > 512) continue;
      KvPair kv(cpu, gpu, 800, pos, c.nh, c.nkv, c.hd);  // positions [0, pos) in one chunk
      auto &kc = kv.kc, &kg = kv.kg;
      const std::vector<float>& inv = kv.inv;
      Buf& bi = kv.bi;
      gpu::attn_warps_force(c.warps);
      for (const int T : {1, 3})
        for (const bool rope : {false, true}) {
          if (rope && T > 1) continue;  // (rope_attention is one launch at T = 1)
          auto q = randn((size_t)T * c.nh * c.hd), k = randn((size_t)T * c.nkv * c.hd), v = randn((size_t)T * c.nkv * c.hd);
          std::vector<float> oc(q.size());
          Buf bq(gpu, q.size()), bk(gpu, k.size()), bv(gpu, v.size()), bo(gpu, q.size());
          bq.put(q), bk.put(k), bv.put(v);
          if (rope)
            cpu.rope_attention(*kc, 0, oc.data(), q.data(), k.data(), v.data(), T, c.nh, pos, inv.data());
          else
            cpu.attention(*kc, 0, oc.data(), q.data(), k.data(), v.data(), T, c.nh, pos);
          std::vector<float> o[2];
          for (int mode : {1, 2}) {  // the same call twice: the step's own k, v rows are rewritten alike
            gpu::attn_prefetch_force(mode);
            bo.poison();
            if (rope)
              gpu.rope_attention(*kg, 0, bo.f(), bq.f(), bk.f(), bv.f(), T, c.nh, pos, bi.f());
            else
              gpu.attention(*kg, 0, bo.f(), bq.f(), bk.f(), bv.f(), T, c.nh, pos);
            o[mode - 1] = bo.get();
          }
          gpu::attn_prefetch_force(-1);
          const std::string what = std::string(rope ? "rope_attention" : "attention") + " prefetch 2 heads " +
                                   std::to_string(c.nh) + "/" + std::to_string(c.nkv) + " hd " + std::to_string(c.hd) +
                                   " warps " + std::to_string(c.warps) + " pos0 " + std::to_string(pos) + " T " +
                                   std::to_string(T);
          CHECK_MSG(std::memcmp(o[0].data(), o[1].data(), o[0].size() * 4) == 0, what + ": differs from prefetch 1");
          report(what, nmse(o[1].data(), oc.data(), oc.size()), 1e-10);
        }
      gpu::attn_warps_force(-1);
    }
}

void test_attention(Backend& cpu, Backend& gpu) {
  struct Cfg { int n_heads, n_kv, hd, max_seq; std::vector<int> steps; };
  // q heads per kv head 4, 1, 2, 3 (SmolLM2), 8 (70B), 16 (two slices of 8 per kv head); head_dim
  // 64, 128, 32, 80 (not a multiple of 32), 256; single-split and many-split queries; prefill
  // chunks (T >= 32) for the tiled kernel at G 1, 3, 4, 8, 16 and head_dim 64, 128, some after a
  // prefix of several 32-key tiles in the cache (pos0 101, 41), one short chunk after a long prefix
  // (the split kernel's: pos0 301, T 40), one grid of 128 tiles (64 kv heads: the default's rule);
  // a query of 261 positions (17 splits) at the racecheck size too: more splits than the merge
  // loads before its weights (DDRT_ATTN_MERGE_PRE). Each with f32 caches; with f16 caches (their
  // elements rounded when stored, read back as stored, the chunk's own rows too) where the tiled
  // kernel is forced on and with the defaults (the split kernel's prefetch 2 copies two f16
  // elements per lane). Rope of a chunk (T > 1) runs as its own kernel, whose rotated keys may be
  // an fp32 ulp from the CPU's (fused multiply-adds); where such a key straddles an f16 rounding
  // boundary the caches differ by an f16 ulp (NMSE up to ~2e-10 seen), so those cases take 1e-8;
  // the others hold 1e-10: identical inputs round identically
  const Cfg cfgs[] = {{8, 2, 64, 800, {7, 1, 1, 600, 1, 7}}, {4, 4, 128, 64, {1, 1, 5, 1}}, {6, 3, 32, 40, {40}},
                      {9, 3, 64, 700, {513, 1, 1}},        {16, 2, 128, 300, {3, 250, 1}},
                      {16, 1, 80, 200, {1, 150, 1}},       {4, 2, 256, 100, {60, 1}},
                      {16, 1, 128, 100, {70}},             {4, 4, 64, 120, {1, 90, 1}},
                      {12, 4, 128, 420, {100, 1, 200, 1}}, {16, 1, 64, 300, {40, 1, 90, 1, 128, 1}},
                      {8, 2, 64, 400, {300, 1, 40, 1}},    {64, 64, 64, 140, {128, 1}}};
  // where the tiled kernel must run (kernels.cuh's rule, stated again): one launch per such call
  // (auto, the default: only grids of kAttnTiledMinBlocks blocks)
  auto tiled_applies = [](const Cfg& c, int T, int64_t pos0, bool autom) {
    const int G = c.n_heads / c.n_kv, QT = gpu::kAttnTiledRows / G;
    const int64_t blocks = ((int64_t)T + QT - 1) / QT * c.n_kv;
    return T >= gpu::kAttnTiledMinT && (c.hd == 64 || c.hd == 128) && G <= gpu::kAttnTiledRows &&
           (blocks >= gpu::kAttnTiledMinBlocks || (!autom && pos0 <= (int64_t)gpu::kAttnTiledMaxPrefix * T));
  };
  const int64_t tiled_before = gpu::attn_tiled_launches();
  int64_t tiled_want = 0;
  // the defaults' rope_attention runs after a prefetch_hint with a 20000-byte budget (the L2
  // prefetch, off by default: the cut inside a range, one past a 16-byte multiple in its rows)
  auto Lh1 = make_linear(TensorType::UQ3_G128, 96, 300, false), Lh2 = make_linear(TensorType::LUT4, 40, 520, false);
  auto Wh1 = gpu.load_linear(Lh1->desc, ResidualPlacement::Device), Wh2 = gpu.load_linear(Lh2->desc, ResidualPlacement::Device);
  const Linear* const hinted[2] = {Wh1.get(), Wh2.get()};
  // the split kernel alone; the tiled prefill kernel wherever it applies; the defaults: the split
  // kernel loading its first cached rows before the dependency wait, the tiled one on large grids;
  // the defaults with 4 warps per split block (attn_warps_force: the twin of 8, 4 positions in flight
  // per warp; the other variants take the default, 8 where they fit)
  for (const KvType kt : {KvType::F32, KvType::F16})
  for (const int variant : {0, 1, 2, 3})
  for (const bool rope : {false, true})  // attention, and rope_attention (one launch where T == 1)
    for (const Cfg& c : cfgs) {
      if (kt == KvType::F16 && variant != 1 && variant != 2) continue;
      const int tiled = variant == 3 ? 2 : variant;  // attn_tiled_force: 0 off, 1 on, 2 auto
      gpu::attn_tiled_force(tiled);
      gpu::attn_prefetch_force(variant == 2 ? -1 : variant == 3 ? 1 : 0);
      gpu::attn_warps_force(variant == 3 ? 4 : -1);
      auto kc = cpu.create_kv_cache(2, c.max_seq, c.n_kv, c.hd, kt);
      auto kg = gpu.create_kv_cache(2, c.max_seq, c.n_kv, c.hd, kt);
      std::vector<float> inv(c.hd / 2);
      for (int i = 0; i < c.hd / 2; ++i) inv[i] = std::pow(500000.0f, -2.0f * i / c.hd);
      Buf bi(gpu, inv.size());
      bi.put(inv);
      int64_t pos = 0;
      for (int T : c.steps) {
        if (race_sized()) T = std::min(T, 128);  // the racecheck / emulator size: every path, shorter chunks
        for (int layer : {1, 0}) {
          auto q = randn((size_t)T * c.n_heads * c.hd), k = randn((size_t)T * c.n_kv * c.hd),
               v = randn((size_t)T * c.n_kv * c.hd);
          std::vector<float> oc(q.size());
          Buf bq(gpu, q.size()), bk(gpu, k.size()), bv(gpu, v.size()), bo(gpu, q.size());
          bq.put(q);
          bk.put(k);
          bv.put(v);
          bo.poison();
          if (rope) {
            cpu.rope_attention(*kc, layer, oc.data(), q.data(), k.data(), v.data(), T, c.n_heads, pos, inv.data());
            if (variant >= 2) gpu.prefetch_hint(hinted, 2);
            cuda_set_l2_prefetch(gpu, variant >= 2 ? 20000 : -1);
            gpu.rope_attention(*kg, layer, bo.f(), bq.f(), bk.f(), bv.f(), T, c.n_heads, pos, bi.f());
            cuda_set_l2_prefetch(gpu, -1);
          } else {
            cpu.attention(*kc, layer, oc.data(), q.data(), k.data(), v.data(), T, c.n_heads, pos);
            gpu.attention(*kg, layer, bo.f(), bq.f(), bk.f(), bv.f(), T, c.n_heads, pos);
          }
          if (tiled && tiled_applies(c, T, pos, tiled == 2)) ++tiled_want;
          const auto o = bo.get();
          report(std::string(rope ? "rope_attention" : "attention") + (tiled == 1 ? " (tiled on)" : "") +
                     (variant == 2 ? " (defaults: tiled auto, prefetch)" : "") +
                     (variant == 3 ? " (defaults, 4 warps)" : "") + (kt == KvType::F16 ? " f16 cache" : "") + " heads " +
                     std::to_string(c.n_heads) + "/" +
                     std::to_string(c.n_kv) + " hd " + std::to_string(c.hd) + " pos0 " + std::to_string(pos) +
                     " T " + std::to_string(T) + " layer " + std::to_string(layer),
                 nmse(o.data(), oc.data(), oc.size()), kt == KvType::F16 && rope && T > 1 ? 1e-8 : 1e-10);
        }
        pos += T;
      }
      Buf b(gpu, (size_t)c.n_heads * c.hd);
      CHECK_THROWS(gpu.attention(*kg, 0, b.f(), b.f(), b.f(), b.f(), 1, c.n_heads, c.max_seq), ContextOverflow);
    }
  gpu::attn_tiled_force(-1);
  gpu::attn_prefetch_force(-1);
  gpu::attn_warps_force(-1);
  // the merge's early loads of the split outputs, 16 (the default) against 32 by the idle threads
  // (attn_merge_pre_force(2)): the same bits, with 1-16, 17-32 and past 32 active splits (decode
  // at positions 10, 300, 700 of one kv head: splits of 16+ positions, at most 64), with and
  // without rope; and the CPU's output. Also head_dim 16 (the tiny models', no rope): a block's
  // outputs fill few of its threads, the rest have none (their first GPU run read a shared array
  // out of range there: GPU memcheck catches it, the emulator does not)
  for (const int hd : {128, 16})
  for (const bool rope : {false, true})
    for (int64_t pos : {(int64_t)10, (int64_t)300, (int64_t)700}) {
      if (rope && hd == 16) continue;  // (rope is fused for head_dim 64, 128, 256)
      const int nh = hd == 128 ? 8 : 4, nkv = 2;
      auto kc = cpu.create_kv_cache(1, 1024, nkv, hd, KvType::F32);
      auto kg = gpu.create_kv_cache(1, 1024, nkv, hd, KvType::F32);
      // fill positions [0, pos) of both caches with one chunk, then one decode step at pos
      std::vector<float> inv(hd / 2);
      for (int i = 0; i < hd / 2; ++i) inv[i] = std::pow(500000.0f, -2.0f * i / hd);
      Buf bi(gpu, inv.size());
      bi.put(inv);
      fill_kv(cpu, gpu, *kc, *kg, pos, nh, nkv, hd);
      auto q = randn((size_t)nh * hd), k = randn((size_t)nkv * hd), v = randn((size_t)nkv * hd);
      std::vector<float> oc(q.size());
      Buf bq(gpu, q.size()), bk(gpu, k.size()), bv(gpu, v.size()), bo(gpu, q.size());
      bq.put(q), bk.put(k), bv.put(v);
      if (rope)
        cpu.rope_attention(*kc, 0, oc.data(), q.data(), k.data(), v.data(), 1, nh, pos, inv.data());
      else
        cpu.attention(*kc, 0, oc.data(), q.data(), k.data(), v.data(), 1, nh, pos);
      std::vector<float> o[2];
      for (int mode : {1, 2}) {  // the same call twice: the step's own k, v rows are rewritten alike
        gpu::attn_merge_pre_force(mode);
        bo.poison();
        if (rope)
          gpu.rope_attention(*kg, 0, bo.f(), bq.f(), bk.f(), bv.f(), 1, nh, pos, bi.f());
        else
          gpu.attention(*kg, 0, bo.f(), bq.f(), bk.f(), bv.f(), 1, nh, pos);
        o[mode - 1] = bo.get();
      }
      gpu::attn_merge_pre_force(-1);
      const std::string what = std::string(rope ? "rope_attention" : "attention") + " merge_pre 2 head_dim " +
                               std::to_string(hd) + " pos0 " + std::to_string(pos);
      CHECK_MSG(std::memcmp(o[0].data(), o[1].data(), o[0].size() * 4) == 0, what + ": differs from merge_pre 1");
      report(what, nmse(o[1].data(), oc.data(), oc.size()), 1e-10);
    }
  // exactly the calls where it applies took it (tiled_want > 0: T 600, 513, 250, 70, 90, 100, 200, 40,
  // 128; by default only the T 128 of 64 kv heads)
  const int64_t tiled_ran = gpu::attn_tiled_launches() - tiled_before;
  CHECK_MSG(tiled_want > 0 && tiled_ran == tiled_want, "the tiled prefill attention ran " + std::to_string(tiled_ran) +
                                                           " times, expected " + std::to_string(tiled_want));
}

// The L2 prefetch hint's ranges (l2_hint_for): each matrix's buffers in order, cut at the budget,
// multiples of 16 bytes, unaligned buffers left out. (The prefetch itself cannot change a result:
// test_attention runs it, rope_attention after a prefetch_hint, against the CPU.)
void test_l2_hint() {
  alignas(16) static char buf[1 << 16];
  gpu::DevLinear a, b, f;
  a.type = TensorType::UQ3_G128, a.bits = 3, a.d_out = 64, a.row_vecs = 3, a.n_groups = 2;
  a.codes = reinterpret_cast<const uint4*>(buf);              // 64 * 3 * 16 = 3072 bytes
  a.sm = reinterpret_cast<const __half2*>(buf + 4096);        // 64 * 2 * 4 = 512
  b = a;
  b.type = TensorType::LUT4, b.bits = 4, b.sm = nullptr;
  b.codes = reinterpret_cast<const uint4*>(buf + 8192);
  b.lut = reinterpret_cast<const float*>(buf + 16384);        // 64 * 16 * 4 = 4096
  f.type = TensorType::F16, f.d_out = 10, f.row_stride = 24;
  f.fdata = buf + 32768;                                      // 10 * 24 * 2 = 480
  const gpu::DevLinear* ws[3] = {&a, &b, &f};
  gpu::L2Hint h = gpu::l2_hint_for(ws, 3, 1 << 20);
  CHECK(h.n == 5);
  CHECK(h.total() == 3072 + 512 + 3072 + 4096 + 480);
  CHECK(h.p[0] == buf && h.bytes[0] == 3072 && h.p[1] == buf + 4096 && h.bytes[1] == 512);
  CHECK(h.p[3] == buf + 16384 && h.bytes[3] == 4096 && h.p[4] == buf + 32768 && h.bytes[4] == 480);
  h = gpu::l2_hint_for(ws, 3, 3072 + 100);  // cut inside a's scales, at a multiple of 16
  CHECK(h.n == 2 && h.bytes[1] == 96 && h.total() == 3168);
  CHECK(gpu::l2_hint_for(ws, 3, 0).n == 0);
  a.sm = reinterpret_cast<const __half2*>(buf + 4100);        // unaligned: left out
  h = gpu::l2_hint_for(ws, 1, 1 << 20);
  CHECK(h.n == 1 && h.total() == 3072);
  const gpu::DevLinear* many[4] = {&b, &b, &b, &b};            // 8 ranges: the first kMax kept
  h = gpu::l2_hint_for(many, 4, 1 << 20);
  CHECK(h.n == gpu::L2Hint::kMax && h.total() == 3 * (3072 + 4096));
  gpu::DevLinear u = a;  // with unit images (the bulk ring): those, instead of codes and scales
  u.group = 128, u.d_in = 512, u.units = reinterpret_cast<const uint4*>(buf + 49152);
  const gpu::DevLinear* wu[1] = {&u};
  h = gpu::l2_hint_for(wu, 1, 1 << 20);
  CHECK(h.n == 1 && h.p[0] == buf + 49152 && h.total() == (int64_t)gpu::gemv_tc_units_bytes(u) && h.total() > 0);
}

void ck(cudaError_t e, const char* what);

// The mbarrier ring of bulk copies (kernels.cuh) alone: one warp streams n pieces of `vecs` uint4
// through two slots (each through several phases) into out, reading a slot after its wait; the
// mutant reads it before, which the emulator must catch (it lands a copy only at the wait).
__global__ void bulk_ring_kernel(const uint4* in, uint4* out, int n, int vecs, int mutant) {
  DDRT_DYN_SMEM(uint4, sm);
  uint64_t* bars = reinterpret_cast<uint64_t*>(sm + 2 * vecs);
  const int lane = threadIdx.x & 31;
  if (lane == 0) {
    gpu::mbar_init(bars, 1);
    gpu::mbar_init(bars + 1, 1);
    gpu::mbar_fence_init();
  }
  __syncwarp();
  auto issue = [&](int i) {
    if (lane == 0) {
      gpu::fence_proxy_async_smem();
      gpu::mbar_expect_tx(bars + i % 2, (uint32_t)vecs * 16);
      gpu::bulk_g2s(sm + (i % 2) * vecs, in + (int64_t)i * vecs, (uint32_t)vecs * 16, bars + i % 2, gpu::l2_policy(true));
    }
  };
  for (int i = 0; i < 2 && i < n; ++i) issue(i);
  for (int i = 0; i < n; ++i) {
    const uint4* slot = sm + (i % 2) * vecs;
    if (mutant)
      for (int v = lane; v < vecs; v += 32) out[(int64_t)i * vecs + v] = slot[v];
    gpu::mbar_wait(bars + i % 2, (uint32_t)(i / 2) & 1u);
    if (!mutant)
      for (int v = lane; v < vecs; v += 32) out[(int64_t)i * vecs + v] = slot[v];
    __syncwarp();
    if (i + 2 < n) issue(i + 2);
  }
}

void test_bulk_ring() {
  if (!gpu::device_info().bulk) {
    std::printf("bulk ring: the device has no cp.async.bulk (sm_90+), not tested\n");
    return;
  }
  const int n = 7, vecs = 416;  // 6.5 KB pieces, as a 3-bit unit's slot
  std::vector<uint32_t> h((size_t)n * vecs * 4);
  for (auto& w : h) w = (uint32_t)rng();
  uint4 *in = nullptr, *out = nullptr;
  ck(cudaMalloc(reinterpret_cast<void**>(&in), h.size() * 4), "malloc");
  ck(cudaMalloc(reinterpret_cast<void**>(&out), h.size() * 4), "malloc");
  ck(cudaMemcpy(in, h.data(), h.size() * 4, cudaMemcpyHostToDevice), "copy");
  std::vector<uint32_t> got(h.size());
#ifdef DDRT_CUDA_EMU
  const int variants = 2;
#else
  const int variants = 1;  // a read before the wait may happen to see the bytes on a GPU
#endif
  for (int mutant = 0; mutant < variants; ++mutant) {
    ck(cudaMemset(out, 0, h.size() * 4), "memset");
    ck(gpu::launch_plain(bulk_ring_kernel, dim3(1), dim3(32), (size_t)2 * vecs * 16 + 16, nullptr,
                         static_cast<const uint4*>(in), out, n, vecs, mutant),
       "bulk ring launch");
    ck(cudaDeviceSynchronize(), "bulk ring");
    ck(cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost), "copy back");
    const bool same = std::memcmp(got.data(), h.data(), h.size() * 4) == 0;
    CHECK_MSG(same == (mutant == 0), mutant ? "bulk ring: the mutant that reads before its wait was not caught"
                                            : "bulk ring: the pieces differ from the source");
  }
  cudaFree(in);
  cudaFree(out);
}

void test_misc(Backend& gpu) {
  test_l2_hint();
  test_bulk_ring();
  CHECK_THROWS(make_cuda_backend(1 << 20), CudaError);
  CHECK(cuda_built());
  CHECK(!cuda_info().empty());
  const size_t before = gpu.device_bytes();
  {
    auto L = make_linear(TensorType::UQ4_G128, 256, 512, true);
    auto W = gpu.load_linear(L->desc, ResidualPlacement::Device);
    CHECK(gpu.device_bytes() >= before + 256 * 512 / 2 + 512 * 128);
    const size_t with_weights = gpu.device_bytes();
    {
      auto kv = gpu.create_kv_cache(1, 16, 2, 64, KvType::F32);
      CHECK(gpu.device_bytes() >= with_weights + 2 * 16 * 2 * 64 * 4);
    }
    auto kv = gpu.create_kv_cache(1, 16, 2, 64, KvType::F16);  // half the bytes
    CHECK(gpu.device_bytes() >= with_weights + 2 * 16 * 2 * 64 * 2 && gpu.device_bytes() < with_weights + 2 * 16 * 2 * 64 * 4);
  }
  CHECK(gpu.device_bytes() == before);
  // DecDEC's share: residual rows, scales and rank positions on the device (placement Device),
  // nothing with host residuals, and given back when the linear goes
  const size_t dd_before = gpu.decdec_device_bytes();
  {
    auto L = make_linear(TensorType::UQ3_G128, 96, 300, true);
    auto Wh = gpu.load_linear(L->desc, ResidualPlacement::Host);
    CHECK(gpu.decdec_device_bytes() == dd_before);
    auto Wd = gpu.load_linear(L->desc, ResidualPlacement::Device);
    CHECK(gpu.decdec_device_bytes() >= dd_before + 300 * 48 + 96 * 4 + 300 * 4);
  }
  CHECK(gpu.decdec_device_bytes() == dd_before);
  CHECK(gpu.name().rfind("cuda:", 0) == 0);
}

// ---- the GEMV lab ------------------------------------------------------------------------------
void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw CudaError(std::string(what) + ": " + cudaGetErrorString(e));
}

// Median microseconds of one matmul (one event pair each), and per matmul in a graph of n.
struct Timing { double single_us, graph_us; };

// Median milliseconds of reps calls of op() on st, one event pair around each.
double median_event_ms(cudaStream_t st, int reps, const std::function<void()>& op) {
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "event");
  ck(cudaEventCreate(&e1), "event");
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    ck(cudaEventRecord(e0, st), "record");
    op();
    ck(cudaEventRecord(e1, st), "record");
    ck(cudaEventSynchronize(e1), "sync");
    float t;
    ck(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// op(i): the i-th call, rotating over copies of the weights so L2 does not hold them.
Timing time_ops(Backend& gpu, const std::function<void(size_t)>& op) {
  cudaStream_t st = cuda_stream_of(gpu);
  size_t r = 0;
  for (int i = 0; i < 20; ++i) op(r++);  // warm-up
  gpu.synchronize();
  const double single = 1000.0 * median_event_ms(st, 200, [&] { op(r++); });
  // graph of n calls
  const int n = 32;
  cudaGraph_t g;
  cudaGraphExec_t ge;
  ck(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed), "capture");
  for (int i = 0; i < n; ++i) op((size_t)i);
  ck(cudaStreamEndCapture(st, &g), "end capture");
  ck(cudaGraphInstantiate(&ge, g, 0), "instantiate");
  for (int i = 0; i < 3; ++i) ck(cudaGraphLaunch(ge, st), "launch");
  const double graph = 1000.0 * median_event_ms(st, 100, [&] { ck(cudaGraphLaunch(ge, st), "launch"); }) / n;
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  return {single, graph};
}

// Median microseconds of one matmul (one event pair each), and per matmul in a graph of n.
Timing time_matmuls(Backend& gpu, const std::vector<std::unique_ptr<Linear>>& Ws, float* y, const float* x,
                    const DecdecCall& c) {
  return time_ops(gpu, [&](size_t i) { gpu.matmul(*Ws[i % Ws.size()], y, x, 1, c); });
}

// Groups (q/k/v, gate/up of the Llama-3-8B shape): the members as separate launches vs one fused
// launch, DecDEC off and approx (best n_tb), graph-timed per group call.
void bench_groups(Backend& gpu) {
  struct G { const char* name; std::vector<int64_t> d_out; int64_t d_in; };
  const char* only = std::getenv("DDRT_LAB_GROUP");  // "qkv" or "gate_up": that group alone
  const G all[] = {{"qkv", {4096, 1024, 1024}, 4096}, {"gate_up", {14336, 14336}, 4096}};
  std::vector<G> groups;
  for (const G& g : all)
    if (!only || std::string(only) == g.name) groups.push_back(g);
  std::printf("\nGroups: separate launches vs one fused launch (graph-timed us per group call); DecDEC\n"
              "approx with host residuals in the fused launch, comp %% against the fused base\n");
  if (std::getenv("DDRT_LAB_COPIES")) std::printf("weight copies: %s\n", std::getenv("DDRT_LAB_COPIES"));
  std::printf("%-8s %-8s %12s %10s %10s | %s\n", "type", "group", "separate us", "fused us", "GB/s",
              "approx k_chunk: call us (comp %, n_tb)");
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G128}) {
    for (const G& gr : groups) {
      const int n = (int)gr.d_out.size();
      std::vector<std::unique_ptr<HostLinear>> L;
      double bytes = 0;
      for (int m = 0; m < n; ++m) {
        L.push_back(make_linear(t, gr.d_out[m], gr.d_in, true));
        if (m > 0) {
          L[m]->thresholds = L[0]->thresholds;
          L[m]->desc.thresholds = L[m]->thresholds.data();
        }
        const int64_t shape[2] = {gr.d_out[m], gr.d_in};
        bytes += (double)tensor_bytes(t, 2, shape);
      }
      // DDRT_LAB_COPIES: more copies, a residual working set like a whole model's (measured: 40
      // copies, 2.3 GB of mapped residual rows, cost the same as 5)
      const char* lc = std::getenv("DDRT_LAB_COPIES");
      const int copies = lc ? std::max(2, std::atoi(lc)) : std::max(2, (int)std::ceil(200e6 / bytes));
      std::vector<std::vector<std::unique_ptr<Linear>>> Ws(copies);
      for (auto& c : Ws)
        for (int m = 0; m < n; ++m) c.push_back(gpu.load_linear(L[m]->desc, ResidualPlacement::Host));
      Buf bx(gpu, gr.d_in), by(gpu, 16384 * 3);
      bx.put(randn(gr.d_in));
      float* ys[3] = {by.f(), by.f() + 16384, by.f() + 2 * 16384};
      auto run = [&](const DecdecCall& c, bool fused) {
        return time_ops(gpu, [&](size_t i) {
                 const auto& w = Ws[i % Ws.size()];
                 const Linear* wp[3] = {w[0].get(), w[1].get(), n > 2 ? w[2].get() : nullptr};
                 DecdecCall calls[3] = {c, c, c};
                 if (fused) gpu.matmul_group(wp, ys, n, bx.f(), 1, calls);
                 else for (int m = 0; m < n; ++m) gpu.matmul(*wp[m], ys[m], bx.f(), 1, c);
               }).graph_us;
      };
      const double sep = run({}, false), fus = run({}, true);
      std::printf("%-8s %-8s %12.2f %10.2f %10.0f |", type_name(t), gr.name, sep, fus, bytes / (fus * 1e3));
      for (int kc : {2, 4, 8, 12, 16}) {
        double best = 1e30;
        int best_tb = 0;
        for (int n_tb : {16, 32, 64, 128}) {
          DecdecCall c;
          c.mode = DecdecMode::Approx;
          c.k_chunk = kc;
          c.n_tb = n_tb;
          const double call = run(c, true);
          if (call < best) best = call, best_tb = n_tb;
        }
        std::printf(" k%d %.2f (%+.1f%%, %d)", kc, best, 100.0 * (best - fus) / fus, best_tb);
      }
      std::printf("\n");
    }
  }
}

// GEMV timings; rows: the quantized GEMV's rows per warp (0: its default choice).
// HBM streaming-read GB/s of this GPU, measured once (cpp/probe.h): the lab's "% of peak" base.
double hbm_peak_gbs() {
  static const double peak = [] {
    const double p = measure_bandwidth(0).hbm_read_gbs;
    std::printf("peak HBM read: %.0f GB/s (measured by the bandwidth probe)\n", p);
    return p;
  }();
  return peak;
}

void bench_gemv(Backend& gpu, int rows) {
  const double peak = hbm_peak_gbs();
  const int64_t shapes[][2] = {{4096, 14336}, {14336, 4096}, {4096, 6144}};
  const TensorType types[] = {TensorType::UQ3_G128, TensorType::UQ4_G128, TensorType::F16};
  gpu::gemv_q_force_rows(rows);
  gpu::gemv_tc_enable(rows == 0);  // rows > 0: the CUDA-core kernel; 0: the default (fused tensor-core)
  std::printf("%s\nGEMV T=1: median of 200 event-timed single launches, and per launch in a graph of 32\n"
              "(copies rotate to defeat L2; bytes = the file's tensor bytes); quantized rows/warp: %s\n",
              gpu.name().c_str(), rows ? std::to_string(rows).c_str() : "default");
  std::printf("%-10s %-13s %10s %10s %9s %9s %7s\n", "type", "d_out x d_in", "single us", "graph us", "GB/s",
              "%peak", "copies");
  for (auto& s : shapes)
    for (TensorType t : types) {
      if (rows && t == TensorType::F16) continue;
      const int64_t shape[2] = {s[0], s[1]};
      const double bytes = (double)tensor_bytes(t, 2, shape);
      // DDRT_LAB_GEMV_COPIES=N: N copies instead; 1 (with DDRT_W_EVICT=0) keeps a matrix of up to
      // ~40 MB in L2, so the time is the GEMV's without HBM: what its fixed costs alone take
      const char* gc = std::getenv("DDRT_LAB_GEMV_COPIES");
      const int copies = gc ? std::max(1, std::atoi(gc)) : std::max(2, (int)std::ceil(200e6 / bytes));
      auto L = make_linear(t, s[0], s[1], false);
      std::vector<std::unique_ptr<Linear>> Ws;
      for (int i = 0; i < copies; ++i) Ws.push_back(gpu.load_linear(L->desc, ResidualPlacement::Host));
      Buf bx(gpu, s[1]), by(gpu, s[0]);
      bx.put(randn(s[1]));
      const Timing tm = time_matmuls(gpu, Ws, by.f(), bx.f(), {});
      const double gbs = bytes / (tm.graph_us * 1e3);
      std::printf("%-10s %5lldx%-7lld %10.2f %10.2f %9.0f %8.1f%% %7d\n", type_name(t), (long long)s[0],
                  (long long)s[1], tm.single_us, tm.graph_us, gbs, 100.0 * gbs / peak, copies);
      if (rows == 0 && t == TensorType::F16) {  // two rows per warp beside it
        gpu::gemv_f_force_rows(2);
        const Timing t2 = time_matmuls(gpu, Ws, by.f(), bx.f(), {});
        gpu::gemv_f_force_rows(0);
        const double g2 = bytes / (t2.graph_us * 1e3);
        std::printf("%-10s %5lldx%-7lld %10.2f %10.2f %9.0f %8.1f%% %7d  (two rows per warp)\n", type_name(t),
                    (long long)s[0], (long long)s[1], t2.single_us, t2.graph_us, g2, 100.0 * g2 / peak, copies);
      }
      if (rows == 0 && t == TensorType::UQ4_G128) {  // the CUDA-core twin's default beside it
        gpu::gemv_tc_enable(false);
        const Timing tf = time_matmuls(gpu, Ws, by.f(), bx.f(), {});
        gpu::gemv_tc_enable(true);
        const double gf = bytes / (tf.graph_us * 1e3);
        std::printf("%-10s %5lldx%-7lld %10.2f %10.2f %9.0f %8.1f%% %7d  (CUDA-core twin)\n", type_name(t),
                    (long long)s[0], (long long)s[1], tf.single_us, tf.graph_us, gf, 100.0 * gf / peak, copies);
      }
    }
  if (rows == 0) {  // the fp16 lm head of the Llama-3 shapes (1.05 GB): default, two rows per warp
    const TensorType t = TensorType::F16;
    const int64_t shape[2] = {128256, 4096};
    const double bytes = (double)tensor_bytes(t, 2, shape);
    auto L = make_linear(t, shape[0], shape[1], false);
    std::vector<std::unique_ptr<Linear>> Ws;
    for (int i = 0; i < 2; ++i) Ws.push_back(gpu.load_linear(L->desc, ResidualPlacement::Host));
    Buf bx(gpu, shape[1]), by(gpu, shape[0]);
    bx.put(randn(shape[1]));
    for (int r : {1, 2, -2}) {  // -2: two rows per warp, the static split (the queue's twin)
      gpu::gemv_f_force_rows(r < 0 ? -r : r);
      gpu::gemv_f_force_queue(r < 0 ? 0 : -1);
      const Timing tm = time_matmuls(gpu, Ws, by.f(), bx.f(), {});
      const double gbs = bytes / (tm.graph_us * 1e3);
      std::printf("%-10s %5lldx%-7lld %10.2f %10.2f %9.0f %8.1f%% %7d  (lm head, %d row%s per warp%s)\n", type_name(t),
                  (long long)shape[0], (long long)shape[1], tm.single_us, tm.graph_us, gbs, 100.0 * gbs / peak, 2,
                  r < 0 ? -r : r, r != 1 ? "s" : "", r < 0 ? ", static split" : "");
    }
    gpu::gemv_f_force_rows(0);
    gpu::gemv_f_force_queue(-1);
  }
  gpu::gemv_q_force_rows(0);
  gpu::gemv_tc_enable(true);
}

// The DecDEC table: compensation inside the GEMV launch, best n_tb per k_chunk (--bench-decdec alone).
int bench_decdec(Backend& gpu) {
  const int64_t shapes[][2] = {{4096, 14336}, {14336, 4096}, {4096, 6144}};
  std::printf("\nDecDEC approx, host (zero-copy) residuals, compensation inside the GEMV launch: graph-timed\n"
              "per call; comp = call - base; zero-copy GB/s = (residual rows + rscale) bytes / call time\n");
  std::printf("%-8s %-13s %7s %5s %10s %10s %10s %10s\n", "type", "d_out x d_in", "k_chunk", "n_tb", "base us",
              "call us", "comp %", "zc GB/s");
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G128})
    for (auto& s : shapes) {
      auto L = make_linear(t, s[0], s[1], true);
      std::vector<std::unique_ptr<Linear>> Ws;
      for (int i = 0; i < 8; ++i) Ws.push_back(gpu.load_linear(L->desc, ResidualPlacement::Host));
      Buf bx(gpu, s[1]), by(gpu, s[0]);
      bx.put(randn(s[1]));
      const double base = time_matmuls(gpu, Ws, by.f(), bx.f(), {}).graph_us;
      for (int kc : {2, 4, 8, 12, 16}) {
        double best = 1e30;
        int best_tb = 0;
        for (int n_tb : {4, 8, 16, 32, 64, 128}) {
          DecdecCall c;
          c.mode = DecdecMode::Approx;
          c.k_chunk = kc;
          c.n_tb = n_tb;
          const double call = time_matmuls(gpu, Ws, by.f(), bx.f(), c).graph_us;
          if (call < best) best = call, best_tb = n_tb;
        }
        const double rbytes = (double)total_k(kc, s[1]) * res_row_bytes(s[0]) + 4.0 * s[0];
        std::printf("%-8s %5lldx%-7lld %7d %5d %10.2f %10.2f %9.1f%% %10.1f\n", type_name(t), (long long)s[0],
                    (long long)s[1], kc, best_tb, base, best, 100.0 * (best - base) / base, rbytes / (best * 1e3));
      }
    }
  return 0;
}

// rows: also the CUDA-core GEMV's rows-per-warp variants (--bench-rows); gemv_only: no groups or
// DecDEC table (--bench-gemv, --bench-rows)
int bench(Backend& gpu, bool gemv_only, bool rows = false) {
  if (rows)
    for (int r : {1, 2, 4}) bench_gemv(gpu, r);
  bench_gemv(gpu, 0);
  if (gemv_only) return 0;
  bench_groups(gpu);
  return bench_decdec(gpu);
}

// The fused GEMV's timeline (--bench-stamps): one launch with %globaltimer stamps per block, after
// warm-up launches; times in us from the earliest block start. Compensation blocks: when they pass
// the dependency wait, publish the selection, finish gather + reduce, end; base blocks: x ready and
// end (warp 0). Shows which link of the compensation's chain is long.
int bench_stamps(Backend& gpu) {
  const int64_t shapes[][2] = {{4096, 14336}, {14336, 4096}, {4096, 6144}, {1024, 4096}};
  std::printf("%s\nfused GEMV timeline, uq3_g128, approx, host residuals: us from the first block start "
              "(median / max over blocks)\n", gpu.name().c_str());
  std::printf("%-13s %3s %4s | %-13s %-13s %-13s %-13s %-13s %-13s | %-13s %-13s %-13s\n", "d_out x d_in", "k",
              "n_tb", "comp wait", "comp selected", "comp published", "comp sel read", "comp gather", "comp end",
              "base wait", "base x ready", "base end");
  const int max_blocks = 8192;
  unsigned long long* d_st = nullptr;
  ck(cudaMalloc(&d_st, max_blocks * gpu::kTcStamps * 8), "stamps");
  // DDRT_STAMPS_CSV=path: every block's stamps as CSV too (tools/plot_stamps.py draws and reads them)
  FILE* csv = std::getenv("DDRT_STAMPS_CSV") ? std::fopen(std::getenv("DDRT_STAMPS_CSV"), "w") : nullptr;
  if (csv)
    std::fprintf(csv, "shape,k_chunk,block,role,sm,start,wait,ready,gather,end,selected,sel_read,slabs,units\n");
  const char* only = std::getenv("DDRT_LAB_SHAPE");  // e.g. 1024x4096: that shape alone (the emulator)
  for (auto& s : shapes) {
    if (only && std::to_string(s[0]) + "x" + std::to_string(s[1]) != only) continue;
    auto L = make_linear(TensorType::UQ3_G128, s[0], s[1], true);
    auto W = gpu.load_linear(L->desc, ResidualPlacement::Host);
    Buf bx(gpu, s[1]), by(gpu, s[0]);
    bx.put(randn(s[1]));
    for (int kc : {0, 2, 8, 16}) {
      DecdecCall c;
      c.mode = kc ? DecdecMode::Approx : DecdecMode::Off;
      c.k_chunk = kc;
      for (int i = 0; i < 5; ++i) gpu.matmul(*W, by.f(), bx.f(), 1, c);
      ck(cudaMemset(d_st, 0, max_blocks * gpu::kTcStamps * 8), "stamps");
      gpu.synchronize();
      gpu::gemv_tc_stamps(d_st);
      gpu.matmul(*W, by.f(), bx.f(), 1, c);
      gpu.synchronize();
      gpu::gemv_tc_stamps(nullptr);
      std::vector<unsigned long long> h(max_blocks * gpu::kTcStamps);
      const int K = gpu::kTcStamps;
      ck(cudaMemcpy(h.data(), d_st, h.size() * 8, cudaMemcpyDeviceToHost), "stamps");
      int nb = 0;
      while (nb < max_blocks && h[nb * K] != 0) ++nb;
      unsigned long long t0 = ~0ull;
      for (int b = 0; b < nb; ++b) t0 = std::min(t0, h[b * K]);
      auto stat = [&](int lo, int hi, int slot) {
        std::vector<double> v;
        for (int b = lo; b < hi; ++b)
          if (h[b * K + slot]) v.push_back((h[b * K + slot] - t0) / 1e3);
        if (v.empty()) return std::string("-");
        std::sort(v.begin(), v.end());
        char buf[64];
        std::snprintf(buf, sizeof buf, "%5.1f / %5.1f", v[v.size() / 2], v.back());
        return std::string(buf);
      };
      // compensation blocks: the grid's first, the ones with a gather stamp (slot 3)
      int ncomp = 0;
      while (kc && ncomp < nb && h[ncomp * K + 3] != 0) ++ncomp;
      if (csv) {  // every block: its role, SM and stamps (us from t0; empty: not stamped)
        for (int b = 0; b < nb; ++b) {
          std::fprintf(csv, "%lldx%lld,%d,%d,%s,%llu", (long long)s[0], (long long)s[1], kc, b, b < ncomp ? "comp" : "base",
                       h[b * K + 7] ? h[b * K + 7] - 1 : 0ull);
          for (int slot = 0; slot < 7; ++slot)
            h[b * K + slot] ? std::fprintf(csv, ",%.3f", (h[b * K + slot] - t0) / 1e3) : std::fprintf(csv, ",");
          const unsigned long long held = b < ncomp ? 0 : h[b * K + 8];  // base blocks: slabs staged, units
          held ? std::fprintf(csv, ",%llu,%llu\n", (held >> 32) - 1, held & 0xffffffffull) : std::fprintf(csv, ",,\n");
        }
      }
      if (std::getenv("DDRT_STAMPS_DUMP") && kc == 0) {  // per 16 base blocks: latest start, latest end
        for (int b0 = ncomp; b0 < nb; b0 += 16) {
          double st = 0, en = 0;
          for (int b = b0; b < std::min(nb, b0 + 16); ++b) {
            st = std::max(st, (h[b * K] - t0) / 1e3);
            en = std::max(en, (h[b * K + 4] - t0) / 1e3);
          }
          std::printf("  blocks %3d..%3d: start <= %5.1f end <= %5.1f\n", b0, std::min(nb, b0 + 16) - 1, st, en);
        }
      }
      std::printf("%5lldx%-7lld %3d %4d | %-13s %-13s %-13s %-13s %-13s %-13s | %-13s %-13s %-13s\n", (long long)s[0],
                  (long long)s[1], kc, ncomp, stat(0, ncomp, 1).c_str(), stat(0, ncomp, 5).c_str(),
                  stat(0, ncomp, 2).c_str(), stat(0, ncomp, 6).c_str(), stat(0, ncomp, 3).c_str(),
                  stat(0, ncomp, 4).c_str(), stat(ncomp, nb, 1).c_str(),
                  stat(ncomp, nb, 2).c_str(), stat(ncomp, nb, 4).c_str());
      if (ncomp > 0) {  // where the compensation ran: its blocks on an SM that also ran a base block
        std::vector<char> base_sm(4096, 0);
        for (int b = ncomp; b < nb; ++b)
          if (h[b * K + 7] > 0 && h[b * K + 7] <= base_sm.size()) base_sm[h[b * K + 7] - 1] = 1;
        int shared = 0;
        for (int b = 0; b < ncomp; ++b) shared += h[b * K + 7] > 0 && h[b * K + 7] <= base_sm.size() && base_sm[h[b * K + 7] - 1];
        std::printf("%22s compensation blocks on an SM with a base block: %d of %d\n", "", shared, ncomp);
        // the zero-copy rate while the link is in use: the residual rows and rscale over the gather
        // phase (first selection read back to last gather done), beside the same bytes over the
        // whole launch (the --bench-decdec table's figure, which counts the base's time too)
        unsigned long long g0 = ~0ull, g1 = 0, e1 = 0;
        for (int b = 0; b < ncomp; ++b) {
          if (h[b * K + 6]) g0 = std::min(g0, h[b * K + 6]);
          g1 = std::max(g1, h[b * K + 3]);
        }
        for (int b = 0; b < nb; ++b) e1 = std::max(e1, h[b * K + 4]);
        const double rbytes = (double)total_k(kc, s[1]) * res_row_bytes(s[0]) + 4.0 * s[0];
        if (g0 != ~0ull && g1 > g0 && e1 > t0)
          std::printf("%22s zero-copy: %.0f KB; gather phase %.1f us: %.1f GB/s; whole launch %.1f us: %.1f GB/s\n",
                      "", rbytes / 1e3, (g1 - g0) / 1e3, rbytes / (double)(g1 - g0), (e1 - t0) / 1e3,
                      rbytes / (double)(e1 - t0));
      }
    }
  }
  if (csv) std::fclose(csv);
  cudaFree(d_st);
  return 0;
}

// The chain lab (--bench-chain): a decode layer's fused GEMVs (o += W_o att, gate/up of the norm,
// down += W_d swiglu, the next q/k/v of the norm; DDRT_FUSE_NORM's sequence) at the Llama-3-8B
// shape, as separate launches (PDL) and as one chain launch (DDRT_TC_CHAIN=1): median us of the
// sequence (event pair; in a graph of 16), then one sequence with stamps: per launch or stage,
// us from the first block start (median / max over blocks) of start, dependency wait or barrier
// passed, x ready, end. Shows whether the grid barrier or the stages' work is what costs.
int bench_chain(Backend& gpu) {
  const int64_t d = 4096, h = 14336, kvd = 1024;
  const char* names[4] = {"o", "gate/up", "down", "q/k/v"};
  std::printf("%s\nchain lab: llama3-8b layer, DecDEC off, add+norm fused\n", gpu.name().c_str());
  setenv("DDRT_FUSE_NORM", "1", 1);
  // DDRT_LAB_REPS=N: N timed sequences (default 100; 1 to try the lab on the CPU emulator)
  const int reps = std::max(1, gpu::env_int("DDRT_LAB_REPS", 100)), warm = std::min(reps, 10);
  const int max_blocks = 8192, K = gpu::kTcStamps, R = 8;  // R stamp regions (4 are used)
  unsigned long long* d_st = nullptr;
  ck(cudaMalloc(&d_st, (size_t)R * max_blocks * K * 8), "stamps");
  for (TensorType t : {TensorType::UQ3_G128, TensorType::UQ4_G128}) {
    const int64_t shapes[7][2] = {{d, d}, {h, d}, {h, d}, {d, h}, {d, d}, {kvd, d}, {kvd, d}};  // o gate up down q k v
    std::vector<std::unique_ptr<Linear>> W;
    for (auto& sh : shapes) W.push_back(gpu.load_linear(make_linear(t, sh[0], sh[1], false)->desc, ResidualPlacement::Host));
    Buf bx(gpu, d), batt(gpu, d), bn1(gpu, d), bn2(gpu, d), bt(gpu, h), bxb(gpu, d), bg(gpu, h), bu(gpu, h), bq(gpu, d),
        bk(gpu, kvd), bv(gpu, kvd), bf(gpu, 4);
    bx.put(randn(d));
    batt.put(randn(d));
    bn1.put(randn(d));
    bn2.put(randn(d));
    bf.put(std::vector<float>(4, 0.0f));
    const Linear* gu[2] = {W[1].get(), W[2].get()};
    const Linear* qkv[3] = {W[4].get(), W[5].get(), W[6].get()};
    float* gu_y[2] = {bg.f(), bu.f()};
    float* qkv_y[3] = {bq.f(), bk.f(), bv.f()};
    DecdecCall off[3];
    auto seq = [&] {
      gpu.matmul_add(*W[0], bx.f(), bt.f(), batt.f(), 1, off[0]);
      gpu.rmsnorm_matmul_group(gu, gu_y, 2, bxb.f(), bx.f(), bn1.f(), 1e-5f, 1, off);
      gpu.matmul_swiglu_add(*W[3], bx.f(), bt.f(), bg.f(), bu.f(), 1, off[0]);
      gpu.rmsnorm_matmul_group(qkv, qkv_y, 3, bxb.f(), bx.f(), bn2.f(), 1e-5f, 1, off);
      gpu.add(bf.f(), bf.f(), 4);  // any other op launches the queued chain
    };
    cudaStream_t st = cuda_stream_of(gpu);
    for (const char* chain : {"0", "1"}) {
      setenv("DDRT_TC_CHAIN", chain, 1);
      for (int i = 0; i < warm; ++i) seq();
      gpu.synchronize();
      const int64_t chains0 = gpu::gemv_tc_chain_launches();
      const double single = 1000.0 * median_event_ms(st, reps, seq);
      const int64_t chains = gpu::gemv_tc_chain_launches() - chains0;
      const int n = std::min(reps, 16);
      cudaGraph_t g;
      cudaGraphExec_t ge;
      ck(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed), "capture");
      for (int i = 0; i < n; ++i) seq();
      ck(cudaStreamEndCapture(st, &g), "end capture");
      ck(cudaGraphInstantiate(&ge, g, 0), "instantiate");
      ck(cudaGraphLaunch(ge, st), "launch");
      const double graph =
          1000.0 * median_event_ms(st, std::max(1, reps / 2), [&] { ck(cudaGraphLaunch(ge, st), "launch"); }) / n;
      cudaGraphExecDestroy(ge);
      cudaGraphDestroy(g);
      std::printf("%s %s: %.2f us per layer sequence (%.2f in a graph; %lld chain launches in %d sequences)\n",
                  type_name(t), chain[0] == '1' ? "chain" : "separate launches", single, graph, (long long)chains, reps);
      ck(cudaMemset(d_st, 0, (size_t)R * max_blocks * K * 8), "stamps");
      gpu.synchronize();
      gpu::gemv_tc_stamps(d_st, (int64_t)max_blocks * K);
      seq();
      gpu.synchronize();
      gpu::gemv_tc_stamps(nullptr);
      std::vector<unsigned long long> hs((size_t)R * max_blocks * K);
      ck(cudaMemcpy(hs.data(), d_st, hs.size() * 8, cudaMemcpyDeviceToHost), "stamps");
      unsigned long long t0 = ~0ull;
      for (size_t i = 0; i < hs.size(); i += K)
        if (hs[i]) t0 = std::min(t0, hs[i]);
      std::printf("  %-8s %-13s %-13s %-13s %-13s (us from the first start: median / max over blocks)\n", "stage",
                  "start", "wait passed", "x ready", "end");
      int shown = 0;  // the launches (stages) in order: o, gate/up, down, q/k/v
      for (int r = 0; r < R; ++r) {
        const unsigned long long* base = hs.data() + (size_t)r * max_blocks * K;
        bool any = false;
        for (int b = 0; b < max_blocks && !any; ++b) any = base[(size_t)b * K] != 0;
        if (!any) continue;
        auto stat = [&](int slot) {
          std::vector<double> v;
          for (int b = 0; b < max_blocks; ++b)
            if (base[(size_t)b * K + slot]) v.push_back((base[(size_t)b * K + slot] - t0) / 1e3);
          if (v.empty()) return std::string("-");
          std::sort(v.begin(), v.end());
          char buf[64];
          std::snprintf(buf, sizeof buf, "%5.1f / %5.1f", v[v.size() / 2], v.back());
          return std::string(buf);
        };
        std::printf("  %-8s %-13s %-13s %-13s %-13s\n", shown < 4 ? names[shown] : "?", stat(0).c_str(), stat(1).c_str(), stat(2).c_str(),
                    stat(4).c_str());
        ++shown;
      }
    }
  }
  unsetenv("DDRT_TC_CHAIN");
  unsetenv("DDRT_FUSE_NORM");
  cudaFree(d_st);
  return 0;
}

// T = 512 prefill matmuls: median event-timed microseconds (20 launches; 3 for the slow twin),
// TFLOP/s = 2 T d_out d_in / time.
double time_gemm(Backend& gpu, const Linear& W, float* y, const float* x, int T, int reps) {
  gpu.matmul(W, y, x, T, {});  // warm-up
  gpu.synchronize();
  return 1000.0 * median_event_ms(cuda_stream_of(gpu), reps, [&] { gpu.matmul(W, y, x, T, {}); });
}

int bench_gemm(Backend& gpu) {
  const int T = 512;
  struct Case { int64_t d_out, d_in; TensorType t; };
  const Case cases[] = {{4096, 4096, TensorType::UQ3_G128},   {4096, 4096, TensorType::UQ4_G128},
                        {1024, 4096, TensorType::UQ3_G128},   {14336, 4096, TensorType::UQ3_G128},
                        {14336, 4096, TensorType::UQ4_G128},  {4096, 14336, TensorType::UQ3_G128},
                        {4096, 14336, TensorType::UQ4_G128},  {128256, 4096, TensorType::F16}};
  std::printf("%s\nmatmul T=%d: median event-timed us (20 launches; 3 for the simple twin); default = int8 kernel for\n"
              "uniform types (gemm_i8.cu, two limbs of x), 3 limbs = its DDRT_I8_LIMBS=3 twin, bf16 = the bf16 hi + lo\n"
              "tensor-core kernel (gemm_tc.cu), warps 8/16 = the default int8 kernel at its other warp count (block tile\n"
              "DDRT_I8_WARPS: 16, the default, or 8; warp-owned DDRT_I8_OWN_WARPS: 8, the default, or 16),\n"
              "own/tile = the int8 kernel of the other kind than the default (DDRT_I8_OWN: 1 the warp-owned gemm_i8w.cu,\n"
              "the default where it takes the weights, 0 the block tile)\n",
              gpu.name().c_str(), T);
  std::printf("%-10s %-14s %10s %8s %10s %8s %10s %8s %10s %8s %10s %8s %12s %8s\n", "type", "d_out x d_in", "default us",
              "TFLOP/s", "warps 8/16", "TFLOP/s", "own/tile", "TFLOP/s", "3 limbs us", "TFLOP/s", "bf16 us", "TFLOP/s",
              "simple us", "TFLOP/s");
  for (const Case& c : cases) {
    auto L = make_linear(c.t, c.d_out, c.d_in, false);
    auto W = gpu.load_linear(L->desc, ResidualPlacement::Host);
    Buf bx(gpu, (size_t)T * c.d_in), by(gpu, (size_t)T * c.d_out);
    bx.put(randn((size_t)T * c.d_in));
    const double flop = 2.0 * T * c.d_out * c.d_in;
    const double fast = time_gemm(gpu, *W, by.f(), bx.f(), T, 20);
    // the other warp count than the environment's, of whichever int8 kernel runs (block tile: 8,
    // warp-owned: 16 by default)
    const auto env_is = [](const char* name, const char* v) { return std::getenv(name) && std::string(std::getenv(name)) == v; };
    gpu::gemm_i8_force_warps(env_is("DDRT_I8_WARPS", "8") ? 16 : 8);
    gpu::gemm_i8w_force_warps(env_is("DDRT_I8_OWN_WARPS", "16") ? 8 : 16);
    const double warps = is_uniform(c.t) ? time_gemm(gpu, *W, by.f(), bx.f(), T, 20) : fast;
    gpu::gemm_i8_force_warps(0);
    gpu::gemm_i8w_force_warps(0);
    gpu::gemm_i8_force_own(env_is("DDRT_I8_OWN", "0") ? 1 : 0);  // the other kernel kind than the environment's
    const double own = is_uniform(c.t) ? time_gemm(gpu, *W, by.f(), bx.f(), T, 20) : fast;
    gpu::gemm_i8_force_own(-1);
    gpu::gemm_i8_force_limbs(3);
    const double three = is_uniform(c.t) ? time_gemm(gpu, *W, by.f(), bx.f(), T, 20) : fast;
    gpu::gemm_i8_force_limbs(0);
    gpu::gemm_i8_enable(false);
    const double bf = is_uniform(c.t) ? time_gemm(gpu, *W, by.f(), bx.f(), T, 20) : fast;
    gpu::gemm_i8_enable(true);
    gpu::gemm_force_simple(true);
    const double slow = time_gemm(gpu, *W, by.f(), bx.f(), T, 3);
    gpu::gemm_force_simple(false);
    std::printf("%-10s %6lldx%-7lld %10.1f %8.1f %10.1f %8.1f %10.1f %8.1f %10.1f %8.1f %10.1f %8.1f %12.1f %8.2f\n",
                type_name(c.t), (long long)c.d_out, (long long)c.d_in, fast, flop / (fast * 1e6), warps,
                flop / (warps * 1e6), own, flop / (own * 1e6), three,
                flop / (three * 1e6), bf,
                flop / (bf * 1e6), slow, flop / (slow * 1e6));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda_available()) {
    std::printf("skipped: %s\n", cuda_info().c_str());
    return 77;
  }
  try {
    auto gpu = make_cuda_backend(0);
    if (argc > 1 && std::string(argv[1]) == "--bench") return bench(*gpu, false);
    if (argc > 1 && std::string(argv[1]) == "--bench-gemv") return bench(*gpu, true);
    if (argc > 1 && std::string(argv[1]) == "--bench-rows") return bench(*gpu, true, true);
    if (argc > 1 && std::string(argv[1]) == "--bench-groups") return bench_groups(*gpu), 0;
    if (argc > 1 && std::string(argv[1]) == "--bench-gemm") return bench_gemm(*gpu);
    if (argc > 1 && std::string(argv[1]) == "--bench-decdec") return bench_decdec(*gpu);
    if (argc > 1 && std::string(argv[1]) == "--bench-stamps") return bench_stamps(*gpu);
    if (argc > 1 && std::string(argv[1]) == "--bench-chain") return bench_chain(*gpu);
    auto cpu = make_cpu_backend();
    std::printf("%s vs %s\n", gpu->name().c_str(), cpu->name().c_str());
    // DDRT_TEST_ONLY=name,name: those tests alone (e.g. under the slow racecheck tool)
    const char* only = std::getenv("DDRT_TEST_ONLY");
    auto want = [&](const char* name) {
      return !only || ("," + std::string(only) + ",").find("," + std::string(name) + ",") != std::string::npos;
    };
    if (want("misc")) test_misc(*gpu);
    if (want("elementwise")) test_elementwise(*cpu, *gpu);
    if (want("rmsnorm")) test_rmsnorm_shapes(*cpu, *gpu);
    if (want("argmax")) test_argmax(*cpu, *gpu);
    if (want("embed")) test_embed(*cpu, *gpu);
    if (want("attention")) test_attention(*cpu, *gpu);
    if (want("matmul")) test_matmul(*cpu, *gpu);
    if (want("gemv_tc")) test_gemv_tc_shapes(*cpu, *gpu);
    if (want("gemv_group")) test_gemv_group(*cpu, *gpu);
    if (want("gemv_bulk")) test_gemv_bulk(*cpu, *gpu);
    if (want("gemm")) test_gemm(*cpu, *gpu);
    if (want("gemm") || want("gemm_group")) test_gemm_group(*cpu, *gpu);
    if (want("decdec")) test_decdec(*cpu, *gpu);
    if (want("matmul_swiglu")) test_matmul_swiglu(*cpu, *gpu);
    if (want("fused_add_norm")) test_fused_add_norm(*cpu, *gpu);
    if (want("chain")) test_chain(*cpu, *gpu);
    if (want("norm_parts")) test_norm_parts(*cpu, *gpu);
    if (want("gemv_local")) test_gemv_local(*cpu, *gpu);
    if (want("swiglu_pairs")) test_swiglu_pairs(*cpu, *gpu);
    if (want("attn_prefetch")) test_attn_prefetch(*cpu, *gpu);
    if (want("attn_defer")) test_attn_defer(*cpu, *gpu);
    if (want("decdec_twins")) test_decdec_twins(*gpu);
    if (want("decdec_chunks")) {  // the fused GEMV's compensation chunk-major (DDRT_COMP_CHUNKS=1)
      gpu::gemv_tc_comp_chunks_force(1);
      const int64_t before = gpu::gemv_tc_chunk_launches();
      test_gemv_group(*cpu, *gpu);
      test_decdec(*cpu, *gpu);
      CHECK_MSG(gpu::gemv_tc_chunk_launches() > before, "decdec_chunks: no chunk-major launch ran");
      gpu::gemv_tc_comp_chunks_force(-1);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: exception: %s\n", e.what());
    ddrt_test::record(false, "no exception", __FILE__, __LINE__);
  }
  return ddrt_test::check_summary();
}
