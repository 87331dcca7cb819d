// TMA descriptors: a 4-D tensor (channel, then three strided dims) with boxes of 64 channels x 1 x
// box_rows x 1, 128-byte swizzled, as the kernels' shared-memory stages expect.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>

#include <array>
#include <cstdint>
#include <string>

#include "blasst/types.hpp"
#include "cuda/check.hpp"

namespace blasst::cuda {

inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    BLASST_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || f == nullptr)
      throw Error("the CUDA driver has no cuTensorMapEncodeTiled (TMA needs driver 12.0 or newer)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// dims: {channels, dim1, dim2, dim3}; strides in elements of dims 1..3; box rows along dim 2.
// promotion: how much L2 fetches per request. The decode streams each byte once and reads
// faster (6-9 %) with 128 bytes or none than with 256 (H200, docs/PERF.md).
inline CUtensorMap tensor_map_4d(const void* base, DType dt, std::array<std::int64_t, 4> dims,
                                 std::array<std::int64_t, 3> strides, int box_rows, const char* what,
                                 CUtensorMapL2promotion promotion = CU_TENSOR_MAP_L2_PROMOTION_L2_256B) {
  CUtensorMap map{};
  const cuuint64_t gdims[4] = {cuuint64_t(dims[0]), cuuint64_t(dims[1]), cuuint64_t(dims[2]), cuuint64_t(dims[3])};
  const cuuint64_t gstrides[3] = {cuuint64_t(strides[0]) * 2, cuuint64_t(strides[1]) * 2, cuuint64_t(strides[2]) * 2};
  const cuuint32_t box[4] = {64, 1, cuuint32_t(box_rows), 1};
  const cuuint32_t elem[4] = {1, 1, 1, 1};
  const CUresult r = tensor_map_encoder()(
      &map, dt == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
      const_cast<void*>(base), gdims, gstrides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      promotion, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error(std::string("cannot describe ") + what + " to TMA (error " + std::to_string(int(r)) +
                "): it must be 16-byte aligned with 16-byte multiple strides");
  return map;
}

}  // namespace blasst::cuda
