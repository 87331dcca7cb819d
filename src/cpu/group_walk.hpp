// One vote group's walk over its visible key tiles (BLASST.md 2.4-2.6): visit order, split-KV
// chunks with their own running state, the skip vote, the online softmax, the LSE merge of the
// splits and the optional exact dropped-mass pass. Shared by prefill and decode; the caller supplies
// the group's query rows and a loader for its key tiles.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "blasst/skip_vote.hpp"
#include "cpu/vec_math.hpp"

namespace blasst::cpu {

struct WalkParams {
  int rows = 0;      // rows of the group
  int dqk = 0, dv = 0;
  int block_k = 0;
  int n_tiles = 0;   // visible tiles
  int splits = 1;
  VisitOrder order = VisitOrder::reverse;
  bool max_seed = false;
  float scale = 1.0f;
  float log_threshold = -INFINITY;            // skip_log_threshold(lambda); -inf = dense
  const std::uint8_t* replay = nullptr;      // per tile of this group, or null
  bool want_dropped = false;
};

// Per-worker buffers, grown as needed and reused across groups.
struct WalkScratch {
  std::vector<float> q;      // rows x dqk, converted query rows
  std::vector<float> kt;     // dqk x bkp, the key tile transposed
  std::vector<float> v;      // block_k x dvp
  std::vector<float> s;      // rows x bkp, logits then probabilities
  std::vector<float> acc;    // rows x dvp, the split's unnormalised output
  std::vector<float> out;    // rows x dvp, merged output, normalised at the end
  std::vector<float> m, l, tile_max, seed, merged_m, merged_l, lse, dropped;
  std::vector<std::int64_t> key_limit;  // rows: last key position each row sees, -1 none
  std::vector<std::uint8_t> state;      // n_tiles: TileState
  int bkp = 0, dvp = 0;

