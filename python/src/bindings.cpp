// decdec_rt._core: the nanobind module. Thin: the Python package (python/decdec_rt) builds the
// user-facing API on top. Long calls release the GIL. C++ exceptions become the Python classes
// of decdec_rt.errors (see translate()).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/array.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "engine.h"
#include "synth.h"

namespace nb = nanobind;
using namespace nb::literals;

void bind_model_file(nb::module_& m);  // bind_model_file.cpp
void bind_ops(nb::module_& m);         // bind_ops.cpp
void bind_probe(nb::module_& m);       // bind_probe.cpp

namespace {

using IdArray = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// Raises the decdec_rt.errors class `cls` (imported lazily: errors.py is pure Python).
void raise_as(const char* cls, const char* what) {
  nb::object mod = nb::module_::import_("decdec_rt.errors");
  nb::object type = mod.attr(cls);
  PyErr_SetString(type.ptr(), what);
}

void translate(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const ddrt::FileNotFound& e) {
    PyErr_SetString(PyExc_FileNotFoundError, e.what());
  } catch (const ddrt::FormatError& e) {
    raise_as("FormatError", e.what());
  } catch (const ddrt::ContextOverflow& e) {
    raise_as("ContextOverflowError", e.what());
  } catch (const ddrt::InvalidArgument& e) {
    raise_as("InvalidArgumentError", e.what());
  } catch (const ddrt::OutOfMemory& e) {
    raise_as("OutOfMemoryError", e.what());
  } catch (const ddrt::CudaError& e) {
    raise_as("CudaError", e.what());
  } catch (const ddrt::Error& e) {
    raise_as("Error", e.what());
  } catch (const std::bad_alloc& e) {
    raise_as("OutOfMemoryError", "out of host memory (std::bad_alloc)");
  }
}

nb::dict config_dict(const ddrt::Config& c) {
  nb::dict d;
  d["architecture"] = c.architecture;
  d["name"] = c.name;
  d["dim"] = c.dim;
  d["hidden_dim"] = c.hidden_dim;
  d["n_layers"] = c.n_layers;
  d["n_heads"] = c.n_heads;
  d["n_kv_heads"] = c.n_kv_heads;
  d["head_dim"] = c.head_dim;
  d["n_vocab"] = c.n_vocab;
  d["max_seq_len"] = c.max_seq_len;
  d["norm_eps"] = c.norm_eps;
  d["rope_theta"] = c.rope_theta;
  d["tied_embeddings"] = c.tied_embeddings;
  if (!c.rope_scaling.type.empty()) {
    nb::dict r;
    r["type"] = c.rope_scaling.type;
    r["factor"] = c.rope_scaling.factor;
    r["low_freq_factor"] = c.rope_scaling.low_freq_factor;
    r["high_freq_factor"] = c.rope_scaling.high_freq_factor;
    r["original_max_seq_len"] = c.rope_scaling.original_max_seq_len;
    d["rope_scaling"] = r;
  }
  return d;
}

ddrt::ResidualPlacement parse_placement(const std::string& s) {
  if (s == "host") return ddrt::ResidualPlacement::Host;
  if (s == "device") return ddrt::ResidualPlacement::Device;
  throw ddrt::InvalidArgument("residual placement must be \"host\" or \"device\", got '" + s + "'");
}

ddrt::KvType parse_kv_cache(const std::string& s) {
  if (s == "f16") return ddrt::KvType::F16;
  if (s == "f32") return ddrt::KvType::F32;
  throw ddrt::InvalidArgument("kv_cache must be \"f16\" or \"f32\", got '" + s + "'");
}

const char* kv_cache_name(ddrt::KvType t) { return t == ddrt::KvType::F16 ? "f16" : "f32"; }

ddrt::EngineOptions engine_options(const std::string& device, int max_seq_len, const std::string& residual,
                                   int max_batch, bool graphs, const std::string& kv_cache) {
  ddrt::EngineOptions o;
  o.device = device;
  o.max_seq_len = max_seq_len;
  o.residual = parse_placement(residual);
  o.max_batch = max_batch;
  o.graphs = graphs;
  o.kv_type = parse_kv_cache(kv_cache);
  return o;
}

