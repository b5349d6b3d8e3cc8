// The engine from C++ (what a desktop app embeds), on a synthetic tiny model, CPU backend:
// prefill equals decode, the greedy path equals the argmax of the logits, the sampler is
// deterministic, DecDEC settings are validated, and bad input throws the typed errors.
#include <algorithm>
#include <cmath>
#include <vector>

#include "check.h"
#include "engine.h"
#include "synth.h"

using namespace ddrt;

namespace {

std::unique_ptr<Engine> tiny_engine(bool residual = true, int max_seq = 0) {
  SynthSpec spec;
  spec.shape = "tiny";
  spec.bits = 3;
  spec.group = 32;
  spec.residual = residual;
  spec.seed = 7;
  auto src = std::make_unique<SynthModel>(spec);
  const Config cfg = src->config();
  EngineOptions o;
  o.device = "cpu";
  o.max_seq_len = max_seq;
  o.max_batch = 8;  // several prefill chunks for the sequences below
  return std::make_unique<Engine>(std::move(src), cfg, o);
}

std::vector<int32_t> ids_of(int n, int vocab) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = (i * 37 + 11) % vocab;
  return v;
}

void test_prefill_equals_decode() {
  for (DecdecMode m : {DecdecMode::Off, DecdecMode::Approx, DecdecMode::Random}) {
    auto e = tiny_engine();
    e->set_decdec(m, {16, 32, 64, 128}, 3);
    const int V = e->config().n_vocab, T = 21;
    const auto ids = ids_of(T, V);
    std::vector<float> all((size_t)T * V), step(V);
    e->forward(ids.data(), T, all.data(), true);
    e->reset();
    double worst = 0;
    for (int t = 0; t < T; ++t) {
      e->forward(&ids[t], 1, step.data(), false);
      worst = std::max(worst, ddrt_test::nmse(step.data(), all.data() + (size_t)t * V, V));
    }
    CHECK_MSG(worst < 1e-10, "prefill vs decode nmse " + std::to_string(worst) + " mode " + mode_name(m));
  }
}

void test_greedy_path_is_argmax() {
  auto e = tiny_engine();
  e->set_decdec(DecdecMode::Exact, {64, 64, 64, 64});
  const int V = e->config().n_vocab;
  const auto prompt = ids_of(5, V);
  e->forward(prompt.data(), 4, nullptr, false);
  const auto fast = e->decode_greedy(prompt[4], 6);
  e->reset();
  e->forward(prompt.data(), 4, nullptr, false);
  std::vector<float> lg(V);
  int32_t tok = prompt[4];
  for (int i = 0; i < 6; ++i) {
    e->forward(&tok, 1, lg.data(), false);
    tok = (int32_t)(std::max_element(lg.begin(), lg.end()) - lg.begin());
    CHECK(fast[i] == tok);
  }
  CHECK(e->pos() == 10);
}

void test_sampler_deterministic() {
  auto e = tiny_engine();
  const auto prompt = ids_of(6, e->config().n_vocab);
  SamplerParams p;
  p.temperature = 1.0f;
  p.top_k = 40;
  p.top_p = 0.9f;
  p.repetition_penalty = 1.1f;
  auto run = [&](uint64_t seed) {
    e->reset();
    Sampler s(seed);
    std::vector<int32_t> out{e->next_token(prompt.data(), 6, p, s)};
    for (int i = 0; i < 10; ++i) out.push_back(e->next_token(&out.back(), 1, p, s));
    return out;
  };
  CHECK(run(1) == run(1));
  bool differs = false;
  for (uint64_t s = 2; s < 8 && !differs; ++s) differs = run(s) != run(1);
  CHECK_MSG(differs, "no seed changed the sample");
}

void test_errors() {
  auto e = tiny_engine(true, 16);
  const int V = e->config().n_vocab;
  std::vector<int32_t> ids = ids_of(17, V);
  CHECK_THROWS(e->forward(ids.data(), 17, nullptr, false), ContextOverflow);
  CHECK(e->pos() == 0);  // nothing was appended
  ids[3] = V;
  CHECK_THROWS(e->forward(ids.data(), 5, nullptr, false), InvalidArgument);
  CHECK_THROWS(e->forward(ids.data(), 0, nullptr, false), InvalidArgument);
  CHECK_THROWS(e->set_decdec(DecdecMode::Approx, {2000, 0, 0, 0}), InvalidArgument);
  auto plain = tiny_engine(false);
  CHECK_THROWS(plain->set_decdec(DecdecMode::Exact, {8, 8, 8, 8}), InvalidArgument);
  CHECK_THROWS(make_backend("tpu"), InvalidArgument);
  CHECK_THROWS(make_backend("cuda:x"), InvalidArgument);
  CHECK_THROWS(synth_config("gpt5"), InvalidArgument);
  CHECK_THROWS(Engine("/nonexistent/model.ddrt"), FileNotFound);
}

void test_decdec_bytes() {
  auto e = tiny_engine();
  CHECK(e->decdec_bytes_per_token() == 0);
  e->set_decdec(DecdecMode::Approx, {1024, 1024, 1024, 1024});
  // k = d_in everywhere: every residual row of every linear, once per token
  const Config& c = e->config();
  const double qd = c.n_heads * c.head_dim, kvd = c.n_kv_heads * c.head_dim;
  const double rows = c.dim * (res_row_bytes((int64_t)qd) + 2 * res_row_bytes((int64_t)kvd) +
                               2 * res_row_bytes(c.hidden_dim)) +
                      qd * res_row_bytes(c.dim) + c.hidden_dim * res_row_bytes(c.dim);
  CHECK(std::fabs(e->decdec_bytes_per_token() - c.n_layers * rows) < 0.5);
}

}  // namespace

int main() {
  test_prefill_equals_decode();
  test_greedy_path_is_argmax();
  test_sampler_deterministic();
  test_errors();
  test_decdec_bytes();
  return ddrt_test::check_summary();
}
