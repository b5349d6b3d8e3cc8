// decdec_rt: synthetic models of named shapes (random, valid weights) for benchmarks.
#include "synth.h"

#include <cmath>
#include <numeric>

namespace ddrt {

namespace {

struct Shape {
  const char* name;
  int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, n_vocab, max_seq_len;
  float rope_theta;
  bool tied;
};

const Shape kShapes[] = {
    {"llama3-8b", 4096, 14336, 32, 32, 8, 128, 128256, 8192, 500000.f, false},
    {"llama2-7b", 4096, 11008, 32, 32, 32, 128, 32000, 4096, 10000.f, false},
    {"llama3-70b-layer", 8192, 28672, 1, 64, 8, 128, 128256, 8192, 500000.f, false},
    {"smollm2-135m", 576, 1536, 30, 9, 3, 64, 49152, 8192, 100000.f, true},
    {"tiny", 64, 160, 2, 4, 2, 16, 512, 256, 10000.f, false},
};

uint64_t next(uint64_t& s) {  // xorshift64*
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545F4914F6CDD1Dull;
}

// n bytes of random data, filled in parallel from per-block seeds (deterministic).
void fill_random(uint8_t* p, size_t n, uint64_t seed) {
  const size_t kBlock = 1 << 20;
  const int64_t nb = (int64_t)((n + kBlock - 1) / kBlock);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b) {
    uint64_t s = mix64(seed ^ mix64((uint64_t)b)) | 1;
    const size_t i0 = (size_t)b * kBlock, i1 = std::min(n, i0 + kBlock);
    size_t i = i0;
    for (; i + 8 <= i1; i += 8) {
      const uint64_t r = next(s);
      memcpy(p + i, &r, 8);
    }
    for (; i < i1; ++i) p[i] = (uint8_t)next(s);
  }
}

// fp16 values with random sign and mantissa and magnitude in [2^(e-15), 2^(e-14)).
void fill_f16(uint8_t* p, size_t n_values, uint64_t seed, int e) {
  fill_random(p, 2 * n_values, seed);
  uint16_t* h = reinterpret_cast<uint16_t*>(p);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < (int64_t)n_values; ++i) h[i] = (uint16_t)((h[i] & 0x83FFu) | ((uint16_t)e << 10));
}

}  // namespace

std::vector<std::string> synth_shapes() {
  std::vector<std::string> v;
  for (const Shape& s : kShapes) v.push_back(s.name);
  return v;
}

Config synth_config(const std::string& shape) {
  for (const Shape& s : kShapes) {
    if (shape != s.name) continue;
    Config c;
    c.architecture = "llama";
    c.name = std::string("synthetic ") + s.name;
    c.dim = s.dim;
    c.hidden_dim = s.hidden_dim;
    c.n_layers = s.n_layers;
    c.n_heads = s.n_heads;
    c.n_kv_heads = s.n_kv_heads;
    c.head_dim = s.head_dim;
    c.n_vocab = s.n_vocab;
    c.max_seq_len = s.max_seq_len;
    c.norm_eps = 1e-5f;
    c.rope_theta = s.rope_theta;
    c.tied_embeddings = s.tied;
    return c;
  }
  std::string names;
  for (const Shape& s : kShapes) names += std::string(names.empty() ? "" : ", ") + s.name;
  throw InvalidArgument("unknown model shape '" + shape + "' (known: " + names + ")");
}

SynthModel::SynthModel(const SynthSpec& spec) : rng_(mix64(spec.seed) | 1) {
  cfg_ = synth_config(spec.shape);
  if (spec.n_layers > 0) cfg_.n_layers = spec.n_layers;
  TensorType lt;
  if (spec.bits == 16) {
    lt = TensorType::F16;
  } else if (spec.bits != 3 && spec.bits != 4) {
    throw InvalidArgument("synthetic models have 3, 4 or 16 bits, not " + std::to_string(spec.bits));
  } else if (!uniform_type(spec.bits, spec.group, &lt)) {
    throw InvalidArgument("group size " + std::to_string(spec.group) + " is not 32, 64 or 128");
  }
  const Config& c = cfg_;
  const int64_t qd = (int64_t)c.n_heads * c.head_dim, kvd = (int64_t)c.n_kv_heads * c.head_dim;
  add_linear("token_embd", TensorType::F16, c.n_vocab, c.dim, false);
  if (!c.tied_embeddings) add_linear("output", TensorType::F16, c.n_vocab, c.dim, false);
  head_bytes_ = tensors_.at(c.tied_embeddings ? "token_embd.weight" : "output.weight").size;
  linear_bytes_ = 0;
  std::vector<float> ones(c.dim, 1.0f);
  auto norm = [&](const std::string& name) {
    std::vector<uint8_t> d(c.dim * 4);
    memcpy(d.data(), ones.data(), d.size());
    add(name, TensorType::F32, {c.dim}, std::move(d));
  };
  norm("output_norm.weight");
  const char* names[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  const int64_t shapes[7][2] = {{qd, c.dim}, {kvd, c.dim}, {kvd, c.dim}, {c.dim, qd},
                                {c.hidden_dim, c.dim}, {c.hidden_dim, c.dim}, {c.dim, c.hidden_dim}};
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    norm(p + "attn_norm.weight");
    norm(p + "ffn_norm.weight");
    for (int s = 0; s < 7; ++s) {
      add_linear(p + names[s], lt, shapes[s][0], shapes[s][1], spec.residual && spec.bits != 16);
      linear_bytes_ += tensors_.at(p + names[s] + ".weight").size;
    }
  }
}

