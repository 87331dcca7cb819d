// CPU engine prefill against the float64 reference (BLASST.md section 2).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <numeric>
#include <vector>

#include "cpu/reference.hpp"
#include "cpu/test_util.hpp"

using namespace bt;

namespace {

// ------------------------------------------------------------------------------------------

TEST(Prefill, DenseMatchesReference) {
  BT_SEEDED_RNG(rng);
  struct Cfg {
    std::vector<int> sq, sk;
    int hq, hkv, d, dv;
    bool causal;
    int bq, bk;
    VisitOrder order;
  };
  const std::vector<Cfg> cfgs = {
      {{37, 64, 100}, {37, 64, 100}, 4, 2, 64, 64, true, 16, 32, VisitOrder::reverse},
      {{20, 70}, {50, 30}, 2, 1, 32, 48, false, 64, 128, VisitOrder::forward},
      {{130}, {130}, 3, 3, 16, 16, true, 64, 128, VisitOrder::sink_first},
      {{1, 65, 129}, {200, 65, 129}, 8, 1, 8, 8, true, 1, 16, VisitOrder::reverse},
  };
  for (const auto& f : cfgs) {
    auto D = make_prefill_data(rng, f.sq, f.sk, f.hq, f.hkv, f.d, f.dv, f.causal, Fill::random(2.0));
    auto C = build_prefill(D);
    auto rr = check(C, dense(f.bq, f.bk, f.order));
    EXPECT_EQ(rr.ref.total_skipped(), 0);
  }
  // One sequence, no cu_seqlens, explicit softmax scale.
  auto D = make_prefill_data(rng, {77}, {91}, 2, 2, 24, 24, true, Fill::random(1.0), 0.37f);
  auto C = build_prefill(D);
  C.use_cu = false;
  check(C, dense(16, 16));
}

TEST(Prefill, ThresholdZeroIsBitIdenticalToDense) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {150, 60}, {150, 90}, 4, 2, 64, 64, true, Fill::structure());
  auto C = build_prefill(D);
  for (auto order : {VisitOrder::reverse, VisitOrder::forward, VisitOrder::sink_first}) {
    const auto base = run_only(C, dense(16, 32, order));
    ASSERT_EQ(count_state(base.mask_copy(), 2), 0);
    for (auto pol : {threshold(0.0, 16, 32, order), threshold(1.0, 16, 32, order),
                     policy(SkipPolicy::Mode::scale_factor, 0.0, 16, 32, order),
                     policy(SkipPolicy::Mode::scale_factor, 1e6, 16, 32, order)}) {
      const auto out = run_only(C, pol);
      EXPECT_TRUE(same_bits(out, base)) << "mode " << int(pol.mode) << " value " << pol.value;
      EXPECT_EQ(out.mask_copy(), base.mask_copy());
      EXPECT_EQ(out.stats.visited, base.stats.visited);
      EXPECT_EQ(out.stats.skipped, base.stats.skipped);
    }
  }
}

TEST(Prefill, DecisionsMatchReferenceOnRandomInputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {200, 133, 64}, {200, 133, 90}, 4, 2, 32, 32, true, Fill::random(3.0));
  auto C = build_prefill(D);
  for (double lam : {0.01, 0.2, 0.6})
    for (int bq : {4, 16}) {
      auto rr = check(C, threshold(lam, bq, 16, VisitOrder::forward));
      std::cout << "[ info ] random lambda " << lam << " BQ " << bq << " sparsity "
                << rr.ref.sparsity() << " ties " << rr.soft << "\n";
    }
}

TEST(Prefill, DecisionsMatchReferenceOnStructuredInputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {512, 300, 77}, {512, 300, 200}, 4, 2, 64, 64, true, Fill::structure());
  auto C = build_prefill(D);
  struct G {
    int bq, bk;
    VisitOrder order;
    double lam;
  };
  for (const G& g : {G{16, 16, VisitOrder::reverse, 1e-3}, G{64, 16, VisitOrder::forward, 1e-3},
                     G{16, 64, VisitOrder::sink_first, 1e-2}}) {
    auto rr = check(C, threshold(g.lam, g.bq, g.bk, g.order));
    const double s = rr.ref.sparsity();
    std::cout << "[ info ] structured BQ " << g.bq << " BK " << g.bk << " order "
              << blasst::to_string(g.order) << " sparsity " << s << "\n";
    EXPECT_GT(s, 0.1);
    EXPECT_LT(s, 0.95);
  }
  // Scale-factor mode: lambda_b = a / Sk_b per sequence.
  auto rr = check(C, policy(SkipPolicy::Mode::scale_factor, 2.0, 16, 16, VisitOrder::sink_first));
  EXPECT_GT(rr.ref.sparsity(), 0.1);
  EXPECT_LT(rr.ref.sparsity(), 0.95);
  EXPECT_DOUBLE_EQ(rr.ref.lambda[0], 2.0 / 512);
  EXPECT_DOUBLE_EQ(rr.ref.lambda[2], 2.0 / 200);
}

