// decdec_rt CUDA backend: the Backend implementation (backend.h) over the kernels of cuda/.
// One stream per backend; every CUDA call is checked and a failure becomes CudaError naming the
// call (cudaMalloc failure: OutOfMemory). Weights are repacked once at load (packed.cuh).
#include "cuda_backend.cuh"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "host_prep.h"
#include "kernels.cuh"

namespace ddrt {

namespace {

using Counter = std::shared_ptr<std::atomic<size_t>>;

void check(cudaError_t e, const char* call, const std::string& what = "") {
  if (e == cudaSuccess) return;
  cudaGetLastError();  // clear a sticky-free error so the next call starts clean
  throw CudaError(std::string("CUDA: ") + call + " failed: " + cudaGetErrorString(e) +
                  (what.empty() ? "" : " (" + what + ")"));
}
#define DDRT_CHECK(call, ...) check((call), #call, ##__VA_ARGS__)

// Device memory owned by one object; counted in the backend's device_bytes when `counter`.
class DevMem {
 public:
  DevMem() = default;
  DevMem(size_t bytes, Counter counter, const std::string& what) : counter_(std::move(counter)) {
    if (bytes == 0) return;
    const cudaError_t e = cudaMalloc(&p_, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      p_ = nullptr;
      throw OutOfMemory("CUDA: cudaMalloc of " + std::to_string(bytes) + " bytes for " + what + " failed: " +
                        cudaGetErrorString(e));
    }
    n_ = bytes;
    if (counter_) *counter_ += n_;
  }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  DevMem(DevMem&& o) noexcept { swap(o); }
  DevMem& operator=(DevMem&& o) noexcept {
    swap(o);
    return *this;
  }
  ~DevMem() {
    if (p_) cudaFree(p_);  // destructor: errors cannot be reported
    if (counter_) *counter_ -= n_;
  }
  void* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  void swap(DevMem& o) {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(counter_, o.counter_);
  }
  void* p_ = nullptr;
  size_t n_ = 0;
  Counter counter_;
};

// Pinned, mapped host memory (zero-copy residual rows).
class PinnedMem {
 public:
  PinnedMem() = default;
  PinnedMem(size_t bytes, const std::string& what) {
    const cudaError_t e = cudaHostAlloc(&p_, bytes, cudaHostAllocMapped);
    if (e != cudaSuccess) {
      cudaGetLastError();
      p_ = nullptr;
      throw OutOfMemory("CUDA: cudaHostAlloc(mapped) of " + std::to_string(bytes) + " bytes for " + what +
                        " failed: " + cudaGetErrorString(e));
    }
    DDRT_CHECK(cudaHostGetDevicePointer(&dev_, p_, 0), what);
  }
  PinnedMem(const PinnedMem&) = delete;
  PinnedMem& operator=(const PinnedMem&) = delete;
  PinnedMem& operator=(PinnedMem&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(dev_, o.dev_);
    return *this;
  }
  ~PinnedMem() {
    if (p_) cudaFreeHost(p_);
  }
  void* host() const { return p_; }
  void* dev() const { return dev_; }

