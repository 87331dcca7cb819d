// Contract-level tests: the float64 reference checked against itself and against hand-derived
// decisions, the inline helpers of skip_vote.hpp against the specification, the skip-mask layout
// and lambda of the library, the engine on hand-built cases, optional outputs, and the errors the
// engine must raise (blasst::Error, never a crash).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "blasst/skip_vote.hpp"
#include "cpu/reference.hpp"
#include "cpu/test_util.hpp"

using namespace bt;

namespace {

// ------------------------------------------------------------------------------------------
// The reference against itself.

TEST(Reference, HalfAndBf16Conversions) {
  EXPECT_EQ(bref::double_to_half(1.0), 0x3c00);
  EXPECT_EQ(bref::double_to_half(-2.0), 0xc000);
  EXPECT_EQ(bref::double_to_half(65504.0), 0x7bff);
  EXPECT_EQ(bref::double_to_half(65520.0), 0x7c00);  // rounds to infinity
  EXPECT_EQ(bref::double_to_half(std::ldexp(1.0, -24)), 0x0001);
  EXPECT_EQ(bref::double_to_half(std::ldexp(1.0, -25)), 0x0000);          // tie to even (0)
  EXPECT_EQ(bref::double_to_half(std::ldexp(3.0, -25)), 0x0002);          // tie to even (2)
  EXPECT_EQ(bref::double_to_half(1.0 + std::ldexp(1.0, -11)), 0x3c00);    // tie to even
  EXPECT_EQ(bref::double_to_half(1.0 + std::ldexp(3.0, -11)), 0x3c02);    // tie to even
  EXPECT_EQ(bref::double_to_half(0.1), 0x2e66);
  EXPECT_EQ(bref::double_to_half(std::ldexp(1023.5, -24)), 0x0400);       // to the min normal
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const double x = bref::half_to_double(static_cast<std::uint16_t>(h));
    if (std::isnan(x)) continue;
    ASSERT_EQ(bref::double_to_half(x), h) << "half round trip " << h;
  }
  EXPECT_EQ(bref::half_to_double(0x3555), 0.333251953125);
  EXPECT_EQ(bref::float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bref::float_to_bf16(1.00390625f), 0x3f80);  // tie to even
  EXPECT_EQ(bref::float_to_bf16(1.01171875f), 0x3f82);  // tie to even
  EXPECT_EQ(bref::float_to_bf16(-3.0f), 0xc040);
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const double x = bref::bf16_to_double(static_cast<std::uint16_t>(b));
    if (std::isnan(x)) continue;
    ASSERT_EQ(bref::float_to_bf16(static_cast<float>(x)), b) << "bf16 round trip " << b;
  }
}

// Dense reference == plain softmax attention without tiles (prefill varlen, causal both ways, GQA).
TEST(Reference, DenseEqualsPlainSoftmax) {
  BT_SEEDED_RNG(rng);
  for (bool causal : {true, false}) {
    auto D = make_prefill_data(rng, {13, 0, 40, 7, 30}, {13, 9, 25, 0, 61}, 4, 2, 16, 12, causal,
                               Fill::random(2.0), causal ? 0.0f : 0.3f);
    auto C = build_prefill(D);
    auto p = C.problem();
    for (int bk : {1, 7, 16}) {
      auto R = bref::reference_prefill(p, dense(5, bk, VisitOrder::sink_first));
      EXPECT_EQ(R.total_skipped(), 0);
      const double scale = bref::scale_of(D.softmax_scale, D.dqk);
      for (std::size_t b = 0; b < D.sq.size(); ++b) {
        const auto q0 = D.q_start(b), k0 = D.k_start(b);
        for (int h = 0; h < D.hq; ++h) {
          const int g = h / 2;
          std::vector<double> K(D.sk[b] * D.dqk), V(D.sk[b] * D.dv);
          for (int j = 0; j < D.sk[b]; ++j) {
            for (int c = 0; c < D.dqk; ++c) K[j * D.dqk + c] = D.k[((k0 + j) * D.hkv + g) * D.dqk + c];
            for (int c = 0; c < D.dv; ++c) V[j * D.dv + c] = D.v[((k0 + j) * D.hkv + g) * D.dv + c];
          }
          for (int i = 0; i < D.sq[b]; ++i) {
            std::vector<double> q(D.dqk), o;
            for (int c = 0; c < D.dqk; ++c) q[c] = D.q[((q0 + i) * D.hq + h) * D.dqk + c];
            const std::int64_t lim =
                causal ? std::min<std::int64_t>(i + D.sk[b] - D.sq[b], D.sk[b] - 1) : D.sk[b] - 1;
            double lse;
            bref::plain_attention(q, std::max<std::int64_t>(lim, -1), K, V, D.dqk, D.dv, scale, o, lse);
            const std::size_t ri = (q0 + i) * D.hq + h;
            if (lse == -bref::kInf) {
              EXPECT_EQ(R.lse[ri], -bref::kInf);
            } else {
              EXPECT_NEAR(R.lse[ri], lse, 1e-12 * std::max(1.0, std::fabs(lse)));
            }
            for (int c = 0; c < D.dv; ++c) ASSERT_NEAR(R.o[ri * D.dv + c], o[c], 1e-12);
          }
        }
      }
    }
  }
}

