// decdec_rt: checks every backend applies to what it loads (one definition, backend.h).
#include "backend.h"

namespace ddrt {

void check_linear_desc(const LinearDesc& d) {
  const std::string what = "linear '" + d.name + "'";
  if (!is_matrix_type(d.type))
    throw InvalidArgument(what + ": tensor type " + std::to_string((uint32_t)d.type) + " is not a matrix type");
  if (d.d_out <= 0 || d.d_in <= 0)
    throw InvalidArgument(what + ": shape [" + std::to_string(d.d_out) + ", " + std::to_string(d.d_in) + "] is empty");
  if (!d.data) throw InvalidArgument(what + ": no weight data");
  if (d.residual && !d.residual_scale) throw InvalidArgument(what + ": a residual without residual_scale");
}

std::vector<int32_t> rank_positions(const LinearDesc& d) {
  std::vector<int32_t> pos;
  if (!d.ranking) return pos;
  pos.assign(d.d_in, -1);
  for (int64_t p = 0; p < d.d_in; ++p) {
    const int32_t i = d.ranking[p];
    if (i < 0 || i >= d.d_in || pos[i] >= 0)
      throw InvalidArgument("linear '" + d.name + "': ranking is not a permutation of 0.." +
                            std::to_string(d.d_in - 1) + " (entry " + std::to_string(p) + " = " +
                            std::to_string(i) + ")");
    pos[i] = (int32_t)p;
  }
  return pos;
}

}  // namespace ddrt