 private:
  void* p_ = nullptr;
  void* dev_ = nullptr;
};

struct CudaLinear : Linear {
  std::string name;
  gpu::DevLinear dev;
  gpu::DevResidual res;
  std::vector<float> thresholds_host;  // approx floors are computed on the host per call
  std::vector<int32_t> ranking_host;   // static mode: whether group members select alike
  std::vector<DevMem> mem;
  PinnedMem pinned, pinned_rscale, pinned_rank;
  // the fused GEMV's last plan (compensation blocks, kmax): planning queries the occupancy
  mutable gpu::TcPlan plan;
  mutable int plan_n_tb = -1;
  mutable bool plan_chunks = false;  // the plan's compensation is chunk-major
  mutable int plan_local = 0;        // the block-local merge mode the plan was asked for x 2 + (gate/up pairs)
  mutable int64_t plan_kmax = -1;
  mutable int64_t plan_d_out = -1;  // the launch's d_out (a group's total when this is its head)
  // DecDEC's share of this linear's device bytes, counted in the backend's decdec counter while
  // the linear lives
  Counter decdec_counter;
  size_t decdec_bytes = 0;
  void count_decdec(const Counter& c, size_t bytes) {
    decdec_counter = c;
    decdec_bytes += bytes;
    *c += bytes;
  }
  ~CudaLinear() override {
    if (decdec_counter) *decdec_counter -= decdec_bytes;
  }
};

struct CudaKVCache : KVCache {
  DevMem k, v;  // [n_layers][max_seq][n_kv_heads][head_dim] each, of float or __half (type)
  void* at(const DevMem& m, int layer, int64_t pos) const {
    return static_cast<char*>(m.get()) +
           (((int64_t)layer * max_seq + pos) * n_kv_heads) * head_dim * (int64_t)kv_elem_bytes(type);
  }
};

uint16_t rd16(const uint8_t* p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(int device)
      : dev_(device), held_(std::make_shared<std::atomic<size_t>>(0)),
        decdec_held_(std::make_shared<std::atomic<size_t>>(0)) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw CudaError(std::string("CUDA backend unavailable: cudaGetDeviceCount failed: ") + cudaGetErrorString(e));
    }
    if (n == 0) throw CudaError("CUDA backend unavailable: no CUDA device is visible");
    if (device < 0 || device >= n)
      throw CudaError("device 'cuda:" + std::to_string(device) + "' does not exist: " + std::to_string(n) +
                      " CUDA device(s) visible (cuda:0..cuda:" + std::to_string(n - 1) + ")");
    DDRT_CHECK(cudaSetDevice(dev_));
    DDRT_CHECK(cudaGetDeviceProperties(&prop_, dev_));
    DDRT_CHECK(cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking));
    slots_ = DevMem(kSlotBytes, nullptr, "decode step slots");
    step_log_ = DevMem((1 + kStepLog) * sizeof(int32_t), nullptr, "decode step log");
    DDRT_CHECK(cudaMemsetAsync(step_log_.get(), 0, (1 + kStepLog) * sizeof(int32_t), st_));
    argmax_scratch_ = DevMem(gpu::kArgmaxScratch, nullptr, "argmax scratch");
    DDRT_CHECK(cudaMemsetAsync(argmax_scratch_.get(), 0, gpu::kArgmaxScratch, st_));
    chain_bar_ = DevMem(2 * sizeof(unsigned), nullptr, "GEMV chain barrier");
    DDRT_CHECK(cudaMemsetAsync(chain_bar_.get(), 0, 2 * sizeof(unsigned), st_));
    chain_.reset(gpu::tc_chain_new());
    int lo = 0, hi = 0;  // the side stream gets the higher priority: it is latency-bound
    DDRT_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    DDRT_CHECK(cudaStreamCreateWithPriority(&side_, cudaStreamNonBlocking, hi));
    DDRT_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
    DDRT_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
    // Measured on the H100 (BENCHMARKS.md): the side stream is slower than one stream while the
    // base GEMV fills the GPU (llama3-8b 3-bit, approx k_chunk 8: 94 vs 118 tok/s), so one
    // stream is the default; DDRT_DECDEC_PARALLEL=1 selects the side stream.
    comp_parallel_ = gpu::env_int("DDRT_DECDEC_PARALLEL", 0) == 1;
    h_slots_ = PinnedMem(kSlotBytes, "decode step slots");
  }
  ~CudaBackend() override {
    cudaSetDevice(dev_);
    if (st_) cudaStreamSynchronize(st_);
    write_step_stamps();
    if (st_) {
      cudaStreamDestroy(st_);
    }
    if (exec_) cudaGraphExecDestroy(exec_);
    if (side_) {
      cudaStreamSynchronize(side_);
      cudaStreamDestroy(side_);
    }
    if (fork_) cudaEventDestroy(fork_);
    if (join_) cudaEventDestroy(join_);
    scratch_ = DevMem();
  }

  cudaStream_t stream() const { return st_; }
  void set_l2_attn_bytes(int64_t bytes) { l2_attn_force_ = bytes; }
  void set_decdec_parallel(bool on) {
    synchronize();
    comp_parallel_ = on;
  }

  std::string name() const override { return "cuda:" + std::to_string(dev_) + " (" + prop_.name + ")"; }

  // ---- memory ----
  void* alloc(size_t bytes) override {
    use();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw OutOfMemory("CUDA: cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cudaGetErrorString(e));
    }
    return p;
  }
  void free(void* p) override {
    if (!p) return;
    use();
    DDRT_CHECK(cudaStreamSynchronize(st_), "before free");
    DDRT_CHECK(cudaFree(p));
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    use();
    DDRT_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, st_));
  }
  void download(void* dst, const void* src, size_t bytes) override {
    use();
    DDRT_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, st_));
    DDRT_CHECK(cudaStreamSynchronize(st_));
  }
  void synchronize() override {
    use();
    DDRT_CHECK(cudaStreamSynchronize(st_));
  }
  size_t device_bytes() const override { return held_->load(); }
  size_t decdec_device_bytes() const override { return decdec_held_->load() + comp_scratch_.size(); }

  // ---- weights ----
  std::unique_ptr<Linear> load_linear(const LinearDesc& d, ResidualPlacement where) override;
  std::unique_ptr<KVCache> create_kv_cache(int n_layers, int max_seq, int n_kv_heads, int head_dim,
                                           KvType type) override;

  // ---- ops ----
  void embed(const Linear& table, float* out, const int32_t* ids_host, int T) override {
    use();
    const auto& W = static_cast<const CudaLinear&>(table);
    for (int t = 0; t < T; ++t)
      if (ids_host[t] < 0 || ids_host[t] >= W.d_out)
        throw InvalidArgument("embed: token id " + std::to_string(ids_host[t]) + " outside [0, " +
                              std::to_string(W.d_out) + ")");
    DDRT_CHECK(gpu::launch_embed(W.dev, out, ids_host, T, st_, step_ ? step_id() : nullptr), "embed '" + W.name + "'");
  }
  void rmsnorm(float* out, const float* x, const float* w, int T, int dim, float eps) override {
    use();
    DDRT_CHECK(gpu::launch_rmsnorm(out, x, w, T, dim, eps, st_));
  }
  void matmul(const Linear& W, float* y, const float* x, int T, const DecdecCall& call) override;
  void matmul_group(const Linear* const* Ws, float* const* ys, int n, const float* x, int T,
                    const DecdecCall* calls) override;
  void rope(float* x, int T, int n_heads, int head_dim, int64_t pos0, const float* inv_freq) override {
    use();
    DDRT_CHECK(gpu::launch_rope(x, T, n_heads, head_dim, pos0, inv_freq, st_, step_ ? step_pos() : nullptr));
  }
  void attention(KVCache& kv, int layer, float* out, const float* q, const float* k, const float* v, int T,
                 int n_heads, int64_t pos0) override {
    attention_rope(kv, layer, out, q, k, v, T, n_heads, pos0, nullptr);
  }
  // one launch where the kernel can rotate (decode), else rope_qk and attention
  void rope_attention(KVCache& kv, int layer, float* out, float* q, float* k, const float* v, int T, int n_heads,
                      int64_t pos0, const float* inv_freq) override {
    if (gpu::attn_fuses_rope({T, n_heads, kv.n_kv_heads, kv.head_dim, pos0}))
      attention_rope(kv, layer, out, q, k, v, T, n_heads, pos0, inv_freq);
    else
      Backend::rope_attention(kv, layer, out, q, k, v, T, n_heads, pos0, inv_freq);
  }
  void attention_rope(KVCache& kv, int layer, float* out, const float* q, const float* k, const float* v, int T,
                      int n_heads, int64_t pos0, const float* inv_freq, gpu::AttnDefer* deferred = nullptr);
  // Decode (T = 1) with the deferred merge (gpu::attn_defer_mode: by default where the attention
  // has at most kAttnDeferMaxSplits splits; env DDRT_ATTN_DEFER=0 never, 1 always): the
  // attention leaves its splits' partials in scratch and o's fused GEMV merges them as it reads x
  // (AttnDefer), one launch's counter, round trips and stores fewer on the attention's path.
  // Only where o runs on the fused GEMV without compensation and outside the chain; should the
  // GEMV still refuse, the attention runs again undeferred (the same result, written to out).
  void rope_attention_matmul_add(KVCache& kv, int layer, float* out, float* q, float* k, const float* v, int T,
                                 int n_heads, int64_t pos0, const float* inv_freq, const Linear& Wo, float* y,
                                 float* tmp, const DecdecCall& call) override {
    const auto& W = static_cast<const CudaLinear&>(Wo);
    const bool comp = call.mode != DecdecMode::Off && total_k(call.k_chunk, W.d_in) > 0;
    if (T == 1 && gpu::attn_defer_on() && !comp && !chain_on() && fused_first(W) && gpu::tc_attn_defer_supports(W.dev) &&
        gpu::attn_fuses_rope({T, n_heads, kv.n_kv_heads, kv.head_dim, pos0})) {
      gpu::AttnDefer d;
      attention_rope(kv, layer, out, q, k, v, T, n_heads, pos0, inv_freq, &d);
      if (!d.po) return matmul_add(Wo, y, tmp, out, T, call);  // written to out
      use_keep();
      gpu::TcIo io;
      io.accumulate = true;
      io.ssq_out = norm_parts_out(W.d_out);
      io.attn = d;
      if (matmul_fused1(W, y, out, call, io)) return parts_written(io, y, W.d_out);
      // (q and k were rotated in place only by the rope_qk launch, never by the fused attention)
      attention_rope(kv, layer, out, q, k, v, T, n_heads, pos0, inv_freq);
      return matmul_add(Wo, y, tmp, out, T, call);
    }
    Backend::rope_attention_matmul_add(kv, layer, out, q, k, v, T, n_heads, pos0, inv_freq, Wo, y, tmp, call);
  }
  void add_rmsnorm(float* out, float* x, const float* y, const float* w, int T, int dim, float eps) override {
    use();
    DDRT_CHECK(gpu::launch_add_rmsnorm(out, x, y, w, T, dim, eps, st_));
  }
  void rope_qk(float* q, float* k, int T, int n_heads, int n_kv_heads, int head_dim, int64_t pos0,
               const float* inv_freq) override {
    use();
    DDRT_CHECK(gpu::launch_rope_qk(q, k, T, n_heads, n_kv_heads, head_dim, pos0, inv_freq, st_,
                                   step_ ? step_pos() : nullptr));
  }
  void swiglu(float* out, const float* gate, const float* up, size_t n) override {
    use();
    DDRT_CHECK(gpu::launch_swiglu(out, gate, up, n, st_));
  }
  void add(float* x, const float* y, size_t n) override {
    use();
    DDRT_CHECK(gpu::launch_add(x, y, n, st_));
  }
  void argmax(const float* x, int n, int32_t* out) override {
    use();
    const int64_t st0 = gpu::stamp_regions_taken();
    DDRT_CHECK(gpu::launch_argmax(x, n, out, argmax_scratch_.get(), st_));
    name_stamps(st0, "argmax");
    if (capturing_) step_argmax_out_ = out;  // the step's result, unless an op follows (use())
  }
  // The next attention or fused GEMV launch takes these linears as its L2 prefetch hint
  // (take_hint: their ranges up to that consumer's budget, l2_hint_for).
  void prefetch_hint(const Linear* const* Ws, int n) override {
    hinted_n_ = 0;
    for (int i = 0; i < n && hinted_n_ < kHinted; ++i) hinted_[hinted_n_++] = &static_cast<const CudaLinear&>(*Ws[i]).dev;
  }

  // ---- decode steps as CUDA graphs ----
  // The slots (device: int64 position at byte 0, int32 token id at byte 8) are written by an
  // async copy from pinned host memory before each step; the engine waits for each step's
  // result before the next step_begin/replay, so the host never rewrites a pending copy.
  bool supports_graphs() const override { return true; }
  void step_begin(int64_t pos, int32_t id) override {
    use();
    set_slots(pos, id);
    step_ = true;
  }
  void step_end() override { step_ = false; }
  void capture_begin() override {
    use();
    begin_step_stamps();
    DDRT_CHECK(cudaStreamBeginCapture(st_, cudaStreamCaptureModeThreadLocal));
    capturing_ = true;
    step_argmax_out_ = nullptr;
  }
  // The decode step's timeline (lab, env DDRT_STEP_STAMPS=path.csv): the recorded step's fused
  // GEMV launches write their blocks' %globaltimer stamps (gemv_tc_stamps: start, dependency wait
  // passed, x staged, end, ...) on every replay; at the backend's end the last replay's go to the
  // CSV, a row per block (tools/step_timeline.py reads it: each launch's spread, and the gaps
  // between a launch's last block and the next one's first wait, where the attention and the
  // launch boundaries are). Stamping costs a store per block and stamp.
  static constexpr int kStampRegions = 512;
  void begin_step_stamps() {
    const char* path = std::getenv("DDRT_STEP_STAMPS");
    if (!path || !*path) return;
    // grids up to 8 blocks per SM (the lm head's), and at least 1024 blocks (the attention's: up to
    // 64 splits per kv head); 512 regions of 1056 blocks (an H100's 132 SMs): 40 MB
    stamp_stride_ = std::max<int64_t>(8 * gpu::device_info().n_sm, 1024) * gpu::kTcStamps;
    const size_t bytes = (size_t)kStampRegions * stamp_stride_ * 8;
    if (stamps_.size() < bytes) stamps_ = DevMem(bytes, nullptr, "step stamps (DDRT_STEP_STAMPS)");
    DDRT_CHECK(cudaMemsetAsync(stamps_.get(), 0, bytes, st_), "step stamps");
    stamp_names_.clear();
    gpu::gemv_tc_stamps(static_cast<unsigned long long*>(stamps_.get()), stamp_stride_, kStampRegions);
  }
  // DDRT_STEP_STAMPS: the launches that took a stamp region since stamp_regions_taken() was `before`
  void name_stamps(int64_t before, const std::string& what) {
    for (int64_t i = before; i < gpu::stamp_regions_taken(); ++i) stamp_names_.push_back(what);
  }
  void write_step_stamps() noexcept {
    const char* path = std::getenv("DDRT_STEP_STAMPS");
    if (!path || !*path || stamp_names_.empty() || !stamps_.get()) return;
    const int64_t n = (int64_t)stamp_names_.size(), K = gpu::kTcStamps, nb = stamp_stride_ / K;
    std::vector<unsigned long long> h((size_t)n * stamp_stride_);
    if (cudaMemcpy(h.data(), stamps_.get(), h.size() * 8, cudaMemcpyDeviceToHost) != cudaSuccess) return;
    unsigned long long t0 = ~0ull;
    for (size_t i = 0; i < h.size(); i += K)
      if (h[i]) t0 = std::min(t0, h[i]);
    FILE* f = std::fopen(path, "w");
    if (!f) return;
    // (the compensation blocks' slots 5 and 6: their selection done, the selection read back)
    // and slot 8's time: their last chunk's x loaded and bucketed)
    std::fprintf(f, "launch,name,block,role,sm,start,wait,ready,gather,end,select,taken,bucketed\n");
    for (int64_t l = 0; l < n; ++l)
      for (int64_t b = 0; b < nb; ++b) {
        const unsigned long long* st = h.data() + l * stamp_stride_ + b * K;
        if (!st[0]) continue;
        std::fprintf(f, "%lld,\"%s\",%lld,%s,%llu", (long long)l, stamp_names_[l].c_str(), (long long)b,
                     st[3] ? "comp" : "base", st[7] ? st[7] - 1 : 0ull);
        for (int slot : {0, 1, 2, 3, 4, 5, 6}) st[slot] ? std::fprintf(f, ",%.3f", (st[slot] - t0) / 1e3) : std::fprintf(f, ",");
        st[3] && st[8] ? std::fprintf(f, ",%.3f", (st[8] - t0) / 1e3) : std::fprintf(f, ",");  // (slot 3: comp)
        std::fprintf(f, "\n");
      }
    std::fclose(f);
  }
  void capture_end() override {
    // a step that ends with argmax: the graph's last kernel advances the step slots to the next
    // step (replay_n). Every op clears step_argmax_out_ first (use(), use_keep()), and argmax sets
    // it after: it is set here only when argmax was the last op captured.
    int32_t* const last = replay_n_on() ? step_argmax_out_ : nullptr;
    use();
    cudaError_t adv = cudaSuccess;
    if (last)
      adv = gpu::launch_step_advance(static_cast<int64_t*>(slots_.get()),
                                     reinterpret_cast<int32_t*>(static_cast<uint8_t*>(slots_.get()) + 8), last,
                                     static_cast<int32_t*>(step_log_.get()), kStepLog, st_);
    advances_ = last && adv == cudaSuccess;
    capturing_ = false;
    gpu::gemv_tc_stamps(nullptr);
    cudaGraph_t g = nullptr;
    const cudaError_t ec = cudaStreamEndCapture(st_, &g);  // ended whatever the advance's launch did
    DDRT_CHECK(adv, "decode step advance");
    DDRT_CHECK(ec);
    if (exec_) {
      cudaGraphExecDestroy(exec_);
      exec_ = nullptr;
    }
    const cudaError_t e = cudaGraphInstantiate(&exec_, g, 0);
    cudaGraphDestroy(g);
    DDRT_CHECK(e, "decode step graph");
  }
  void replay(int64_t pos, int32_t id) override {
    use();
    if (!exec_) throw InvalidArgument("replay: no decode step has been captured");
    set_slots(pos, id);
    DDRT_CHECK(cudaGraphLaunch(exec_, st_));
  }
  // The captured step's last kernel moves the slots on (capture_end), so the replays need no
  // host in between; their results come back from the step log, one copy per kStepLog steps.
  // On by default since its two-round H200 A/B (2026-12-05, sixth session: llama3-8b 3-bit 396.2
  // -> 400.7 tok/s, smollm2-135m 920.2 -> 934.5); env DDRT_REPLAY_N=0 off (read when a step is
  // recorded and per call; off, the step records no advance and the engine replays step by step,
  // waiting for each token).
  static bool replay_n_on() { return gpu::env_int("DDRT_REPLAY_N", 1) == 1; }
  bool replay_n(int64_t pos, int32_t id, int n, int32_t* ids) override {
    if (!replay_n_on() || !exec_ || !advances_ || n <= 0) return false;
    use();
    set_slots(pos, id);
    int32_t* log = static_cast<int32_t*>(step_log_.get());
    for (int done = 0; done < n;) {
      const int m = std::min(kStepLog, n - done);
      DDRT_CHECK(cudaMemsetAsync(log, 0, sizeof(int32_t), st_), "decode step log");
      for (int i = 0; i < m; ++i) DDRT_CHECK(cudaGraphLaunch(exec_, st_), "decode step replay");
      DDRT_CHECK(cudaMemcpyAsync(ids + done, log + 1, (size_t)m * sizeof(int32_t), cudaMemcpyDeviceToHost, st_),
                 "decode step log");
      DDRT_CHECK(cudaStreamSynchronize(st_), "decode steps");
      done += m;
    }
    return true;
  }

 private:
  // Every op starts here: the device, and the queued chain of fused GEMVs launched first (so the
  // stream's order is the calls' order). The fused-GEMV entry points call use_keep() instead and
  // queue themselves (matmul_fused) or flush before anything else they launch.
  void use() const {
    DDRT_CHECK(cudaSetDevice(dev_));
    step_argmax_out_ = nullptr;
    norm_parts_of_ = nullptr;
    flush_chain();
  }
  void use_keep() const {
    DDRT_CHECK(cudaSetDevice(dev_));
    step_argmax_out_ = nullptr;
    norm_parts_of_ = nullptr;
  }
  // The norm's sums from the producer (TcIo::ssq_out / ssq_in): a fused GEMV launch that adds into
  // the residual stream writes each 16-row tile's sum of squares to norm_parts_, and the next op,
  // when it is a fused launch normalizing that same stream, reads those (ceil(d / 16) floats)
  // instead of each of its blocks reading all of x. Any other op in between (every op calls use()
  // or use_keep(), which forget the sums) makes the consumer read x as before. Lab, off by
  // default (gemv_tc_norm_parts: measured neutral); env DDRT_NORM_PARTS=1 on; never with the chain.
  static bool norm_parts_on() { return gpu::gemv_tc_norm_parts(); }
  // where the producer of d rows writes its sums (null: none), before the launch
  float* norm_parts_out(int64_t d) {
    if (!norm_parts_on() || chain_on()) return nullptr;
    return static_cast<float*>(zeroed_buffer(norm_parts_, (d + 15) / 16 * 4, "norm sums"));
  }
  // the producer's sums for x of d elements, if the last op wrote them for x (before use_keep())
  const float* norm_parts_in(const float* x, int64_t d) const {
    return norm_parts_on() && !chain_on() && x && x == norm_parts_of_ && norm_parts_n_ == (d + 15) / 16
               ? static_cast<const float*>(norm_parts_.get())
               : nullptr;
  }
  void flush_chain() const {
    if (chain_ && gpu::tc_chain_size(chain_.get()) > 0)
      DDRT_CHECK(gpu::tc_chain_flush(chain_.get(), static_cast<unsigned*>(chain_bar_.get()), st_), "fused GEMV chain");
  }
  // env DDRT_TC_CHAIN=1: T = 1 fused GEMVs without compensation queue up and run as one launch
  // (gemv_tc.cuh); off until measured on a GPU. Read per call (host side only: graphs replay).
  static bool chain_on() { return gpu::env_int("DDRT_TC_CHAIN", 0) == 1; }
  static constexpr size_t kSlotBytes = 16;
  const int64_t* step_pos() const { return static_cast<const int64_t*>(slots_.get()); }
  const int32_t* step_id() const { return reinterpret_cast<const int32_t*>(static_cast<const uint8_t*>(slots_.get()) + 8); }
  void set_slots(int64_t pos, int32_t id) {
    uint8_t* h = static_cast<uint8_t*>(h_slots_.host());
    memcpy(h, &pos, 8);
    memcpy(h + 8, &id, 4);
    DDRT_CHECK(cudaMemcpyAsync(slots_.get(), h, kSlotBytes, cudaMemcpyHostToDevice, st_), "decode step slots");
  }
  // Scratch of at least `bytes` (grows; growing waits for the stream so no kernel still reads
  // the old buffer). Not counted in device_bytes (it is working memory, not weights/caches).
  void* scratch(size_t bytes) {
    if (scratch_.size() < bytes) {
      if (capturing_)
        throw CudaError("CUDA: scratch would grow while capturing a decode graph (run the step once first)");
      DDRT_CHECK(cudaStreamSynchronize(st_), "before growing scratch");
      scratch_ = DevMem();
      scratch_ = DevMem(bytes + bytes / 4, nullptr, "scratch");
    }
    return scratch_.get();
  }
  // bytes of zeroed memory in buf (grows like scratch(); counters: every launch that uses them
  // leaves them zero).
  void* zeroed_buffer(DevMem& buf, int64_t bytes, const char* what) {
    if (buf.size() < (size_t)bytes) {
      if (capturing_)
        throw CudaError(std::string("CUDA: ") + what + " would grow while capturing a decode graph (run the step once first)");
      DDRT_CHECK(cudaStreamSynchronize(st_), std::string("before growing the ") + what);
      buf = DevMem();
      buf = DevMem((size_t)bytes, nullptr, what);
      DDRT_CHECK(cudaMemsetAsync(buf.get(), 0, buf.size(), st_));
    }
    return buf.get();
  }
  unsigned* zeroed_counters(DevMem& buf, int64_t n, const char* what) {
    return static_cast<unsigned*>(zeroed_buffer(buf, n * (int64_t)sizeof(unsigned), what));
  }
  unsigned* attn_counters(int64_t n) { return zeroed_counters(attn_cnt_, n, "attention counters"); }
  // The fused GEMV's scratch for `plan` (grows; the counters start at 0 and every launch leaves
  // them 0). Returns false when the plan is not usable.
  bool tc_scratch(const gpu::TcPlan& plan, const char* what) {
    if (!plan.ok) return false;
    const size_t part = gpu::tc_part_floats(plan) * 4, cnt = (size_t)gpu::tc_cnt_ints(plan.n_tiles) * 4;
    if (tc_part_.size() >= part && tc_cnt_.size() >= cnt) return true;
    if (capturing_)
      throw CudaError("CUDA: GEMV scratch would grow while capturing a decode graph (run the step once first)");
    flush_chain();  // the queued launches point at the buffers about to be replaced
    DDRT_CHECK(cudaStreamSynchronize(st_), what);
    if (tc_part_.size() < part) {
      tc_part_ = DevMem();
      tc_part_ = DevMem(part, nullptr, "GEMV partials");
    }
    if (tc_cnt_.size() < cnt) {
      tc_cnt_ = DevMem();
      tc_cnt_ = DevMem(cnt, nullptr, "GEMV tile counters");
      DDRT_CHECK(cudaMemsetAsync(tc_cnt_.get(), 0, cnt, st_), what);
    }
    return true;
  }
  // One linear call's DecDEC work (T tokens): the selection into sel, the term into y or partial.
  struct CompJob {
    bool active = false;
    gpu::CompParams p;
    const CudaLinear* W = nullptr;
    const float* x = nullptr;
    int T = 0;
    int32_t* sel = nullptr;
    float* sel_xs = nullptr;  // [T][kmax] beside sel (the fused launch's published x values)
    float* partial = nullptr;
    std::string what;
  };
  // part_floats: scratch floats for a partial term (the fused launch's cpart, the side stream's
  // partial), beside sel [T][kmax]
  CompJob prepare_comp(const CudaLinear& W, const float* x, int T, const DecdecCall& call, int64_t part_floats);
  // T = 1 on the fused tensor-core GEMV (compensation in the same launch) for n linears reading
  // x (a group: gemv_tc_groupable, one DecDEC call for all); false: not possible for this shape /
  // setting, nothing was launched.
  // io: the input's swiglu or rmsnorm, and y = or y += (kernels.cuh)
  bool matmul_fused(const CudaLinear* const* Ws, float* const* ys, int n, const float* x, const DecdecCall& call,
                    const std::string& what, const gpu::TcIo& io = {});
  // matmul_fused of one linear
  bool matmul_fused1(const CudaLinear& W, float* y, const float* x, const DecdecCall& call, const gpu::TcIo& io) {
    const CudaLinear* Ws[1] = {&W};
    float* ys[1] = {y};
    return matmul_fused(Ws, ys, 1, x, call, "matmul '" + W.name + "'", io);
  }
  // T = 1 with the fused GEMV (as matmul decides): one launch computes swiglu(gate, up) as it
  // reads its input; otherwise the two ops
  void matmul_swiglu(const Linear& lin, float* y, float* gate, const float* up, int T,
                     const DecdecCall& call) override {
    use_keep();
    const auto& W = static_cast<const CudaLinear&>(lin);
    // measured (H100, same-machine A/B): +2.1 % decode on the Llama-3-8B shape (down 4096x14336),
    // -3 % on SmolLM2-135M's (576x1536, latency-bound: the input staging is its critical path), so
    // only large matrices take it. With compensation too: without the fusion there, the tuner
    // measured down's k_chunk 1 at +0.107 ms per token over the fused base (the swiglu launch), with
    // it +0.057 ms. Env DDRT_FUSE_SWIGLU=0 runs the two ops, =1 fuses every size
    if (T == 1 && fuse_swiglu(W) && fused_first(W)) {
      gpu::TcIo io;
      io.up = up;
      if (matmul_fused1(W, y, gate, call, io)) return;
    }
    Backend::matmul_swiglu(lin, y, gate, up, T, call);
  }
  static bool fuse_swiglu(const CudaLinear& W) {
    const int env = gpu::env_int("DDRT_FUSE_SWIGLU", -1);  // read per call (host side only: graphs replay)
    return env >= 0 ? env != 0 : W.d_out * W.d_in >= (int64_t)8 << 20;
  }
  // after a fused launch with io: whether it left the norm's sums of y (d rows)
  void parts_written(const gpu::TcIo& io, const float* y, int64_t d) {
    if (!io.ssq_out) return;
    norm_parts_of_ = y;
    norm_parts_n_ = (d + 15) / 16;
  }
  // T = 1 with the fused GEMV: it adds its result into y itself (y += as it writes a tile)
  void matmul_add(const Linear& lin, float* y, float* tmp, const float* x, int T, const DecdecCall& call) override {
    use_keep();
    const auto& W = static_cast<const CudaLinear&>(lin);
    if (T == 1 && fused_first(W)) {
      gpu::TcIo io;
      io.accumulate = true;
      io.ssq_out = norm_parts_out(W.d_out);
      if (matmul_fused1(W, y, x, call, io)) return parts_written(io, y, W.d_out);
    }
    Backend::matmul_add(lin, y, tmp, x, T, call);
  }
  void matmul_swiglu_add(const Linear& lin, float* y, float* tmp, float* gate, const float* up, int T,
                         const DecdecCall& call) override {
    use_keep();
    const auto& W = static_cast<const CudaLinear&>(lin);
    if (T == 1 && fused_first(W)) {
      if (fuse_swiglu(W)) {
        gpu::TcIo io;
        io.up = up;
        io.accumulate = true;
        io.ssq_out = norm_parts_out(W.d_out);
        if (matmul_fused1(W, y, gate, call, io)) return parts_written(io, y, W.d_out);
      }
      // the swiglu launch, then the adding GEMV (also where the swiglu cannot be read inside: a
      // selection by pre-kernel ranks the input as it is)
      swiglu(gate, gate, up, (size_t)W.d_in);
      matmul_add(lin, y, tmp, gate, T, call);
      return;
    }
    Backend::matmul_swiglu_add(lin, y, tmp, gate, up, T, call);
  }
  // T = 1 with the fused GEMV: its blocks normalize x where they read it (rmsnorm_matmul_group's
  // xb is not written)
  void rmsnorm_matmul_group(const Linear* const* Ws, float* const* ys, int n, float* xb, const float* x,
                            const float* w, float eps, int T, const DecdecCall* calls) override {
    const float* parts = n > 0 ? norm_parts_in(x, Ws[0]->d_in) : nullptr;
    use_keep();
    const CudaLinear* cw[gpu::kTcMaxMembers];
    if (T == 1 && consumers_fusable(Ws, n, calls, cw)) {
      std::string what = "matmul group";
      for (int m = 0; m < n; ++m) what += (m ? ", '" : " '") + cw[m]->name + "'";
      gpu::TcIo io;
      io.nw = w;
      io.eps = eps;
      io.ssq_in = parts;
      io.ssq_n = parts ? (Ws[0]->d_in + 15) / 16 : 0;
      if (matmul_fused(cw, ys, n, x, calls[0], what, io)) return;
    }
    Backend::rmsnorm_matmul_group(Ws, ys, n, xb, x, w, eps, T, calls);
  }
  // T = 1 with the fused GEMV: the gate/up launch writes swiglu(gate, up) into gate itself (its
  // tile finishers, per pair of tiles: TcArgs::swiglu_pairs); otherwise the two ops
  void rmsnorm_matmul_swiglu(const Linear* const* Ws, float* gate, float* up, float* xb, const float* x,
                             const float* w, float eps, int T, const DecdecCall* calls) override {
    const float* parts = norm_parts_in(x, Ws[0]->d_in);
    use_keep();
    const CudaLinear* cw[gpu::kTcMaxMembers];
    if (T == 1 && pairs_fusable(Ws, calls, cw)) {
      float* const ys[2] = {gate, up};
      gpu::TcIo io;
      io.nw = w;
      io.eps = eps;
      io.ssq_in = parts;
      io.ssq_n = parts ? (Ws[0]->d_in + 15) / 16 : 0;
      io.swiglu_pairs = true;
      if (matmul_fused(cw, ys, 2, x, calls[0], "matmul group '" + cw[0]->name + "', '" + cw[1]->name + "' with swiglu", io))
        return;
    }
    Backend::rmsnorm_matmul_swiglu(Ws, gate, up, xb, x, w, eps, T, calls);
  }
  bool pairs_fusable(const Linear* const* Ws, const DecdecCall* calls, const CudaLinear** cw) const {
    return Ws[0]->d_out == Ws[1]->d_out && Ws[0]->d_out % 16 == 0 && consumers_fusable(Ws, 2, calls, cw);
  }
  // The swiglu in the gate/up launch where down would otherwise run it as a launch of its own
  // (below fuse_swiglu's size: SmolLM2-135M's down). On by default since its H100 A/B (eighth
  // session, two rounds: smollm2-135m 947.0 -> 972.3 tok/s; llama3-8b, whose down reads (gate, up)
  // itself, unchanged; at every size instead, llama3-8b was 2.3 % slower); env DDRT_SWIGLU_PAIRS=0 off
  bool swiglu_after_gate_up(const Linear* const* gate_up, const DecdecCall* calls, const Linear& down,
                            const DecdecCall& dcall, int T) const override {
    const auto& D = static_cast<const CudaLinear&>(down);
    if (T != 1 || gpu::env_int("DDRT_SWIGLU_PAIRS", 1) == 0 || (fuse_swiglu(D) && fused_first(D))) return false;
    const CudaLinear* cw[gpu::kTcMaxMembers];
    return pairs_fusable(gate_up, calls, cw);
  }
  // Whether the fused GEMV can read rmsnorm(x) for these linears and calls (one launch; cw: them)
  bool consumers_fusable(const Linear* const* Ws, int n, const DecdecCall* calls, const CudaLinear** cw) const {
    if (n < 1 || n > gpu::kTcMaxMembers) return false;
    const gpu::DevLinear* devs[gpu::kTcMaxMembers];
    for (int m = 0; m < n; ++m) {
      cw[m] = static_cast<const CudaLinear*>(Ws[m]);
      devs[m] = &cw[m]->dev;
      if (!fused_first(*cw[m])) return false;
      // the other modes select in a pre-kernel that reads x as it is, not normalized
      if (calls[m].mode != DecdecMode::Off && calls[m].k_chunk > 0 && calls[m].mode != DecdecMode::Approx) return false;
    }
    gpu::DevLinear shape;
    return (n == 1 || group_fusable(cw, n, calls)) && gpu::gemv_tc_groupable(devs, n, &shape);
  }
  // The residual add inside the producer and the norm inside the consumers, each one fused GEMV
  // launch. On by default (H100 A/B, two rounds: llama3-8b 3-bit decode 347 -> 356.5 tok/s,
  // smollm2-135m 969 -> 1002); env DDRT_FUSE_NORM=0 keeps the op sequence (the tests' twin)
  bool fuses_add_norm(const Linear& producer, const DecdecCall& pcall, const Linear* const* consumers, int n,
                      const DecdecCall* ccalls, int T) const override {
    if (gpu::env_int("DDRT_FUSE_NORM", 1) != 1 || T != 1) return false;
    const auto& P = static_cast<const CudaLinear&>(producer);
    const gpu::DevLinear* pd[1] = {&P.dev};
    gpu::DevLinear shape;
    if (!fused_first(P) || !gpu::gemv_tc_groupable(pd, 1, &shape)) return false;
    return n == 0 || fuses_norm(consumers, n, ccalls, T);
  }
  // The consumers' half of fuses_add_norm: the fused GEMV normalizes x where it reads it (T = 1)
  bool fuses_norm(const Linear* const* consumers, int n, const DecdecCall* calls, int T) const override {
    const CudaLinear* cw[gpu::kTcMaxMembers];
    return gpu::env_int("DDRT_FUSE_NORM", 1) == 1 && T == 1 && consumers_fusable(consumers, n, calls, cw);
  }
  // Whether a T = 1 call of W goes to the fused GEMV first: every uniform 3/4-bit matrix (since
  // the int8 tensor-core version, 4-bit too: llama3-8b 4-bit decode 313 vs 295 tok/s with the
  // CUDA-core kernel, same machine), unless the compensation runs on the side stream.
  bool fused_first(const CudaLinear& W) const {
    return !is_float(W.type) && !comp_parallel_ && gpu::gemv_tc_enabled() && gpu::gemv_tc_supports(W.dev);
  }
  // Whether a group's calls can share one fused launch (same DecDEC setting and selection).
  bool group_fusable(const CudaLinear* const* Ws, int n, const DecdecCall* calls) const;
  // select + gather of job: y += the compensation (add) or partial = it
  void launch_comp_gather(const CompJob& job, float* out, bool add, cudaStream_t st);
  // Tokens per select + gather in prefill on one stream: sel [slice][kmax] within 256 KB.
  static int comp_slice(const DecdecCall& call, int64_t d_in) {
    const int64_t kmax = std::max<int64_t>(1, total_k(call.k_chunk, d_in));
    return (int)std::max<int64_t>(1, std::min<int64_t>(256, (256 << 10) / (4 * kmax)));
  }
  // Scratch of the compensation alone: the side stream uses it while the main stream uses
  // scratch() (grows only when both streams are idle).
  void* comp_scratch(size_t bytes) {
    if (comp_scratch_.size() < bytes) {
      if (capturing_)
        throw CudaError("CUDA: DecDEC scratch would grow while capturing a decode graph (run the step once first)");
      DDRT_CHECK(cudaStreamSynchronize(side_), "before growing DecDEC scratch");
      DDRT_CHECK(cudaStreamSynchronize(st_), "before growing DecDEC scratch");
      comp_scratch_ = DevMem();
      comp_scratch_ = DevMem(bytes + bytes / 4, nullptr, "DecDEC scratch");
    }
    return comp_scratch_.get();
  }

  int dev_;
  cudaDeviceProp prop_{};
  // prefetch_hint's linears, pending until the next attention or fused GEMV launch takes them
  static constexpr int kHinted = 4;
  const gpu::DevLinear* hinted_[kHinted] = {};
  int hinted_n_ = 0;
  // The pending hint's ranges up to `bytes` (none when 0), and no hint pending afterwards.
  gpu::L2Hint take_hint(int64_t bytes) {
    const int n = hinted_n_;
    hinted_n_ = 0;
    return bytes > 0 && n > 0 ? gpu::l2_hint_for(hinted_, n, bytes) : gpu::L2Hint();
  }
  // Bytes the attention brings into L2 for the linears after it: lab knob DDRT_L2_PF_MB=N (MB;
  // -1: 2/5 of the L2, H100: 20 MB of 50). Off by default: measured neutral on llama3-8b 3-bit
  // (349.5 vs 350.4 tok/s) and 3 % slower on smollm2-135m (893 vs 924), H100, two rounds
  // (BENCHMARKS 2026-12-05 fifth session).
  int64_t l2_attn_force_ = -1;  // cuda_set_l2_prefetch; < 0: the environment
  int64_t l2_attn_bytes() const {
    if (l2_attn_force_ >= 0) return l2_attn_force_;
    static const int mb = gpu::env_int("DDRT_L2_PF_MB", 0);
    return mb >= 0 ? (int64_t)mb << 20 : (int64_t)prop_.l2CacheSize * 2 / 5;
  }
  // Bytes a fused GEMV's warps prefetch for the linears after it: lab knob DDRT_L2_NEXT=1, 2/5 of
  // the L2 (measured 2-4 % slower on the H100, same session); 0 by default.
  int64_t l2_next_bytes() const {
    static const bool on = gpu::env_int("DDRT_L2_NEXT", 0) == 1;
    return on ? (int64_t)prop_.l2CacheSize * 2 / 5 : 0;
  }
  cudaStream_t st_ = nullptr;
  Counter held_;
  Counter decdec_held_;  // the part of held_ that DecDEC adds (decdec_device_bytes)
  DevMem scratch_;
  DevMem attn_cnt_;  // attention: one counter per (query, kv-head slice), zero between launches
  DevMem f_cnt_;     // the float GEMV's row-group queue (gpu::kGemvFCounters), zero between launches
  DevMem norm_parts_;  // the norm's sums per 16 rows of the residual stream (norm_parts_out)
  mutable const float* norm_parts_of_ = nullptr;  // the stream they are of (null: none valid)
  int64_t norm_parts_n_ = 0;
  DevMem stamps_;                         // DDRT_STEP_STAMPS: kStampRegions regions of stamp_stride_
  int64_t stamp_stride_ = 0;
  std::vector<std::string> stamp_names_;  // the stamped launches in order
  DevMem tc_part_, tc_cnt_;  // the fused GEMV's partial slots and tile counters (all 0 between launches)
  DevMem slots_;
  PinnedMem h_slots_;
  // replay_n: the tokens of back-to-back replays ([0] count, then up to kStepLog ids), the last
  // captured argmax's output, and whether the captured step advances its slots itself
  static constexpr int kStepLog = 1024;
  DevMem step_log_;
  mutable int32_t* step_argmax_out_ = nullptr;
  bool advances_ = false;
  DevMem comp_scratch_;
  DevMem argmax_scratch_;  // partials + the counter of the one-launch argmax
  cudaStream_t side_ = nullptr;       // DecDEC select + gather beside the base GEMV
  cudaEvent_t fork_ = nullptr, join_ = nullptr;
  bool comp_parallel_ = false;        // env DDRT_DECDEC_PARALLEL=1: select + gather on side_
  bool step_ = false, capturing_ = false;
  cudaGraphExec_t exec_ = nullptr;
  std::unique_ptr<gpu::TcChainQueue, void (*)(gpu::TcChainQueue*)> chain_{nullptr, gpu::tc_chain_free};  // DDRT_TC_CHAIN's queue
  DevMem chain_bar_;                    // their grid barrier's two counters, zero between launches
};