TEST(Prefill, MassBoundHoldsOverASweep) {
  BT_SEEDED_RNG(rng);
  Structure st;
  st.noise = 2.0;  // noisier logits: more mass near the threshold
  auto D = make_prefill_data(rng, {256, 100}, {256, 180}, 2, 1, 32, 32, true, Fill::structure(st));
  auto C = build_prefill(D);
  for (double lam : {1e-4, 1e-2, 0.1, 0.5, 0.9}) {
    // run_and_check asserts dropped <= skipped tiles seen * BK * lambda on every row.
    auto rr = check(C, threshold(lam, 16, 8, VisitOrder::reverse));
    double worst = 0.0;
    for (std::size_t i = 0; i < rr.ref.dropped.size(); ++i)
      if (rr.ref.skipped_seen[i] > 0)
        worst = std::max(worst, rr.ref.dropped[i] / (rr.ref.skipped_seen[i] * 8 * lam));
    std::cout << "[ info ] lambda " << lam << " sparsity " << rr.ref.sparsity()
              << " max dropped / bound " << worst << "\n";
  }
}

TEST(Prefill, SparsityMonotoneInThreshold) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {400, 150}, {400, 250}, 2, 1, 32, 32, true, Fill::structure());
  auto C = build_prefill(D);
  for (auto order : {VisitOrder::reverse, VisitOrder::forward, VisitOrder::sink_first}) {
    std::vector<std::uint8_t> prev;
    double prev_s = -1.0;
    for (double lam : {1e-8, 1e-6, 1e-4, 1e-3, 3e-3, 1e-2, 0.03, 0.1, 0.3, 0.6, 0.95}) {
      const auto out = run_only(C, threshold(lam, 16, 16, order));
      const auto m = out.mask_copy();
      const double s = out.stats.sparsity();
      EXPECT_GE(s, prev_s) << "lambda " << lam;
      if (!prev.empty()) {
        ASSERT_EQ(m.size(), prev.size());
        std::int64_t bad = 0;
        for (std::size_t i = 0; i < m.size(); ++i) bad += prev[i] == 2 && m[i] != 2;
        EXPECT_EQ(bad, 0) << "tiles skipped at a smaller lambda but kept at " << lam;
      }
      prev = m;
      prev_s = s;
    }
    EXPECT_GT(prev_s, 0.5);
  }
}

TEST(Prefill, GqaEqualsMhaWithRepeatedKvHeads) {
  BT_SEEDED_RNG(rng);
  const int hq = 8, hkv = 2, g = hq / hkv;
  auto D = make_prefill_data(rng, {120, 45}, {120, 80}, hq, hkv, 32, 24, true, Fill::structure());
  PrefillData M = D;
  M.hkv = hq;
  M.k.assign(static_cast<std::size_t>(D.total_k) * hq * D.dqk, 0.0f);
  M.v.assign(static_cast<std::size_t>(D.total_k) * hq * D.dv, 0.0f);
  for (std::int64_t t = 0; t < D.total_k; ++t)
    for (int h = 0; h < hq; ++h) {
      for (int c = 0; c < D.dqk; ++c) M.k[(t * hq + h) * D.dqk + c] = D.k[(t * hkv + h / g) * D.dqk + c];
      for (int c = 0; c < D.dv; ++c) M.v[(t * hq + h) * D.dv + c] = D.v[(t * hkv + h / g) * D.dv + c];
    }
  auto CG = build_prefill(D), CM = build_prefill(M);
  for (auto pol : {dense(16, 16), threshold(1e-3, 16, 16), threshold(0.05, 4, 32, VisitOrder::forward)}) {
    auto pg = CG.problem(), pm = CM.problem();
    auto og = make_out(pg, mask_size(pg, pol)), om = make_out(pm, mask_size(pm, pol));
    run_and_check(pg, pol, og);
    run_and_check(pm, pol, om);
    EXPECT_LE(o_max_rel_diff(og, om), 1e-6);
    EXPECT_EQ(og.mask_copy(), om.mask_copy());
    EXPECT_EQ(og.stats.visited, om.stats.visited);
    EXPECT_EQ(og.stats.skipped, om.stats.skipped);
  }
}

