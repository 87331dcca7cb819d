// Calibration: sweeps reproduce the engine's own counts, and the fit of a(s) = alpha exp(beta s).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/synthetic.hpp"

using namespace blasst;

namespace {

SkipPolicy geometry(int bq, int bk, VisitOrder order, int splits, bool seed) {
  SkipPolicy g;
  g.block_q = bq, g.block_k = bk, g.order = order, g.splits = splits, g.max_seed = seed;
  return g;
}

// The engine's own statistics for the geometry g run at threshold lambda.
template <class Problem, class Engine>
SkipStats stats_at(const Problem& p, SkipPolicy g, double lambda, std::size_t out_elems, Engine engine) {
  g.mode = SkipPolicy::Mode::threshold, g.value = lambda;
  std::vector<float> o(out_elems);
  SkipStats st;
  Outputs out;
  out.set_contiguous_strides(p);
  out.o = o.data(), out.stats = &st;
  engine(p, g, out);
  return st;
}

}  // namespace

TEST(Calibrate, PrefillSweepEqualsTheEngine) {
  const int hq = 4, hkv = 2, d = 32;
  const std::vector<int> lens = {300, 0, 1013};
  std::vector<float> q, k, v;
  std::vector<std::int32_t> cu = {0};
  for (std::size_t i = 0; i < lens.size(); ++i) {
    SyntheticSpec spec;
    spec.seed = 11 + i;
    const SyntheticQKV x = synthetic_qkv(lens[i], lens[i], hq, hkv, d, d, spec);
    q.insert(q.end(), x.q.begin(), x.q.end());
    k.insert(k.end(), x.k.begin(), x.k.end());
    v.insert(v.end(), x.v.begin(), x.v.end());
    cu.push_back(cu.back() + lens[i]);
  }
  PrefillProblem p;
  p.batch = 3, p.cu_seqlens_q = p.cu_seqlens_k = cu.data();
  p.total_q = p.total_k = cu.back();
  p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d, p.causal = true;
  p.q = q.data(), p.k = k.data(), p.v = v.data();
  p.set_contiguous_strides();
  for (VisitOrder order : {VisitOrder::reverse, VisitOrder::sink_first}) {
    const SkipPolicy g = geometry(16, 32, order, 1, false);
    const std::vector<double> lambdas = default_lambdas(12);
    const CalibrationSweep sweep = cpu::sweep_prefill(p, g, lambdas);
    ASSERT_EQ(sweep.kv_len, (std::vector<std::int64_t>{300, 0, 1013}));
    bool some_skips = false;
    for (std::size_t l = 0; l < lambdas.size(); ++l) {
      const SkipStats st = stats_at(p, g, lambdas[l], q.size(), cpu::prefill);
      for (int b = 0; b < 3; ++b) {
        std::int64_t vis = 0, skp = 0;
        for (int h = 0; h < hq; ++h) vis += st.visited[b * hq + h], skp += st.skipped[b * hq + h];
        EXPECT_EQ(sweep.visited[b], vis);
        EXPECT_EQ(sweep.skipped[b * lambdas.size() + l], skp) << "lambda " << lambdas[l] << " sequence " << b;
        some_skips |= skp > 0;
      }
    }
    EXPECT_TRUE(some_skips);
  }
}

TEST(Calibrate, DecodeSweepEqualsTheEngineWithSplitsAndSeeding) {
  const int hq = 8, hkv = 2, d = 32, page = 16;
  const std::vector<int> lens = {700, 2000};
  const int pages_per = (2000 + page - 1) / page;
  std::vector<float> kc(std::size_t(2) * pages_per * page * hkv * d, 0.0f), vc(kc.size(), 0.0f), q;
  std::vector<std::int32_t> table(2 * pages_per), seq_lens(lens.begin(), lens.end());
  std::iota(table.begin(), table.end(), 0);
  for (int b = 0; b < 2; ++b) {
    SyntheticSpec spec;
    spec.seed = 5 + b;
    const SyntheticQKV x = synthetic_qkv(1, lens[b], hq, hkv, d, d, spec);
    q.insert(q.end(), x.q.begin(), x.q.end());
    for (int j = 0; j < lens[b]; ++j)
      for (int c = 0; c < hkv * d; ++c) {
        const std::size_t dst = (std::size_t(table[b * pages_per + j / page]) * page + j % page) * hkv * d + c;
        kc[dst] = x.k[std::size_t(j) * hkv * d + c];
        vc[dst] = x.v[std::size_t(j) * hkv * d + c];
      }
  }
  DecodeProblem p;
  p.batch = 2, p.q_tokens = 1, p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d;
  p.num_pages = 2 * pages_per, p.page_size = page, p.max_pages_per_seq = pages_per;
  p.q = q.data(), p.k_cache = kc.data(), p.v_cache = vc.data(), p.block_table = table.data();
  p.seq_lens = seq_lens.data();
  p.set_contiguous_strides();
  const SkipPolicy g = geometry(64, 32, VisitOrder::forward, 3, true);
  const std::vector<double> lambdas = default_lambdas(10);
  const CalibrationSweep sweep = cpu::sweep_decode(p, g, lambdas);
  for (std::size_t l = 0; l < lambdas.size(); ++l) {
    const SkipStats st = stats_at(p, g, lambdas[l], q.size(), cpu::decode);
    for (int b = 0; b < 2; ++b) {
      EXPECT_EQ(sweep.visited[b], st.visited[b * hkv] + st.visited[b * hkv + 1]);
      EXPECT_EQ(sweep.skipped[b * lambdas.size() + l], st.skipped[b * hkv] + st.skipped[b * hkv + 1]);
    }
  }
}

TEST(Calibrate, FitRecoversAnExponential) {
  std::vector<double> s, a;
  for (int i = 0; i <= 40; ++i) {
    s.push_back(i / 40.0);
    a.push_back(2.0 * std::exp(5.0 * s.back()) * (i % 2 ? 1.01 : 0.99));
  }
  const ScaleFit f = fit_scale_factor(s, a);
  EXPECT_NEAR(f.alpha, 2.0, 0.05);
  EXPECT_NEAR(f.beta, 5.0, 0.05);
  EXPECT_GT(f.r2, 0.999);
  EXPECT_NEAR(f.s_min, 0.1, 1e-12);
  EXPECT_NEAR(f.s_max, 0.9, 1e-12);
  EXPECT_EQ(f.points, 33);
  EXPECT_NEAR(f.scale_factor(0.5), 2.0 * std::exp(2.5), 0.5);
}

TEST(Calibrate, FitNeedsSpread) {
  EXPECT_THROW(fit_scale_factor({0.5}, {1.0}), Error);
  EXPECT_THROW(fit_scale_factor({0.5, 0.5}, {1.0, 2.0}), Error);
  EXPECT_THROW(fit_scale_factor({0.01, 0.95}, {1.0, 2.0}), Error);  // outside [0.1, 0.9]
  EXPECT_THROW(fit_scale_factor({0.2, 0.3}, {1.0}), Error);
}

TEST(Calibrate, DefaultLambdas) {
  const std::vector<double> l = default_lambdas();
  ASSERT_EQ(l.size(), 20u);
  EXPECT_NEAR(l.front(), 1e-6, 1e-12);
  EXPECT_NEAR(l.back(), 0.99, 1e-12);
  for (std::size_t i = 1; i < l.size(); ++i) EXPECT_GT(l[i], l[i - 1]);
}
