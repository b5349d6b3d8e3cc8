// decdec_rt: the ONE forward pass of a Llama-style decoder, written against the abstract
// Backend (backend.h), plus the model config, the KV-cache position and the sampler.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "model_file.h"

namespace ddrt {

struct RopeScaling {
  std::string type;  // "" (none) or "llama3"
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;
  int64_t original_max_seq_len = 8192;
};

// Model hyper-parameters: the model.* keys of docs/model_keys.md, same names.
struct Config {
  std::string architecture, name;
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int n_vocab = 0, max_seq_len = 0;
  float norm_eps = 1e-5f, rope_theta = 10000.f;
  bool tied_embeddings = false;
  RopeScaling rope_scaling;
};

// Reads and validates the config keys; FormatError names the key.
Config read_config(const ModelFile& f);
// RoPE inverse frequencies [head_dim/2], Llama-3.1 scaling applied when configured.
std::vector<float> rope_inv_freq(const Config& c);

struct SamplerParams {
  float temperature = 0.f;         // <= 0: greedy (argmax, lowest id on ties)
  int top_k = 0;                   // 0: off
  float top_p = 1.f;               // 1: off
  float repetition_penalty = 1.f;  // 1: off; applied to every token already in the context
};

// Seeded token sampler: same seed, same logits -> same tokens on every platform
// (its own xoshiro256** generator; no std:: distributions).
class Sampler {
 public:
  explicit Sampler(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed);
  // logits: [n] (modified in place by the penalty); history: tokens already in the context.
  int32_t sample(float* logits, int n, const SamplerParams& p, const std::vector<int32_t>& history);
  double uniform();  // [0, 1)

 private:
  uint64_t s_[4];
  std::vector<std::pair<float, int32_t>> cand_;
};

// Named tensors the engine loads: a model file, or synthetic weights (synth.h).
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const TensorInfo* find(const std::string& name) const = 0;
};

struct EngineOptions {
  std::string device = "cpu";    // "cpu", "cuda", "cuda:N"
  int max_seq_len = 0;            // 0: the model's
  ResidualPlacement residual = ResidualPlacement::Host;
  bool verify_checksums = true;
  int n_threads = 0;              // CPU backend threads, 0: default
  int max_batch = 64;             // rows per prefill chunk
  bool graphs = true;             // replay decode steps as graphs where the backend can
  KvType kv_type = KvType::F16;   // KV cache elements: F16 (half the memory) or F32 (backend.h)
};

// One loaded model + one context (KV cache). Not thread-safe: one call at a time.
class Engine {
 public:
  Engine(const std::string& path, const EngineOptions& opt = {});
  // Weights from any source (synthetic models for benchmarks); `src` must outlive nothing:
  // the engine keeps it.
  Engine(std::unique_ptr<TensorSource> src, const Config& cfg, const EngineOptions& opt = {});
  ~Engine();

