#include "blasst/calibrate.hpp"

#include <cmath>

#include "blasst/types.hpp"

namespace blasst {

double CalibrationSweep::sparsity(int b, int l) const {
  const std::int64_t v = visited[b];
  return v > 0 ? static_cast<double>(skipped[static_cast<std::size_t>(b) * lambdas.size() + l]) / v : 0.0;
}

std::vector<double> default_lambdas(int n) {
  if (n < 2) throw Error("need at least two lambdas");
  std::vector<double> l(n);
  const double lo = std::log(1e-6), hi = std::log(0.99);
  for (int i = 0; i < n; ++i) l[i] = std::exp(lo + (hi - lo) * i / (n - 1));
  return l;
}

double ScaleFit::scale_factor(double target_sparsity) const { return alpha * std::exp(beta * target_sparsity); }

ScaleFit fit_scale_factor(const std::vector<double>& sparsity, const std::vector<double>& scale_factor, double s_lo,
                          double s_hi) {
  if (sparsity.size() != scale_factor.size()) throw Error("sparsity and scale factors differ in length");
  double n = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
  ScaleFit f;
  f.s_min = 1, f.s_max = 0;
  for (std::size_t i = 0; i < sparsity.size(); ++i) {
    const double s = sparsity[i], a = scale_factor[i];
    if (!(s >= s_lo && s <= s_hi) || !(a > 0)) continue;
    const double y = std::log(a);
    n += 1, sx += s, sy += y, sxx += s * s, sxy += s * y, syy += y * y;
    f.s_min = std::min(f.s_min, s), f.s_max = std::max(f.s_max, s);
  }
  const double vx = sxx - sx * sx / (n > 0 ? n : 1), vy = syy - sy * sy / (n > 0 ? n : 1);
  if (n < 2 || vx <= 0)
    throw Error("calibration needs at least two points with different sparsity in [" + std::to_string(s_lo) + ", " +
                std::to_string(s_hi) + "], got " + std::to_string(static_cast<int>(n)));
  const double cxy = sxy - sx * sy / n;
  f.beta = cxy / vx;
  f.alpha = std::exp((sy - f.beta * sx) / n);
  f.r2 = vy > 0 ? cxy * cxy / (vx * vy) : 1.0;
  f.points = static_cast<int>(n);
  return f;
}

void sweep_points(const CalibrationSweep& sweep, std::vector<double>& sparsity, std::vector<double>& scale_factor) {
  for (std::size_t b = 0; b < sweep.kv_len.size(); ++b)
    for (std::size_t l = 0; l < sweep.lambdas.size(); ++l) {
      if (sweep.visited[b] == 0) continue;
      sparsity.push_back(sweep.sparsity(static_cast<int>(b), static_cast<int>(l)));
      scale_factor.push_back(sweep.lambdas[l] * static_cast<double>(sweep.kv_len[b]));
    }
}

}  // namespace blasst
