// CPU engine decode (paged KV cache, GQA vote groups, split-KV, max seeding) against the float64
// reference (BLASST.md section 2 and 6).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <vector>

#include "cpu/reference.hpp"
#include "cpu/test_util.hpp"

using namespace bt;

namespace {

SkipPolicy fwd(double lam, int bk, int splits = 1, bool seed = false) {
  return threshold(lam, 1, bk, VisitOrder::forward, splits, seed);
}

// ------------------------------------------------------------------------------------------

TEST(Decode, DenseMatchesReference) {
  BT_SEEDED_RNG(rng);
  {
    auto D = make_decode_data(rng, {1, 17, 300, 1013}, 1, 8, 2, 64, 64, Fill::random(2.0));
    auto rr = check(build_decode(D, DType::f32, 16, &rng, 0, 3), dense(1, 64, VisitOrder::forward));
    EXPECT_EQ(rr.ref.total_skipped(), 0);
  }
  {
    auto D = make_decode_data(rng, {3, 40, 129}, 3, 4, 4, 128, 128, Fill::random(2.0));
    check(build_decode(D, DType::f32, 64, &rng), dense(1, 128, VisitOrder::reverse));
  }
  {
    auto D = make_decode_data(rng, {77, 5}, 2, 6, 1, 32, 16, Fill::random(1.0), 0.21f);
    check(build_decode(D, DType::f32, 0), dense(1, 16, VisitOrder::sink_first));
  }
}

TEST(Decode, ThresholdZeroIsBitIdenticalToDense) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {500, 64, 333}, 1, 8, 2, 64, 64, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  for (int splits : {1, 3})
    for (bool seed : {false, true}) {
      auto dp = dense(1, 32, VisitOrder::forward, splits);
      dp.max_seed = seed;
      const auto base = run_only(C, dp);
      ASSERT_EQ(count_state(base.mask_copy(), 2), 0);
      for (auto pol : {fwd(0.0, 32, splits, seed), fwd(1.0, 32, splits, seed),
                       policy(SkipPolicy::Mode::scale_factor, 0.0, 1, 32, VisitOrder::forward, splits, seed),
                       policy(SkipPolicy::Mode::scale_factor, 1e5, 1, 32, VisitOrder::forward, splits, seed)}) {
        const auto out = run_only(C, pol);
        EXPECT_TRUE(same_bits(out, base)) << "splits " << splits << " seed " << seed << " mode "
                                          << int(pol.mode) << " value " << pol.value;
        EXPECT_EQ(out.mask_copy(), base.mask_copy());
      }
    }
}

TEST(Decode, DecisionsMatchReferenceOnRandomInputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {400, 129, 50}, 2, 4, 2, 32, 32, Fill::random(3.0));
  auto C = build_decode(D, DType::f32, 16, &rng);
  for (double lam : {0.01, 0.2, 0.6})
    for (int bk : {4, 16}) {
      auto rr = check(C, fwd(lam, bk));
      std::cout << "[ info ] random lambda " << lam << " BK " << bk << " sparsity " << rr.ref.sparsity()
                << " ties " << rr.soft << "\n";
    }
}

TEST(Decode, DecisionsMatchReferenceOnStructuredInputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {700, 1013, 256, 90}, 1, 8, 2, 64, 64, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  struct G {
    int bk;
    VisitOrder order;
    double lam;
  };
  for (const G& g : {G{64, VisitOrder::forward, 1e-3}, G{16, VisitOrder::reverse, 1e-3},
                     G{32, VisitOrder::sink_first, 1e-2}, G{128, VisitOrder::forward, 1e-2}}) {
    auto rr = check(C, threshold(g.lam, 1, g.bk, g.order));
    const double s = rr.ref.sparsity();
    std::cout << "[ info ] structured BK " << g.bk << " " << blasst::to_string(g.order) << " sparsity " << s << "\n";
    EXPECT_GT(s, 0.1);
    EXPECT_LT(s, 0.95);
  }
  auto rr = check(C, policy(SkipPolicy::Mode::scale_factor, 1.0, 1, 32, VisitOrder::forward));
  EXPECT_GT(rr.ref.sparsity(), 0.1);
  EXPECT_LT(rr.ref.sparsity(), 0.95);
  EXPECT_DOUBLE_EQ(rr.ref.lambda[1], 1.0 / 1013);
}