TEST(Prefill, VarlenEqualsSeparateCalls) {
  BT_SEEDED_RNG(rng);
  const std::vector<int> sq{50, 0, 130, 17, 40}, sk{50, 12, 130, 17, 90};
  auto D = make_prefill_data(rng, sq, sk, 4, 2, 32, 32, true, Fill::structure());
  auto C = build_prefill(D);
  const auto pol = policy(SkipPolicy::Mode::scale_factor, 1.0, 16, 16, VisitOrder::reverse);
  auto p = C.problem();
  const auto R = bref::reference_prefill(p, pol);
  auto all = make_out(p, R.mask.size());
  run_and_check(p, pol, all);
  for (std::size_t b = 0; b < sq.size(); ++b) {
    if (sq[b] == 0) continue;
    PrefillData S;
    S.sq = {sq[b]};
    S.sk = {sk[b]};
    S.hq = D.hq;
    S.hkv = D.hkv;
    S.dqk = D.dqk;
    S.dv = D.dv;
    S.causal = D.causal;
    S.total_q = sq[b];
    S.total_k = sk[b];
    const auto q0 = D.q_start(b), k0 = D.k_start(b);
    S.q.assign(D.q.begin() + q0 * D.hq * D.dqk, D.q.begin() + (q0 + sq[b]) * D.hq * D.dqk);
    S.k.assign(D.k.begin() + k0 * D.hkv * D.dqk, D.k.begin() + (k0 + sk[b]) * D.hkv * D.dqk);
    S.v.assign(D.v.begin() + k0 * D.hkv * D.dv, D.v.begin() + (k0 + sk[b]) * D.hkv * D.dv);
    auto SC = build_prefill(S);
    SC.use_cu = (b % 2 == 0);  // with and without cu_seqlens
    auto sp = SC.problem();
    const auto SR = bref::reference_prefill(sp, pol);
    auto one = make_out(sp, SR.mask.size());
    run_and_check(sp, pol, one);
    // Same values as the rows of the batched call.
    double md = 0.0;
    for (int i = 0; i < sq[b]; ++i)
      for (int h = 0; h < D.hq; ++h) {
        for (int c = 0; c < D.dv; ++c)
          md = std::max(md, std::fabs(one.o_at(0, i, h, c) - all.o_at(0, q0 + i, h, c)));
        EXPECT_NEAR(one.lse_at(0, i, h), all.lse_at(0, q0 + i, h), 1e-6 * std::max(1.0, std::fabs(all.lse_at(0, q0 + i, h))));
      }
    EXPECT_LE(md, 1e-6) << "sequence " << b;
    const auto m = all.mask_copy();
    EXPECT_EQ(std::vector<std::uint8_t>(m.begin() + R.offsets[b], m.begin() + R.offsets[b + 1]), one.mask_copy())
        << "sequence " << b;
    for (int h = 0; h < D.hq; ++h) {
      EXPECT_EQ(one.stats.visited[h], all.stats.visited[b * D.hq + h]);
      EXPECT_EQ(one.stats.skipped[h], all.stats.skipped[b * D.hq + h]);
    }
    EXPECT_DOUBLE_EQ(one.stats.lambda[0], all.stats.lambda[b]);
  }
}

// K and V of a packed case copied into paged caches [pages, page_size, Hkv, d]: pages shuffled,
// `spare` extra pages and every slot past a sequence's keys NaN, so a read outside the keys shows.
struct PagedPrefillCase {
  PrefillCase packed;
  HostBuf kc, vc;
  std::vector<std::int32_t> table;
  int page_size = 0, max_pages = 0, num_pages = 0;

  PrefillProblem problem() const {
    PrefillProblem p = packed.problem();
    const PrefillData& d = packed.d;
    p.k = kc.data(), p.v = vc.data();
    p.k_stride_head = d.dqk, p.k_stride_token = std::int64_t{d.hkv} * d.dqk, p.k_stride_page = p.k_stride_token * page_size;
    p.v_stride_head = d.dv, p.v_stride_token = std::int64_t{d.hkv} * d.dv, p.v_stride_page = p.v_stride_token * page_size;
    p.block_table = table.data(), p.max_pages_per_seq = max_pages, p.page_size = page_size, p.num_pages = num_pages;
    return p;
  }
};