  const Config& config() const { return cfg_; }
  Backend& backend() { return *be_; }
  int64_t max_seq_len() const { return max_seq_; }
  KvType kv_type() const { return kv_->type; }
  int64_t pos() const { return (int64_t)tokens_.size(); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  bool has_residuals() const { return has_residuals_; }

  void reset() { tokens_.clear(); }
  // Appends ids[0..T) to the context and runs them (prefill in chunks of max_batch rows).
  // logits (host): [T, n_vocab] when all_logits, else [n_vocab] of the last token; may be null.
  // Throws ContextOverflow when pos() + T > max_seq_len(), InvalidArgument on a bad id.
  void forward(const int32_t* ids, int T, float* logits, bool all_logits);
  // Sum of -log p(ids[t+1] | ids[..t]) over t < T-1 in a fresh context (ppl scoring), in double.
  double nll(const int32_t* ids, int T);
  // Feeds ids (T >= 1) and samples the next token from the last logits (not yet fed).
  // Greedy sampling without a repetition penalty takes the argmax on the backend (only the id
  // crosses to the host) and, for single tokens, replays the decode step as a graph.
  int32_t next_token(const int32_t* ids, int T, const SamplerParams& p, Sampler& s);
  // Greedy decode of n tokens after feeding `first`: the benchmark loop. Returns the tokens.
  std::vector<int32_t> decode_greedy(int32_t first, int n);

  // DecDEC: mode and k_chunk per linear kind (qkv, o, gate_up, down). Throws InvalidArgument when
  // the model lacks what the mode needs (residuals; thresholds for approx; ranking for static).
  // n_tb: blocks given to the compensation per linear kind (0: the backend's default; a speed
  // knob only, the numbers do not depend on it).
  void set_decdec(DecdecMode mode, const std::array<int, kNumKinds>& k_chunk, uint64_t seed = 0,
                  const std::array<int, kNumKinds>& n_tb = {});
  DecdecMode decdec_mode() const { return mode_; }
  const std::array<int, kNumKinds>& decdec_k_chunk() const { return k_chunk_; }
  const std::array<int, kNumKinds>& decdec_n_tb() const { return n_tb_; }

  // Calibration hook: while set, each linear input is copied to the host and handed over as
  // (layer, slot, x [T, d_in]) where slot is the first linear reading it: 0 (q, k, v), 3 (o),
  // 4 (gate, up), 6 (down). Decode graphs are not used while it is set. Empty: off.
  using CaptureFn = std::function<void(int layer, int slot, const float* x, int T, int d_in)>;
  void set_capture(CaptureFn fn) {
    capture_ = std::move(fn);
    graph_valid_ = false;
  }

  // Bytes moved over PCIe per token by DecDEC at the current setting (residual rows fetched).
  double decdec_bytes_per_token() const;

 private:
  struct Layer;
  struct Buf {
    Backend* be = nullptr;
    void* p = nullptr;
    float* f() const { return (float*)p; }
  };
  std::unique_ptr<TensorSource> src_;
  std::unique_ptr<Backend> be_;
  Config cfg_;
  int64_t max_seq_ = 0;
  int max_batch_ = 64;
  std::unique_ptr<Linear> embd_, out_;  // out_ null when tied
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<KVCache> kv_;
  std::vector<Buf> bufs_;
  float *x_, *xb_, *q_, *k_, *v_, *att_, *hb_, *gate_, *up_, *logits_, *inv_freq_, *out_norm_;
  std::vector<float> host_logits_;
  std::vector<int32_t> tokens_;
  bool has_residuals_ = false;
  DecdecMode mode_ = DecdecMode::Off;
  std::array<int, kNumKinds> k_chunk_{};
  std::array<int, kNumKinds> n_tb_{};
  uint64_t seed_ = 0;
  int32_t* next_id_ = nullptr;  // backend memory: the greedy step's result
  bool graphs_ = true, graph_valid_ = false;
  CaptureFn capture_;
  std::vector<float> capture_buf_;
  void emit(int layer, int slot, const float* x, int T, int d_in);

  float* alloc_f32(size_t n);
  void init(const EngineOptions& opt);
  float* upload_vector(const std::string& name, int64_t n);
  std::unique_ptr<Linear> load(const std::string& base, int64_t d_out, int64_t d_in, bool decdec,
                               ResidualPlacement where);
  void run_chunk(const int32_t* ids, int T, float* logits, bool all_logits);
  void enqueue_layers(const int32_t* ids, int T, int64_t pos0);
  void enqueue_greedy_step(int32_t id, int64_t pos);
  int32_t greedy_step(int32_t id);
  void check_tokens(const int32_t* ids, int T) const;
  void linear(const Linear& w, int layer, int slot, float* y, const float* x, int T, int64_t pos0);
  // The linears of slots [slot0, slot0 + n) of a layer, all reading x (q/k/v, gate/up): one
  // matmul_group, which a backend may run as one launch.
  void linear_group(int layer, int slot0, int n, float* const* ys, const float* x, int T, int64_t pos0);
  // The same group reading rmsnorm(x) * w (xb: the backend's scratch for it)
  void linear_group_rmsnorm(int layer, int slot0, int n, float* const* ys, const float* x, const float* w, int T,
                            int64_t pos0);
  // The group's linears and calls (n <= 3)
  void group_args(int layer, int slot0, int n, int64_t pos0, const Linear** ws, DecdecCall* calls) const;
  DecdecCall decdec_call(int layer, int slot, int64_t pos0) const;
};

}  // namespace ddrt