TEST(Decode, SpeculativeQueryTokens) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {600, 64, 4, 301}, 4, 8, 2, 32, 32, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  for (auto pol : {dense(1, 16, VisitOrder::forward), fwd(1e-3, 16), fwd(1e-3, 16, 3, true),
                   threshold(1e-2, 1, 1, VisitOrder::reverse)}) {
    auto rr = check(C, pol);
    EXPECT_EQ(rr.ref.total_visited() > 0, true);
  }
}

TEST(Decode, PagedEqualsContiguous) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {1000, 1, 129, 64, 300}, 2, 8, 2, 64, 64, Fill::structure());
  for (auto pol : {fwd(1e-3, 64), fwd(1e-2, 16, 3, true), dense(1, 128, VisitOrder::reverse)}) {
    auto CC = build_decode(D, DType::f32, 0);  // one page per sequence, identity table
    auto base = run_only(CC, pol);
    check(CC, pol);
    for (int ps : {1, 16, 64, 128}) {
      SCOPED_TRACE(::testing::Message() << "page size " << ps);
      auto CP = build_decode(D, DType::f32, ps, &rng, 0, 5);  // shuffled, 5 spare NaN pages
      auto out = run_only(CP, pol);
      EXPECT_TRUE(same_bits(out, base)) << "max rel diff " << o_max_rel_diff(out, base);
      EXPECT_LE(o_max_rel_diff(out, base), 1e-6);
      EXPECT_EQ(out.mask_copy(), base.mask_copy());
      EXPECT_EQ(out.stats.skipped, base.stats.skipped);
    }
  }
}

TEST(Decode, UnusedBlockTableEntriesAreNotRead) {
  // docs/CLI.md: only block-table entries covering seq_len positions are read and checked.
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {100, 20}, 1, 4, 2, 32, 32, Fill::structure());
  const auto pol = fwd(1e-3, 16);
  auto base = run_only(build_decode(D, DType::f32, 16, &rng), pol);
  for (std::int32_t junk : {-1, 1 << 30}) {
    auto C = build_decode(D, DType::f32, 16, &rng, 0, 0, junk);
    auto p = C.problem();
    auto out = make_out(p, mask_size(p, pol));
    ASSERT_NO_THROW(run_and_check(p, pol, out)) << "junk " << junk;
    EXPECT_LE(o_max_rel_diff(out, base), 1e-6);
  }
}

TEST(Decode, SplitDenseEqualsOneSplit) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {1013, 1, 40, 257}, 1, 8, 2, 64, 64, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  const auto one = run_only(C, dense(1, 32, VisitOrder::forward));
  for (int splits : {2, 3, 4, 7, 64}) {
    for (bool seed : {false, true}) {
      auto pol = dense(1, 32, VisitOrder::forward, splits);
      pol.max_seed = seed;
      auto out = run_only(C, pol);
      EXPECT_LE(o_max_rel_diff(out, one), 1e-5) << "splits " << splits;
      EXPECT_EQ(out.mask_copy(), one.mask_copy());
      for (std::size_t i = 0; i < out.lse.size(); ++i)
        EXPECT_NEAR(out.lse[i], one.lse[i], 1e-5 * std::max(1.0f, std::fabs(one.lse[i])));
    }
    check(C, dense(1, 32, VisitOrder::forward, splits));
  }
}

TEST(Decode, SplitsMatchReference) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {700, 1013, 256, 33}, 2, 8, 2, 64, 64, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  for (int splits : {2, 4, 7})
    for (bool seed : {false, true}) {
      auto rr = check(C, fwd(1e-3, 32, splits, seed));
      std::cout << "[ info ] splits " << splits << " seed " << seed << " sparsity " << rr.ref.sparsity() << "\n";
    }
}