TEST(Reference, ThresholdZeroAndLambdaAtLeastOneAreDense) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {100, 64}, {100, 80}, 2, 1, 16, 16, true, Fill::structure());
  auto C = build_prefill(D);
  auto p = C.problem();
  const auto R0 = bref::reference_prefill(p, dense(16, 16));
  EXPECT_EQ(R0.total_skipped(), 0);
  for (auto pol : {threshold(0.0, 16, 16), threshold(1.0, 16, 16), threshold(3.0, 16, 16),
                   policy(SkipPolicy::Mode::scale_factor, 0.0, 16, 16, VisitOrder::reverse),
                   policy(SkipPolicy::Mode::scale_factor, 100.0, 16, 16, VisitOrder::reverse)}) {
    const auto R = bref::reference_prefill(p, pol);
    EXPECT_EQ(R.mask, R0.mask);
    EXPECT_EQ(R.o, R0.o);
    EXPECT_EQ(R.lse, R0.lse);
    EXPECT_EQ(R.total_skipped(), 0);
  }
  // ...while a small lambda does skip on these inputs.
  EXPECT_GT(bref::reference_prefill(p, threshold(0.01, 16, 16)).total_skipped(), 0);
}

TEST(Reference, SplitDenseEqualsOneSplit) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {1, 50, 300}, 2, 4, 2, 16, 8, Fill::random(2.0));
  auto C = build_decode(D, DType::f32, 16, &rng);
  auto p = C.problem();
  const auto R1 = bref::reference_decode(p, dense(1, 16, VisitOrder::forward));
  for (int splits : {2, 3, 7, 64}) {
    auto pol = dense(1, 16, VisitOrder::forward, splits);
    const auto R = bref::reference_decode(p, pol);
    EXPECT_EQ(R.mask, R1.mask);
    for (std::size_t i = 0; i < R.o.size(); ++i) ASSERT_NEAR(R.o[i], R1.o[i], 1e-12);
  }
}

// Hand-derived decisions on designed logits: one decode row, d = 8, softmax_scale 1, q = e_0,
// so the logit of key j is k_j[0].
struct Tiny {
  DecodeData d;
  DecodeCase c;
  Tiny(const std::vector<double>& logits, int heads = 1, const std::vector<double>& logits2 = {}) {
    d.batch = 1;
    d.q_tokens = 1;
    d.hq = heads;
    d.hkv = 1;
    d.dqk = 8;
    d.dv = 8;
    d.softmax_scale = 1.0f;
    d.seq_lens = {static_cast<int>(logits.size())};
    d.q.assign(heads * 8, 0.0f);
    for (int h = 0; h < heads; ++h) d.q[h * 8 + h] = 1.0f;  // head h reads channel h
    d.k.emplace_back(logits.size() * 8, 0.0f);
    d.v.emplace_back(logits.size() * 8, 0.0f);
    for (std::size_t j = 0; j < logits.size(); ++j) {
      d.k[0][j * 8] = static_cast<float>(logits[j]);
      if (!logits2.empty()) d.k[0][j * 8 + 1] = static_cast<float>(logits2[j]);
      d.v[0][j * 8 + (j % 8)] = 1.0f;
    }
    c = build_decode(d, DType::f32, 0);
  }
};

std::vector<std::uint8_t> ref_mask(const Tiny& t, const SkipPolicy& pol) {
  return bref::reference_decode(t.c.problem(), pol).mask;
}