  void prepare(const WalkParams& p) {
    bkp = round_up(p.block_k, kPad);
    dvp = round_up(p.dv, kPad);
    auto grow = [](std::vector<float>& b, std::size_t n) {
      if (b.size() < n) b.assign(n, 0.0f);
    };
    const std::size_t r = static_cast<std::size_t>(p.rows);
    grow(q, r * p.dqk);
    grow(kt, static_cast<std::size_t>(p.dqk) * bkp);
    grow(v, static_cast<std::size_t>(p.block_k) * dvp);
    grow(s, r * bkp);
    grow(acc, r * dvp);
    grow(out, r * dvp);
    for (auto* b : {&m, &l, &tile_max, &seed, &merged_m, &merged_l, &lse, &dropped}) grow(*b, r);
    if (key_limit.size() < r) key_limit.resize(r);
    state.assign(static_cast<std::size_t>(std::max(p.n_tiles, 0)), tile_unvisited);
  }
};

// Loader concept:
//   int keys(int tile)                      number of keys in the tile (<= block_k)
//   void load_k(int tile, float* kt, int ld) kt[c * ld + j] = K[tile * block_k + j][c]
//   void load_v(int tile, float* v, int ld)  v[j * ld + c]  = V[tile * block_k + j][c]
// Before walk(): scratch.q holds the rows' queries (row-major, dqk), scratch.key_limit their limits.
// After: scratch.out (rows x dvp) the normalised output, scratch.lse, scratch.dropped (if wanted),
// scratch.state the decision for each tile.
template <class Loader>
void walk(const WalkParams& p, WalkScratch& w, Loader& loader) {
  const int R = p.rows, bkp = w.bkp, dvp = w.dvp, bk = p.block_k;
  float* S = w.s.data();
  std::fill(w.out.begin(), w.out.begin() + static_cast<std::ptrdiff_t>(R) * dvp, 0.0f);
  std::fill(w.merged_m.begin(), w.merged_m.begin() + R, -INFINITY);
  std::fill(w.merged_l.begin(), w.merged_l.begin() + R, 0.0f);

  // S = scale * Q K^T of one tile, masked per row; fills tile_max. Returns the tile's key count.
  auto logits = [&](int t) {
    const int nk = loader.keys(t);
    loader.load_k(t, w.kt.data(), bkp);
    gemm(R, bkp, p.dqk, w.q.data(), p.dqk, w.kt.data(), bkp, S, bkp, false);
    const std::int64_t t0 = static_cast<std::int64_t>(t) * bk;
    for (int r = 0; r < R; ++r) {
      const std::int64_t seen = std::min<std::int64_t>(nk, w.key_limit[r] - t0 + 1);
      w.tile_max[r] = scale_mask_max(S + static_cast<std::ptrdiff_t>(r) * bkp, p.scale,
                                     static_cast<int>(std::max<std::int64_t>(seen, 0)), bkp);
    }
    return nk;
  };
  auto sees = [&](int r, int t) { return w.key_limit[r] >= static_cast<std::int64_t>(t) * bk; };

  const SplitCut cut = split_cut(p.n_tiles, p.splits);
  const bool seeded = p.max_seed && cut.count > 1;
  for (int k = 0; k < cut.count; ++k) {
    const int first = k * cut.chunk;
    const int len = std::min(cut.chunk, p.n_tiles - first);
    const bool from_seed = seeded && k > 0;
    for (int r = 0; r < R; ++r) w.m[r] = from_seed ? w.seed[r] : -INFINITY;
    std::fill(w.l.begin(), w.l.begin() + R, 0.0f);
    std::fill(w.acc.begin(), w.acc.begin() + static_cast<std::ptrdiff_t>(R) * dvp, 0.0f);

    for (int i = 0; i < len; ++i) {
      const int t = first + visit_tile(p.order, len, i);  // splits > 1 implies forward
      const int nk = logits(t);
      if (seeded && t == 0) std::copy(w.tile_max.begin(), w.tile_max.begin() + R, w.seed.begin());

      bool skip;
      if (p.replay) {
        skip = p.replay[t] == tile_skipped;
      } else if (i == 0 && !from_seed) {
        skip = false;  // the first tile a split visits is never skipped
      } else {
        skip = true;
        for (int r = 0; r < R && skip; ++r)
          skip = row_agrees(sees(r, t), w.tile_max[r], w.m[r], p.log_threshold);
      }
      w.state[t] = skip ? tile_skipped : tile_kept;
      if (skip) continue;

      for (int r = 0; r < R; ++r) {
        float* srow = S + static_cast<std::ptrdiff_t>(r) * bkp;
        const float m_new = std::max(w.m[r], w.tile_max[r]);
        if (m_new == -INFINITY) {  // the row has seen no key yet: its probabilities are all 0
          std::fill(srow, srow + bkp, 0.0f);
          continue;
        }
        if (m_new > w.m[r]) {
          const float alpha = std::exp(w.m[r] - m_new);  // 0 when m was -inf
          w.l[r] *= alpha;
          scale_row(w.acc.data() + static_cast<std::ptrdiff_t>(r) * dvp, alpha, dvp);
          w.m[r] = m_new;
        }
        w.l[r] += exp_sub_sum(srow, m_new, srow, bkp);
      }
      loader.load_v(t, w.v.data(), dvp);
      gemm(R, dvp, nk, S, bkp, w.v.data(), dvp, w.acc.data(), dvp, true);
    }

    // Merge this split into the result by its log-sum-exp.
    for (int r = 0; r < R; ++r) {
      if (!(w.l[r] > 0.0f)) continue;
      const float mm = std::max(w.merged_m[r], w.m[r]);
      const float a = std::exp(w.merged_m[r] - mm), b = std::exp(w.m[r] - mm);
      w.merged_l[r] = w.merged_l[r] * a + w.l[r] * b;
      float* o = w.out.data() + static_cast<std::ptrdiff_t>(r) * dvp;
      const float* s = w.acc.data() + static_cast<std::ptrdiff_t>(r) * dvp;
      for (int c = 0; c < dvp; ++c) o[c] = o[c] * a + s[c] * b;
      w.merged_m[r] = mm;
    }
  }

  for (int r = 0; r < R; ++r) {
    float* o = w.out.data() + static_cast<std::ptrdiff_t>(r) * dvp;
    if (w.merged_l[r] > 0.0f) {
      const float inv = 1.0f / w.merged_l[r];
      for (int c = 0; c < dvp; ++c) o[c] *= inv;
      w.lse[r] = w.merged_m[r] + std::log(w.merged_l[r]);
    } else {
      std::fill(o, o + dvp, 0.0f);
      w.lse[r] = -INFINITY;
    }
  }

  if (!p.want_dropped) return;
  // Exact dropped share: D_r = sum over skipped keys of exp(s - LSE_r) = dropped / kept mass,
  // so the share of the full softmax is D / (1 + D).
  std::vector<double> d(static_cast<std::size_t>(R), 0.0);
  for (int t = 0; t < p.n_tiles; ++t) {
    if (w.state[t] != tile_skipped) continue;
    logits(t);
    for (int r = 0; r < R; ++r) {
      if (w.lse[r] == -INFINITY) continue;
      const float* srow = S + static_cast<std::ptrdiff_t>(r) * bkp;
      for (int j = 0; j < bkp; ++j)
        if (srow[j] != -INFINITY) d[r] += std::exp(static_cast<double>(srow[j]) - w.lse[r]);
    }
  }
  // A row that sees keys but kept none (possible only under replay) lost all of its mass.
  for (int r = 0; r < R; ++r)
    w.dropped[r] = w.lse[r] == -INFINITY ? (w.key_limit[r] >= 0 ? 1.0f : 0.0f)
                                         : static_cast<float>(d[r] / (1.0 + d[r]));
}

}  // namespace blasst::cpu
