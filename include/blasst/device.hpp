// What backends this build has and which CUDA devices it can see (for `blasst info`).
#pragma once

#include <string>
#include <vector>

namespace blasst {

struct CudaDevice {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  double memory_gib = 0;
};

struct BuildInfo {
  bool cuda_compiled = false;  // CUDA backends compiled into this library
  int cuda_runtime_version = 0;  // 0 when not compiled or unknown
  int cuda_driver_version = 0;   // 0 when no driver is present
  std::vector<CudaDevice> devices;
  std::string cuda_status;  // why no device is usable, if none is
};

BuildInfo build_info();

}  // namespace blasst
