// decdec_rt._core: low-level ops exposed for tests and the converter's cross-checks.
//   dequantize      any matrix type through the layout.h accessors only (the slow definition)
//   residual_codes  RES4 rows -> codes [d_out, d_in]
//   select_channels decdec.cpp's reference selection
//   cpu_matmul      the CPU backend's matmul (the fast path), DecDEC included; releases the GIL
// Exception translation is registered by the main module (bindings.cpp), not here.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstring>
#include <optional>
#include <vector>

#include "backend.h"
#include "decdec.h"
#include "layout.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using F32Vec = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using F32Mat = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using I32Vec = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using AnyVec = nb::ndarray<nb::ro, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// A new numpy array of `shape` that owns its memory.
template <class T>
nb::ndarray<nb::numpy, T> new_array(std::initializer_list<size_t> shape, T** data) {
  size_t n = 1;
  for (size_t s : shape) n *= s;
  T* p = new T[n > 0 ? n : 1]();
  nb::capsule owner(p, [](void* q) noexcept { delete[] static_cast<T*>(q); });
  *data = p;
  return nb::ndarray<nb::numpy, T>(p, shape.size(), shape.begin(), owner);
}

ddrt::TensorType matrix_type(int ttype, int64_t d_out, int64_t d_in, size_t have) {
  const auto t = (ddrt::TensorType)ttype;
  if (ttype < 0 || !ddrt::is_matrix_type(t))
    throw ddrt::InvalidArgument("tensor type " + std::to_string(ttype) + " is not a matrix type");
  if (d_out <= 0 || d_in <= 0) throw ddrt::InvalidArgument("d_out and d_in must be positive");
  const int64_t shape[2] = {d_out, d_in};
  const int64_t need = ddrt::tensor_bytes(t, 2, shape);
  if (need < 0 || (size_t)need > have)
    throw ddrt::InvalidArgument("data has " + std::to_string(have) + " bytes, the tensor needs " +
                                std::to_string(need));
  return t;
}

uint16_t rd16(const uint8_t* p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}

// w[o][i] straight from the layout.h definition.
float element(ddrt::TensorType t, const uint8_t* d, int64_t d_out, int64_t d_in, int64_t o, int64_t i) {
  using ddrt::TensorType;
  const int64_t k = o * d_in + i;
  if (t == TensorType::F32) {
    float f;
    memcpy(&f, d + 4 * k, 4);
    return f;
  }
  if (t == TensorType::F16) return ddrt::f16_to_f32(rd16(d + 2 * k));
  if (t == TensorType::BF16) return ddrt::bf16_to_f32(rd16(d + 2 * k));
  const int bits = ddrt::type_bits(t);
  const uint8_t* blk = d + o * ddrt::row_code_bytes(d_in, bits) + (i / ddrt::kBlockCodes) * ddrt::block_bytes(bits);
  const int q = ddrt::block_code(blk, bits, (int)(i % ddrt::kBlockCodes));
  const uint8_t* tables = d + d_out * ddrt::row_code_bytes(d_in, bits);
  if (ddrt::is_lut(t)) return ddrt::f16_to_f32(rd16(tables + 2 * (o * (1 << bits) + q)));
  const int64_t ng = ddrt::n_groups(d_in, ddrt::type_group(t)), g = o * ng + i / ddrt::type_group(t);
  return ddrt::f16_to_f32(rd16(tables + 2 * g)) * (float)q + ddrt::f16_to_f32(rd16(tables + 2 * (d_out * ng + g)));
}

nb::ndarray<nb::numpy, float> dequantize(int ttype, int64_t d_out, int64_t d_in, nb::bytes data) {
  const auto t = matrix_type(ttype, d_out, d_in, data.size());
  const auto* d = (const uint8_t*)data.c_str();
  float* w;
  auto out = new_array<float>({(size_t)d_out, (size_t)d_in}, &w);
  for (int64_t o = 0; o < d_out; ++o)
    for (int64_t i = 0; i < d_in; ++i) w[o * d_in + i] = element(t, d, d_out, d_in, o, i);
  return out;
}

