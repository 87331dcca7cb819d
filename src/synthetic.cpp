#include "blasst/synthetic.hpp"

#include <algorithm>
#include <cmath>

#include "blasst/types.hpp"
#include "cpu/thread_pool.hpp"

namespace blasst {
namespace {

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Counter-based stream: every (kind, head, token) row draws from its own seed, so rows can be
// generated in any order on any thread with the same result.
struct Rng {
  std::uint64_t s;
  Rng(std::uint64_t seed, std::uint64_t a, std::uint64_t b, std::uint64_t c)
      : s(splitmix(splitmix(splitmix(seed ^ a) ^ b) ^ c)) {}
  double uniform() {  // (0, 1)
    s = splitmix(s);
    return (static_cast<double>(s >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  }
  float gauss() {
    const double u = uniform(), v = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
  }
};

enum : std::uint64_t { kQ = 1, kK = 2, kV = 3, kPick = 4 };

}  // namespace

SyntheticQKV synthetic_qkv(int sq, int sk, int hq, int hkv, int dqk, int dv, const SyntheticSpec& spec) {
  if (sq < 0 || sk < 0 || hq < 1 || hkv < 1 || hq % hkv != 0 || dqk < 8 || dv < 1)
    throw Error("synthetic_qkv: bad shape (needs Hq % Hkv == 0 and d_qk >= 8)");
  SyntheticQKV x;
  x.sq = sq, x.sk = sk, x.hq = hq, x.hkv = hkv, x.dqk = dqk, x.dv = dv;
  x.q.resize(static_cast<std::size_t>(sq) * hq * dqk);
  x.k.resize(static_cast<std::size_t>(sk) * hkv * dqk);
  x.v.resize(static_cast<std::size_t>(sk) * hkv * dv);

  const int F = dqk / 4;
  const int sink_dim = 2 * F, needles = std::clamp(spec.needles, 0, dqk - sink_dim - 1 - dqk / 8);
  const int noise_begin = sink_dim + 1 + needles, noise_dims = dqk - noise_begin;
  const double root_d = std::sqrt(static_cast<double>(dqk));
  // amp^2 * sum_f cos((i - j) f) is local * sqrt(d) at i == j.
  const float amp = static_cast<float>(std::sqrt(std::max(spec.local, 0.0f) * root_d / F));
  std::vector<double> freq(F);
  for (int f = 0; f < F; ++f)
    freq[f] = 0.25 * std::pow(1.0 / 256.0, F > 1 ? double(f) / (F - 1) : 0.0);
  const float sink_amp = static_cast<float>(std::sqrt(std::max(spec.sink, 0.0f) * root_d));
  const float needle_amp = static_cast<float>(std::sqrt(std::max(spec.needle, 0.0f) * root_d));
  // q and k noise of std sqrt(noise * sqrt(d / noise_dims)) each give logits of std `noise`.
  const float noise_amp =
      static_cast<float>(std::sqrt(std::max(spec.noise, 0.0f) * std::sqrt(double(dqk) / noise_dims)));

  std::vector<int> needle_pos(static_cast<std::size_t>(hkv) * needles);
  for (int h = 0; h < hkv; ++h)
    for (int n = 0; n < needles; ++n) {
      Rng r(spec.seed, kPick, static_cast<std::uint64_t>(h), static_cast<std::uint64_t>(n));
      needle_pos[static_cast<std::size_t>(h) * needles + n] = sk > 0 ? static_cast<int>(r.uniform() * sk) : 0;
    }

  auto fill = [&](float* row, std::int64_t pos, Rng& r) {
    for (int f = 0; f < F; ++f) {
      row[2 * f] = amp * static_cast<float>(std::cos(pos * freq[f]));
      row[2 * f + 1] = amp * static_cast<float>(std::sin(pos * freq[f]));
    }
    for (int c = sink_dim; c < noise_begin; ++c) row[c] = 0.0f;
    for (int c = noise_begin; c < dqk; ++c) row[c] = noise_amp * r.gauss();
  };

  cpu::pool().parallel_for(std::int64_t{sq} + sk, [&](std::int64_t i, int) {
    if (i < sq) {  // query row i, all heads
      for (int h = 0; h < hq; ++h) {
        float* row = &x.q[(static_cast<std::size_t>(i) * hq + h) * dqk];
        Rng r(spec.seed, kQ, static_cast<std::uint64_t>(h), static_cast<std::uint64_t>(i));
        fill(row, i + sk - sq, r);
        row[sink_dim] = sink_amp;
        if (needles > 0 && r.uniform() < spec.needle_queries)
          row[sink_dim + 1 + static_cast<int>(r.uniform() * needles)] = needle_amp;
      }
      return;
    }
    const std::int64_t j = i - sq;  // key row j, all KV heads
    for (int h = 0; h < hkv; ++h) {
      float* row = &x.k[(static_cast<std::size_t>(j) * hkv + h) * dqk];
      Rng r(spec.seed, kK, static_cast<std::uint64_t>(h), static_cast<std::uint64_t>(j));
      fill(row, j, r);
      if (j < spec.sinks) row[sink_dim] = sink_amp;
      for (int n = 0; n < needles; ++n)
        if (needle_pos[static_cast<std::size_t>(h) * needles + n] == j) row[sink_dim + 1 + n] = needle_amp;
      float* vrow = &x.v[(static_cast<std::size_t>(j) * hkv + h) * dv];
      Rng rv(spec.seed, kV, static_cast<std::uint64_t>(h), static_cast<std::uint64_t>(j));
      for (int c = 0; c < dv; ++c) vrow[c] = rv.gauss();
    }
  });
  return x;
}

}  // namespace blasst