// Uploads `bytes` of host data into a new DevMem of W.
template <class T>
T* put(CudaLinear& W, const Counter& held, const void* src, size_t bytes, cudaStream_t st, const char* what) {
  W.mem.emplace_back(bytes, held, "'" + W.name + "' " + what);
  DDRT_CHECK(cudaMemcpyAsync(W.mem.back().get(), src, bytes, cudaMemcpyHostToDevice, st), what);
  return static_cast<T*>(W.mem.back().get());
}

std::unique_ptr<Linear> CudaBackend::load_linear(const LinearDesc& d, ResidualPlacement where) {
  use();
  const std::string what = "linear '" + d.name + "'";
  check_linear_desc(d);

  auto W = std::make_unique<CudaLinear>();
  W->name = d.name;
  W->d_out = d.d_out;
  W->d_in = d.d_in;
  W->type = d.type;
  gpu::DevLinear& g = W->dev;
  g.type = d.type;
  g.d_out = d.d_out;
  g.d_in = d.d_in;
  g.bits = type_bits(d.type);
  g.group = type_group(d.type);

  if (is_float(d.type)) {
    const int64_t es = d.type == TensorType::F32 ? 4 : 2;
    g.row_stride = (d.d_in + 7) / 8 * 8;
    std::vector<uint8_t> padded((size_t)(d.d_out * g.row_stride * es));
    gpu::pad_rows(d.data, d.d_out, d.d_in * es, g.row_stride * es, 0, padded.data());
    g.fdata = put<void>(*W, held_, padded.data(), padded.size(), st_, "weights");
    DDRT_CHECK(cudaStreamSynchronize(st_));  // `padded` dies here
  } else {
    g.row_vecs = gpu::row_vecs(d.d_in, g.bits);
    // with unit images (uniform 3/4-bit on sm_90: the fused GEMV's bulk ring), the codes and
    // scales go up only for the pack kernel and are freed once the images are made: the weights
    // are on the GPU once, and every reader takes them from the images (DevLinear::units)
    const bool images = is_uniform(d.type) && gpu::gemv_tc_supports(g) && gpu::gemv_tc_bulk_wanted();
    DevMem staged_codes, staged_sm;  // freed at the end of this block, after its synchronize
    auto upload = [&](DevMem& staged, const void* src, size_t bytes, const char* part) -> void* {
      if (!images) return put<void>(*W, held_, src, bytes, st_, part);
      staged = DevMem(bytes, held_, "'" + W->name + "' " + part + " (before the unit images)");
      DDRT_CHECK(cudaMemcpyAsync(staged.get(), src, bytes, cudaMemcpyHostToDevice, st_), part);
      return staged.get();
    };
    std::vector<uint32_t> codes((size_t)(d.d_out * g.row_vecs * 4));
    gpu::repack_codes(d.data, d.d_out, d.d_in, g.bits, codes.data());
    g.codes = static_cast<const uint4*>(upload(staged_codes, codes.data(), codes.size() * 4, "codes"));
    const uint8_t* tables = d.data + d.d_out * row_code_bytes(d.d_in, g.bits);
    std::vector<uint32_t> sm;
    std::vector<float> lut;
    if (is_uniform(d.type)) {
      const int64_t ng = n_groups(d.d_in, g.group), n = d.d_out * ng;
      g.n_groups = gpu::sm_row_groups(d.d_in, g.bits, g.group);
      std::vector<uint16_t> s(n), m(n);
      memcpy(s.data(), tables, n * 2);
      memcpy(m.data(), tables + 2 * n, n * 2);
      sm.resize(d.d_out * g.n_groups);
      gpu::interleave_scales(s.data(), m.data(), d.d_out, ng, g.n_groups, sm.data());
      g.sm = static_cast<const __half2*>(upload(staged_sm, sm.data(), sm.size() * 4, "scales"));
      if (images) {
        W->mem.emplace_back(gpu::gemv_tc_units_bytes(g), held_, "'" + W->name + "' unit images");
        uint4* u = static_cast<uint4*>(W->mem.back().get());
        DDRT_CHECK(gpu::gemv_tc_pack(g, u, st_), "unit images");
        g.units = u;
        g.codes = nullptr;
        g.sm = nullptr;
      }
    } else {
      lut.resize((size_t)(d.d_out << g.bits));
      for (size_t i = 0; i < lut.size(); ++i) lut[i] = f16_to_f32(rd16(tables + 2 * i));
      g.lut = put<float>(*W, held_, lut.data(), lut.size() * 4, st_, "lut");
    }
    DDRT_CHECK(cudaStreamSynchronize(st_));  // host staging vectors die here
  }

  if (d.residual) {
    W->has_residual = true;
    gpu::DevResidual& r = W->res;
    const int64_t rb = res_row_bytes(d.d_out);
    r.row_pitch = (rb + 15) / 16 * 16;
    const size_t bytes = (size_t)(d.d_in * r.row_pitch);
    if (where == ResidualPlacement::Host) {
      W->pinned = PinnedMem(bytes, what + " residual");
      gpu::pad_rows(d.residual, d.d_in, rb, r.row_pitch, 0x88, static_cast<uint8_t*>(W->pinned.host()));
      r.rows = static_cast<const uint8_t*>(W->pinned.dev());
    } else {
      std::vector<uint8_t> rows(bytes);
      gpu::pad_rows(d.residual, d.d_in, rb, r.row_pitch, 0x88, rows.data());
      r.rows = put<uint8_t>(*W, held_, rows.data(), bytes, st_, "residual");
      DDRT_CHECK(cudaStreamSynchronize(st_));
    }
    std::vector<float> rs(d.d_out);
    for (int64_t o = 0; o < d.d_out; ++o) rs[o] = f16_to_f32(rd16((const uint8_t*)(d.residual_scale + o)));
    if (where == ResidualPlacement::Host) {  // beside the rows: the GPU keeps only scratch
      W->pinned_rscale = PinnedMem(rs.size() * 4, what + " residual scales");
      memcpy(W->pinned_rscale.host(), rs.data(), rs.size() * 4);
      r.rscale = static_cast<const float*>(W->pinned_rscale.dev());
    } else {
      r.rscale = put<float>(*W, held_, rs.data(), rs.size() * 4, st_, "residual scales");
      W->count_decdec(decdec_held_, rs.size() * 4 + bytes);
    }
    DDRT_CHECK(cudaStreamSynchronize(st_));
  }
  if (d.thresholds) {
    W->has_thresholds = true;
    W->thresholds_host.assign(d.thresholds, d.thresholds + d.d_in);  // floors are made on the host
  }
  if (d.ranking) {
    const std::vector<int32_t> rank_pos = rank_positions(d);
    W->has_ranking = true;
    W->ranking_host.assign(d.ranking, d.ranking + d.d_in);
    if (where == ResidualPlacement::Host) {  // read by the static selection only: zero-copy
      W->pinned_rank = PinnedMem((size_t)d.d_in * 4, what + " ranking");
      memcpy(W->pinned_rank.host(), rank_pos.data(), (size_t)d.d_in * 4);
      W->res.rank_pos = static_cast<const int32_t*>(W->pinned_rank.dev());
    } else {
      W->res.rank_pos = put<int32_t>(*W, held_, rank_pos.data(), d.d_in * 4, st_, "ranking");
      W->count_decdec(decdec_held_, (size_t)d.d_in * 4);
      DDRT_CHECK(cudaStreamSynchronize(st_));
    }
  }
  if (!is_float(d.type) && gpu::gemv_tc_supports(g)) tc_scratch(gpu::gemv_tc_plan(g, 0, 0), "load");
  DDRT_CHECK(cudaStreamSynchronize(st_), what);
  return W;
}