inline PagedPrefillCase build_paged_prefill(const PrefillData& d, DType dt, int page_size, Rng& rng, int spare = 3) {
  PagedPrefillCase c;
  c.packed = build_prefill(d, dt);
  c.page_size = page_size;
  std::vector<int> pages(d.sk.size());
  int used = 0;
  for (std::size_t b = 0; b < d.sk.size(); ++b) {
    pages[b] = (d.sk[b] + page_size - 1) / page_size;
    used += pages[b];
    c.max_pages = std::max(c.max_pages, pages[b]);
  }
  c.max_pages += 1;  // a spare column, never read
  c.num_pages = used + spare;
  std::vector<std::int32_t> ids(c.num_pages);
  std::iota(ids.begin(), ids.end(), 0);
  for (int i = c.num_pages - 1; i > 0; --i) std::swap(ids[i], ids[rng.uniform_int(0, i)]);
  c.table.assign(d.sk.size() * c.max_pages, -1);
  c.kc.init(std::size_t(c.num_pages) * page_size * d.hkv * d.dqk, dt);
  c.vc.init(std::size_t(c.num_pages) * page_size * d.hkv * d.dv, dt);
  int next = 0;
  for (std::size_t b = 0; b < d.sk.size(); ++b) {
    for (int i = 0; i < pages[b]; ++i) c.table[b * c.max_pages + i] = ids[next++];
    const std::int64_t k0 = d.k_start(static_cast<int>(b));
    for (int j = 0; j < d.sk[b]; ++j) {
      const std::int64_t slot = std::int64_t{c.table[b * c.max_pages + j / page_size]} * page_size + j % page_size;
      for (int h = 0; h < d.hkv; ++h) {
        for (int e = 0; e < d.dqk; ++e)
          c.kc.set((slot * d.hkv + h) * d.dqk + e, d.k[((k0 + j) * d.hkv + h) * d.dqk + e]);
        for (int e = 0; e < d.dv; ++e) c.vc.set((slot * d.hkv + h) * d.dv + e, d.v[((k0 + j) * d.hkv + h) * d.dv + e]);
      }
    }
  }
  return c;
}

// Chunked prefill against a paged cache: the same bits, decisions and counts as the packed keys.
TEST(Prefill, PagedEqualsPacked) {
  BT_SEEDED_RNG(rng);
  const std::vector<int> sq{50, 0, 64, 17, 1}, sk{50, 12, 300, 17, 129};
  auto D = make_prefill_data(rng, sq, sk, 4, 2, 32, 24, true, Fill::structure());
  for (DType dt : {DType::f32, DType::bf16}) {
    const PrefillCase packed = build_prefill(D, dt);
    for (const SkipPolicy& pol : {policy(SkipPolicy::Mode::scale_factor, 1.0, 16, 16, VisitOrder::reverse),
                                  policy(SkipPolicy::Mode::scale_factor, 0.5, 32, 48, VisitOrder::sink_first),
                                  dense(16, 32)}) {
      const auto base = run_only(packed, pol);
      for (int ps : {1, 16, 64, 100}) {
        SCOPED_TRACE(::testing::Message() << "dtype " << int(dt) << " page size " << ps);
        const auto paged = build_paged_prefill(D, dt, ps, rng);
        const auto out = run_only(paged, pol);
        EXPECT_TRUE(same_bits(out, base)) << "max rel diff " << o_max_rel_diff(out, base);
        EXPECT_EQ(out.mask_copy(), base.mask_copy());
        EXPECT_EQ(out.stats.skipped, base.stats.skipped);
        EXPECT_EQ(out.stats.visited, base.stats.visited);
      }
    }
  }
  // One sequence without cu_seqlens: total_k is its key count.
  auto one = make_prefill_data(rng, {40}, {200}, 2, 1, 16, 16, false, Fill::structure());
  auto paged = build_paged_prefill(one, DType::f32, 32, rng);
  paged.packed.use_cu = false;
  PrefillCase packed = build_prefill(one);
  packed.use_cu = false;
  const auto pol = policy(SkipPolicy::Mode::scale_factor, 2.0, 16, 16, VisitOrder::reverse);
  EXPECT_TRUE(same_bits(run_only(paged, pol), run_only(packed, pol)));
}

