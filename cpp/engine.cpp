// decdec_rt: the forward pass (reads like the paper: shapes on every buffer), config, sampler.
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ddrt {

// ---- config ----------------------------------------------------------------------------------

static int positive_int(const ModelFile& f, const std::string& key, int64_t max = (1 << 24)) {
  const int64_t v = f.get_int(key);
  if (v <= 0 || v > max)
    throw FormatError("metadata '" + key + "' = " + std::to_string(v) + " is out of range (1.." +
                      std::to_string(max) + ")");
  return (int)v;
}

Config read_config(const ModelFile& f) {
  Config c;
  c.architecture = f.get_string("general.architecture");
  if (c.architecture != "llama")
    throw FormatError("metadata 'general.architecture' = '" + c.architecture +
                      "' is not supported (decdec_rt runs 'llama' models)");
  c.name = f.get_string("general.name", "");
  c.dim = positive_int(f, "model.dim");
  c.hidden_dim = positive_int(f, "model.hidden_dim");
  c.n_layers = positive_int(f, "model.n_layers", 4096);
  c.n_heads = positive_int(f, "model.n_heads", 4096);
  c.n_kv_heads = positive_int(f, "model.n_kv_heads", 4096);
  c.head_dim = positive_int(f, "model.head_dim", 4096);
  c.n_vocab = positive_int(f, "model.n_vocab", 1 << 22);
  c.max_seq_len = positive_int(f, "model.max_seq_len", 1 << 22);
  c.norm_eps = (float)f.get_float("model.norm_eps", 1e-5);
  c.rope_theta = (float)f.get_float("model.rope_theta", 10000.0);
  c.tied_embeddings = f.get_bool("model.tied_embeddings", false);
  if (c.n_heads % c.n_kv_heads != 0)
    throw FormatError("metadata 'model.n_heads' (" + std::to_string(c.n_heads) +
                      ") is not a multiple of 'model.n_kv_heads' (" + std::to_string(c.n_kv_heads) + ")");
  if (c.head_dim % 2 != 0)
    throw FormatError("metadata 'model.head_dim' = " + std::to_string(c.head_dim) + " must be even for RoPE");
  if (!(c.norm_eps > 0) || !(c.rope_theta > 1))
    throw FormatError("metadata 'model.norm_eps' / 'model.rope_theta' out of range");
  c.rope_scaling.type = f.get_string("model.rope_scaling.type", "");
  if (!c.rope_scaling.type.empty()) {
    if (c.rope_scaling.type != "llama3")
      throw FormatError("metadata 'model.rope_scaling.type' = '" + c.rope_scaling.type +
                        "' is not supported (only 'llama3')");
    c.rope_scaling.factor = f.get_float("model.rope_scaling.factor");
    c.rope_scaling.low_freq_factor = f.get_float("model.rope_scaling.low_freq_factor");
    c.rope_scaling.high_freq_factor = f.get_float("model.rope_scaling.high_freq_factor");
    c.rope_scaling.original_max_seq_len = f.get_int("model.rope_scaling.original_max_seq_len");
    const auto& r = c.rope_scaling;
    if (!(r.factor >= 1) || !(r.low_freq_factor > 0) || !(r.high_freq_factor > r.low_freq_factor) ||
        r.original_max_seq_len <= 0)
      throw FormatError("metadata 'model.rope_scaling.*' values are out of range");
  }
  return c;
}

std::vector<float> rope_inv_freq(const Config& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    double f = std::pow((double)c.rope_theta, -2.0 * i / c.head_dim);
    if (c.rope_scaling.type == "llama3") {  // Llama 3.1: stretch the low frequencies
      const auto& r = c.rope_scaling;
      const double wavelen = 2 * M_PI / f;
      const double low_wl = r.original_max_seq_len / r.low_freq_factor;
      const double high_wl = r.original_max_seq_len / r.high_freq_factor;
      if (wavelen > low_wl) {
        f = f / r.factor;
      } else if (wavelen >= high_wl) {
        const double smooth = (r.original_max_seq_len / wavelen - r.low_freq_factor) /
                              (r.high_freq_factor - r.low_freq_factor);
        f = (1 - smooth) * f / r.factor + smooth * f;
      }
    }
    inv[i] = (float)f;
  }
  return inv;
}

