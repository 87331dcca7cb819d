// Every CUDA runtime call is checked; a failure becomes a blasst::Error naming the call.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "blasst/types.hpp"

#define BLASST_CUDA_CHECK(call)                                                                   \
  do {                                                                                            \
    const cudaError_t blasst_err_ = (call);                                                       \
    if (blasst_err_ != cudaSuccess)                                                               \
      throw ::blasst::Error(std::string("CUDA error: ") + cudaGetErrorString(blasst_err_) + " (" + \
                            #call + ", " + __FILE__ + ":" + std::to_string(__LINE__) + ")");     \
  } while (0)

namespace blasst::cuda {

// Raises a kernel's dynamic shared-memory limit once per kernel (the kernel is a template argument:
// variants share a function type, so the static must be per kernel, not per type), so later
// launches (and graph captures) only launch.
template <auto kKernel>
void set_smem_limit_once(std::size_t bytes) {
  static const bool done = [&] {
    BLASST_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    return true;
  }();
  (void)done;
}

}  // namespace blasst::cuda
