// decdec_rt: random weights of a named model shape, for benchmarks (no multi-GB file needed).
//
// A SynthModel holds, in host memory, every tensor a model file of that shape would hold
// (valid packed data: random codes, finite fp16 scales, residuals, descending thresholds, a
// permutation as ranking), so the engine loads it through the same path as a file.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine.h"

namespace ddrt {

struct SynthSpec {
  std::string shape = "llama3-8b";  // see synth_shapes()
  int bits = 3;                     // 3, 4 (uniform, g = group) or 16 (f16 linears)
  int group = 128;
  bool residual = true;             // residuals + thresholds + ranking
  uint64_t seed = 0;
  int n_layers = 0;                 // 0: the shape's
};

// Names accepted by SynthSpec::shape.
std::vector<std::string> synth_shapes();
// The config of a named shape; throws InvalidArgument for an unknown name.
Config synth_config(const std::string& shape);

class SynthModel : public TensorSource {
 public:
  explicit SynthModel(const SynthSpec& spec);
  const Config& config() const { return cfg_; }
  const TensorInfo* find(const std::string& name) const override;
  // Bytes of all linear weights (the 7 per layer) and of the lm head, as stored.
  size_t linear_bytes() const { return linear_bytes_; }
  size_t head_bytes() const { return head_bytes_; }

 private:
  Config cfg_;
  std::map<std::string, TensorInfo> tensors_;
  std::vector<std::vector<uint8_t>> store_;
  size_t linear_bytes_ = 0, head_bytes_ = 0;
  uint64_t rng_;
  void add(const std::string& name, TensorType t, std::vector<int64_t> shape, std::vector<uint8_t> data);
  std::vector<uint8_t> random_matrix(TensorType t, int64_t d_out, int64_t d_in);
  void add_linear(const std::string& base, TensorType t, int64_t d_out, int64_t d_in, bool residual);
};

}  // namespace ddrt