nb::ndarray<nb::numpy, int8_t> residual_codes(nb::bytes data, int64_t d_out, int64_t d_in) {
  if (d_out <= 0 || d_in <= 0) throw ddrt::InvalidArgument("d_out and d_in must be positive");
  const int64_t rb = ddrt::res_row_bytes(d_out);
  if ((size_t)(d_in * rb) > data.size())
    throw ddrt::InvalidArgument("residual data has " + std::to_string(data.size()) + " bytes, needs " +
                                std::to_string(d_in * rb));
  const auto* d = (const uint8_t*)data.c_str();
  int8_t* c;
  auto out = new_array<int8_t>({(size_t)d_out, (size_t)d_in}, &c);
  for (int64_t o = 0; o < d_out; ++o)
    for (int64_t i = 0; i < d_in; ++i) c[o * d_in + i] = (int8_t)ddrt::res_code(d + i * rb, o);
  return out;
}

// rank_pos[i] = position of channel i in `ranking` (a permutation of 0..d_in-1).
std::vector<int32_t> rank_positions(const I32Vec& ranking, int64_t d_in) {
  if ((int64_t)ranking.shape(0) != d_in)
    throw ddrt::InvalidArgument("ranking has " + std::to_string(ranking.shape(0)) + " entries, x has " +
                                std::to_string(d_in));
  std::vector<int32_t> pos(d_in, -1);
  for (int64_t p = 0; p < d_in; ++p) {
    const int32_t i = ranking.data()[p];
    if (i < 0 || i >= d_in || pos[i] >= 0) throw ddrt::InvalidArgument("ranking is not a permutation");
    pos[i] = (int32_t)p;
  }
  return pos;
}

void check_len(const std::optional<F32Vec>& t, int64_t d_in) {
  if (t && (int64_t)t->shape(0) != d_in)
    throw ddrt::InvalidArgument("thresholds have " + std::to_string(t->shape(0)) + " entries, expected " +
                                std::to_string(d_in));
}

nb::ndarray<nb::numpy, int32_t> select_channels(const std::string& mode, int k_chunk, F32Vec x,
                                                std::optional<F32Vec> thresholds, std::optional<I32Vec> ranking,
                                                uint64_t seed, uint32_t linear_id, int64_t pos) {
  const int64_t d_in = (int64_t)x.shape(0);
  check_len(thresholds, d_in);
  std::vector<int32_t> rank_pos;
  if (ranking) rank_pos = rank_positions(*ranking, d_in);
  ddrt::DecdecCall call;
  call.mode = ddrt::parse_mode(mode);
  call.k_chunk = k_chunk;
  call.seed = seed;
  call.linear_id = linear_id;
  std::vector<int32_t> sel(ddrt::total_k(k_chunk, d_in) + 1);
  const int64_t n = ddrt::select_channels(call, pos, x.data(), d_in, thresholds ? thresholds->data() : nullptr,
                                          ranking ? rank_pos.data() : nullptr, sel.data());
  int32_t* out;
  auto arr = new_array<int32_t>({(size_t)n}, &out);
  std::copy(sel.begin(), sel.begin() + n, out);
  return arr;
}

// float16 (or its raw uint16 bits)
bool is_16bit(nb::dlpack::dtype t) {
  return t.bits == 16 && t.lanes == 1 &&
         (t.code == (uint8_t)nb::dlpack::dtype_code::Float || t.code == (uint8_t)nb::dlpack::dtype_code::UInt);
}

ddrt::Backend& cpu_backend() {
  static std::unique_ptr<ddrt::Backend> be = ddrt::make_cpu_backend(0);
  return *be;
}