TEST(Decode, MaxSeedSkipsAtLeastAsMuchAndKeepsTheGuarantee) {
  BT_SEEDED_RNG(rng);
  Structure st;
  st.noise = 1.5;
  auto D = make_decode_data(rng, {1013, 700, 256, 60}, 1, 8, 2, 64, 64, Fill::structure(st));
  auto C = build_decode(D, DType::f32, 32, &rng);
  for (int splits : {2, 4, 8})
    for (double lam : {1e-4, 1e-3, 1e-2, 0.1}) {
      SCOPED_TRACE(::testing::Message() << "splits " << splits << " lambda " << lam);
      auto p = C.problem();
      auto plain = make_out(p, mask_size(p, fwd(lam, 32)));
      auto seeded = make_out(p, plain.mask_size);
      run_and_check(p, fwd(lam, 32, splits, false), plain);   // includes the mass bound
      run_and_check(p, fwd(lam, 32, splits, true), seeded);   // includes the mass bound
      const auto a = plain.mask_copy(), b = seeded.mask_copy();
      std::int64_t lost = 0;
      for (std::size_t i = 0; i < a.size(); ++i) lost += a[i] == 2 && b[i] != 2;
      EXPECT_EQ(lost, 0) << "a tile skipped without the seed is kept with it";
      EXPECT_GE(seeded.stats.sparsity(), plain.stats.sparsity());
      if (lam == 1e-3 && splits == 4) {
        std::cout << "[ info ] splits 4 lambda 1e-3 sparsity without seed " << plain.stats.sparsity()
                  << " with seed " << seeded.stats.sparsity() << "\n";
        EXPECT_GT(seeded.stats.sparsity(), plain.stats.sparsity());
      }
    }
}

TEST(Decode, VisitOrders) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {800, 200}, 1, 8, 2, 32, 32, Fill::structure());
  auto C = build_decode(D, DType::f32, 64, &rng);
  for (auto order : {VisitOrder::forward, VisitOrder::reverse, VisitOrder::sink_first}) {
    auto rr = check(C, threshold(1e-3, 1, 32, order));
    std::cout << "[ info ] order " << blasst::to_string(order) << " sparsity " << rr.ref.sparsity() << "\n";
    EXPECT_GT(rr.ref.sparsity(), 0.1);
  }
}

TEST(Decode, GqaEqualsMhaWithRepeatedKvHeadsWhenDense) {
  BT_SEEDED_RNG(rng);
  const int hq = 8, hkv = 2, g = hq / hkv;
  auto D = make_decode_data(rng, {300, 41}, 2, hq, hkv, 32, 24, Fill::structure());
  DecodeData M = D;
  M.hkv = hq;
  for (int b = 0; b < D.batch; ++b) {
    M.k[b].assign(static_cast<std::size_t>(D.seq_lens[b]) * hq * D.dqk, 0.0f);
    M.v[b].assign(static_cast<std::size_t>(D.seq_lens[b]) * hq * D.dv, 0.0f);
    for (int j = 0; j < D.seq_lens[b]; ++j)
      for (int h = 0; h < hq; ++h) {
        for (int c = 0; c < D.dqk; ++c) M.k[b][(j * hq + h) * D.dqk + c] = D.k[b][(j * hkv + h / g) * D.dqk + c];
        for (int c = 0; c < D.dv; ++c) M.v[b][(j * hq + h) * D.dv + c] = D.v[b][(j * hkv + h / g) * D.dv + c];
      }
  }
  auto CG = build_decode(D, DType::f32, 16, &rng), CM = build_decode(M, DType::f32, 16, &rng);
  for (int splits : {1, 3}) {
    const auto pol = dense(1, 16, VisitOrder::forward, splits);
    auto pg = CG.problem(), pm = CM.problem();
    auto og = make_out(pg, mask_size(pg, pol)), om = make_out(pm, mask_size(pm, pol));
    run_and_check(pg, pol, og);
    run_and_check(pm, pol, om);
    EXPECT_LE(o_max_rel_diff(og, om), 1e-6);
  }
  // With skipping, the GQA group votes together: each check against the reference.
  check(CG, fwd(1e-3, 16));
  check(CM, fwd(1e-3, 16));
}