TEST(Reference, HandDerivedDecisions) {
  const double lam = std::exp(-2.0);
  using V = std::vector<std::uint8_t>;
  {
    Tiny t({0.0, -3.0, 1.0, -1.5});
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::forward)), (V{1, 2, 1, 2}));
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::reverse)), (V{1, 2, 1, 1}));
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::sink_first)), (V{1, 2, 1, 1}));
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::forward, 2)), (V{1, 2, 1, 2}));
    // Tiles of 2 keys: tile 1 = {1.0, -1.5} has max 1 > 0 - 2: kept.
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 2, VisitOrder::forward)), (V{1, 1}));
    // -2 vs ln(0.1) = -2.30: kept; vs ln(0.25) = -1.39: skipped.
    Tiny two({0.0, -2.0});
    EXPECT_EQ(ref_mask(two, threshold(0.1, 1, 1, VisitOrder::forward)), (V{1, 1}));
    EXPECT_EQ(ref_mask(two, threshold(0.25, 1, 1, VisitOrder::forward)), (V{1, 2}));
  }
  {
    // Max seeding: split 1 = tiles {2, 3} starts from tile 0's max (0) instead of being exempt.
    Tiny t({0.0, -3.0, -2.5, -5.0});
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::forward, 2, false)), (V{1, 2, 1, 2}));
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::forward, 2, true)), (V{1, 2, 2, 2}));
    // Three splits of ceil(4/3) = 2 tiles: {0,1}, {2,3}: same as two.
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::forward, 3, true)), (V{1, 2, 2, 2}));
    // Four splits: every tile is the first of its split; seeded ones are still tested.
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::forward, 4, false)), (V{1, 1, 1, 1}));
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::forward, 4, true)), (V{1, 2, 2, 2}));
  }
  {
    // Two heads vote together (GQA group): head 1 vetoes tile 1, nobody vetoes tile 2.
    Tiny t({0.0, -3.0, -4.0}, 2, {0.0, 0.5, -3.0});
    EXPECT_EQ(ref_mask(t, threshold(lam, 1, 1, VisitOrder::forward)), (V{1, 1, 2}));
  }
}

TEST(Reference, DroppedMassAndCounts) {
  const double lam = std::exp(-2.0);
  Tiny t({0.0, -3.0, 1.0, -1.5});
  const auto R = bref::reference_decode(t.c.problem(), threshold(lam, 1, 1, VisitOrder::forward));
  const double all = 1 + std::exp(-3.0) + std::exp(1.0) + std::exp(-1.5);
  EXPECT_NEAR(R.dropped[0], (std::exp(-3.0) + std::exp(-1.5)) / all, 1e-15);
  EXPECT_EQ(R.skipped_seen[0], 2);
  EXPECT_EQ(R.visited, (std::vector<std::int64_t>{4}));
  EXPECT_EQ(R.skipped, (std::vector<std::int64_t>{2}));
  const double kept = 1 + std::exp(1.0);
  EXPECT_NEAR(R.lse[0], std::log(kept), 1e-15);
  EXPECT_NEAR(R.o[0], 1.0 / kept, 1e-15);             // v_0 = e_0
  EXPECT_NEAR(R.o[2], std::exp(1.0) / kept, 1e-15);   // v_2 = e_2
  EXPECT_EQ(R.o[1], 0.0);
}

// ------------------------------------------------------------------------------------------
// skip_vote.hpp helpers against the specification.