// A paged prefill's block table and page strides are checked like decode's.
TEST(Prefill, PagedErrors) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {20, 30}, {40, 70}, 2, 1, 16, 16, true, Fill::structure());
  const auto pol = policy(SkipPolicy::Mode::scale_factor, 1.0, 16, 16, VisitOrder::reverse);
  auto run = [&](const PrefillProblem& p) {
    auto out = make_out(p, mask_size(p, pol));
    run_engine(p, pol, out);
  };
  const auto C = build_paged_prefill(D, DType::f32, 16, rng);
  EXPECT_NO_THROW(run(C.problem()));
  {
    auto bad = C;
    bad.table[1] = bad.num_pages;  // sequence 0's second page outside the cache
    EXPECT_THROW(run(bad.problem()), blasst::Error);
  }
  {
    auto p = C.problem();
    p.max_pages_per_seq = 2;  // 32 slots for 40 keys
    EXPECT_THROW(run(p), blasst::Error);
  }
  {
    auto p = C.problem();
    p.page_size = 0;
    EXPECT_THROW(run(p), blasst::Error);
  }
  {
    auto p = C.problem();
    p.block_table = nullptr;  // page geometry without a table
    EXPECT_THROW(run(p), blasst::Error);
  }
  {
    auto p = C.problem();
    p.k_stride_page = 0;  // set_contiguous_strides() before page_size was set
    EXPECT_THROW(run(p), blasst::Error);
  }
}

TEST(Prefill, CausalWithFewerAndMoreQueriesThanKeys) {
  BT_SEEDED_RNG(rng);
  // Sq < Sk (cached prefix), Sq > Sk (rows that see nothing), Sk = 0, Sq = 0.
  auto D = make_prefill_data(rng, {10, 40, 33, 0, 70}, {40, 10, 0, 20, 69}, 2, 1, 16, 16, true, Fill::structure());
  auto C = build_prefill(D);
  for (auto pol : {dense(16, 8), threshold(1e-2, 16, 8), threshold(0.1, 1, 1, VisitOrder::forward)}) {
    auto rr = check(C, pol);
    std::int64_t empty = 0;
    for (double l : rr.ref.lse) empty += l == -bref::kInf;
    // Sequence 1: rows 0..29 see nothing; sequence 2: all 33 rows; sequence 4: row 0; x 2 heads.
    EXPECT_EQ(empty, (30 + 33 + 1) * 2);
  }
  // Non-causal with Sk = 0 inside the batch.
  auto N = make_prefill_data(rng, {10, 5, 20}, {30, 0, 7}, 2, 2, 16, 8, false, Fill::random(2.0));
  auto rr = check(build_prefill(N), threshold(0.3, 4, 4));
  std::int64_t empty = 0;
  for (double l : rr.ref.lse) empty += l == -bref::kInf;
  EXPECT_EQ(empty, 5 * 2);
}

TEST(Prefill, LengthsZeroOneSeventeenAnd1013) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {0, 1, 17, 0, 1013, 1}, {0, 1, 17, 5, 1013, 0}, 2, 1, 64, 64, true,
                             Fill::structure());
  auto C = build_prefill(D);
  auto rr = check(C, threshold(1e-3, 64, 128, VisitOrder::reverse));
  std::cout << "[ info ] default geometry sparsity " << rr.ref.sparsity() << "\n";
  auto rr2 = check(C, policy(SkipPolicy::Mode::scale_factor, 4.0, 16, 32, VisitOrder::sink_first));
  std::cout << "[ info ] BQ 16 BK 32 sink-first sparsity " << rr2.ref.sparsity() << "\n";
  EXPECT_GT(rr2.ref.sparsity(), 0.1);
}

TEST(Prefill, HeadDims) {
  BT_SEEDED_RNG(rng);
  const std::vector<std::pair<int, int>> dims = {{8, 8},     {64, 64},  {72, 72},  {128, 128}, {192, 192},
                                                 {256, 256}, {192, 128}, {72, 40}, {8, 64},   {128, 8}};
  for (auto [dqk, dv] : dims) {
    SCOPED_TRACE(::testing::Message() << "d_qk " << dqk << " d_v " << dv);
    auto D = make_prefill_data(rng, {96, 40}, {96, 70}, 2, 1, dqk, dv, true, Fill::structure());
    auto rr = check(build_prefill(D), threshold(1e-2, 16, 16, VisitOrder::sink_first));
    EXPECT_GT(rr.ref.total_skipped(), 0);
    check(build_prefill(D), threshold(1e-3, 64, 32, VisitOrder::reverse));
  }
}