TEST(Decode, HalfAndBf16Inputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {700, 129, 40}, 2, 8, 2, 64, 64, Fill::structure());
  for (DType dt : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(blasst::to_string(dt));
    auto C = build_decode(D, dt, 16, &rng);
    auto rr = check(C, fwd(1e-3, 32));
    EXPECT_GT(rr.ref.total_skipped(), 0);
    check(C, fwd(1e-3, 32, 3, true));
    check(build_decode(D, dt, 64, &rng, 2), dense(1, 64, VisitOrder::reverse), {}, 1);
  }
}

TEST(Decode, StridedInputsAndOutputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {300, 17, 64}, 2, 4, 2, 24, 40, Fill::structure());
  for (int pad : {1, 7}) {
    auto C = build_decode(D, DType::f32, 16, &rng, pad, 2);  // NaN in every gap
    check(C, fwd(1e-3, 16), {}, pad);
    check(C, fwd(1e-2, 16, 4, true), {}, pad + 1);
    check(C, dense(1, 64, VisitOrder::sink_first), {}, 3);
  }
}

TEST(Decode, ReplayWithSplitsAndModifiedMask) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {700, 300, 64}, 1, 8, 2, 32, 32, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  auto p = C.problem();
  for (int splits : {1, 3}) {
    const auto pol = fwd(1e-3, 16, splits, splits > 1);
    auto first = make_out(p, mask_size(p, pol));
    run_and_check(p, pol, first);
    const auto mask = first.mask_copy();
    ASSERT_GT(count_state(mask, 2), 0);
    auto rp = pol;
    rp.replay_mask = mask.data();
    auto again = make_out(p, mask.size());
    run_and_check(p, rp, again);
    EXPECT_EQ(again.mask_copy(), mask);
    EXPECT_LE(o_max_rel_diff(again, first), 1e-6);
    // Flip kept tiles (never tile 0) to skipped, with a high rate so that some splits lose every
    // tile and merge as empty.
    auto mod = mask;
    ASSERT_GT(flip_kept_tiles(mod, bref::reference_decode(p, pol), rng, 0.7).flipped, 0);
    auto rm = pol;
    rm.replay_mask = mod.data();
    auto out = make_out(p, mod.size());
    run_and_check(p, rm, out);
    EXPECT_EQ(out.mask_copy(), mod);
    // A dense policy with the same replay mask follows the mask too.
    auto rd = dense(1, 16, VisitOrder::forward, splits);
    rd.replay_mask = mod.data();
    auto out2 = make_out(p, mod.size());
    run_and_check(p, rd, out2);
    EXPECT_LE(o_max_rel_diff(out2, out), 1e-6);
  }
}

TEST(Decode, HeadDims) {
  BT_SEEDED_RNG(rng);
  const std::vector<std::pair<int, int>> dims = {{8, 8},     {64, 64},  {72, 72}, {128, 128}, {192, 192},
                                                 {256, 256}, {192, 128}, {72, 8}, {576, 512}};
  for (auto [dqk, dv] : dims) {
    SCOPED_TRACE(::testing::Message() << "d_qk " << dqk << " d_v " << dv);
    const int hkv = dqk == 576 ? 1 : 2;
    auto D = make_decode_data(rng, {300, 45}, 1, 8, hkv, dqk, dv, Fill::structure());
    auto rr = check(build_decode(D, DType::f32, 16, &rng), fwd(1e-3, 16));
    EXPECT_GT(rr.ref.total_skipped(), 0);
  }
}