std::unique_ptr<KVCache> CudaBackend::create_kv_cache(int n_layers, int max_seq, int n_kv_heads, int head_dim,
                                                      KvType type) {
  use();
  if (n_layers <= 0 || max_seq <= 0 || n_kv_heads <= 0 || head_dim <= 0)
    throw InvalidArgument("KV cache: every dimension must be positive");
  if (type != KvType::F32 && type != KvType::F16) throw InvalidArgument("KV cache: unknown element type");
  auto kv = std::make_unique<CudaKVCache>();
  kv->n_layers = n_layers;
  kv->max_seq = max_seq;
  kv->n_kv_heads = n_kv_heads;
  kv->head_dim = head_dim;
  kv->type = type;
  const size_t bytes = (size_t)n_layers * max_seq * n_kv_heads * head_dim * kv_elem_bytes(type);
  kv->k = DevMem(bytes, held_, "KV cache keys");
  kv->v = DevMem(bytes, held_, "KV cache values");
  DDRT_CHECK(cudaMemsetAsync(kv->k.get(), 0, bytes, st_));
  DDRT_CHECK(cudaMemsetAsync(kv->v.get(), 0, bytes, st_));
  return kv;
}

void CudaBackend::matmul(const Linear& lin, float* y, const float* x, int T, const DecdecCall& call) {
  use_keep();
  const auto& W = static_cast<const CudaLinear&>(lin);
  if (T <= 0) return;
  const std::string what = "matmul '" + W.name + "'";
  const gpu::DevLinear& g = W.dev;
  // T = 1: the fused tensor-core GEMV (uniform 3/4-bit, fused_first) carries the compensation in
  // its own launch
  if (T == 1 && fused_first(W) && matmul_fused1(W, y, x, call, {})) return;
  flush_chain();
  // DecDEC in separate kernels. Side stream (the paper's design, DDRT_DECDEC_PARALLEL=1): select +
  // gather into partial [T][d_out] beside the base GEMV; only the final reduce touches y, on the
  // main stream after both (race-free by stream order). One stream: after the base GEMV, select +
  // gather add into y directly, comp_slice tokens at a time, so DecDEC's scratch (sel) does not
  // grow with the prompt.
  const int slice = comp_slice(call, W.d_in), T0 = comp_parallel_ ? T : std::min(T, slice);
  CompJob job = prepare_comp(W, x, T0, call, comp_parallel_ ? (int64_t)T * W.d_out : 0);
  if (job.active && comp_parallel_) {
    DDRT_CHECK(cudaEventRecord(fork_, st_));
    DDRT_CHECK(cudaStreamWaitEvent(side_, fork_, 0));
    launch_comp_gather(job, job.partial, false, side_);
    DDRT_CHECK(cudaEventRecord(join_, side_));
  }
  if (T == 1 && is_float(W.type) && ((uintptr_t)x & 15) == 0) {
    const int64_t st0 = gpu::stamp_regions_taken();
    unsigned* q = zeroed_counters(f_cnt_, gpu::kGemvFCounters, "float GEMV counters");
    DDRT_CHECK(gpu::launch_gemv_f(g, y, x, prop_.multiProcessorCount, q, st_), what);
    name_stamps(st0, what);
  } else if (T == 1 && !is_float(W.type)) {
    DDRT_CHECK(gpu::launch_gemv_q(g, y, x, st_), what);
  } else {
    // A compensated call keeps x at three limbs (~24 bits): approx compares activations with
    // absolute floors, so the last bits of x decide channels near a floor, and the CPU
    // agreement of DecDEC (issue 5: perplexity within 0.5 %) failed on the H100 with two limbs
    // (SmolLM2 shape, approx: 0.93 %; off and exact passed). Its cost is nil beside the
    // compensation's (prefill with DecDEC ~1500 tok/s, without ~7900).
    DDRT_CHECK(gpu::launch_gemm(g, y, x, T, scratch(gpu::gemm_scratch_bytes(g, T)), st_, job.active ? 3 : 0), what);
  }
  if (!job.active) return;
  if (comp_parallel_) {
    DDRT_CHECK(cudaStreamWaitEvent(st_, join_, 0));
    DDRT_CHECK(gpu::launch_comp_reduce(W.dev, job.p, y, T, job.partial, st_), job.what);
    return;
  }
  for (int t0 = 0; t0 < T; t0 += slice) {
    const int n = std::min(slice, T - t0);
    if (t0 > 0) {
      DecdecCall c = call;
      c.pos0 = call.pos0 + t0;  // the slice's first position (random mode's seeds)
      job = prepare_comp(W, x + (int64_t)t0 * W.d_in, n, c, 0);
    }
    launch_comp_gather(job, y + (int64_t)t0 * W.d_out, true, st_);
  }
}