// ---- sampler ---------------------------------------------------------------------------------

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void Sampler::reseed(uint64_t seed) {
  uint64_t z = seed;
  for (auto& s : s_) s = (z = mix64(z));
}

double Sampler::uniform() {  // xoshiro256**
  const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
  s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
  s_[2] ^= t; s_[3] = rotl(s_[3], 45);
  return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

int32_t Sampler::sample(float* logits, int n, const SamplerParams& p, const std::vector<int32_t>& history) {
  if (p.repetition_penalty != 1.f) {
    std::vector<char> seen(n, 0);
    for (int32_t t : history)
      if (t >= 0 && t < n && !seen[t]) {
        seen[t] = 1;
        logits[t] = logits[t] > 0 ? logits[t] / p.repetition_penalty : logits[t] * p.repetition_penalty;
      }
  }
  if (p.temperature <= 0.f) {  // greedy, lowest id on ties
    int best = 0;
    for (int i = 1; i < n; ++i)
      if (logits[i] > logits[best]) best = i;
    return best;
  }
  cand_.resize(n);
  for (int i = 0; i < n; ++i) cand_[i] = {logits[i], i};
  auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  size_t m = cand_.size();
  if (p.top_k > 0 && (size_t)p.top_k < m) {
    std::partial_sort(cand_.begin(), cand_.begin() + p.top_k, cand_.end(), by_logit);
    m = p.top_k;
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // softmax over the m candidates at this temperature (fp64 for a platform-stable cut-off)
  std::vector<double> prob(m);
  double sum = 0;
  for (size_t i = 0; i < m; ++i) sum += prob[i] = std::exp((double)(cand_[i].first - cand_[0].first) / p.temperature);
  if (p.top_p < 1.f) {
    double acc = 0;
    size_t keep = m;
    for (size_t i = 0; i < m; ++i) {
      acc += prob[i] / sum;
      if (acc >= p.top_p) { keep = i + 1; break; }
    }
    m = keep;
    sum = 0;
    for (size_t i = 0; i < m; ++i) sum += prob[i];
  }
  double u = uniform() * sum;
  for (size_t i = 0; i < m; ++i) {
    if (u < prob[i]) return cand_[i].second;
    u -= prob[i];
  }
  return cand_[m - 1].second;
}

// ---- engine ----------------------------------------------------------------------------------

static const char* kSlotNames[7] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
static const LinearKind kSlotKind[7] = {kQKV, kQKV, kQKV, kO, kGateUp, kGateUp, kDown};

struct Engine::Layer {
  float* attn_norm;               // [dim]
  float* ffn_norm;                // [dim]
  std::unique_ptr<Linear> w[7];   // q [n_heads*hd, dim], k/v [n_kv*hd, dim], o [dim, n_heads*hd],
                                  // gate/up [hidden, dim], down [dim, hidden]
};

namespace {
// A model file as a tensor source.
class FileSource : public TensorSource {
 public:
  FileSource(const std::string& path, bool verify) : f(path, verify) {}
  const TensorInfo* find(const std::string& name) const override { return f.find(name); }
  ModelFile f;
};
}  // namespace

Engine::Engine(const std::string& path, const EngineOptions& opt) {
  auto src = std::make_unique<FileSource>(path, opt.verify_checksums);
  cfg_ = read_config(src->f);
  src_ = std::move(src);
  init(opt);
}

Engine::Engine(std::unique_ptr<TensorSource> src, const Config& cfg, const EngineOptions& opt) {
  src_ = std::move(src);
  cfg_ = cfg;
  init(opt);
}

void Engine::init(const EngineOptions& opt) {
  be_ = opt.device == "cpu" ? make_cpu_backend(opt.n_threads) : make_backend(opt.device);
  if (opt.max_seq_len < 0) throw InvalidArgument("max_seq_len must be >= 0 (0 = the model's)");
  max_seq_ = opt.max_seq_len > 0 ? opt.max_seq_len : cfg_.max_seq_len;
  if (opt.max_batch < 1) throw InvalidArgument("max_batch must be >= 1");
  max_batch_ = opt.max_batch;
  const Config& c = cfg_;
  const int64_t qd = (int64_t)c.n_heads * c.head_dim, kvd = (int64_t)c.n_kv_heads * c.head_dim;

  embd_ = load("token_embd", c.n_vocab, c.dim, false, opt.residual);
  if (!c.tied_embeddings) out_ = load("output", c.n_vocab, c.dim, false, opt.residual);
  out_norm_ = upload_vector("output_norm.weight", c.dim);
  const int64_t shapes[7][2] = {{qd, c.dim}, {kvd, c.dim}, {kvd, c.dim}, {c.dim, qd},
                                {c.hidden_dim, c.dim}, {c.hidden_dim, c.dim}, {c.dim, c.hidden_dim}};
  has_residuals_ = true;
  for (int l = 0; l < c.n_layers; ++l) {
    auto L = std::make_unique<Layer>();
    const std::string p = "blk." + std::to_string(l) + ".";
    L->attn_norm = upload_vector(p + "attn_norm.weight", c.dim);
    L->ffn_norm = upload_vector(p + "ffn_norm.weight", c.dim);
    for (int s = 0; s < 7; ++s) {
      L->w[s] = load(p + kSlotNames[s], shapes[s][0], shapes[s][1], true, opt.residual);
      has_residuals_ = has_residuals_ && L->w[s]->has_residual;
    }
    layers_.push_back(std::move(L));
  }
  kv_ = be_->create_kv_cache(c.n_layers, (int)max_seq_, c.n_kv_heads, c.head_dim, opt.kv_type);

  const int B = max_batch_;
  x_ = alloc_f32((size_t)B * c.dim);        // [B, dim]     residual stream
  xb_ = alloc_f32((size_t)B * c.dim);       // [B, dim]     normed input / branch output
  q_ = alloc_f32((size_t)B * qd);           // [B, n_heads*hd]
  k_ = alloc_f32((size_t)B * kvd);          // [B, n_kv*hd]
  v_ = alloc_f32((size_t)B * kvd);          // [B, n_kv*hd]
  att_ = alloc_f32((size_t)B * qd);         // [B, n_heads*hd] attention output
  hb_ = alloc_f32((size_t)B * c.dim);       // [B, dim]     branch output
  gate_ = alloc_f32((size_t)B * c.hidden_dim);  // [B, hidden]
  up_ = alloc_f32((size_t)B * c.hidden_dim);    // [B, hidden]
  logits_ = alloc_f32((size_t)B * c.n_vocab);   // [B, n_vocab]
  const auto inv = rope_inv_freq(c);
  inv_freq_ = alloc_f32(inv.size());        // [head_dim/2]
  next_id_ = reinterpret_cast<int32_t*>(alloc_f32(1));  // [1] greedy token
  graphs_ = opt.graphs;
  be_->upload(inv_freq_, inv.data(), inv.size() * sizeof(float));
}

Engine::~Engine() {
  for (auto& b : bufs_) b.be->free(b.p);
}

float* Engine::alloc_f32(size_t n) {
  void* p = be_->alloc(n * sizeof(float));
  bufs_.push_back({be_.get(), p});
  return (float*)p;
}

float* Engine::upload_vector(const std::string& name, int64_t n) {
  const TensorInfo* t = src_->find(name);
  if (!t) throw FormatError("tensor '" + name + "' is missing");
  if (t->shape.size() != 1 || t->shape[0] != n || (t->type != TensorType::F32 && t->type != TensorType::F16))
    throw FormatError("tensor '" + name + "' must be f32 or f16 of shape [" + std::to_string(n) + "]");
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) {
    if (t->type == TensorType::F32) {
      memcpy(&v[i], t->data + 4 * i, 4);
    } else {
      uint16_t h;
      memcpy(&h, t->data + 2 * i, 2);
      v[i] = f16_to_f32(h);
    }
  }
  float* d = alloc_f32(n);
  be_->upload(d, v.data(), n * sizeof(float));
  return d;
}

static const TensorInfo* optional_tensor(const TensorSource& f, const std::string& name, TensorType type,
                                         std::vector<int64_t> shape) {
  const TensorInfo* t = f.find(name);
  if (!t) return nullptr;
  if (t->type != type || t->shape != shape)
    throw FormatError("tensor '" + name + "' has type " + type_name(t->type) + " and the wrong shape; expected " +
                      type_name(type) + " [" + std::to_string(shape[0]) + "]");
  return t;
}

std::unique_ptr<Linear> Engine::load(const std::string& base, int64_t d_out, int64_t d_in, bool decdec,
                                     ResidualPlacement where) {
  const std::string wname = base + ".weight";
  const TensorInfo* t = src_->find(wname);
  if (!t) throw FormatError("tensor '" + wname + "' is missing");
  if (!is_matrix_type(t->type))
    throw FormatError("tensor '" + wname + "' has type " + type_name(t->type) + ", not a matrix type");
  if (t->shape != std::vector<int64_t>{d_out, d_in})
    throw FormatError("tensor '" + wname + "' has shape [" + std::to_string(t->shape[0]) + ", " +
                      (t->shape.size() > 1 ? std::to_string(t->shape[1]) : "?") + "], expected [" +
                      std::to_string(d_out) + ", " + std::to_string(d_in) + "]");
  LinearDesc d;
  d.name = base;
  d.type = t->type;
  d.d_out = d_out;
  d.d_in = d_in;
  d.data = t->data;
  if (decdec) {
    const TensorInfo* r = optional_tensor(*src_, base + ".residual", TensorType::RES4, {d_in, d_out});
    const TensorInfo* rs = optional_tensor(*src_, base + ".residual_scale", TensorType::F16, {d_out});
    if ((r != nullptr) != (rs != nullptr))
      throw FormatError("tensor '" + base + (r ? ".residual_scale" : ".residual") +
                        "' is missing (residual and residual_scale come together)");
    if (r) {
      d.residual = r->data;
      d.residual_scale = (const uint16_t*)rs->data;
    }
    if (const TensorInfo* th = optional_tensor(*src_, base + ".thresholds", TensorType::F32, {d_in}))
      d.thresholds = (const float*)th->data;
    if (const TensorInfo* rk = optional_tensor(*src_, base + ".ranking", TensorType::I32, {d_in}))
      d.ranking = (const int32_t*)rk->data;
  }
  try {
    return be_->load_linear(d, where);
  } catch (const InvalidArgument& e) {  // what the backend rejects came from the file
    throw FormatError(std::string("tensors of '") + base + "': " + e.what());
  }
}

void Engine::set_decdec(DecdecMode mode, const std::array<int, kNumKinds>& k_chunk, uint64_t seed,
                        const std::array<int, kNumKinds>& n_tb) {
  for (int k : k_chunk)
    if (k < 0 || k > kChunk)
      throw InvalidArgument("k_chunk must be in 0..1024 (channels per 1024 input channels), got " + std::to_string(k));
  for (int n : n_tb)
    if (n < 0 || n > 1024) throw InvalidArgument("n_tb must be in 0..1024 (0: default), got " + std::to_string(n));
  if (mode != DecdecMode::Off) {
    if (!has_residuals_)
      throw InvalidArgument(std::string("DecDEC mode '") + mode_name(mode) +
                            "' needs residuals, and this model has none (convert it without --no-residual)");
    for (auto& L : layers_)
      for (auto& w : L->w) {
        if (mode == DecdecMode::Approx && !w->has_thresholds)
          throw InvalidArgument("DecDEC mode 'approx' needs calibration thresholds, which this model lacks");
        if (mode == DecdecMode::Static && !w->has_ranking)
          throw InvalidArgument("DecDEC mode 'static' needs a calibration ranking, which this model lacks");
      }
  }
  mode_ = mode;
  k_chunk_ = k_chunk;
  n_tb_ = n_tb;
  seed_ = seed;
  graph_valid_ = false;  // the recorded step used the old setting
}

double Engine::decdec_bytes_per_token() const {
  if (mode_ == DecdecMode::Off) return 0;
  double bytes = 0;
  for (auto& L : layers_)
    for (int s = 0; s < 7; ++s) {
      const Linear& w = *L->w[s];
      bytes += (double)total_k(k_chunk_[kSlotKind[s]], w.d_in) * res_row_bytes(w.d_out);
    }
  return bytes;
}

DecdecCall Engine::decdec_call(int layer, int slot, int64_t pos0) const {
  DecdecCall call;
  call.mode = k_chunk_[kSlotKind[slot]] > 0 ? mode_ : DecdecMode::Off;
  call.k_chunk = k_chunk_[kSlotKind[slot]];
  call.seed = seed_;
  call.n_tb = n_tb_[kSlotKind[slot]];
  call.linear_id = (uint32_t)(7 * layer + slot);
  call.pos0 = pos0;
  return call;
}

void Engine::linear(const Linear& w, int layer, int slot, float* y, const float* x, int T, int64_t pos0) {
  be_->matmul(w, y, x, T, decdec_call(layer, slot, pos0));
}

void Engine::group_args(int layer, int slot0, int n, int64_t pos0, const Linear** ws, DecdecCall* calls) const {
  for (int m = 0; m < n; ++m) {
    ws[m] = layers_[layer]->w[slot0 + m].get();
    calls[m] = decdec_call(layer, slot0 + m, pos0);
  }
}

void Engine::linear_group(int layer, int slot0, int n, float* const* ys, const float* x, int T, int64_t pos0) {
  const Linear* ws[3];
  DecdecCall calls[3];
  group_args(layer, slot0, n, pos0, ws, calls);
  be_->matmul_group(ws, ys, n, x, T, calls);
}

void Engine::linear_group_rmsnorm(int layer, int slot0, int n, float* const* ys, const float* x, const float* w,
                                  int T, int64_t pos0) {
  const Linear* ws[3];
  DecdecCall calls[3];
  group_args(layer, slot0, n, pos0, ws, calls);
  be_->rmsnorm_matmul_group(ws, ys, n, xb_, x, w, cfg_.norm_eps, T, calls);
}

void Engine::check_tokens(const int32_t* ids, int T) const {
  if (T <= 0) throw InvalidArgument("forward needs at least one token");
  if (pos() + T > max_seq_)
    throw ContextOverflow("context overflow: " + std::to_string(T) + " token(s) at position " +
                          std::to_string(pos()) + " exceed the context window of " + std::to_string(max_seq_) +
                          " tokens");
  for (int t = 0; t < T; ++t)
    if (ids[t] < 0 || ids[t] >= cfg_.n_vocab)
      throw InvalidArgument("token id " + std::to_string(ids[t]) + " at index " + std::to_string(t) +
                            " is outside the vocabulary [0, " + std::to_string(cfg_.n_vocab) + ")");
}

void Engine::forward(const int32_t* ids, int T, float* logits, bool all_logits) {
  check_tokens(ids, T);
  for (int t0 = 0; t0 < T; t0 += max_batch_) {
    const int n = std::min(max_batch_, T - t0);
    const bool last = t0 + n == T;
    float* out = nullptr;
    if (logits && all_logits) out = logits + (size_t)t0 * cfg_.n_vocab;
    if (logits && !all_logits && last) out = logits;
    run_chunk(ids + t0, n, out, all_logits);
  }
}

// One chunk of T <= max_batch tokens at positions pos0 .. pos0+T-1.
void Engine::run_chunk(const int32_t* ids, int T, float* logits, bool all_logits) {
  const Config& c = cfg_;
  const size_t dim = c.dim;
  enqueue_layers(ids, T, pos());
  for (int t = 0; t < T; ++t) tokens_.push_back(ids[t]);
  if (!logits) return;
  const Linear& head = out_ ? *out_ : *embd_;
  const int rows = all_logits ? T : 1;
  const float* xin = x_ + (all_logits ? 0 : (size_t)(T - 1) * dim);
  be_->rmsnorm(xb_, xin, out_norm_, rows, c.dim, c.norm_eps);  // xb [rows, dim]
  DecdecCall off;
  be_->matmul(head, logits_, xb_, rows, off);                  // logits [rows, n_vocab]
  be_->download(logits, logits_, (size_t)rows * c.n_vocab * sizeof(float));
}

// Embedding and every decoder block for T tokens at positions pos0..: x [T, dim] afterwards.
void Engine::enqueue_layers(const int32_t* ids, int T, int64_t pos0) {
  const Config& c = cfg_;
  const size_t dim = c.dim;
  be_->embed(*embd_, x_, ids, T);                                      // x [T, dim]
  // Around each residual add: either matmul, add_rmsnorm (x += y; xb = norm(x)), matmul_group(xb),
  // or, where the backend runs them as single launches (fuses_add_norm), the producer adding into
  // x itself and the consumers normalizing x where they read it: one launch fewer per add.
  // normed: xb holds this layer's attn_norm(x) (else the qkv group normalizes x itself; the first
  // layer's too, where the backend fuses the norm into it: one launch fewer per step).
  const Linear* next[3];
  DecdecCall next_calls[3];
  group_args(0, 0, 3, pos0, next, next_calls);
  bool normed = capture_ || !be_->fuses_norm(next, 3, next_calls, T);
  if (normed) be_->rmsnorm(xb_, x_, layers_[0]->attn_norm, T, c.dim, c.norm_eps);  // xb [T, dim]
  for (int l = 0; l < c.n_layers; ++l) {
    const Layer& L = *layers_[l];
    // attention block
    if (capture_) emit(l, 0, xb_, T, c.dim);
    float* const qkv[3] = {q_, k_, v_};                         // q [T, n_heads*hd], k, v [T, n_kv*hd]
    if (normed)
      linear_group(l, 0, 3, qkv, xb_, T, pos0);
    else
      linear_group_rmsnorm(l, 0, 3, qkv, x_, L.attn_norm, T, pos0);
    const Linear* const after_attn[3] = {L.w[3].get(), L.w[4].get(), L.w[5].get()};  // o, gate, up
    be_->prefetch_hint(after_attn, 3);
    const DecdecCall o_call = decdec_call(l, 3, pos0);
    group_args(l, 4, 2, pos0, next, next_calls);
    const bool add_norm = !capture_ && be_->fuses_add_norm(*L.w[3], o_call, next, 2, next_calls, T);
    if (!add_norm) {
      be_->rope_attention(*kv_, l, att_, q_, k_, v_, T, c.n_heads, pos0, inv_freq_);  // att [T, n_heads*hd]
      if (capture_) emit(l, 3, att_, T, c.n_heads * c.head_dim);
    }
    float* const gate_up[2] = {gate_, up_};                     // gate, up [T, hidden]
    const Linear* const after_gate_up = L.w[6].get();           // down
    const DecdecCall d_call = decdec_call(l, 6, pos0);
    // gate = swiglu(gate, up) where the gate/up launch writes it (swiglu_after_gate_up): down
    // then reads a plain input
    bool swiglu_done = false;
    if (add_norm) {
      // x += o(attention) (att_ scratch: the backend may merge the attention where o reads it)
      be_->rope_attention_matmul_add(*kv_, l, att_, q_, k_, v_, T, c.n_heads, pos0, inv_freq_, *L.w[3], x_, hb_, o_call);
      be_->prefetch_hint(&after_gate_up, 1);
      swiglu_done = be_->swiglu_after_gate_up(next, next_calls, *L.w[6], d_call, T);
      if (swiglu_done)
        be_->rmsnorm_matmul_swiglu(next, gate_, up_, xb_, x_, L.ffn_norm, c.norm_eps, T, next_calls);
      else
        be_->rmsnorm_matmul_group(next, gate_up, 2, xb_, x_, L.ffn_norm, c.norm_eps, T, next_calls);
    } else {
      be_->matmul(*L.w[3], hb_, att_, T, o_call);               // hb [T, dim]
      be_->add_rmsnorm(xb_, x_, hb_, L.ffn_norm, T, c.dim, c.norm_eps);  // x += attn; xb = ffn_norm(x)
      if (capture_) emit(l, 4, xb_, T, c.dim);
      be_->prefetch_hint(&after_gate_up, 1);
      be_->matmul_group(next, gate_up, 2, xb_, T, next_calls);
    }
    // feed-forward block: hb = down(silu(gate) * up)  [T, dim], added into x
    const bool last = l + 1 == c.n_layers;
    if (!last) group_args(l + 1, 0, 3, pos0, next, next_calls);
    be_->prefetch_hint(next, last ? 0 : 3);                     // during down: the next q, k, v
    if (capture_) {                                             // the capture needs silu(gate) * up itself
      be_->swiglu(gate_, gate_, up_, (size_t)T * c.hidden_dim);
      emit(l, 6, gate_, T, c.hidden_dim);
      linear(*L.w[6], l, 6, hb_, gate_, T, pos0);
      normed = true;
    } else if (be_->fuses_add_norm(*L.w[6], d_call, next, last ? 0 : 3, next_calls, T)) {
      if (swiglu_done)
        be_->matmul_add(*L.w[6], x_, hb_, gate_, T, d_call);           // x += ffn
      else
        be_->matmul_swiglu_add(*L.w[6], x_, hb_, gate_, up_, T, d_call);  // x += ffn
      normed = false;
      continue;
    } else {
      if (swiglu_done)
        linear(*L.w[6], l, 6, hb_, gate_, T, pos0);
      else
        be_->matmul_swiglu(*L.w[6], hb_, gate_, up_, T, d_call);
      normed = true;
    }
    if (!last)                                                  // x += ffn; xb = next attn_norm(x)
      be_->add_rmsnorm(xb_, x_, hb_, layers_[l + 1]->attn_norm, T, c.dim, c.norm_eps);
    else
      be_->add(x_, hb_, T * dim);                               // x += ffn (the head norms it)
  }
}

void Engine::emit(int layer, int slot, const float* x, int T, int d_in) {
  capture_buf_.resize((size_t)T * d_in);
  be_->download(capture_buf_.data(), x, capture_buf_.size() * sizeof(float));
  capture_(layer, slot, capture_buf_.data(), T, d_in);
}

// One T=1 step whose result is the greedy next token in next_id_ (backend memory).
void Engine::enqueue_greedy_step(int32_t id, int64_t pos) {
  enqueue_layers(&id, 1, pos);
  be_->rmsnorm(xb_, x_, out_norm_, 1, cfg_.dim, cfg_.norm_eps);  // xb [1, dim]
  DecdecCall off;
  be_->matmul(out_ ? *out_ : *embd_, logits_, xb_, 1, off);      // logits [1, n_vocab]
  be_->argmax(logits_, cfg_.n_vocab, next_id_);                  // next_id [1]
}

// Feeds `id` and returns the greedy next token; the step runs as a graph replay once recorded.
int32_t Engine::greedy_step(int32_t id) {
  check_tokens(&id, 1);
  const int64_t p = pos();
  if (!graphs_ || !be_->supports_graphs() || capture_) {
    enqueue_greedy_step(id, p);
  } else if (graph_valid_) {
    be_->replay(p, id);
  } else {
    // run the step once in step mode (this also sizes the backend's scratch), then record it
    be_->step_begin(p, id);
    enqueue_greedy_step(id, p);
    be_->capture_begin();
    try {
      enqueue_greedy_step(id, p);
    } catch (...) {
      try { be_->capture_end(); } catch (...) {}  // the first error is the one to report
      be_->step_end();
      throw;
    }
    be_->capture_end();
    be_->step_end();
    graph_valid_ = true;
  }
  int32_t next = 0;
  be_->download(&next, next_id_, sizeof(int32_t));
  tokens_.push_back(id);
  return next;
}

std::vector<int32_t> Engine::decode_greedy(int32_t first, int n) {
  std::vector<int32_t> out;
  if (n <= 0) return out;
  int32_t id = first;
  out.push_back(id = greedy_step(id));  // records the step's graph if there is none yet
  // the rest as back-to-back replays where the backend chains them (no wait per token), when they
  // all fit the context (else step by step, which stops with ContextOverflow where it is reached)
  const int rest = n - 1;
  if (rest > 0 && graphs_ && be_->supports_graphs() && !capture_ && graph_valid_ && pos() + rest <= max_seq_) {
    std::vector<int32_t> ids(rest);
    if (be_->replay_n(pos(), id, rest, ids.data())) {
      tokens_.push_back(id);
      tokens_.insert(tokens_.end(), ids.begin(), ids.end() - 1);
      out.insert(out.end(), ids.begin(), ids.end());
      return out;
    }
  }
  for (int i = 1; i < n; ++i) out.push_back(id = greedy_step(id));
  return out;
}

double Engine::nll(const int32_t* ids, int T) {
  reset();
  const int V = cfg_.n_vocab;
  std::vector<float> lg((size_t)std::min(T, max_batch_) * V);
  double total = 0;
  for (int t0 = 0; t0 < T; t0 += max_batch_) {
    const int n = std::min(max_batch_, T - t0);
    forward(ids + t0, n, lg.data(), true);
    for (int t = 0; t < n && t0 + t + 1 < T; ++t) {
      const float* row = lg.data() + (size_t)t * V;
      const float mx = *std::max_element(row, row + V);
      double s = 0;
      for (int i = 0; i < V; ++i) s += std::exp((double)row[i] - mx);
      total += std::log(s) + mx - row[ids[t0 + t + 1]];
    }
  }
  return total;
}

int32_t Engine::next_token(const int32_t* ids, int T, const SamplerParams& p, Sampler& s) {
  if (p.temperature <= 0.f && p.repetition_penalty == 1.f && T >= 1) {
    check_tokens(ids, T);
    if (T > 1) forward(ids, T - 1, nullptr, false);
    return greedy_step(ids[T - 1]);
  }
  host_logits_.resize(cfg_.n_vocab);
  forward(ids, T, host_logits_.data(), false);
  return s.sample(host_logits_.data(), cfg_.n_vocab, p, tokens_);
}

// ---- backend factory -------------------------------------------------------------------------

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend(0);
  if (device == "cuda") return make_cuda_backend(0);
  if (device.rfind("cuda:", 0) == 0) {
    const std::string n = device.substr(5);
    if (!n.empty() && n.size() < 6 && std::all_of(n.begin(), n.end(), ::isdigit))
      return make_cuda_backend(std::stoi(n));
  }
  throw InvalidArgument("unknown device '" + device + "' (expected \"cpu\", \"cuda\" or \"cuda:N\")");
}

}  // namespace ddrt