TEST(Decode, BlockSizes) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {333, 64, 1, 129}, 2, 4, 2, 16, 16, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  for (int bk : {1, 16, 64, 128}) {
    SCOPED_TRACE(::testing::Message() << "BK " << bk);
    auto rr = check(C, fwd(1e-2, bk));
    check(C, fwd(1e-2, bk, 3, true));
    if (bk <= 16) {
      EXPECT_GT(rr.ref.total_skipped(), 0);
    }
  }
}

TEST(Decode, ZeroLengthSequences) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {0, 50, 0, 7}, 1, 4, 2, 16, 16, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  for (auto pol : {dense(1, 16, VisitOrder::forward), fwd(1e-2, 16), fwd(1e-2, 4, 3, true)}) {
    auto rr = check(C, pol);
    std::int64_t empty = 0;
    for (double l : rr.ref.lse) empty += l == -bref::kInf;
    EXPECT_EQ(empty, 2 * 4);
    EXPECT_EQ(rr.ref.lambda[0], 0.0);
  }
}

TEST(Decode, StatisticsPerHeadSumToTotals) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {500, 0, 130}, 1, 8, 4, 16, 16, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  const auto pol = fwd(1e-3, 16, 2, true);
  auto rr = check(C, pol);
  auto out = run_only(C, pol);
  const auto& st = out.stats;
  ASSERT_EQ(st.batch, 3);
  ASSERT_EQ(st.heads, 4);  // KV heads
  const auto [v, s] = bt::expect_stats_sums(st);
  EXPECT_EQ(v, rr.ref.total_visited());
  EXPECT_EQ(s, rr.ref.total_skipped());
  EXPECT_GT(s, 0);
  EXPECT_DOUBLE_EQ(st.sparsity(), static_cast<double>(s) / static_cast<double>(v));
  const auto m = out.mask_copy();
  EXPECT_EQ(count_state(m, 1) + count_state(m, 2), v);
  EXPECT_EQ(count_state(m, 2), s);
}

TEST(Decode, ThreadCountDoesNotChangeResults) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {900, 300, 5, 64}, 2, 8, 2, 32, 32, Fill::structure());
  auto C = build_decode(D, DType::f32, 16, &rng);
  for (auto pol : {fwd(1e-3, 32), fwd(1e-3, 32, 4, true)}) {
    blasst::cpu::set_num_threads(1);
    const auto one = run_only(C, pol);
    blasst::cpu::set_num_threads(4);
    const auto four = run_only(C, pol);
    blasst::cpu::set_num_threads(0);
    EXPECT_TRUE(same_bits(one, four));
    EXPECT_EQ(one.mask_copy(), four.mask_copy());
  }
}

// A sequence shorter than q_tokens: token t sees keys j <= t + seq_len - q_tokens, so its first
// tokens see nothing (O = 0, LSE = -inf).
TEST(Decode, SequenceShorterThanQueryTokens) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {2, 40, 0, 4}, 4, 4, 2, 32, 32, Fill::random(2.0));
  auto C = build_decode(D, DType::f32, 16, &rng);
  for (auto pol : {dense(1, 16, VisitOrder::forward), fwd(0.1, 4), fwd(0.1, 1, 3, true)}) {
    auto rr = check(C, pol);
    std::int64_t empty = 0;
    for (double l : rr.ref.lse) empty += l == -bref::kInf;
    EXPECT_EQ(empty, (2 + 4) * 4);  // sequence 0: tokens 0, 1; sequence 2: all 4 tokens; x 4 heads
  }
}

TEST(Decode, LowPrecisionOutputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_decode_data(rng, {300, 64}, 2, 8, 2, 32, 32, Fill::structure());
  auto C = build_decode(D, DType::bf16, 16, &rng);
  Tol t16;
  t16.o = 1e-3;
  check(C, fwd(1e-3, 16, 2, true), t16, 0, DType::f16);
  Tol tb;
  tb.o = 6e-3;
  check(C, fwd(1e-3, 16), tb, 3, DType::bf16);
}

