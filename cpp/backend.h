// decdec_rt: the abstract Backend. The engine (engine.cpp) is written once against it; the CPU
// backend (cpp/cpu/) is the reference and the CUDA backend (cuda/) must match it op for op.
//
// Memory: activations are fp32, row-major, T rows. Pointers passed to ops are the backend's
// own memory (from alloc()); the engine never dereferences them. Host data crosses only
// through upload/download. Ops may run asynchronously; download() and synchronize() wait.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "decdec.h"
#include "layout.h"

namespace ddrt {

// Host view of one weight matrix W [d_out, d_in] and its DecDEC data, pointing into the
// memory-mapped file. The residual fields are null when the file has no residual for it.
struct LinearDesc {
  std::string name;
  TensorType type = TensorType::F32;
  int64_t d_out = 0, d_in = 0;
  const uint8_t* data = nullptr;            // layout.h, tensor_bytes(type, {d_out, d_in}) bytes
  const uint8_t* residual = nullptr;        // RES4 [d_in][res_row_bytes(d_out)]
  const uint16_t* residual_scale = nullptr; // f16 [d_out]
  const float* thresholds = nullptr;        // f32 [d_in], approx mode
  const int32_t* ranking = nullptr;         // i32 [d_in] channel ids, most important first
};

// Where residual rows live: pinned mapped host memory (the real mode) or GPU memory (fast
// evaluation, same numbers). The CPU backend ignores it.
enum class ResidualPlacement : int32_t { Host = 0, Device = 1 };

// A weight matrix owned by a backend, in whatever layout that backend wants.
class Linear {
 public:
  virtual ~Linear() = default;
  int64_t d_out = 0, d_in = 0;
  TensorType type = TensorType::F32;
  bool has_residual = false;
  bool has_thresholds = false;
  bool has_ranking = false;
};

// Element type of a KV cache. F16 (the engine's default): keys and values are rounded to IEEE
// binary16 (nearest even, as f32_to_f16) when stored and read back exactly, so every backend
// attends over the same rounded values; half the memory of F32 and half the bytes a decode step
// reads per position. F32 stores them as computed.
enum class KvType : int32_t { F32 = 0, F16 = 1 };
inline size_t kv_elem_bytes(KvType t) { return t == KvType::F16 ? 2 : 4; }

// KV cache of one context: n_layers x max_seq x n_kv_heads x head_dim keys and values.
class KVCache {
 public:
  virtual ~KVCache() = default;
  int n_layers = 0, max_seq = 0, n_kv_heads = 0, head_dim = 0;
  KvType type = KvType::F16;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0 (NVIDIA H100 ...)"

  // ---- memory ----
  virtual void* alloc(size_t bytes) = 0;  // throws OutOfMemory
  virtual void free(void* p) = 0;
  virtual void upload(void* dst, const void* src_host, size_t bytes) = 0;
  virtual void download(void* dst_host, const void* src, size_t bytes) = 0;  // waits
  virtual void synchronize() = 0;
  // Bytes this backend holds for weights/caches on its device (0 for the CPU).
  virtual size_t device_bytes() const { return 0; }
  // Of those, what DecDEC adds: residual scales / rows / rankings kept on the device and the
  // compensation's scratch (0 on the CPU).
  virtual size_t decdec_device_bytes() const { return 0; }

  // ---- weights ----
  virtual std::unique_ptr<Linear> load_linear(const LinearDesc& desc, ResidualPlacement where) = 0;
  virtual std::unique_ptr<KVCache> create_kv_cache(int n_layers, int max_seq, int n_kv_heads, int head_dim,
                                                   KvType type) = 0;

