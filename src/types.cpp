#include "blasst/types.hpp"

namespace blasst {

const char* to_string(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
  }
  return "?";
}

const char* to_string(VisitOrder o) {
  switch (o) {
    case VisitOrder::forward: return "forward";
    case VisitOrder::reverse: return "reverse";
    case VisitOrder::sink_first: return "sink-first";
  }
  return "?";
}

std::size_t dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

VisitOrder parse_visit_order(const std::string& s) {
  if (s == "forward") return VisitOrder::forward;
  if (s == "reverse") return VisitOrder::reverse;
  if (s == "sink-first" || s == "sink_first") return VisitOrder::sink_first;
  throw Error("unknown visit order '" + s + "' (expected forward, reverse or sink-first)");
}

}  // namespace blasst