nb::ndarray<nb::numpy, float> to_numpy(std::vector<float>&& v, std::initializer_list<size_t> shape) {
  auto* heap = new std::vector<float>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete (std::vector<float>*)p; });
  return nb::ndarray<nb::numpy, float>(heap->data(), shape, owner);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "decdec_rt native core (C++/CUDA). Use the decdec_rt package, not this module.";
  nb::register_exception_translator(translate);

  m.def("cuda_available", &ddrt::cuda_available, "True when the CUDA backend is built and a GPU is visible.");
  m.def("cuda_built", &ddrt::cuda_built, "True when the CUDA backend was compiled in.");
  m.def("cuda_info", &ddrt::cuda_info, "GPU name(s), or why there is none.");
  m.def("synth_shapes", &ddrt::synth_shapes, "Model shapes Engine.synthetic() knows.");

  nb::class_<ddrt::Sampler>(m, "Sampler")
      .def(nb::init<uint64_t>(), "seed"_a = 0)
      .def("reseed", &ddrt::Sampler::reseed, "seed"_a);

  nb::class_<ddrt::Engine>(m, "Engine")
      .def(
          "__init__",
          [](ddrt::Engine* self, const std::string& path, const std::string& device, int max_seq_len,
             const std::string& residual, bool verify_checksums, int n_threads, int max_batch, bool graphs,
             const std::string& kv_cache) {
            ddrt::EngineOptions o = engine_options(device, max_seq_len, residual, max_batch, graphs, kv_cache);
            o.verify_checksums = verify_checksums;
            o.n_threads = n_threads;
            nb::gil_scoped_release release;
            new (self) ddrt::Engine(path, o);
          },
          "path"_a, "device"_a = "cpu", "max_seq_len"_a = 0, "residual"_a = "host",
          "verify_checksums"_a = true, "n_threads"_a = 0, "max_batch"_a = 64, "graphs"_a = true,
          "kv_cache"_a = "f16")
      .def_static(
          "synthetic",
          [](const std::string& shape, int bits, int group, bool with_residual, uint64_t seed, int n_layers,
             const std::string& device, int max_seq_len, const std::string& residual, int max_batch, bool graphs,
             const std::string& kv_cache) {
            ddrt::SynthSpec spec;
            spec.shape = shape;
            spec.bits = bits;
            spec.group = group;
            spec.residual = with_residual;
            spec.seed = seed;
            spec.n_layers = n_layers;
            const ddrt::EngineOptions o = engine_options(device, max_seq_len, residual, max_batch, graphs, kv_cache);
            nb::gil_scoped_release release;
            auto src = std::make_unique<ddrt::SynthModel>(spec);
            const ddrt::Config cfg = src->config();
            return new ddrt::Engine(std::move(src), cfg, o);
          },
          "shape"_a, "bits"_a = 3, "group"_a = 128, "with_residual"_a = true, "seed"_a = 0, "n_layers"_a = 0,
          "device"_a = "cpu", "max_seq_len"_a = 0, "residual"_a = "host", "max_batch"_a = 64, "graphs"_a = true,
          "kv_cache"_a = "f16", nb::rv_policy::take_ownership,
          "An engine over random weights of a named shape (benchmarks).")
      .def_prop_ro("config", [](const ddrt::Engine& e) { return config_dict(e.config()); })
      .def_prop_ro("backend_name", [](ddrt::Engine& e) { return e.backend().name(); })
      .def_prop_ro("device_bytes", [](ddrt::Engine& e) { return e.backend().device_bytes(); })
      .def_prop_ro("decdec_device_bytes", [](ddrt::Engine& e) { return e.backend().decdec_device_bytes(); },
                   "GPU bytes DecDEC adds (residual data kept on the device, compensation scratch)")
      .def_prop_ro("max_seq_len", &ddrt::Engine::max_seq_len)
      .def_prop_ro("kv_cache", [](const ddrt::Engine& e) { return std::string(kv_cache_name(e.kv_type())); },
                   "KV cache element type: \"f16\" or \"f32\"")
      .def_prop_ro("pos", &ddrt::Engine::pos)
      .def_prop_ro("tokens", [](const ddrt::Engine& e) { return e.tokens(); })
      .def_prop_ro("has_residuals", &ddrt::Engine::has_residuals)
      .def("reset", &ddrt::Engine::reset)
      .def(
          "decode_greedy",
          [](ddrt::Engine& e, int32_t first, int n) {
            nb::gil_scoped_release release;
            return e.decode_greedy(first, n);
          },
          "first"_a, "n"_a, "Feeds `first`, then n greedy steps; returns the n new tokens.")
      .def(
          "forward_capture",
          [](ddrt::Engine& e, IdArray ids, nb::callable fn) {
            // fn(layer, slot, x: float32 [T, d_in]) for every linear input (Engine::set_capture)
            e.set_capture([&fn](int layer, int slot, const float* x, int T, int d_in) {
              nb::gil_scoped_acquire gil;
              std::vector<float> copy(x, x + (size_t)T * d_in);
              fn(layer, slot, to_numpy(std::move(copy), {(size_t)T, (size_t)d_in}));
            });
            try {
              nb::gil_scoped_release release;
              e.forward(ids.data(), (int)ids.shape(0), nullptr, false);
            } catch (...) {
              e.set_capture(nullptr);
              throw;
            }
            e.set_capture(nullptr);
          },
          "ids"_a, "fn"_a,
          "Appends ids to the context and calls fn(layer, slot, x) with each linear's input "
          "(slot 0: q/k/v, 3: o, 4: gate/up, 6: down).")
      .def("synchronize", [](ddrt::Engine& e) {
        nb::gil_scoped_release release;
        e.backend().synchronize();
      })
      .def(
          "forward",
          [](ddrt::Engine& e, IdArray ids, bool all_logits) {
            const int T = (int)ids.shape(0);
            const size_t V = e.config().n_vocab;
            std::vector<float> out((all_logits ? T : 1) * V);
            {
              nb::gil_scoped_release release;
              e.forward(ids.data(), T, out.data(), all_logits);
            }
            if (all_logits) return to_numpy(std::move(out), {(size_t)T, V});
            return to_numpy(std::move(out), {V});
          },
          "ids"_a, "all_logits"_a = true,
          "Appends ids to the context; returns float32 logits [T, n_vocab] (or [n_vocab] of the last).")
      .def(
          "nll",
          [](ddrt::Engine& e, IdArray ids) {
            nb::gil_scoped_release release;
            return e.nll(ids.data(), (int)ids.shape(0));
          },
          "ids"_a, "Sum of -log p(ids[t+1] | ids[:t+1]) in a fresh context.")
      .def(
          "next_token",
          [](ddrt::Engine& e, IdArray ids, ddrt::Sampler& s, float temperature, int top_k, float top_p,
             float repetition_penalty) {
            ddrt::SamplerParams p;
            p.temperature = temperature;
            p.top_k = top_k;
            p.top_p = top_p;
            p.repetition_penalty = repetition_penalty;
            nb::gil_scoped_release release;
            return e.next_token(ids.data(), (int)ids.shape(0), p, s);
          },
          "ids"_a, "sampler"_a, "temperature"_a = 0.f, "top_k"_a = 0, "top_p"_a = 1.f,
          "repetition_penalty"_a = 1.f, "Feeds ids, then samples the next token (not yet fed).")
      .def(
          "set_decdec",
          [](ddrt::Engine& e, const std::string& mode, std::array<int, 4> k_chunk, uint64_t seed,
             std::array<int, 4> n_tb) { e.set_decdec(ddrt::parse_mode(mode), k_chunk, seed, n_tb); },
          "mode"_a, "k_chunk"_a, "seed"_a = 0, "n_tb"_a = std::array<int, 4>{0, 0, 0, 0})
      .def_prop_ro("decdec_mode", [](const ddrt::Engine& e) { return std::string(ddrt::mode_name(e.decdec_mode())); })
      .def_prop_ro("decdec_k_chunk", &ddrt::Engine::decdec_k_chunk)
      .def_prop_ro("decdec_n_tb", &ddrt::Engine::decdec_n_tb)
      .def_prop_ro("decdec_bytes_per_token", &ddrt::Engine::decdec_bytes_per_token);

  bind_model_file(m);
  bind_ops(m);
  bind_probe(m);
}