bool CudaBackend::group_fusable(const CudaLinear* const* Ws, int n, const DecdecCall* calls) const {
  if (n < 2 || n > gpu::kTcMaxMembers || comp_parallel_ || !gpu::gemv_tc_enabled()) return false;
  auto on = [](const DecdecCall& c) { return c.mode != DecdecMode::Off && c.k_chunk > 0; };
  const DecdecCall& c0 = calls[0];
  for (int m = 0; m < n; ++m) {
    const DecdecCall& c = calls[m];
    if (on(c) != on(c0)) return false;
    if (!on(c)) continue;
    // one selection serves all members: the same setting, and the same selection inputs
    if (c.mode != c0.mode || c.k_chunk != c0.k_chunk || c.n_tb != c0.n_tb || c.pos0 != c0.pos0 ||
        c.mode == DecdecMode::Random || !Ws[m]->has_residual)
      return false;
    if (c.mode == DecdecMode::Approx && Ws[m]->thresholds_host != Ws[0]->thresholds_host) return false;
    if (c.mode == DecdecMode::Static && Ws[m]->ranking_host != Ws[0]->ranking_host) return false;
  }
  // with DecDEC off too: one fused launch beats the members' separate launches at 3 and 4 bits
  // (GEMV lab, H100: 4-bit gate_up 30.7 us fused vs 35.4 us as two CUDA-core launches)
  return true;
}

