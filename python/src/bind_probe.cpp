// decdec_rt._core.measure_bandwidth: the GPU bandwidth probe (cpp/probe.h) as a dict, for the
// knee study (tools/decdec_knee.py). Exception translation is registered by bindings.cpp.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "probe.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

nb::dict measure_bandwidth(int device) {
  ddrt::BandwidthProbe p;
  {
    nb::gil_scoped_release release;
    p = ddrt::measure_bandwidth(device);
  }
  nb::dict d;
  d["gpu"] = p.gpu_name;
  d["hbm_read_gbs"] = p.hbm_read_gbs;
  d["zero_copy_gbs"] = p.zero_copy_gbs;
  d["zero_copy_gather_gbs"] = p.zero_copy_gather_gbs;
  d["zero_copy_gather_us"] = p.zero_copy_gather_us;
  d["h2d_memcpy_gbs"] = p.h2d_memcpy_gbs;
  d["hbm_bytes"] = p.hbm_bytes;
  d["zero_copy_bytes"] = p.zero_copy_bytes;
  d["gather_rows"] = p.gather_rows;
  d["gather_row_bytes"] = p.gather_row_bytes;
  d["reps"] = p.reps;
  return d;
}

}  // namespace

void bind_probe(nb::module_& m) {
  m.def("measure_bandwidth", &measure_bandwidth, "device"_a = 0,
        "GB/s (1e9 B/s) of HBM streaming read, zero-copy streaming read and gather of pinned mapped host "
        "memory, and pinned H2D memcpy on cuda:device (medians of timed runs), with the GPU's name. "
        "Raises CudaError without CUDA.");
}
