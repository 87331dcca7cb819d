// The bisection every benchmark uses to find the scale factor for a tile sparsity (CPU only, so
// that tools without CUDA share it).
#pragma once

#include <cmath>
#include <utility>

namespace blasst::bench {

// The scale factor whose tile sparsity (sparsity_at(a), non-decreasing in a) is `target`: bisection
// on log a over [a_lo, a_hi] (14 steps), returning the upper end and the sparsity it reaches there.
template <class SparsityAt>
std::pair<double, double> scale_factor_for_sparsity(double target, double a_lo, double a_hi, SparsityAt&& sparsity_at) {
  double lo = std::log(a_lo), hi = std::log(a_hi);
  for (int it = 0; it < 14; ++it) {
    const double mid = 0.5 * (lo + hi);
    (sparsity_at(std::exp(mid)) < target ? lo : hi) = mid;
  }
  const double a = std::exp(hi);
  return {a, sparsity_at(a)};
}

}  // namespace blasst::bench