// Random configurations: page sizes, GQA ratios, q_tokens, splits, seeding, dtypes, strides.
TEST(Decode, RandomConfigurations) {
  BT_SEEDED_RNG(rng);
  const std::vector<std::pair<int, int>> heads = {{1, 1}, {4, 1}, {8, 2}, {6, 3}, {5, 5}, {16, 2}};
  const std::vector<int> dims = {8, 16, 40, 64, 72};
  const std::vector<int> bks = {1, 5, 16, 64, 128}, pages = {1, 3, 16, 64, 128, 0};
  for (int it = 0; it < 40; ++it) {
    const int batch = rng.uniform_int(1, 4);
    const int qt = rng.uniform() < 0.6 ? 1 : rng.uniform_int(2, 4);
    std::vector<int> lens;
    for (int b = 0; b < batch; ++b) lens.push_back(rng.uniform() < 0.1 ? rng.uniform_int(0, 3) : rng.uniform_int(1, 700));
    const auto [hq, hkv] = heads[rng.uniform_int(0, static_cast<int>(heads.size()) - 1)];
    const int dqk = dims[rng.uniform_int(0, static_cast<int>(dims.size()) - 1)];
    const int dv = rng.uniform() < 0.7 ? dqk : dims[rng.uniform_int(0, static_cast<int>(dims.size()) - 1)];
    const DType dt = static_cast<DType>(rng.uniform_int(0, 2));
    const int pad = rng.uniform() < 0.3 ? rng.uniform_int(1, 3) : 0;
    const int ps = pages[rng.uniform_int(0, static_cast<int>(pages.size()) - 1)];
    const bool structured = rng.uniform() < 0.6;
    const float scale = rng.uniform() < 0.2 ? static_cast<float>(0.05 + rng.uniform()) : 0.0f;
    SkipPolicy pol;
    const double u = rng.uniform();
    pol.mode = u < 0.15 ? SkipPolicy::Mode::dense : u < 0.6 ? SkipPolicy::Mode::threshold : SkipPolicy::Mode::scale_factor;
    pol.value = pol.mode == SkipPolicy::Mode::threshold ? std::pow(10.0, -5.0 + 5.0 * rng.uniform())
                                                        : std::pow(10.0, -2.0 + 4.0 * rng.uniform());
    pol.block_k = bks[rng.uniform_int(0, 4)];
    pol.splits = rng.uniform() < 0.5 ? 1 : rng.uniform_int(2, 8);
    pol.order = pol.splits > 1 ? VisitOrder::forward : static_cast<VisitOrder>(rng.uniform_int(0, 2));
    pol.max_seed = pol.order == VisitOrder::forward && rng.uniform() < 0.5;
    SCOPED_TRACE(::testing::Message()
                 << "iteration " << it << ": batch " << batch << " q_tokens " << qt << " Hq " << hq
                 << " Hkv " << hkv << " d " << dqk << "/" << dv << " dtype " << blasst::to_string(dt)
                 << " pad " << pad << " page " << ps << " structured " << structured << " scale " << scale
                 << " mode " << int(pol.mode) << " value " << pol.value << " BK " << pol.block_k
                 << " order " << blasst::to_string(pol.order) << " splits " << pol.splits << " seed "
                 << pol.max_seed);
    auto D = make_decode_data(rng, lens, qt, hq, hkv, dqk, dv,
                              structured ? Fill::structure() : Fill::random(1.0 + 3.0 * rng.uniform()), scale);
    auto C = build_decode(D, dt, ps, &rng, pad, rng.uniform_int(0, 3));
    const DType odt = rng.uniform() < 0.8 ? DType::f32 : static_cast<DType>(rng.uniform_int(1, 2));
    Tol tol;
    if (odt == DType::f16) tol.o = 1e-3;
    if (odt == DType::bf16) tol.o = 6e-3;
    check(C, pol, tol, rng.uniform() < 0.3 ? 2 : 0, odt);
    if (::testing::Test::HasFailure()) break;
  }
}

}  // namespace