TEST(Prefill, VisitOrders) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {300, 64}, {300, 128}, 4, 1, 32, 32, true, Fill::structure());
  auto C = build_prefill(D);
  for (auto order : {VisitOrder::forward, VisitOrder::reverse, VisitOrder::sink_first}) {
    auto rr = check(C, threshold(1e-3, 16, 16, order));
    std::cout << "[ info ] order " << blasst::to_string(order) << " sparsity " << rr.ref.sparsity() << "\n";
    EXPECT_GT(rr.ref.sparsity(), 0.1);
  }
}

TEST(Prefill, BlockSizes) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {150, 31}, {150, 64}, 2, 1, 16, 16, true, Fill::structure());
  auto C = build_prefill(D);
  for (int bq : {1, 16, 64})
    for (int bk : {1, 16, 64, 128}) {
      SCOPED_TRACE(::testing::Message() << "BQ " << bq << " BK " << bk);
      auto rr = check(C, threshold(1e-2, bq, bk, VisitOrder::reverse));
      if (bk <= 16) {
        EXPECT_GT(rr.ref.total_skipped(), 0);
      }
    }
  // Non-causal, odd sizes.
  auto N = make_prefill_data(rng, {33}, {100}, 2, 2, 16, 16, false, Fill::structure());
  for (int bq : {1, 16, 64})
    for (int bk : {1, 16, 64, 128}) check(build_prefill(N), threshold(1e-2, bq, bk, VisitOrder::sink_first));
}

TEST(Prefill, StridedInputsAndOutputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {100, 0, 37}, {100, 4, 80}, 4, 2, 24, 40, true, Fill::structure());
  for (int pad : {1, 5}) {
    auto C = build_prefill(D, DType::f32, pad);  // NaN in every gap of Q, K, V
    check(C, threshold(1e-3, 16, 16), {}, pad);
    check(C, dense(64, 128), {}, pad + 2);
  }
}

TEST(Prefill, HalfAndBf16Inputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {160, 50}, {160, 90}, 4, 2, 64, 64, true, Fill::structure());
  for (DType dt : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(blasst::to_string(dt));
    auto C = build_prefill(D, dt);
    auto rr = check(C, threshold(1e-3, 16, 16));
    EXPECT_GT(rr.ref.total_skipped(), 0);
    check(C, dense(16, 16));
    check(build_prefill(D, dt, 3), threshold(1e-2, 16, 32, VisitOrder::forward), {}, 1);
  }
}

TEST(Prefill, LowPrecisionOutputs) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {90, 30}, {90, 60}, 2, 1, 32, 32, true, Fill::structure());
  auto C = build_prefill(D);
  Tol t16;
  t16.o = 1e-3;  // O rounded to float16 once
  check(C, threshold(1e-3, 16, 16), t16, 0, DType::f16);
  Tol tb;
  tb.o = 6e-3;  // bfloat16
  check(C, threshold(1e-3, 16, 16), tb, 2, DType::bf16);
}

TEST(Prefill, ReplayReproducesAndModifiedMaskMatchesReference) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {200, 64}, {200, 150}, 4, 2, 32, 32, true, Fill::structure());
  auto C = build_prefill(D);
  auto p = C.problem();
  for (auto order : {VisitOrder::reverse, VisitOrder::sink_first}) {
    const auto pol = threshold(1e-3, 16, 16, order);
    auto first = make_out(p, mask_size(p, pol));
    run_and_check(p, pol, first);
    const auto mask = first.mask_copy();
    ASSERT_GT(count_state(mask, 2), 0);
    // Same mask back: same output.
    for (auto mode : {SkipPolicy::Mode::threshold, SkipPolicy::Mode::dense}) {
      auto rp = pol;
      rp.mode = mode;
      rp.replay_mask = mask.data();
      auto again = make_out(p, mask.size());
      run_and_check(p, rp, again);
      EXPECT_EQ(again.mask_copy(), mask);
      EXPECT_LE(o_max_rel_diff(again, first), 1e-6);
      EXPECT_EQ(again.stats.skipped, first.stats.skipped);
    }
    // Modified mask: tile 0 (which every row that sees a key sees) kept in every group, about a
    // third of the other kept tiles flipped to skipped; the engine must follow it exactly.
    auto mod = mask;
    const MaskFlips f = flip_kept_tiles(mod, bref::reference_prefill(p, pol), rng, 0.35);
    ASSERT_GT(f.flipped, 0);
    auto rp = pol;
    rp.replay_mask = mod.data();
    auto out = make_out(p, mod.size());
    auto rr = run_and_check(p, rp, out);
    EXPECT_EQ(out.mask_copy(), mod);
    EXPECT_EQ(rr.ref.total_skipped(), count_state(mask, 2) + f.flipped - f.unflipped);
  }
}