void CudaBackend::matmul_group(const Linear* const* Ws, float* const* ys, int n, const float* x, int T,
                               const DecdecCall* calls) {
  use_keep();
  if (T == 1 && n >= 2 && n <= gpu::kTcMaxMembers) {
    const CudaLinear* cw[gpu::kTcMaxMembers];
    std::string what = "matmul group";
    for (int m = 0; m < n; ++m) {
      cw[m] = static_cast<const CudaLinear*>(Ws[m]);
      what += (m ? ", '" : " '") + cw[m]->name + "'";
    }
    if (!is_float(cw[0]->type) && group_fusable(cw, n, calls) && matmul_fused(cw, ys, n, x, calls[0], what)) return;
  }
  flush_chain();
  // T > 1 with DecDEC off: one int8 tensor-core launch for the group, one preparation of x
  auto off = [](const DecdecCall& c) { return c.mode == DecdecMode::Off || c.k_chunk <= 0; };
  if (T > 1 && n >= 2 && n <= gpu::kTcMaxMembers && std::all_of(calls, calls + n, off)) {
    const gpu::DevLinear* devs[gpu::kTcMaxMembers];
    for (int m = 0; m < n; ++m) devs[m] = &static_cast<const CudaLinear*>(Ws[m])->dev;
    if (gpu::gemm_group_fusable(devs, n)) {
      DDRT_CHECK(gpu::launch_gemm_i8_group(devs, ys, n, x, T, scratch(gpu::gemm_i8_scratch_bytes(*devs[0], T)), st_),
                 "matmul group (prefill)");
      return;
    }
  }
  for (int m = 0; m < n; ++m) matmul(*Ws[m], ys[m], x, T, calls[m]);
}

