// Naive float64 reference of the BLASST contract (BLASST.md section 2, max seeding of section 6),
// written from the specification only. It shares no code with the CPU engine and does not use the
// helpers of blasst/skip_vote.hpp: tiles, vote groups, visit orders, splits, lambda and the test
// are all re-implemented here.
//
// The reference reads the same problem descriptors as the engine (raw pointers, element strides,
// float32 / float16 / bfloat16 elements, which it upcasts to double with its own conversions) and
// produces O, LSE, the skip mask (layout of SkipMaskLayout), per (sequence, head) counters, the
// dropped share of each row's softmax mass and, for every tested tile, whether the decision was
// within a float32 rounding margin of flipping ("ambiguous").
//
// The walk only tracks the running maxima m_r of the kept logits; O and LSE are then the exact
// softmax over the kept keys, which equals the online recurrence and the LSE merge of split-KV
// chunks in exact arithmetic.
//
// Why ambiguous decisions cannot cascade: a decision can only hinge on a row whose
// m~_r - m_r is within eps of ln(lambda) < 0, while every other row agrees; then m~_r < m_r for
// every row, so keeping or skipping the tile leaves every running max unchanged and all later
// decisions are the same either way.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"
#include "blasst/types.hpp"

namespace bref {

using blasst::DType;
using blasst::SkipPolicy;
using blasst::VisitOrder;

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Element conversions (IEEE binary16 and bfloat16), independent of the library.

inline float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline double half_to_double(std::uint16_t h) {
  const int sign = h >> 15;
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  double v;
  if (e == 0) {
    v = std::ldexp(static_cast<double>(m), -24);  // subnormal (or zero)
  } else if (e == 31) {
    v = m ? std::numeric_limits<double>::quiet_NaN() : kInf;
  } else {
    v = std::ldexp(static_cast<double>(m + 1024), e - 25);
  }
  return sign ? -v : v;
}

// Round to nearest, ties to even.
inline std::uint16_t double_to_half(double x) {
  if (std::isnan(x)) return 0x7e00;
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  if (a == 0.0) return sign;
  if (std::isinf(a)) return static_cast<std::uint16_t>(sign | 0x7c00);
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): unbiased exponent of a is e - 1
  int ue = e - 1;
  if (ue < -14) {  // subnormal range: multiples of 2^-24
    const double q = std::nearbyint(std::ldexp(a, 24));
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(q));  // q == 1024 -> min normal
  }
  double q = std::nearbyint(std::ldexp(a, 10 - ue));  // in [1024, 2048]
  if (q >= 2048.0) {
    q = 1024.0;
    ++ue;
  }
  if (ue > 15) return static_cast<std::uint16_t>(sign | 0x7c00);
  return static_cast<std::uint16_t>(sign | ((ue + 15) << 10) | (static_cast<int>(q) - 1024));
}

inline double bf16_to_double(std::uint16_t b) {
  return static_cast<double>(bits_to_float(static_cast<std::uint32_t>(b) << 16));
}

// Round a float to bfloat16, nearest, ties to even.
inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u = float_to_bits(f);
  if (std::isnan(f)) return static_cast<std::uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