TEST(SkipVoteSpec, HelpersFollowTheSpecification) {
  using blasst::VisitOrder;
  // 2.1: bottom-right causal limit.
  EXPECT_EQ(blasst::row_key_limit(true, 0, 4, 10), 6);
  EXPECT_EQ(blasst::row_key_limit(true, 3, 4, 10), 9);
  EXPECT_EQ(blasst::row_key_limit(true, 0, 10, 4), -1);
  EXPECT_EQ(blasst::row_key_limit(true, 6, 10, 4), 0);
  EXPECT_EQ(blasst::row_key_limit(true, 0, 100, 4), -1);
  EXPECT_EQ(blasst::row_key_limit(false, 0, 10, 4), 3);
  EXPECT_EQ(blasst::row_key_limit(false, 0, 10, 0), -1);
  // 2.2
  EXPECT_EQ(blasst::visible_tiles(-1, 16), 0);
  EXPECT_EQ(blasst::visible_tiles(0, 16), 1);
  EXPECT_EQ(blasst::visible_tiles(15, 16), 1);
  EXPECT_EQ(blasst::visible_tiles(16, 16), 2);
  // 2.4
  const std::vector<int> fwd{0, 1, 2, 3, 4}, rev{4, 3, 2, 1, 0}, sink{0, 4, 3, 2, 1};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(blasst::visit_tile(VisitOrder::forward, 5, i), fwd[i]);
    EXPECT_EQ(blasst::visit_tile(VisitOrder::reverse, 5, i), rev[i]);
    EXPECT_EQ(blasst::visit_tile(VisitOrder::sink_first, 5, i), sink[i]);
  }
  EXPECT_EQ(blasst::visit_tile(VisitOrder::sink_first, 1, 0), 0);
  for (int n = 0; n < 40; ++n)
    for (int s = 1; s < 12; ++s) {
      const auto cut = blasst::split_cut(n, s);
      if (n == 0) {
        EXPECT_EQ(cut.count, 0);
        continue;
      }
      EXPECT_EQ(cut.chunk, (n + s - 1) / s);
      EXPECT_LE(cut.count, s);
      EXPECT_GE(cut.chunk * cut.count, n);
      EXPECT_LT(cut.chunk * (cut.count - 1), n) << "empty chunk kept for n=" << n << " s=" << s;
    }
  // 2.7
  for (int mode = 0; mode < 3; ++mode)
    for (double v : {-1.0, 0.0, 1e-9, 0.01, 0.5, 0.999, 1.0, 5.0, 5000.0})
      for (std::int64_t L : {0, 1, 7, 4096}) {
        SkipPolicy p;
        p.mode = static_cast<SkipPolicy::Mode>(mode);
        p.value = v;
        EXPECT_DOUBLE_EQ(blasst::lambda_for(mode, v, L), bref::lambda_of(p, L))
            << "mode " << mode << " value " << v << " L " << L;
      }
  EXPECT_EQ(blasst::lambda_for(2, std::nan(""), 10), 0.0);
  EXPECT_EQ(blasst::skip_log_threshold(0.0), -INFINITY);
  EXPECT_EQ(blasst::skip_log_threshold(1.0), -INFINITY);
  EXPECT_NEAR(blasst::skip_log_threshold(0.01), std::log(0.01), 1e-6);
  EXPECT_NEAR(blasst::skip_log_threshold(0.01, 1.0 / std::log(2.0)), std::log2(0.01), 1e-5);
  // 2.5: rows that see nothing agree, rows without a finite max veto, strict comparison.
  const float thr = blasst::skip_log_threshold(0.5);
  EXPECT_TRUE(blasst::row_agrees(false, 100.0f, -INFINITY, thr));
  EXPECT_FALSE(blasst::row_agrees(true, -100.0f, -INFINITY, thr));
  EXPECT_FALSE(blasst::row_agrees(true, -100.0f, -INFINITY, -INFINITY));
  EXPECT_TRUE(blasst::row_agrees(true, -1.0f, 0.0f, thr));
  EXPECT_FALSE(blasst::row_agrees(true, thr, 0.0f, thr));
  EXPECT_FALSE(blasst::row_agrees(true, -1000.0f, 0.0f, blasst::skip_log_threshold(0.0)));
}

// ------------------------------------------------------------------------------------------
// Library pieces the engine relies on.