bool CudaBackend::matmul_fused(const CudaLinear* const* Ws, float* const* ys, int n, const float* x,
                               const DecdecCall& call, const std::string& what, const gpu::TcIo& io_in) {
  if (gpu::gemv_tc_refuse_take()) return false;  // (a test's forced refusal)
  // the pending prefetch hint is this launch's (its base warps prefetch the next linears once
  // their units are done; lab knob DDRT_L2_NEXT=1, else dropped)
  gpu::TcIo io = io_in;
  io.next = take_hint(l2_next_bytes());
  const gpu::DevLinear* devs[gpu::kTcMaxMembers];
  for (int m = 0; m < n; ++m) devs[m] = &Ws[m]->dev;
  gpu::DevLinear shape;
  if (!gpu::gemv_tc_groupable(devs, n, &shape) || gpu::tc_io_aliases(devs, ys, n, x, shape.d_in, io)) return false;
  const CudaLinear& W = *Ws[0];  // the head: its plan cache, its selection inputs
  // chunk-major compensation (DDRT_COMP_CHUNKS=1): one term per chunk of d_in in cpart
  const bool chunks = gpu::gemv_tc_comp_chunks();
  CompJob job = prepare_comp(W, x, 1, call, shape.d_out * (chunks ? (shape.d_in + kChunk - 1) / kChunk : 1));
  const int n_tb = job.active ? (call.n_tb > 0 ? call.n_tb : gpu::tc_default_n_tb(shape)) : 0;
  const int64_t kmax = job.active ? job.p.kmax : 0;
  // the block-local merge (DDRT_TC_LOCAL) where the launch allows it: DecDEC off, not a chain's
  // stage, and (unless DDRT_TC_LOCAL_EXT) no gate/up pairs and no deferred attention in x
  // (gemv_tc_plan falls back to the k-major plan where the shape does not fit it). plan_local
  // keys the plan by both: the mode, and whether it was made for pairs.
  const bool ext = gpu::gemv_tc_local_ext();
  const int local_mode = !job.active && !chain_on() && (ext || (!io.swiglu_pairs && !io.attn.po)) ? gpu::gemv_tc_local() : 0;
  const int local = local_mode * 2 + (io.swiglu_pairs ? 1 : 0);
  if (W.plan_n_tb != n_tb || W.plan_kmax != kmax || W.plan_d_out != shape.d_out || W.plan_chunks != chunks ||
      W.plan_local != local) {
    W.plan = gpu::gemv_tc_plan(shape, n_tb, kmax, chunks, local_mode, io.swiglu_pairs);
    W.plan_n_tb = n_tb;
    W.plan_kmax = kmax;
    W.plan_d_out = shape.d_out;
    W.plan_chunks = chunks;
    W.plan_local = local;
  }
  const gpu::TcPlan& plan = W.plan;
  if (!plan.ok || (job.active && plan.n_tb == 0) || !tc_scratch(plan, what.c_str())) return false;
  float* const part = static_cast<float*>(tc_part_.get());
  int* const cnt = static_cast<int*>(tc_cnt_.get());
  if (!job.active && chain_on()) {  // a stage of the queued chain (launched by the next other op)
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (attempt) flush_chain();
      const int64_t st0 = gpu::stamp_regions_taken();
      if (gpu::tc_chain_add(chain_.get(), devs, ys, n, x, plan, part, cnt, io)) {
        name_stamps(st0, what + " (chain stage)");
        return true;
      }
    }
  }
  flush_chain();
  gpu::TcComp comp;
  if (job.active) {
    for (int m = 0; m < n; ++m) comp.R[m] = Ws[m]->res;
    comp.p = job.p;
    comp.cpart = job.partial;
    comp.sel = job.sel;
    comp.sel_xs = job.sel_xs;
    // approx selects inside the launch (when its binary search equals the reference's scan:
    // non-increasing floors); the other modes sort first, in a pre-kernel. Lab knob
    // DDRT_SEL_PRE=1: approx in the pre-kernel too, so that the launch's compensation blocks
    // start gathering at the dependency wait (what a selection made by the producer kernel
    // would give, plus one launch)
    static const bool sel_pre = gpu::env_int("DDRT_SEL_PRE", 0) == 1;
    bool here = call.mode == DecdecMode::Approx && !sel_pre;
    for (int j = 1; here && j < kBuckets; ++j) here = job.p.floors[j] <= job.p.floors[j - 1];
    comp.select_here = here;
    // the pre-kernel reads x as it is: the caller runs swiglu / rmsnorm first
    if (!here && (io.up || io.nw)) return false;
    if (!here) DDRT_CHECK(gpu::launch_comp_select(W.dev, W.res, job.p, x, job.sel, st_), job.what);
  }
  const int64_t st0 = gpu::stamp_regions_taken();
  DDRT_CHECK(gpu::launch_gemv_tc(devs, ys, n, x, plan, part, cnt, job.active ? &comp : nullptr, st_, io), what);
  name_stamps(st0, what);
  return true;
}

