// Basic vocabulary shared by every backend: element types, visit orders, the library's error type.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace blasst {

// Element type of Q, K, V and O. Computation is always float32.
enum class DType : std::uint8_t { f32, f16, bf16 };

// Order in which a vote group visits its visible key tiles (BLASST.md 2.4).
//   forward:    0, 1, ..., n-1
//   reverse:    n-1, ..., 0 (FlashAttention's order)
//   sink_first: 0, n-1, n-2, ..., 1
enum class VisitOrder : std::uint8_t { forward, reverse, sink_first };

// Every user-facing failure (bad shapes, bad policy, bad files) is reported as blasst::Error with
// one line that names the offending argument.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

const char* to_string(DType t);
const char* to_string(VisitOrder o);
std::size_t dtype_size(DType t);
// Parse "forward" | "reverse" | "sink-first"; throws Error naming the accepted values.
VisitOrder parse_visit_order(const std::string& s);

}  // namespace blasst
