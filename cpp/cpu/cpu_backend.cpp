// decdec_rt CPU backend: the reference implementation of every Backend op (backend.h).
// Memory is plain host memory; fp32 accumulation everywhere; OpenMP over rows / heads.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "common.h"
#include "cpu_linear.h"

namespace ddrt {
namespace cpu {

namespace {

struct CpuKVCache : KVCache {
  // [n_layers][max_seq][n_kv_heads][head_dim] each; k32/v32 when type is F32, k16/v16 (binary16
  // bits) when F16, the other pair empty
  std::vector<float> k32, v32;
  std::vector<uint16_t> k16, v16;
  std::vector<float> kf, vf;  // F16: the layer's stored rows read back as floats, [n][n_kv_heads][head_dim]
  template <class E>
  E* at(std::vector<E>& c, int layer, int64_t pos) {
    return c.data() + (((int64_t)layer * max_seq + pos) * n_kv_heads) * head_dim;
  }
};

// out[h] = softmax(q . K[0..n) / sqrt(hd)) V for one query head against one kv head.
// K, V rows have stride `stride`; scores is scratch of n floats.
void attend_one(float* out, const float* q, const float* K, const float* V, int64_t n, int64_t stride,
                int hd, float* scores) {
  const float inv_sqrt = 1.0f / std::sqrt((float)hd);
  float mx = -INFINITY;
  for (int64_t p = 0; p < n; ++p) {
    const float* kp = K + p * stride;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < hd; ++i) s += q[i] * kp[i];
    scores[p] = s * inv_sqrt;
    mx = std::max(mx, scores[p]);
  }
  float sum = 0;
  for (int64_t p = 0; p < n; ++p) {
    scores[p] = std::exp(scores[p] - mx);
    sum += scores[p];
  }
  std::fill(out, out + hd, 0.0f);
  for (int64_t p = 0; p < n; ++p) {
    const float* vp = V + p * stride;
    const float w = scores[p] / sum;
#pragma omp simd
    for (int i = 0; i < hd; ++i) out[i] += w * vp[i];
  }
}

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int n_threads) : nt_(n_threads) {
#if defined(_OPENMP)
    if (nt_ <= 0) nt_ = omp_get_max_threads();
#endif
    if (nt_ <= 0) nt_ = 1;
  }

  std::string name() const override { return "cpu (" + std::to_string(nt_) + " threads)"; }

  void* alloc(size_t bytes) override {
    const size_t n = std::max<size_t>(64, (bytes + 63) / 64 * 64);
    void* p = std::aligned_alloc(64, n);
    if (!p) throw OutOfMemory("cpu backend: allocating " + std::to_string(bytes) + " bytes failed");
    return p;
  }
  void free(void* p) override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { memcpy(dst, src, bytes); }
  void synchronize() override {}

  std::unique_ptr<Linear> load_linear(const LinearDesc& desc, ResidualPlacement) override {
    return cpu::load_linear(desc);
  }

  std::unique_ptr<KVCache> create_kv_cache(int n_layers, int max_seq, int n_kv_heads, int head_dim,
                                           KvType type) override {
    if (n_layers <= 0 || max_seq <= 0 || n_kv_heads <= 0 || head_dim <= 0)
      throw InvalidArgument("KV cache: every dimension must be positive");
    if (type != KvType::F32 && type != KvType::F16)
      throw InvalidArgument("KV cache: unknown element type " + std::to_string((int)type));
    auto kv = std::make_unique<CpuKVCache>();
    kv->n_layers = n_layers;
    kv->max_seq = max_seq;
    kv->n_kv_heads = n_kv_heads;
    kv->head_dim = head_dim;
    kv->type = type;
    const size_t n = (size_t)n_layers * max_seq * n_kv_heads * head_dim;
    try {
      if (type == KvType::F16) {
        kv->k16.assign(n, 0);
        kv->v16.assign(n, 0);
      } else {
        kv->k32.assign(n, 0.0f);
        kv->v32.assign(n, 0.0f);
      }
    } catch (const std::exception&) {  // bad_alloc, or length_error beyond a vector's max_size
      throw OutOfMemory("cpu backend: KV cache of " + std::to_string(2 * n * kv_elem_bytes(type)) + " bytes");
    }
    return kv;
  }

  void embed(const Linear& table, float* out, const int32_t* ids, int T) override {
    const auto& W = static_cast<const CpuLinear&>(table);
#pragma omp parallel for num_threads(nt_) schedule(static)
    for (int t = 0; t < T; ++t) dequant_row(W, ids[t], out + (int64_t)t * W.d_in);
  }