const TensorInfo* SynthModel::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void SynthModel::add(const std::string& name, TensorType t, std::vector<int64_t> shape, std::vector<uint8_t> data) {
  TensorInfo ti;
  ti.name = name;
  ti.type = t;
  ti.shape = std::move(shape);
  ti.size = data.size();
  store_.push_back(std::move(data));
  ti.data = store_.back().data();
  tensors_[name] = ti;
}

std::vector<uint8_t> SynthModel::random_matrix(TensorType t, int64_t d_out, int64_t d_in) {
  const int64_t shape[2] = {d_out, d_in};
  std::vector<uint8_t> d((size_t)tensor_bytes(t, 2, shape));
  const uint64_t seed = next(rng_);
  if (is_float(t)) {  // F16 only here: |w| in [2^-7, 2^-6)
    fill_f16(d.data(), (size_t)(d_out * d_in), seed, 8);
    return d;
  }
  const int b = type_bits(t);
  const size_t codes = (size_t)(d_out * row_code_bytes(d_in, b));
  const size_t ng = (size_t)(d_out * n_groups(d_in, type_group(t)));
  fill_random(d.data(), codes, seed);
  // scales ~ 2^-11..2^-10 (positive), mins = -scale * (2^b - 1) / 2: weights centred on 0
  uint16_t* s = reinterpret_cast<uint16_t*>(d.data() + codes);
  uint16_t* m = s + ng;
  fill_f16(reinterpret_cast<uint8_t*>(s), ng, next(rng_), 4);
  for (size_t i = 0; i < ng; ++i) {
    s[i] &= 0x7FFFu;
    m[i] = f32_to_f16(-f16_to_f32(s[i]) * (float)((1 << b) - 1) * 0.5f);
  }
  return d;
}

void SynthModel::add_linear(const std::string& base, TensorType t, int64_t d_out, int64_t d_in, bool residual) {
  add(base + ".weight", t, {d_out, d_in}, random_matrix(t, d_out, d_in));
  if (!residual) return;
  // residual rows: nibbles 1..15 (codes -7..7)
  std::vector<uint8_t> r((size_t)(d_in * res_row_bytes(d_out)));
  fill_random(r.data(), r.size(), next(rng_));
  for (auto& v : r) v = (uint8_t)(((v & 15) % 15 + 1) | ((((v >> 4) % 15) + 1) << 4));
  add(base + ".residual", TensorType::RES4, {d_in, d_out}, std::move(r));
  std::vector<uint8_t> rs((size_t)d_out * 2);
  fill_f16(rs.data(), d_out, next(rng_), 3);
  for (size_t i = 0; i < rs.size(); i += 2) rs[i + 1] &= 0x7F;  // positive scales
  add(base + ".residual_scale", TensorType::F16, {d_out}, std::move(rs));
  // thresholds: a descending profile of |x| ranks; ranking: a random permutation
  std::vector<uint8_t> th((size_t)d_in * 4), rk((size_t)d_in * 4);
  float* tf = reinterpret_cast<float*>(th.data());
  for (int64_t i = 0; i < d_in; ++i) tf[i] = 8.0f * std::exp(-8.0f * (float)i / (float)d_in);
  int32_t* ri = reinterpret_cast<int32_t*>(rk.data());
  std::iota(ri, ri + d_in, 0);
  for (int64_t i = d_in - 1; i > 0; --i) std::swap(ri[i], ri[next(rng_) % (uint64_t)(i + 1)]);
  add(base + ".thresholds", TensorType::F32, {d_in}, std::move(th));
  add(base + ".ranking", TensorType::I32, {d_in}, std::move(rk));
}

}  // namespace ddrt