TEST(Prefill, StatisticsPerHeadSumToTotals) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {100, 0, 60}, {100, 30, 90}, 4, 2, 16, 16, true, Fill::structure());
  auto C = build_prefill(D);
  auto rr = check(C, threshold(1e-3, 16, 16));
  auto p = C.problem();
  auto out = run_only(C, threshold(1e-3, 16, 16));
  const auto& st = out.stats;
  ASSERT_EQ(st.batch, 3);
  ASSERT_EQ(st.heads, 4);
  const auto [v, s] = bt::expect_stats_sums(st);
  EXPECT_EQ(v, rr.ref.total_visited());
  EXPECT_EQ(s, rr.ref.total_skipped());
  EXPECT_DOUBLE_EQ(st.sparsity(), static_cast<double>(s) / static_cast<double>(v));
  // The mask agrees with the counters.
  const auto m = out.mask_copy();
  EXPECT_EQ(count_state(m, 1) + count_state(m, 2), v);
  EXPECT_EQ(count_state(m, 2), s);
  // Nothing visited: sparsity 0.
  auto E = make_prefill_data(rng, {5, 0}, {0, 0}, 2, 1, 8, 8, true, Fill::random());
  auto eo = run_only(build_prefill(E), threshold(0.5, 4, 4));
  EXPECT_EQ(eo.stats.tiles_visited(), 0);
  EXPECT_EQ(eo.stats.sparsity(), 0.0);
  (void)p;
}

TEST(Prefill, ThreadCountDoesNotChangeResults) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {300, 70}, {300, 100}, 4, 2, 32, 32, true, Fill::structure());
  auto C = build_prefill(D);
  const auto pol = threshold(1e-3, 16, 16);
  blasst::cpu::set_num_threads(1);
  EXPECT_EQ(blasst::cpu::num_threads(), 1);
  const auto one = run_only(C, pol);
  blasst::cpu::set_num_threads(3);
  const auto three = run_only(C, pol);
  blasst::cpu::set_num_threads(0);
  EXPECT_GE(blasst::cpu::num_threads(), 1);
  EXPECT_TRUE(same_bits(one, three));
  EXPECT_EQ(one.mask_copy(), three.mask_copy());
  EXPECT_EQ(one.stats.skipped, three.stats.skipped);
}

// Split-KV is described for decode (2.4); the policy allows it generally, so prefill with
// splits > 1 must either follow the same rule or refuse with blasst::Error.
TEST(Prefill, SplitKvFollowsTheContractOrIsRefused) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {200, 50}, {200, 120}, 2, 1, 32, 32, true, Fill::structure());
  auto C = build_prefill(D);
  auto p = C.problem();
  const auto pol = threshold(1e-3, 16, 16, VisitOrder::forward, 3, true);
  auto out = make_out(p, mask_size(p, pol));
  bool refused = false;
  try {
    run_engine(p, pol, out);
  } catch (const blasst::Error& e) {
    refused = true;
    std::cout << "[ info ] prefill with splits refused: " << e.what() << "\n";
  }
  if (!refused) {
    check(C, pol);
    check(C, dense(16, 16, VisitOrder::forward, 4));
  }
}

TEST(Prefill, LongStructuredSequence) {
  BT_SEEDED_RNG(rng);
  auto D = make_prefill_data(rng, {2048}, {2048}, 2, 1, 64, 64, true, Fill::structure());
  auto rr = check(build_prefill(D, DType::bf16), policy(SkipPolicy::Mode::scale_factor, 4.0, 64, 64, VisitOrder::reverse));
  std::cout << "[ info ] 2048 tokens, BQ 64 BK 64 reverse, a = 4: sparsity " << rr.ref.sparsity() << "\n";
  EXPECT_GT(rr.ref.sparsity(), 0.1);
  EXPECT_LT(rr.ref.sparsity(), 0.95);
}