  void rmsnorm(float* out, const float* x, const float* w, int T, int dim, float eps) override {
    for (int t = 0; t < T; ++t) {
      const float* xt = x + (int64_t)t * dim;
      float* ot = out + (int64_t)t * dim;
      float ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int i = 0; i < dim; ++i) ss += xt[i] * xt[i];
      const float r = 1.0f / std::sqrt(ss / (float)dim + eps);
      for (int i = 0; i < dim; ++i) ot[i] = xt[i] * r * w[i];
    }
  }

  void matmul(const Linear& W, float* y, const float* x, int T, const DecdecCall& call) override {
    cpu::matmul(static_cast<const CpuLinear&>(W), y, x, T, call, nt_);
  }

  void rope(float* x, int T, int n_heads, int head_dim, int64_t pos0, const float* inv_freq) override {
    const int half = head_dim / 2;
    std::vector<float> c(half), s(half);
    for (int t = 0; t < T; ++t) {
      for (int i = 0; i < half; ++i) {
        const float angle = (float)(pos0 + t) * inv_freq[i];
        c[i] = (float)std::cos((double)angle);
        s[i] = (float)std::sin((double)angle);
      }
      for (int h = 0; h < n_heads; ++h) {
        float* xh = x + ((int64_t)t * n_heads + h) * head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = xh[i], b = xh[i + half];
          xh[i] = a * c[i] - b * s[i];
          xh[i + half] = a * s[i] + b * c[i];
        }
      }
    }
  }

  void attention(KVCache& cache, int layer, float* out, const float* q, const float* k, const float* v, int T,
                 int n_heads, int64_t pos0) override {
    auto& kv = static_cast<CpuKVCache&>(cache);
    const int hkv = kv.n_kv_heads, hd = kv.head_dim;
    if (layer < 0 || layer >= kv.n_layers) throw InvalidArgument("attention: layer " + std::to_string(layer) + " out of range");
    if (n_heads <= 0 || n_heads % hkv != 0)
      throw InvalidArgument("attention: n_heads " + std::to_string(n_heads) + " is not a multiple of n_kv_heads " +
                            std::to_string(hkv));
    if (pos0 < 0 || pos0 + T > kv.max_seq)
      throw ContextOverflow("attention: positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + T - 1) +
                            " do not fit a context of " + std::to_string(kv.max_seq));
    const int64_t row = (int64_t)hkv * hd;
    const float *K, *V;  // [pos0 + T][n_kv_heads][head_dim]: the keys and values as stored
    if (kv.type == KvType::F16) {
      store_f16(kv.at(kv.k16, layer, pos0), k, T * row);
      store_f16(kv.at(kv.v16, layer, pos0), v, T * row);
      // read back as floats: the same attend_one as F32 (same order of sums) over the rounded values
      const int64_t n = (pos0 + T) * row;
      if ((int64_t)kv.kf.size() < n) {
        kv.kf.resize(n);
        kv.vf.resize(n);
      }
      load_f16(kv.kf.data(), kv.at(kv.k16, layer, 0), n);
      load_f16(kv.vf.data(), kv.at(kv.v16, layer, 0), n);
      K = kv.kf.data();
      V = kv.vf.data();
    } else {
      std::copy(k, k + T * row, kv.at(kv.k32, layer, pos0));
      std::copy(v, v + T * row, kv.at(kv.v32, layer, pos0));
      K = kv.at(kv.k32, layer, 0);
      V = kv.at(kv.v32, layer, 0);
    }
    const int group = n_heads / hkv;
#pragma omp parallel num_threads(nt_)
    {
      std::vector<float> scores(pos0 + T);
#pragma omp for collapse(2) schedule(static)
      for (int t = 0; t < T; ++t)
        for (int h = 0; h < n_heads; ++h) {
          const int64_t off = (int64_t)(h / group) * hd;
          const int64_t qo = ((int64_t)t * n_heads + h) * hd;
          attend_one(out + qo, q + qo, K + off, V + off, pos0 + t + 1, row, hd, scores.data());
        }
    }
  }

  // store_f16: dst[i] = f32_to_f16(src[i]); load_f16: dst[i] = f16_to_f32(src[i]) (i < n)
  void store_f16(uint16_t* dst, const float* src, int64_t n) {
#pragma omp parallel for num_threads(nt_) schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
  }
  // (through a table of f16_to_f32's 65536 values: the same floats, without its branches, since
  // each call reads the layer's whole stored prefix back)
  void load_f16(float* dst, const uint16_t* src, int64_t n) {
    static const std::vector<float> table = [] {
      std::vector<float> t(65536);
      for (uint32_t h = 0; h < 65536; ++h) t[h] = f16_to_f32((uint16_t)h);
      return t;
    }();
    const float* const tab = table.data();
#pragma omp parallel for num_threads(nt_) schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) dst[i] = tab[src[i]];
  }

  void swiglu(float* out, const float* gate, const float* up, size_t n) override {
#pragma omp parallel for simd num_threads(nt_) schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }

  void add(float* x, const float* y, size_t n) override {
#pragma omp simd
    for (size_t i = 0; i < n; ++i) x[i] += y[i];
  }
  void argmax(const float* x, int n, int32_t* out) override {
    int best = -1;
    for (int i = 0; i < n; ++i)
      if (!std::isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
    out[0] = best < 0 ? 0 : best;
  }

 private:
  int nt_;
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int n_threads) { return std::make_unique<cpu::CpuBackend>(n_threads); }

}  // namespace ddrt