TEST(Library, SkipMaskLayoutAndLambdaMatchReference) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {0, 1, 17, 70, 5}, {3, 1, 17, 40, 0}, 4, 2, 8, 8, true, Fill::random());
  auto C = build_prefill(D);
  for (int bq : {1, 16, 64})
    for (int bk : {1, 16, 128}) {
      const auto L = blasst::skip_mask_layout(C.problem(), bq, bk);
      const auto R = bref::reference_prefill(C.problem(), dense(bq, bk));
      EXPECT_EQ(L.offsets, R.offsets);
      EXPECT_EQ(L.tiles_k, R.tiles_k);
      EXPECT_EQ(L.groups, R.groups);
      EXPECT_EQ(L.size(), static_cast<std::int64_t>(R.mask.size()));
    }
  auto DD = make_decode_data(rng, {0, 1, 17, 300}, 1, 4, 2, 8, 8, Fill::random());
  auto DC = build_decode(DD, DType::f32, 16, &rng);
  for (int bk : {1, 16, 128}) {
    const auto L = blasst::skip_mask_layout(DC.problem(), bk);
    const auto R = bref::reference_decode(DC.problem(), dense(1, bk, VisitOrder::forward));
    EXPECT_EQ(L.offsets, R.offsets);
    EXPECT_EQ(L.tiles_k, R.tiles_k);
    EXPECT_EQ(L.groups, R.groups);
  }
  for (auto mode : {SkipPolicy::Mode::dense, SkipPolicy::Mode::scale_factor, SkipPolicy::Mode::threshold})
    for (double v : {0.0, 1e-4, 0.3, 1.0, 2.0, 300.0})
      for (std::int64_t L : {0, 1, 100, 4096}) {
        auto p = policy(mode, v, 64, 128, VisitOrder::reverse);
        EXPECT_DOUBLE_EQ(blasst::sequence_lambda(p, L), bref::lambda_of(p, L));
      }
}

// ------------------------------------------------------------------------------------------
// The engine on the hand-built cases (decisions derived by hand above, not by the reference).

TEST(EngineContract, HandDerivedDecisions) {
  const double lam = std::exp(-2.0);
  using V = std::vector<std::uint8_t>;
  auto run_mask = [](const Tiny& t, const SkipPolicy& pol) {
    auto p = t.c.problem();
    auto out = make_out(p, bref::reference_decode(p, pol).mask.size());
    run_and_check(p, pol, out);
    return out.mask_copy();
  };
  Tiny a({0.0, -3.0, 1.0, -1.5});
  EXPECT_EQ(run_mask(a, threshold(lam, 1, 1, VisitOrder::forward)), (V{1, 2, 1, 2}));
  EXPECT_EQ(run_mask(a, threshold(lam, 1, 1, VisitOrder::reverse)), (V{1, 2, 1, 1}));
  EXPECT_EQ(run_mask(a, threshold(lam, 1, 1, VisitOrder::sink_first)), (V{1, 2, 1, 1}));
  EXPECT_EQ(run_mask(a, threshold(lam, 1, 2, VisitOrder::forward)), (V{1, 1}));
  Tiny b({0.0, -3.0, -2.5, -5.0});
  EXPECT_EQ(run_mask(b, threshold(lam, 1, 1, VisitOrder::forward, 2, false)), (V{1, 2, 1, 2}));
  EXPECT_EQ(run_mask(b, threshold(lam, 1, 1, VisitOrder::forward, 2, true)), (V{1, 2, 2, 2}));
  EXPECT_EQ(run_mask(b, threshold(lam, 1, 1, VisitOrder::forward, 4, false)), (V{1, 1, 1, 1}));
  EXPECT_EQ(run_mask(b, threshold(lam, 1, 1, VisitOrder::forward, 4, true)), (V{1, 2, 2, 2}));
  Tiny g({0.0, -3.0, -4.0}, 2, {0.0, 0.5, -3.0});
  EXPECT_EQ(run_mask(g, threshold(lam, 1, 1, VisitOrder::forward)), (V{1, 1, 2}));
}

// Replay may skip every tile a row sees (the test never does: a row without a finite max
// vetoes). Such a row keeps nothing: O = 0, LSE = -inf, and its dropped share is 1 by the
// definition in output.hpp (sum_skipped p / sum_all p).
TEST(EngineContract, ReplayedRowThatKeepsNothing) {
  Tiny t({0.0, -3.0, 1.0, -1.5});
  auto p = t.c.problem();
  for (int splits : {1, 2}) {
    std::vector<std::uint8_t> all_skipped{2, 2, 2, 2};
    auto pol = dense(1, 1, VisitOrder::forward, splits);
    pol.replay_mask = all_skipped.data();
    auto out = make_out(p, 4);
    auto rr = run_and_check(p, pol, out);
    EXPECT_EQ(out.o32[0], 0.0f);
    EXPECT_EQ(out.lse[0], -kInfF);
    EXPECT_EQ(out.dropped[0], 1.0f) << "splits " << splits;
    EXPECT_EQ(out.stats.tiles_skipped(), 4);
  }
}

