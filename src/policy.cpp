#include "blasst/policy.hpp"

#include <cmath>
#include <string>

#include "blasst/skip_vote.hpp"

namespace blasst {

void validate(const SkipPolicy& p) {
  if (p.mode != SkipPolicy::Mode::dense) {
    const char* what = p.mode == SkipPolicy::Mode::threshold ? "threshold" : "scale factor";
    if (!std::isfinite(p.value)) throw Error(std::string(what) + " must be finite");
    if (p.value < 0) throw Error(std::string(what) + " must be >= 0, got " + std::to_string(p.value));
  }
  if (p.block_q < 1) throw Error("block_q must be >= 1, got " + std::to_string(p.block_q));
  if (p.block_k < 1) throw Error("block_k must be >= 1, got " + std::to_string(p.block_k));
  if (p.splits < 0) throw Error("splits must be >= 0 (0: the GPU planner chooses), got " + std::to_string(p.splits));
  if (p.splits > 1 && p.order != VisitOrder::forward)
    throw Error(std::string("splits > 1 visits each chunk forward (BLASST.md 2.4); order '") +
                to_string(p.order) + "' needs splits == 1");
  if (p.max_seed && p.order != VisitOrder::forward)
    throw Error(std::string("max_seed needs the forward order, got '") + to_string(p.order) + "'");
}

double sequence_lambda(const SkipPolicy& p, std::int64_t kv_len) {
  return lambda_for(static_cast<int>(p.mode), p.value, kv_len);
}

}  // namespace blasst
