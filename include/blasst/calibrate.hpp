// Calibration (BLASST.md section 4): the sparsity each lambda gives on captured inputs, and the fit
// a(s) = alpha * exp(beta * s) that maps a target sparsity to a scale factor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace blasst {

// Per sequence: tiles visited (independent of lambda) and tiles skipped for each lambda, taken as a
// threshold. The scale factor of point (b, l) is lambdas[l] * kv_len[b].
struct CalibrationSweep {
  std::vector<double> lambdas;
  std::vector<std::int64_t> kv_len;   // [batch]
  std::vector<std::int64_t> visited;  // [batch]
  std::vector<std::int64_t> skipped;  // [batch][lambdas]
  double sparsity(int b, int l) const;
};

// About 20 lambdas, log-spaced from 1e-6 to 0.99.
std::vector<double> default_lambdas(int n = 20);

struct ScaleFit {
  double alpha = 0, beta = 0;  // a(s) = alpha * exp(beta * s)
  double r2 = 0;               // of ln a against s
  double s_min = 0, s_max = 0; // the sparsities the fit saw
  int points = 0;
  double scale_factor(double target_sparsity) const;
};

// Least squares of ln a = ln alpha + beta * s over the points with s_lo <= s <= s_hi (a > 0).
// Throws blasst::Error with fewer than two usable points or no spread in s.
ScaleFit fit_scale_factor(const std::vector<double>& sparsity, const std::vector<double>& scale_factor,
                          double s_lo = 0.1, double s_hi = 0.9);

// All (sparsity, scale factor) points of sweeps, for fit_scale_factor.
void sweep_points(const CalibrationSweep& sweep, std::vector<double>& sparsity, std::vector<double>& scale_factor);

}  // namespace blasst