TEST(Prefill, ExtremeLogits) {
  BT_SEEDED_RNG(rng);
  for (double temp : {30.0, 300.0}) {
    auto D = make_prefill_data(rng, {200, 64}, {200, 100}, 2, 1, 64, 64, true, Fill::random(temp));
    auto C = build_prefill(D);
    // float32 logits of magnitude ~temp carry absolute errors ~1e-7 * temp: scale the tolerance.
    Tol tol;
    tol.o = std::max(1e-5, 3e-7 * temp);
    tol.lse = std::max(1e-5, 1e-6 * temp);
    check(C, threshold(1e-3, 16, 16, VisitOrder::reverse), tol);
    check(C, dense(64, 128), tol);
  }
}

// Random configurations: geometry, shapes, GQA, dtypes, orders, policies, strides, fills.
TEST(Prefill, RandomConfigurations) {
  BT_SEEDED_RNG(rng);
  const std::vector<std::pair<int, int>> heads = {{1, 1}, {2, 1}, {4, 2}, {6, 3}, {8, 1}, {3, 3}};
  const std::vector<int> dims = {8, 16, 40, 64, 72};
  const std::vector<int> bqs = {1, 3, 16, 64}, bks = {1, 5, 16, 64, 128};
  for (int it = 0; it < 40; ++it) {
    const int batch = rng.uniform_int(1, 4);
    const bool causal = rng.uniform() < 0.7;
    std::vector<int> sq, sk;
    for (int b = 0; b < batch; ++b) {
      const int k = rng.uniform() < 0.1 ? 0 : rng.uniform_int(1, 260);
      sk.push_back(k);
      sq.push_back(rng.uniform() < 0.5 ? k : (rng.uniform() < 0.1 ? 0 : rng.uniform_int(1, 260)));
    }
    const auto [hq, hkv] = heads[rng.uniform_int(0, static_cast<int>(heads.size()) - 1)];
    const int dqk = dims[rng.uniform_int(0, static_cast<int>(dims.size()) - 1)];
    const int dv = rng.uniform() < 0.7 ? dqk : dims[rng.uniform_int(0, static_cast<int>(dims.size()) - 1)];
    const DType dt = static_cast<DType>(rng.uniform_int(0, 2));
    const int pad = rng.uniform() < 0.3 ? rng.uniform_int(1, 3) : 0;
    const bool structured = rng.uniform() < 0.6;
    const float scale = rng.uniform() < 0.2 ? static_cast<float>(0.05 + rng.uniform()) : 0.0f;
    SkipPolicy pol;
    const double u = rng.uniform();
    pol.mode = u < 0.15 ? SkipPolicy::Mode::dense : u < 0.6 ? SkipPolicy::Mode::threshold : SkipPolicy::Mode::scale_factor;
    pol.value = pol.mode == SkipPolicy::Mode::threshold ? std::pow(10.0, -5.0 + 5.0 * rng.uniform())
                                                        : std::pow(10.0, -2.0 + 4.0 * rng.uniform());
    pol.block_q = bqs[rng.uniform_int(0, 3)];
    pol.block_k = bks[rng.uniform_int(0, 4)];
    pol.order = static_cast<VisitOrder>(rng.uniform_int(0, 2));
    SCOPED_TRACE(::testing::Message()
                 << "iteration " << it << ": batch " << batch << " causal " << causal << " Hq " << hq
                 << " Hkv " << hkv << " d " << dqk << "/" << dv << " dtype " << blasst::to_string(dt)
                 << " pad " << pad << " structured " << structured << " scale " << scale << " mode "
                 << int(pol.mode) << " value " << pol.value << " BQ " << pol.block_q << " BK "
                 << pol.block_k << " order " << blasst::to_string(pol.order));
    auto D = make_prefill_data(rng, sq, sk, hq, hkv, dqk, dv, causal,
                               structured ? Fill::structure() : Fill::random(1.0 + 3.0 * rng.uniform()), scale);
    auto C = build_prefill(D, dt, pad);
    C.use_cu = batch > 1 || rng.uniform() < 0.5;
    const DType odt = rng.uniform() < 0.8 ? DType::f32 : static_cast<DType>(rng.uniform_int(1, 2));
    Tol tol;
    if (odt == DType::f16) tol.o = 1e-3;
    if (odt == DType::bf16) tol.o = 6e-3;
    check(C, pol, tol, rng.uniform() < 0.3 ? 2 : 0, odt);
    if (::testing::Test::HasFailure()) break;
  }
}

}  // namespace
