#include <cuda_runtime.h>

#include "blasst/device.hpp"

namespace blasst {

BuildInfo build_info() {
  BuildInfo info;
  info.cuda_compiled = true;
  cudaRuntimeGetVersion(&info.cuda_runtime_version);
  if (cudaDriverGetVersion(&info.cuda_driver_version) != cudaSuccess) info.cuda_driver_version = 0;
  if (info.cuda_driver_version == 0) {
    info.cuda_status = "no CUDA driver on this machine";
    return info;
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    info.cuda_status = cudaGetErrorString(err);
    return info;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    CudaDevice d;
    d.index = i;
    d.name = prop.name;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    d.sm_count = prop.multiProcessorCount;
    d.memory_gib = static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0);
    info.devices.push_back(d);
  }
  if (info.devices.empty()) info.cuda_status = "no CUDA device";
  return info;
}

}  // namespace blasst