// Outputs other than O are optional and do not change O.
TEST(EngineContract, OptionalOutputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {90, 40}, {90, 70}, 2, 1, 32, 32, true, Fill::structure());
  auto C = build_prefill(D);
  auto p = C.problem();
  const auto pol = threshold(1e-3, 16, 16);
  const auto R = bref::reference_prefill(p, pol);
  auto full = make_out(p, R.mask.size());
  run_and_check(p, pol, full);
  auto only_o = make_out(p, R.mask.size());
  only_o.want_lse = only_o.want_dropped = only_o.want_mask = only_o.want_stats = false;
  ASSERT_NO_THROW(run_engine(p, pol, only_o));
  EXPECT_EQ(std::memcmp(full.o32.data(), only_o.o32.data(), full.o32.size() * sizeof(float)), 0);
  auto DD = make_decode_data(rng, {200, 33}, 1, 4, 1, 32, 32, Fill::structure());
  auto DC = build_decode(DD, DType::f32, 16, &rng);
  auto dp = DC.problem();
  const auto dpol = threshold(1e-3, 1, 16, VisitOrder::forward, 2, true);
  const auto DR = bref::reference_decode(dp, dpol);
  auto dfull = make_out(dp, DR.mask.size());
  run_and_check(dp, dpol, dfull);
  auto donly = make_out(dp, DR.mask.size());
  donly.want_lse = donly.want_dropped = donly.want_mask = donly.want_stats = false;
  ASSERT_NO_THROW(run_engine(dp, dpol, donly));
  EXPECT_EQ(std::memcmp(dfull.o32.data(), donly.o32.data(), dfull.o32.size() * sizeof(float)), 0);
}

// ------------------------------------------------------------------------------------------
// Errors: blasst::Error, not a crash.

struct ErrPrefill {
  PrefillData d;
  PrefillCase c;
  PrefillProblem p;
  OutBuf out;
  Outputs o;
  explicit ErrPrefill(Rng& rng, int hq = 2, int hkv = 1) {
    d = make_prefill_data(rng, {20, 10}, {20, 30}, hq, hkv, 8, 8, true, Fill::random());
    c = build_prefill(d);
    p = c.problem();
    out = make_out(p, 0);
    out.want_mask = false;
    out.poison();
    o = out.outputs();
  }
};

