// Element conversion between the input dtypes and float32 on the host: the one the CPU engine
// reads and writes tensors with, for callers that prepare or read back 16-bit tensors (the CLI's
// --dtype and its GPU read-back, the CUDA tests). bfloat16 rounds to nearest even.
#pragma once

#include <cstdint>
#include <cstring>

#include "blasst/types.hpp"

namespace blasst {

inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<std::uint16_t>(bits >> 16);
}

// n elements of dtype t at src, as float32.
inline void convert_row(const void* src, DType t, float* dst, std::int64_t n) {
  switch (t) {
    case DType::f32: std::memcpy(dst, src, sizeof(float) * n); return;
    case DType::f16: {
      const _Float16* s = static_cast<const _Float16*>(src);
      for (std::int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::bf16: {
      const std::uint16_t* s = static_cast<const std::uint16_t*>(src);
      for (std::int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      return;
    }
  }
}

// n float32 values stored as dtype t at dst.
inline void store_row(const float* src, DType t, void* dst, std::int64_t n) {
  switch (t) {
    case DType::f32: std::memcpy(dst, src, sizeof(float) * n); return;
    case DType::f16: {
      _Float16* d = static_cast<_Float16*>(dst);
      for (std::int64_t i = 0; i < n; ++i) d[i] = static_cast<_Float16>(src[i]);
      return;
    }
    case DType::bf16: {
      std::uint16_t* d = static_cast<std::uint16_t*>(dst);
      for (std::int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      return;
    }
  }
}

}  // namespace blasst