nb::ndarray<nb::numpy, float> cpu_matmul(int ttype, int64_t d_out, int64_t d_in, nb::bytes data, F32Mat x,
                                         const std::string& mode, int k_chunk, std::optional<nb::bytes> residual,
                                         std::optional<AnyVec> residual_scale, std::optional<F32Vec> thresholds,
                                         std::optional<I32Vec> ranking, uint64_t seed, uint32_t linear_id,
                                         int64_t pos0) {
  ddrt::LinearDesc desc;
  desc.name = "cpu_matmul";
  desc.type = matrix_type(ttype, d_out, d_in, data.size());
  desc.d_out = d_out;
  desc.d_in = d_in;
  desc.data = (const uint8_t*)data.c_str();
  if ((int64_t)x.shape(1) != d_in)
    throw ddrt::InvalidArgument("x has " + std::to_string(x.shape(1)) + " columns, d_in is " + std::to_string(d_in));
  if (residual) {
    if ((int64_t)residual->size() < d_in * ddrt::res_row_bytes(d_out))
      throw ddrt::InvalidArgument("residual has " + std::to_string(residual->size()) + " bytes, needs " +
                                  std::to_string(d_in * ddrt::res_row_bytes(d_out)));
    if (!residual_scale || (int64_t)residual_scale->shape(0) != d_out || !is_16bit(residual_scale->dtype()))
      throw ddrt::InvalidArgument("residual_scale must be a float16 array of d_out entries");
    desc.residual = (const uint8_t*)residual->c_str();
    desc.residual_scale = (const uint16_t*)residual_scale->data();
  }
  check_len(thresholds, d_in);
  if (thresholds) desc.thresholds = thresholds->data();
  if (ranking) {
    if ((int64_t)ranking->shape(0) != d_in) throw ddrt::InvalidArgument("ranking must have d_in entries");
    desc.ranking = ranking->data();
  }
  ddrt::DecdecCall call;
  call.mode = ddrt::parse_mode(mode);
  call.k_chunk = k_chunk;
  call.seed = seed;
  call.linear_id = linear_id;
  call.pos0 = pos0;
  const int T = (int)x.shape(0);
  float* y;
  auto out = new_array<float>({(size_t)T, (size_t)d_out}, &y);
  {
    nb::gil_scoped_release release;
    ddrt::Backend& be = cpu_backend();
    auto L = be.load_linear(desc, ddrt::ResidualPlacement::Host);
    be.matmul(*L, y, x.data(), T, call);
  }
  return out;
}

}  // namespace

void bind_ops(nb::module_& m) {
  m.def("dequantize", &dequantize, "ttype"_a, "d_out"_a, "d_in"_a, "data"_a,
        "f32 [d_out, d_in] of a matrix tensor, through the layout.h accessors (the slow definition).");
  m.def("residual_codes", &residual_codes, "data"_a, "d_out"_a, "d_in"_a,
        "RES4 rows [d_in][ceil(d_out/2)] -> int8 codes [d_out, d_in] (-7..7).");
  m.def("select_channels", &select_channels, "mode"_a, "k_chunk"_a, "x"_a, "thresholds"_a = nb::none(),
        "ranking"_a = nb::none(), "seed"_a = 0, "linear_id"_a = 0, "pos"_a = 0,
        "DecDEC channel selection (decdec.h): ascending int32 channel indices.");
  m.def("cpu_matmul", &cpu_matmul, "ttype"_a, "d_out"_a, "d_in"_a, "data"_a, "x"_a, "mode"_a = "off",
        "k_chunk"_a = 0, "residual"_a = nb::none(), "residual_scale"_a = nb::none(), "thresholds"_a = nb::none(),
        "ranking"_a = nb::none(), "seed"_a = 0, "linear_id"_a = 0, "pos0"_a = 0,
        "y [T, d_out] = W x (+ DecDEC) with the CPU backend's matmul; x: f32 [T, d_in].");
}