  // ---- ops (all fp32 activations) ----
  // out[t] = row ids[t] of `table` (any matrix type, dequantized). ids are host ints already
  // checked to lie in [0, table.d_out).
  virtual void embed(const Linear& table, float* out, const int32_t* ids_host, int T) = 0;
  // out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w        (x, out: [T, dim]; w: [dim])
  virtual void rmsnorm(float* out, const float* x, const float* w, int T, int dim, float eps) = 0;
  // y[t] = W x[t] + (DecDEC) R[:, S_t] x[t][S_t] with S_t = select_channels(call, pos0 + t, ...)
  // x: [T, d_in], y: [T, d_out]. x and y never alias.
  virtual void matmul(const Linear& W, float* y, const float* x, int T, const DecdecCall& call) = 0;
  // ys[m] = matmul(*Ws[m], x, calls[m]) for m < n: linears that read the same x (q/k/v,
  // gate/up). A backend may run them as one launch; the default is the n calls, the meaning.
  virtual void matmul_group(const Linear* const* Ws, float* const* ys, int n, const float* x, int T,
                            const DecdecCall* calls) {
    for (int m = 0; m < n; ++m) matmul(*Ws[m], ys[m], x, T, calls[m]);
  }
  // Rotary embedding in place, rotate-half convention: for i < head_dim/2, with
  // angle = (float)(pos0 + t) * inv_freq[i] (fp32), (x[i], x[i + head_dim/2]) is rotated by angle.
  // x: [T, n_heads * head_dim]; inv_freq: backend memory, [head_dim/2].
  virtual void rope(float* x, int T, int n_heads, int head_dim, int64_t pos0, const float* inv_freq) = 0;
  // Stores k, v ([T, n_kv_heads * head_dim]) at positions pos0.. of `layer` (as the cache's type:
  // F16 rounds them), then causal GQA attention for the T queries q ([T, n_heads * head_dim]) over
  // positions 0..pos0+t, every key and value as stored (the chunk's own ones too):
  // out[t, h] = softmax(q[t,h] . K[0..pos0+t, h / (n_heads/n_kv_heads)] / sqrt(head_dim)) V.
  virtual void attention(KVCache& kv, int layer, float* out, const float* q, const float* k,
                         const float* v, int T, int n_heads, int64_t pos0) = 0;
  // out = silu(gate) * up, elementwise over n values.
  virtual void swiglu(float* out, const float* gate, const float* up, size_t n) = 0;
  // x += y, elementwise over n values.
  virtual void add(float* x, const float* y, size_t n) = 0;
  // Fused pairs a backend may run as one launch (decode is launch-bound); the defaults are
  // the two ops in sequence, the reference meaning.
  // x += y, then out = rmsnorm(x) * w        (x, y, out: [T, dim])
  virtual void add_rmsnorm(float* out, float* x, const float* y, const float* w, int T, int dim, float eps) {
    add(x, y, (size_t)T * dim);
    rmsnorm(out, x, w, T, dim, eps);
  }
  // rope of q ([T, n_heads * head_dim]) and k ([T, n_kv_heads * head_dim]) at the same positions
  virtual void rope_qk(float* q, float* k, int T, int n_heads, int n_kv_heads, int head_dim, int64_t pos0,
                       const float* inv_freq) {
    rope(q, T, n_heads, head_dim, pos0, inv_freq);
    rope(k, T, n_kv_heads, head_dim, pos0, inv_freq);
  }
  // gate = swiglu(gate, up), then y = W gate (+ compensation): the down projection of a gated MLP
  // (gate, up: [T, W.d_in]; gate is scratch afterwards: swiglu'd or not)
  virtual void matmul_swiglu(const Linear& W, float* y, float* gate, const float* up, int T, const DecdecCall& call) {
    swiglu(gate, gate, up, (size_t)T * W.d_in);
    matmul(W, y, gate, T, call);
  }
  // y += W x (+ compensation): a projection added into the residual stream y ([T, W.d_out]).
  // tmp: [T, W.d_out] scratch for the default (matmul into tmp, then add).
  virtual void matmul_add(const Linear& W, float* y, float* tmp, const float* x, int T, const DecdecCall& call) {
    matmul(W, tmp, x, T, call);
    add(y, tmp, (size_t)T * W.d_out);
  }
  // matmul_swiglu's result added into y likewise (tmp as above)
  virtual void matmul_swiglu_add(const Linear& W, float* y, float* tmp, float* gate, const float* up, int T,
                                 const DecdecCall& call) {
    matmul_swiglu(W, tmp, gate, up, T, call);
    add(y, tmp, (size_t)T * W.d_out);
  }
  // xb = rmsnorm(x) * w, then matmul_group(Ws, ys, n, xb, calls): a group that reads the
  // normalized residual stream (x, xb: [T, Ws[0]->d_in]; xb is scratch: written or not)
  virtual void rmsnorm_matmul_group(const Linear* const* Ws, float* const* ys, int n, float* xb, const float* x,
                                    const float* w, float eps, int T, const DecdecCall* calls) {
    rmsnorm(xb, x, w, T, (int)Ws[0]->d_in, eps);
    matmul_group(Ws, ys, n, xb, T, calls);
  }
  // Whether rmsnorm_matmul_group of these consumers runs as one launch (the norm inside), so that
  // the engine need not run the norm first where no producer precedes them (the first layer's
  // q/k/v). Default: false.
  virtual bool fuses_norm(const Linear* const* consumers, int n, const DecdecCall* calls, int T) const {
    return false;
  }
  // The gate/up pair of a gated MLP (Ws[0] gate, Ws[1] up, equal d_out) on the normalized residual
  // stream, then gate = swiglu(gate, up): the down projection then reads gate as it is (matmul_add)
  virtual void rmsnorm_matmul_swiglu(const Linear* const* Ws, float* gate, float* up, float* xb, const float* x,
                                     const float* w, float eps, int T, const DecdecCall* calls) {
    float* const ys[2] = {gate, up};
    rmsnorm_matmul_group(Ws, ys, 2, xb, x, w, eps, T, calls);
    swiglu(gate, gate, up, (size_t)T * Ws[0]->d_out);
  }
  // Whether rmsnorm_matmul_swiglu of gate_up, then matmul_add of down, takes fewer launches here
  // than rmsnorm_matmul_group, then matmul_swiglu_add (the engine then takes it, where it fuses
  // the add and norm). Default: false.
  virtual bool swiglu_after_gate_up(const Linear* const* gate_up, const DecdecCall* calls, const Linear& down,
                                    const DecdecCall& dcall, int T) const {
    return false;
  }
  // Whether the residual add and the next norm can live inside the linears around them: each of
  // matmul_add / matmul_swiglu_add of `producer` and rmsnorm_matmul_group of `consumers` (none
  // when n = 0: the last layer's) runs as one launch for these calls (matmul_swiglu_add: two
  // where the swiglu cannot be read inside, never more than the unfused sequence). The engine then
  // takes them instead of matmul, add_rmsnorm, matmul_group (one launch more); false: it takes
  // those. Default: false.
  virtual bool fuses_add_norm(const Linear& producer, const DecdecCall& pcall, const Linear* const* consumers, int n,
                              const DecdecCall* ccalls, int T) const {
    return false;
  }
  // rope_qk, then attention (q and k are scratch afterwards: rotated or not)
  virtual void rope_attention(KVCache& kv, int layer, float* out, float* q, float* k, const float* v, int T,
                              int n_heads, int64_t pos0, const float* inv_freq) {
    rope_qk(q, k, T, n_heads, kv.n_kv_heads, kv.head_dim, pos0, inv_freq);
    attention(kv, layer, out, q, k, v, T, n_heads, pos0);
  }
  // rope_attention into out, then matmul_add(Wo, y, tmp, out, T, call): the attention block's
  // output projection added into the residual stream y (a backend may merge the attention's
  // pieces where the projection reads them; out is then scratch: written or not)
  virtual void rope_attention_matmul_add(KVCache& kv, int layer, float* out, float* q, float* k, const float* v,
                                         int T, int n_heads, int64_t pos0, const float* inv_freq, const Linear& Wo,
                                         float* y, float* tmp, const DecdecCall& call) {
    rope_attention(kv, layer, out, q, k, v, T, n_heads, pos0, inv_freq);
    matmul_add(Wo, y, tmp, out, T, call);
  }
  // out[0] = argmax of x[0..n) (backend memory; lowest index on ties, NaN never wins).
  virtual void argmax(const float* x, int n, int32_t* out) = 0;
  // The linears the engine will run after the next op, in their order: a backend may start
  // bringing their weights closer while that op runs (CUDA: into L2 during attention, whose own
  // loads leave HBM mostly idle, or a GEMV's tail). A hint only: no result depends on it.
  // Default: nothing.
  virtual void prefetch_hint(const Linear* const* Ws, int n) {}

