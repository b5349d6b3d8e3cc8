// decdec_rt: the CUDA backend's stand-in when the package is built without CUDA
// (DECDEC_CUDA=OFF, or AUTO with no nvcc). cuda_available() is false and the factory explains.
#include "backend.h"

namespace ddrt {

bool cuda_built() { return false; }
bool cuda_available() { return false; }
std::string cuda_info() { return "decdec_rt was built without CUDA (DECDEC_CUDA=OFF or no nvcc at build time)"; }

std::unique_ptr<Backend> make_cuda_backend(int device) {
  throw CudaError("device 'cuda:" + std::to_string(device) +
                  "' is unavailable: decdec_rt was built without the CUDA backend. Rebuild with "
                  "nvcc on PATH (CMake option DECDEC_CUDA=ON) or use device=\"cpu\".");
}

}  // namespace ddrt

// ---- bandwidth probe (cuda/probe.cu) -----------------------------------------------------------
#include "probe.h"

namespace ddrt {

BandwidthProbe measure_bandwidth(int device) {
  throw CudaError("cannot measure the bandwidth of 'cuda:" + std::to_string(device) +
                  "': decdec_rt was built without the CUDA backend. Rebuild with nvcc on PATH (CMake "
                  "option DECDEC_CUDA=ON).");
}

}  // namespace ddrt