// Element idx (in elements) of an array of type dt.
inline double load(const void* base, DType dt, std::int64_t idx) {
  switch (dt) {
    case DType::f32: return static_cast<double>(static_cast<const float*>(base)[idx]);
    case DType::f16: return half_to_double(static_cast<const std::uint16_t*>(base)[idx]);
    case DType::bf16: return bf16_to_double(static_cast<const std::uint16_t*>(base)[idx]);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

// ---------------------------------------------------------------------------------------------
// Policy pieces (2.7) and the softmax scale.

inline double lambda_of(const SkipPolicy& p, std::int64_t kv_len) {
  if (kv_len <= 0) return 0.0;
  double lam = 0.0;
  switch (p.mode) {
    case SkipPolicy::Mode::dense: return 0.0;
    case SkipPolicy::Mode::scale_factor:
      if (!(p.value > 0.0)) return 0.0;
      lam = p.value / static_cast<double>(kv_len);
      break;
    case SkipPolicy::Mode::threshold: lam = p.value; break;
  }
  if (!(lam > 0.0) || !(lam < 1.0)) return 0.0;
  return lam;
}

inline double scale_of(float softmax_scale, int d_qk) {
  return softmax_scale == 0.0f ? 1.0 / std::sqrt(static_cast<double>(d_qk))
                               : static_cast<double>(softmax_scale);
}

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------------------------
// Result.

struct RefResult {
  int batch = 0;
  int stat_heads = 0;  // prefill: Hq, decode: Hkv
  int hq = 0;
  int dv = 0;
  int block_k = 0;
  std::int64_t token_rows = 0;  // prefill: total_q; decode: batch * q_tokens

  // Per (token row, query head); O additionally per d_v channel.
  std::vector<double> o;             // [token_rows][Hq][dv]
  std::vector<double> lse;           // [token_rows][Hq]
  std::vector<double> dropped;       // [token_rows][Hq]
  std::vector<int> skipped_seen;     // [token_rows][Hq]: skipped tiles the row sees a key of
  std::vector<std::int64_t> keys_seen;  // [token_rows][Hq]: number of keys the row sees
  std::vector<double> row_lambda;    // [token_rows][Hq]
  std::vector<char> row_exists;      // [token_rows][Hq]

  // Skip mask in the layout of SkipMaskLayout.
  std::vector<std::int64_t> offsets;  // batch + 1
  std::vector<int> tiles_k, groups;
  std::vector<std::uint8_t> mask;
  std::vector<std::uint8_t> ambiguous;  // 1 where the decision was within the rounding margin
  std::int64_t n_ambiguous = 0;
  std::int64_t n_tested = 0;  // decisions that ran the test

  std::vector<std::int64_t> visited, skipped;  // [batch][stat_heads]
  std::vector<double> lambda;                  // per sequence

  std::int64_t total_visited() const {
    std::int64_t s = 0;
    for (auto v : visited) s += v;
    return s;
  }
  std::int64_t total_skipped() const {
    std::int64_t s = 0;
    for (auto v : skipped) s += v;
    return s;
  }
  double sparsity() const {
    const auto v = total_visited();
    return v ? static_cast<double>(total_skipped()) / static_cast<double>(v) : 0.0;
  }
  std::int64_t mask_index(int b, int group, int tile) const {
    return offsets[b] + static_cast<std::int64_t>(group) * tiles_k[b] + tile;
  }

  void init_rows() {
    const std::size_t n = static_cast<std::size_t>(token_rows) * hq;
    o.assign(n * dv, 0.0);
    lse.assign(n, -kInf);
    dropped.assign(n, 0.0);
    skipped_seen.assign(n, 0);
    keys_seen.assign(n, 0);
    row_lambda.assign(n, 0.0);
    row_exists.assign(n, 0);
  }
  void init_mask() {
    mask.assign(static_cast<std::size_t>(offsets.back()), 0);
    ambiguous.assign(mask.size(), 0);
    visited.assign(static_cast<std::size_t>(batch) * stat_heads, 0);
    skipped.assign(visited.size(), 0);
  }
};

// Relative margin under which a decision counts as a float32 tie.
constexpr double kTieRel = 2e-5;

struct Row {
  std::vector<double> q;  // d_qk, already in double
  std::int64_t limit;     // last key seen (inclusive), -1 if none
  std::int64_t out;       // token_row * Hq + h
};

// One vote group: rows over the keys K [sk][d_qk], V [sk][d_v] of one KV head of one sequence.
// Writes mask[mask_base + t] for every visible tile t, the counters at stat, and the rows' outputs.
inline void walk_group(const std::vector<Row>& rows, const std::vector<double>& K,
                       const std::vector<double>& V, std::int64_t sk, int dqk, int dv, double scale,
                       double lambda, const SkipPolicy& pol, std::int64_t mask_base,
                       std::size_t stat, RefResult& R) {
  const int bk = pol.block_k;
  const std::size_t nr = rows.size();
  for (const Row& r : rows) {
    R.row_exists[r.out] = 1;
    R.row_lambda[r.out] = lambda;
    R.keys_seen[r.out] = r.limit + 1;
  }
  std::int64_t maxlim = -1;
  for (const Row& r : rows) maxlim = std::max(maxlim, r.limit);
  if (maxlim < 0) return;  // nothing visible: outputs stay O = 0, LSE = -inf, dropped = 0
  (void)sk;
  const int n = static_cast<int>(maxlim / bk + 1);

  // Logits of every row over the keys it sees.
  std::vector<std::vector<double>> s(nr);
  for (std::size_t r = 0; r < nr; ++r) {
    s[r].resize(static_cast<std::size_t>(rows[r].limit + 1));
    const double* q = rows[r].q.data();
    for (std::int64_t j = 0; j <= rows[r].limit; ++j) {
      const double* k = &K[static_cast<std::size_t>(j) * dqk];
      double acc = 0.0;
      for (int c = 0; c < dqk; ++c) acc += q[c] * k[c];
      s[r][j] = scale * acc;
    }
  }
  // Tile maxima; sees[r][t]: the row sees at least one key of tile t.
  std::vector<double> tmax(nr * n, -kInf);
  std::vector<char> sees(nr * n, 0);
  for (std::size_t r = 0; r < nr; ++r)
    for (std::int64_t j = 0; j <= rows[r].limit; ++j) {
      const std::size_t idx = r * n + static_cast<std::size_t>(j / bk);
      sees[idx] = 1;
      tmax[idx] = std::max(tmax[idx], s[r][j]);
    }

  // Visit plan: a list of splits, each a list of tiles in visit order.
  std::vector<std::vector<int>> plan;
  if (pol.splits <= 1) {
    std::vector<int> order;
    for (int i = 0; i < n; ++i) {
      switch (pol.order) {
        case VisitOrder::forward: order.push_back(i); break;
        case VisitOrder::reverse: order.push_back(n - 1 - i); break;
        case VisitOrder::sink_first: order.push_back(i == 0 ? 0 : n - i); break;
      }
    }
    plan.push_back(order);
  } else {
    const int chunk = static_cast<int>(ceil_div(n, pol.splits));
    for (int start = 0; start < n; start += chunk) {
      std::vector<int> c;
      for (int t = start; t < std::min(n, start + chunk); ++t) c.push_back(t);
      plan.push_back(c);
    }
  }

  const double ln_lam = lambda > 0.0 ? std::log(lambda) : -kInf;
  std::vector<std::uint8_t> state(n, 0);
  for (std::size_t si = 0; si < plan.size(); ++si) {
    const bool seeded = pol.max_seed && pol.splits > 1 && si > 0;
    std::vector<double> m(nr, -kInf);
    if (seeded)
      for (std::size_t r = 0; r < nr; ++r) m[r] = sees[r * n] ? tmax[r * n] : -kInf;
    for (std::size_t idx = 0; idx < plan[si].size(); ++idx) {
      const int t = plan[si][idx];
      bool skip;
      if (pol.replay_mask != nullptr) {
        skip = pol.replay_mask[mask_base + t] == 2;
      } else if (lambda == 0.0 || (idx == 0 && !seeded)) {
        skip = false;
      } else {
        bool all = true, strict = true, loose = true;
        for (std::size_t r = 0; r < nr; ++r) {
          if (!sees[r * n + t]) continue;
          if (m[r] == -kInf) {
            all = strict = loose = false;
            break;
          }
          const double d = tmax[r * n + t] - m[r];
          const double eps = kTieRel * (1.0 + std::fabs(tmax[r * n + t]) + std::fabs(m[r]));
          all = all && d < ln_lam;
          strict = strict && d < ln_lam - eps;
          loose = loose && d < ln_lam + eps;
        }
        skip = all;
        ++R.n_tested;
        if (strict != loose) {
          R.ambiguous[mask_base + t] = 1;
          ++R.n_ambiguous;
        }
      }
      state[t] = skip ? 2 : 1;
      if (!skip)
        for (std::size_t r = 0; r < nr; ++r)
          if (sees[r * n + t]) m[r] = std::max(m[r], tmax[r * n + t]);
    }
  }
  for (int t = 0; t < n; ++t) {
    R.mask[mask_base + t] = state[t];
    ++R.visited[stat];
    if (state[t] == 2) ++R.skipped[stat];
  }

  // Outputs: exact softmax over the kept keys each row sees.
  for (std::size_t r = 0; r < nr; ++r) {
    const Row& row = rows[r];
    if (row.limit < 0) continue;
    const auto& sr = s[r];
    double m_all = -kInf, m_kept = -kInf;
    for (std::int64_t j = 0; j <= row.limit; ++j) {
      m_all = std::max(m_all, sr[j]);
      if (state[j / bk] == 1) m_kept = std::max(m_kept, sr[j]);
    }
    double sum_all = 0.0, sum_skipped = 0.0, l = 0.0;
    std::vector<double> acc(dv, 0.0);
    for (std::int64_t j = 0; j <= row.limit; ++j) {
      const double e_all = std::exp(sr[j] - m_all);
      sum_all += e_all;
      if (state[j / bk] == 2) {
        sum_skipped += e_all;
      } else {
        const double p = std::exp(sr[j] - m_kept);
        l += p;
        const double* v = &V[static_cast<std::size_t>(j) * dv];
        for (int c = 0; c < dv; ++c) acc[c] += p * v[c];
      }
    }
    int seen_skipped = 0;
    for (std::int64_t t = 0; t <= row.limit / bk; ++t) seen_skipped += state[t] == 2;
    R.skipped_seen[row.out] = seen_skipped;
    R.dropped[row.out] = sum_skipped / sum_all;
    if (m_kept == -kInf) continue;  // every key it sees was skipped (only under replay)
    R.lse[row.out] = m_kept + std::log(l);
    for (int c = 0; c < dv; ++c) R.o[static_cast<std::size_t>(row.out) * dv + c] = acc[c] / l;
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill over a packed varlen batch.

inline RefResult reference_prefill(const blasst::PrefillProblem& p, const SkipPolicy& pol) {
  RefResult R;
  std::vector<std::int64_t> cq, ck;
  if (p.cu_seqlens_q == nullptr) {
    cq = {0, p.total_q};
    ck = {0, p.total_k};
  } else {
    for (int b = 0; b <= p.batch; ++b) {
      cq.push_back(p.cu_seqlens_q[b]);
      ck.push_back(p.cu_seqlens_k[b]);
    }
  }
  const int batch = static_cast<int>(cq.size()) - 1;
  const int hq = p.num_heads_q, hkv = p.num_heads_kv, dqk = p.head_dim_qk, dv = p.head_dim_v;
  const int bq = pol.block_q, bk = pol.block_k;
  const int group_size = hq / hkv;
  const double scale = scale_of(p.softmax_scale, dqk);

  R.batch = batch;
  R.stat_heads = hq;
  R.hq = hq;
  R.dv = dv;
  R.block_k = bk;
  R.token_rows = p.total_q;
  R.init_rows();
  R.offsets.push_back(0);
  for (int b = 0; b < batch; ++b) {
    const std::int64_t sq = cq[b + 1] - cq[b], sk = ck[b + 1] - ck[b];
    R.groups.push_back(static_cast<int>(hq * ceil_div(sq, bq)));
    R.tiles_k.push_back(static_cast<int>(ceil_div(sk, bk)));
    R.offsets.push_back(R.offsets.back() +
                        static_cast<std::int64_t>(R.groups.back()) * R.tiles_k.back());
  }
  R.init_mask();

  for (int b = 0; b < batch; ++b) {
    const std::int64_t sq = cq[b + 1] - cq[b], sk = ck[b + 1] - ck[b];
    const double lambda = lambda_of(pol, sk);
    R.lambda.push_back(lambda);
    const std::int64_t nqt = ceil_div(sq, bq);
    for (int g = 0; g < hkv; ++g) {
      std::vector<double> K(static_cast<std::size_t>(sk) * dqk), V(static_cast<std::size_t>(sk) * dv);
      for (std::int64_t j = 0; j < sk; ++j) {
        const std::int64_t tok = ck[b] + j;
        for (int c = 0; c < dqk; ++c)
          K[j * dqk + c] = load(p.k, p.dtype, tok * p.k_stride_token + g * p.k_stride_head + c);
        for (int c = 0; c < dv; ++c)
          V[j * dv + c] = load(p.v, p.dtype, tok * p.v_stride_token + g * p.v_stride_head + c);
      }
      for (int h = g * group_size; h < (g + 1) * group_size; ++h) {
        for (std::int64_t qt = 0; qt < nqt; ++qt) {
          std::vector<Row> rows;
          for (std::int64_t i = qt * bq; i < std::min(sq, (qt + 1) * bq); ++i) {
            Row row;
            const std::int64_t tok = cq[b] + i;
            row.q.resize(dqk);
            for (int c = 0; c < dqk; ++c)
              row.q[c] = load(p.q, p.dtype, tok * p.q_stride_token + h * p.q_stride_head + c);
            std::int64_t lim = sk - 1;
            if (p.causal) lim = std::min(lim, i + sk - sq);
            row.limit = std::max<std::int64_t>(lim, -1);
            row.out = tok * hq + h;
            rows.push_back(std::move(row));
          }
          const std::int64_t group = h * nqt + qt;
          walk_group(rows, K, V, sk, dqk, dv, scale, lambda, pol,
                     R.offsets[b] + group * R.tiles_k[b],
                     static_cast<std::size_t>(b) * hq + h, R);
        }
      }
    }
  }
  return R;
}

// ---------------------------------------------------------------------------------------------
// Decode over a paged KV cache.

inline RefResult reference_decode(const blasst::DecodeProblem& p, const SkipPolicy& pol) {
  RefResult R;
  const int batch = p.batch, qt = p.q_tokens;
  const int hq = p.num_heads_q, hkv = p.num_heads_kv, dqk = p.head_dim_qk, dv = p.head_dim_v;
  const int bk = pol.block_k;
  const int group_size = hq / hkv;
  const double scale = scale_of(p.softmax_scale, dqk);

  R.batch = batch;
  R.stat_heads = hkv;
  R.hq = hq;
  R.dv = dv;
  R.block_k = bk;
  R.token_rows = static_cast<std::int64_t>(batch) * qt;
  R.init_rows();
  R.offsets.push_back(0);
  for (int b = 0; b < batch; ++b) {
    R.groups.push_back(hkv);
    R.tiles_k.push_back(static_cast<int>(ceil_div(p.seq_lens[b], bk)));
    R.offsets.push_back(R.offsets.back() + static_cast<std::int64_t>(hkv) * R.tiles_k.back());
  }
  R.init_mask();

  for (int b = 0; b < batch; ++b) {
    const std::int64_t sk = p.seq_lens[b];
    const double lambda = lambda_of(pol, sk);
    R.lambda.push_back(lambda);
    for (int g = 0; g < hkv; ++g) {
      std::vector<double> K(static_cast<std::size_t>(sk) * dqk), V(static_cast<std::size_t>(sk) * dv);
      for (std::int64_t j = 0; j < sk; ++j) {
        const std::int64_t page =
            p.block_table[static_cast<std::int64_t>(b) * p.max_pages_per_seq + j / p.page_size];
        const std::int64_t slot = j % p.page_size;
        for (int c = 0; c < dqk; ++c)
          K[j * dqk + c] = load(p.k_cache, p.dtype,
                                page * p.k_stride_page + slot * p.k_stride_slot + g * p.k_stride_head + c);
        for (int c = 0; c < dv; ++c)
          V[j * dv + c] = load(p.v_cache, p.dtype,
                               page * p.v_stride_page + slot * p.v_stride_slot + g * p.v_stride_head + c);
      }
      std::vector<Row> rows;
      for (int t = 0; t < qt; ++t)
        for (int h = g * group_size; h < (g + 1) * group_size; ++h) {
          Row row;
          row.q.resize(dqk);
          for (int c = 0; c < dqk; ++c)
            row.q[c] = load(p.q, p.dtype,
                            b * p.q_stride_batch + t * p.q_stride_token + h * p.q_stride_head + c);
          row.limit = std::max<std::int64_t>(std::min<std::int64_t>(t + sk - qt, sk - 1), -1);
          row.out = (static_cast<std::int64_t>(b) * qt + t) * hq + h;
          rows.push_back(std::move(row));
        }
      walk_group(rows, K, V, sk, dqk, dv, scale, lambda, pol, R.offsets[b] + static_cast<std::int64_t>(g) * R.tiles_k[b],
                 static_cast<std::size_t>(b) * hkv + g, R);
    }
  }
  return R;
}

// ---------------------------------------------------------------------------------------------
// Plain softmax attention without tiles, for sanity checks of the reference itself:
// rows given by (query vector, last key seen), keys/values [sk][d].
inline void plain_attention(const std::vector<double>& q, std::int64_t limit,
                            const std::vector<double>& K, const std::vector<double>& V, int dqk,
                            int dv, double scale, std::vector<double>& o, double& lse) {
  o.assign(dv, 0.0);
  if (limit < 0) {
    lse = -kInf;
    return;
  }
  std::vector<double> s(limit + 1);
  double m = -kInf;
  for (std::int64_t j = 0; j <= limit; ++j) {
    double a = 0;
    for (int c = 0; c < dqk; ++c) a += q[c] * K[j * dqk + c];
    s[j] = a * scale;
    m = std::max(m, s[j]);
  }
  double l = 0;
  for (std::int64_t j = 0; j <= limit; ++j) {
    const double e = std::exp(s[j] - m);
    l += e;
    for (int c = 0; c < dv; ++c) o[c] += e * V[j * dv + c];
  }
  for (auto& x : o) x /= l;
  lse = m + std::log(l);
}

}  // namespace bref