  // ---- decode steps as replayable graphs (optional; the CUDA backend has them) ----
  // Between step_begin(pos, id) and step_end() the engine issues the ops of one T=1 decode step
  // of token `id` at position `pos`. In that span, ops read the position and the embedded token
  // id from the backend's step slots (set by step_begin / replay), not from their arguments, so
  // a step recorded between capture_begin() and capture_end() replays correctly at any position.
  // Ops issued while capturing are recorded, not run. replay(pos, id) sets the slots and runs the
  // last captured step.
  virtual bool supports_graphs() const { return false; }
  virtual void step_begin(int64_t pos, int32_t id) {}
  virtual void step_end() {}
  virtual void capture_begin() {}
  virtual void capture_end() {}
  virtual void replay(int64_t pos, int32_t id) {}
  // n replays back to back, each fed the previous one's result: the captured step must end with
  // argmax into the engine's next-token buffer. Step i runs at position pos + i with token
  // ids[i - 1] (ids[-1] = id); ids[i] = its argmax. The host waits once per batch of steps, not
  // once per token. false: not supported here (nothing was run; the caller replays step by step).
  virtual bool replay_n(int64_t pos, int32_t id, int n, int32_t* ids) { return false; }
};

// What every backend checks in load_linear (InvalidArgument naming the linear): a matrix type,
// a non-empty shape, data, a residual only with its scales.
void check_linear_desc(const LinearDesc& d);
// rank_pos[i] = position of channel i in d.ranking (empty when there is no ranking); throws
// InvalidArgument when the ranking is not a permutation of 0..d_in-1.
std::vector<int32_t> rank_positions(const LinearDesc& d);

// Factories. make_cuda_backend throws CudaError when CUDA is not built in or no GPU is visible.
std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0);  // 0: OpenMP default
std::unique_ptr<Backend> make_cuda_backend(int device = 0);
bool cuda_available();   // built with CUDA and at least one GPU visible
bool cuda_built();       // built with CUDA
std::string cuda_info(); // device name(s) or why there are none

// Parses "cpu", "cuda", "cuda:N"; throws InvalidArgument for anything else.
std::unique_ptr<Backend> make_backend(const std::string& device);

}  // namespace ddrt