TEST(Errors, Prefill) {
  BT_SEEDED_RNG(rng);
  const auto ok = threshold(0.01, 16, 16);
  {
    ErrPrefill e(rng);
    EXPECT_NO_THROW(blasst::cpu::prefill(e.p, ok, e.o));
  }
  {
    ErrPrefill e(rng, 3, 2);  // Hq % Hkv != 0 (data built with a group of 1)
    EXPECT_THROW(blasst::cpu::prefill(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrPrefill e(rng);
    e.p.num_heads_kv = 0;
    EXPECT_THROW(blasst::cpu::prefill(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrPrefill e(rng);
    std::vector<std::int32_t> bad{0, 25, 20};  // decreasing, wrong total
    e.p.cu_seqlens_q = bad.data();
    EXPECT_THROW(blasst::cpu::prefill(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrPrefill e(rng);
    std::vector<std::int32_t> bad{0, 20, 31};  // last != total_q
    e.p.cu_seqlens_q = bad.data();
    EXPECT_THROW(blasst::cpu::prefill(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrPrefill e(rng);
    std::vector<std::int32_t> badk{2, 20, 50};  // [0] != 0
    e.p.cu_seqlens_k = badk.data();
    EXPECT_THROW(blasst::cpu::prefill(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrPrefill e(rng);
    std::vector<std::int32_t> badk{0, 60, 50};
    e.p.cu_seqlens_k = badk.data();
    EXPECT_THROW(blasst::cpu::prefill(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrPrefill e(rng);
    EXPECT_THROW(blasst::cpu::prefill(e.p, SkipPolicy::with_threshold(-0.1), e.o), blasst::Error);
    EXPECT_THROW(blasst::cpu::prefill(e.p, SkipPolicy::with_scale_factor(-1.0), e.o), blasst::Error);
    EXPECT_THROW(blasst::cpu::prefill(e.p, SkipPolicy::with_scale_factor(std::nan("")), e.o), blasst::Error);
    EXPECT_THROW(blasst::cpu::prefill(e.p, SkipPolicy::with_threshold(std::nan("")), e.o), blasst::Error);
    EXPECT_THROW(blasst::cpu::prefill(e.p, SkipPolicy::with_scale_factor(INFINITY), e.o), blasst::Error);
    auto p0 = ok;
    p0.splits = 0;
    EXPECT_THROW(blasst::cpu::prefill(e.p, p0, e.o), blasst::Error);
    auto p1 = ok;
    p1.splits = 2;
    p1.order = VisitOrder::reverse;
    EXPECT_THROW(blasst::cpu::prefill(e.p, p1, e.o), blasst::Error);
    auto p2 = ok;
    p2.block_k = 0;
    EXPECT_THROW(blasst::cpu::prefill(e.p, p2, e.o), blasst::Error);
    auto p3 = ok;
    p3.block_q = 0;
    EXPECT_THROW(blasst::cpu::prefill(e.p, p3, e.o), blasst::Error);
    auto p4 = ok;
    p4.max_seed = true;
    p4.order = VisitOrder::sink_first;
    EXPECT_THROW(blasst::cpu::prefill(e.p, p4, e.o), blasst::Error);
  }
  {
    ErrPrefill e(rng);
    e.o.o = nullptr;  // O is required
    EXPECT_THROW(blasst::cpu::prefill(e.p, ok, e.o), blasst::Error);
  }
}

struct ErrDecode {
  DecodeData d;
  DecodeCase c;
  DecodeProblem p;
  OutBuf out;
  Outputs o;
  explicit ErrDecode(Rng& rng, int hq = 4, int hkv = 2) {
    d = make_decode_data(rng, {40, 17}, 1, hq, hkv, 8, 8, Fill::random());
    c = build_decode(d, DType::f32, 16, &rng);
    p = c.problem();
    out = make_out(p, 0);
    out.want_mask = false;
    out.poison();
    o = out.outputs();
  }
};

TEST(Errors, Decode) {
  BT_SEEDED_RNG(rng);
  const auto ok = threshold(0.01, 1, 16, VisitOrder::forward);
  {
    ErrDecode e(rng);
    EXPECT_NO_THROW(blasst::cpu::decode(e.p, ok, e.o));
  }
  {
    ErrDecode e(rng, 3, 2);
    EXPECT_THROW(blasst::cpu::decode(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrDecode e(rng);
    e.c.table[0] = e.c.num_pages;  // page id out of range
    EXPECT_THROW(blasst::cpu::decode(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrDecode e(rng);
    e.c.table[e.c.max_pages + 1] = -1;  // sequence 1 (17 keys, 2 pages): its second page
    EXPECT_THROW(blasst::cpu::decode(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrDecode e(rng);
    e.c.seq_lens[1] = e.c.max_pages * e.c.page_size + 1;  // beyond the table
    EXPECT_THROW(blasst::cpu::decode(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrDecode e(rng);
    e.c.seq_lens[0] = -1;
    EXPECT_THROW(blasst::cpu::decode(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrDecode e(rng);
    e.p.page_size = 0;
    EXPECT_THROW(blasst::cpu::decode(e.p, ok, e.o), blasst::Error);
  }
  {
    ErrDecode e(rng);
    EXPECT_THROW(blasst::cpu::decode(e.p, SkipPolicy::with_threshold(-1e-3), e.o), blasst::Error);
    EXPECT_THROW(blasst::cpu::decode(e.p, SkipPolicy::with_scale_factor(std::nan("")), e.o), blasst::Error);
    auto p0 = ok;
    p0.splits = 0;
    EXPECT_THROW(blasst::cpu::decode(e.p, p0, e.o), blasst::Error);
    auto p1 = ok;
    p1.splits = 3;
    p1.order = VisitOrder::reverse;
    EXPECT_THROW(blasst::cpu::decode(e.p, p1, e.o), blasst::Error);
    auto p2 = ok;
    p2.splits = 3;
    p2.order = VisitOrder::sink_first;
    EXPECT_THROW(blasst::cpu::decode(e.p, p2, e.o), blasst::Error);
  }
  {
    // The engine is still usable after errors.
    ErrDecode e(rng);
    auto out = make_out(e.p, bref::reference_decode(e.p, ok).mask.size());
    run_and_check(e.p, ok, out);
  }
}

}  // namespace
