// Every CUDA runtime call is checked; a failure becomes a blasst::Error naming the call.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "blasst/types.hpp"

#define BLASST_CUDA_CHECK(call)                                                                   \
  do {                                                                                            \
    const cudaError_t blasst_err_ = (call);                                                       \
    if (blasst_err_ != cudaSuccess)                                                               \
      throw ::blasst::Error(std::string("CUDA error: ") + cudaGetErrorString(blasst_err_) + " (" + \
                            #call + ", " + __FILE__ + ":" + std::to_string(__LINE__) + ")");     \
  } while (0)