void CudaBackend::launch_comp_gather(const CompJob& job, float* out, bool add, cudaStream_t st) {
  DDRT_CHECK(gpu::launch_comp_select_gather(job.W->dev, job.W->res, job.p, job.x, job.T, job.sel, out, add, st),
             job.what);
}

CudaBackend::CompJob CudaBackend::prepare_comp(const CudaLinear& W, const float* x, int T, const DecdecCall& call,
                                               int64_t part_floats) {
  CompJob job;
  if (call.mode == DecdecMode::Off) return job;
  const std::string what = "linear '" + W.name + "': DecDEC mode " + mode_name(call.mode);
  if ((int)call.mode < 0 || (int)call.mode > (int)DecdecMode::Random) throw InvalidArgument(what + ": unknown mode");
  if (!W.has_residual) throw InvalidArgument(what + " needs a residual, and this linear has none");
  if (call.mode == DecdecMode::Approx && !W.has_thresholds)
    throw InvalidArgument(what + " needs calibration thresholds, and this linear has none");
  if (call.mode == DecdecMode::Static && !W.has_ranking)
    throw InvalidArgument(what + " needs a calibration ranking, and this linear has none");
  gpu::CompParams p;
  p.call = call;
  p.pos_dev = step_ ? step_pos() : nullptr;
  p.kmax = total_k(call.k_chunk, W.d_in);
  p.k_full = chunk_k(call.k_chunk, kChunk);
  if (p.kmax == 0) return job;
  // the floors travel by value to the kernel, computed on the host as the CPU reference does
  // (nvcc would contract a - (a-b)*c into an FMA and move a bucket edge by one ulp)
  if (call.mode == DecdecMode::Approx) reference_approx_floors(W.thresholds_host.data(), W.d_in, p.kmax, p.floors);
  const size_t sel_bytes = ((size_t)T * p.kmax * 4 + 255) / 256 * 256;
  const size_t part_bytes = (size_t)part_floats * 4;
  // [sel: T kmax ints][T = 1 (the fused launch): the selection's x values, kmax floats][partial]
  const size_t xs_bytes = T == 1 ? sel_bytes : 0;
  uint8_t* s = static_cast<uint8_t*>(comp_scratch(sel_bytes + xs_bytes + part_bytes));
  job.active = true;
  job.p = p;
  job.W = &W;
  job.x = x;
  job.T = T;
  job.sel = reinterpret_cast<int32_t*>(s);
  job.sel_xs = xs_bytes ? reinterpret_cast<float*>(s + sel_bytes) : nullptr;
  job.partial = reinterpret_cast<float*>(s + sel_bytes + xs_bytes);
  job.what = what;
  return job;
}

void CudaBackend::attention_rope(KVCache& cache, int layer, float* out, const float* q, const float* k,
                                 const float* v, int T, int n_heads, int64_t pos0, const float* inv_freq,
                                 gpu::AttnDefer* deferred) {
  use();
  auto& kv = static_cast<CudaKVCache&>(cache);
  const int hkv = kv.n_kv_heads, hd = kv.head_dim;
  if (layer < 0 || layer >= kv.n_layers) throw InvalidArgument("attention: layer " + std::to_string(layer) + " out of range");
  if (n_heads <= 0 || n_heads % hkv != 0)
    throw InvalidArgument("attention: n_heads " + std::to_string(n_heads) + " is not a multiple of n_kv_heads " +
                          std::to_string(hkv));
  if (hd > 256) throw InvalidArgument("attention: head_dim " + std::to_string(hd) + " > 256 is not supported on CUDA");
  if (pos0 < 0 || pos0 + T > kv.max_seq)
    throw ContextOverflow("attention: positions " + std::to_string(pos0) + ".." + std::to_string(pos0 + T - 1) +
                          " do not fit a context of " + std::to_string(kv.max_seq));
  if (T <= 0) return;
  const int64_t* pos_dev = step_ ? step_pos() : nullptr;
  const gpu::AttnShape s{T, n_heads, hkv, hd, pos0, pos_dev, kv.type == KvType::F16};
  float* scr = static_cast<float*>(scratch((size_t)gpu::attn_scratch_floats(s) * sizeof(float)));
  const gpu::L2Hint hint = take_hint(l2_attn_bytes());
  const int64_t st0 = gpu::stamp_regions_taken();
  DDRT_CHECK(gpu::launch_attention(out, q, k, v, kv.at(kv.k, layer, 0), kv.at(kv.v, layer, 0), s, scr,
                                   attn_counters(gpu::attn_counters(s)), st_, inv_freq, hint, deferred));
  name_stamps(st0, "attention layer " + std::to_string(layer));
}

}  // namespace

cudaStream_t cuda_stream_of(Backend& b) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  if (!c) throw InvalidArgument("cuda_stream_of: backend '" + b.name() + "' is not a CUDA backend");
  return c->stream();
}

void cuda_set_l2_prefetch(Backend& b, int64_t attn_bytes) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  if (!c) throw InvalidArgument("cuda_set_l2_prefetch: backend '" + b.name() + "' is not a CUDA backend");
  c->set_l2_attn_bytes(attn_bytes);
}

void cuda_set_decdec_parallel(Backend& b, bool on) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  if (!c) throw InvalidArgument("cuda_set_decdec_parallel: backend '" + b.name() + "' is not a CUDA backend");
  c->set_decdec_parallel(on);
}

bool cuda_built() { return true; }

bool cuda_available() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

std::string cuda_info() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: ") + cudaGetErrorString(e);
  }
  if (n == 0) return "no CUDA device visible";
  std::string s;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    if (!s.empty()) s += "; ";
    s += "cuda:" + std::to_string(i) + " " + p.name + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) +
         ", " + std::to_string(p.multiProcessorCount) + " SMs, " + std::to_string(p.totalGlobalMem >> 20) + " MiB)";
  }
  return s;
}

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

}  // namespace ddrt
