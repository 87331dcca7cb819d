// Unit tests of the shared skip test and tile geometry (include/blasst/skip_vote.hpp).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "blasst/policy.hpp"
#include "blasst/skip_vote.hpp"

using namespace blasst;

TEST(SkipVote, RowKeyLimitIsBottomRightAligned) {
  EXPECT_EQ(row_key_limit(false, 0, 3, 10), 9);
  EXPECT_EQ(row_key_limit(true, 0, 3, 10), 7);
  EXPECT_EQ(row_key_limit(true, 2, 3, 10), 9);
  EXPECT_EQ(row_key_limit(true, 0, 10, 3), -1);  // Sq > Sk: early rows see nothing
  EXPECT_EQ(row_key_limit(true, 7, 10, 3), 0);
  EXPECT_EQ(row_key_limit(true, 0, 1, 0), -1);
  EXPECT_EQ(row_key_limit(false, 0, 1, 0), -1);
}

TEST(SkipVote, VisibleTiles) {
  EXPECT_EQ(visible_tiles(-1, 128), 0);
  EXPECT_EQ(visible_tiles(0, 128), 1);
  EXPECT_EQ(visible_tiles(127, 128), 1);
  EXPECT_EQ(visible_tiles(128, 128), 2);
}

TEST(SkipVote, VisitOrdersArePermutations) {
  for (int n : {1, 2, 3, 7}) {
    for (VisitOrder o : {VisitOrder::forward, VisitOrder::reverse, VisitOrder::sink_first}) {
      std::set<int> seen;
      for (int i = 0; i < n; ++i) seen.insert(visit_tile(o, n, i));
      EXPECT_EQ(static_cast<int>(seen.size()), n);
      EXPECT_EQ(*seen.begin(), 0);
      EXPECT_EQ(*seen.rbegin(), n - 1);
    }
  }
  EXPECT_EQ(visit_tile(VisitOrder::sink_first, 5, 0), 0);
  EXPECT_EQ(visit_tile(VisitOrder::sink_first, 5, 1), 4);
  EXPECT_EQ(visit_tile(VisitOrder::sink_first, 5, 4), 1);
  EXPECT_EQ(visit_tile(VisitOrder::reverse, 5, 0), 4);
}

TEST(SkipVote, SplitCutDropsEmptyChunks) {
  EXPECT_EQ(split_cut(10, 4).chunk, 3);
  EXPECT_EQ(split_cut(10, 4).count, 4);
  EXPECT_EQ(split_cut(5, 4).chunk, 2);
  EXPECT_EQ(split_cut(5, 4).count, 3);  // 2 + 2 + 1, the fourth chunk would be empty
  EXPECT_EQ(split_cut(3, 8).count, 3);
  EXPECT_EQ(split_cut(0, 4).count, 0);
}

TEST(SkipVote, LambdaGuards) {
  EXPECT_EQ(lambda_for(1, 2.0, 1024), 2.0 / 1024);
  EXPECT_EQ(lambda_for(1, 2.0, 2), 0.0);    // lambda >= 1 means dense
  EXPECT_EQ(lambda_for(1, 2.0, 0), 0.0);    // empty sequence
  EXPECT_EQ(lambda_for(1, -1.0, 100), 0.0);
  EXPECT_EQ(lambda_for(2, 0.01, 5), 0.01);
  EXPECT_EQ(lambda_for(0, 0.01, 5), 0.0);
  EXPECT_EQ(sequence_lambda(SkipPolicy::with_scale_factor(4), 4096), 4.0 / 4096);
  EXPECT_EQ(skip_log_threshold(0.0), -INFINITY);
  EXPECT_EQ(skip_log_threshold(1.0), -INFINITY);
  EXPECT_FLOAT_EQ(skip_log_threshold(0.5), std::log(0.5f));
  EXPECT_FLOAT_EQ(skip_log_threshold(0.5, 1.4426950408889634), -1.0f);
}

TEST(SkipVote, RowAgreement) {
  const float thr = std::log(0.01f);
  EXPECT_TRUE(row_agrees(false, -INFINITY, -INFINITY, thr));  // sees nothing: never vetoes
  EXPECT_FALSE(row_agrees(true, 1.0f, -INFINITY, thr));       // no finite max yet: vetoes
  EXPECT_TRUE(row_agrees(true, 0.0f, 5.0f, thr));             // 5 below: exp(-5) < 0.01
  EXPECT_FALSE(row_agrees(true, 0.0f, 4.0f, thr));            // exp(-4) > 0.01
  EXPECT_FALSE(row_agrees(true, 0.0f, 5.0f, -INFINITY));      // dense never agrees
}

// skip_row_bound (the vote kernels' one compare a row) decides as row_agrees does, but at ties.
TEST(SkipVote, RowBoundMatchesRowAgreesButAtTies) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> max_d(-60.f, 60.f), thr_d(std::log(1e-6f), std::log(0.9f)),
      delta_d(-4.f, 4.f);
  int compared = 0;
  for (int i = 0; i < 200000; ++i) {
    const float m = max_d(rng), thr = thr_d(rng), delta = delta_d(rng);
    if (std::fabs(delta) < 1e-3f) continue;  // a tie up to rounding: either decision is the contract's
    const float tile_max = m + thr + delta;
    ASSERT_EQ(tile_max < skip_row_bound(m, thr), row_agrees(true, tile_max, m, thr))
        << "m " << m << " thr " << thr << " tile_max " << tile_max;
    ++compared;
  }
  EXPECT_GT(compared, 190000);
  const float thr = std::log(0.01f);
  // No finite running max: every finite logit vetoes, as in row_agrees; a row that sees none of the
  // tile (its logits masked to -inf) agrees.
  EXPECT_FALSE(-1e30f < skip_row_bound(-INFINITY, thr));
  EXPECT_FALSE(row_agrees(true, -1e30f, -INFINITY, thr));
  EXPECT_TRUE(-INFINITY < skip_row_bound(-INFINITY, thr));
  EXPECT_TRUE(-INFINITY < skip_row_bound(5.0f, thr));
  // A dense threshold (-inf): no logit lies below the bound.
  EXPECT_FALSE(-1e30f < skip_row_bound(5.0f, -INFINITY));
}

TEST(SkipVote, PolicyValidation) {
  SkipPolicy p = SkipPolicy::with_threshold(-0.1);
  EXPECT_THROW(validate(p), Error);
  p = SkipPolicy::with_scale_factor(NAN);
  EXPECT_THROW(validate(p), Error);
  p = SkipPolicy{};
  p.splits = 2;
  EXPECT_THROW(validate(p), Error);  // reverse order with splits
  p.order = VisitOrder::forward;
  EXPECT_NO_THROW(validate(p));
  p.block_k = 0;
  EXPECT_THROW(validate(p), Error);
}
