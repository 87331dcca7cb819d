// One vote group's walk over its visible key tiles (BLASST.md 2.4-2.6): visit order, split-KV
// chunks with their own running state, the skip vote, the online softmax, the LSE merge of the
// splits and the optional exact dropped-mass pass. Shared by prefill and decode; the caller supplies
// the group's query rows and a loader for its key tiles.
//
// Logits are kept key-major, S^T [keys][rows] = K Q^T: K rows feed the GEMM as they lie in memory
// (no transposition) and the per-row softmax state is updated a vector of rows at a time.
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
  // Decisions only (calibration): each visible tile's row maxima, [n_tiles][rp] as written by
  // collect_tile_maxima; walk() then replays the vote over them and produces no output.
  const float* tile_maxima = nullptr;
};

// Per-worker buffers, grown as needed and reused across groups.
struct WalkScratch {
  std::vector<float> q;      // rows x dqk, converted query rows (filled by the caller)
  std::vector<float> qt;     // dqk x rp, Q transposed
  std::vector<float> k;      // block_k x dqk, converted key rows (when they cannot be used in place)
  std::vector<float> v;      // block_k x dvp, converted value rows
  std::vector<float> st;     // block_k x rp, logits then probabilities, key-major
  std::vector<float> acc;    // rows x dvp, the split's unnormalised output
  std::vector<float> out;    // rows x dvp, merged output, normalised at the end
  std::vector<float> m, l, tile_max, seed, merged_m, merged_l, lse, dropped;  // rp each
  std::vector<std::int64_t> key_limit;  // rows: last key position each row sees, -1 none (caller)
  std::vector<std::int32_t> lim;        // rp: key_limit relative to the tile being processed
  std::vector<std::uint8_t> state;      // n_tiles: TileState
  int rp = 0, dvp = 0;

  void prepare(const WalkParams& p) {
    rp = round_up(p.rows, kPad);
    dvp = round_up(p.dv, kPad);
    auto grow = [](auto& b, std::size_t n) {
      if (b.size() < n) b.assign(n, {});
    };
    const std::size_t r = static_cast<std::size_t>(p.rows), bk = static_cast<std::size_t>(p.block_k);
    grow(q, r * p.dqk);
    grow(qt, static_cast<std::size_t>(p.dqk) * rp);
    grow(k, bk * p.dqk);
    grow(v, bk * dvp);
    grow(st, bk * rp);
    grow(acc, r * dvp);
    grow(out, r * dvp);
    for (auto* b : {&m, &l, &tile_max, &seed, &merged_m, &merged_l, &lse, &dropped}) grow(*b, std::size_t(rp));
    grow(key_limit, r);
    grow(lim, std::size_t(rp));
    state.assign(static_cast<std::size_t>(std::max(p.n_tiles, 0)), tile_unvisited);
  }
};

// Loader concept:
//   int keys(int tile)  number of keys in the tile (<= block_k)
//   const float* k_rows(int tile, float* scratch, std::int64_t& ld)
//   const float* v_rows(int tile, float* scratch, std::int64_t& ld)
//     row j of the tile's keys (dqk floats) / values (a multiple of kPad floats, columns past dv
//     finite) at result + j * ld: in place when the input allows, else converted into scratch.
// Before walk(): scratch.q holds the rows' queries (row-major, dqk), scratch.key_limit their limits.
// After: scratch.out (rows x dvp) the normalised output, scratch.lse, scratch.dropped (if wanted),
// scratch.state the decision for each tile.
// Groups of at most this many rows take the dot-product path for Q K^T (decode's GQA groups).
constexpr int kSmallRows = 8;

// Q^T from the rows in w.q (once per group, before any tile_logits).
inline void transpose_queries(const WalkParams& p, WalkScratch& w) {
  for (int c = 0; c < p.dqk; ++c)
    for (int r = 0; r < w.rp; ++r)
      w.qt[static_cast<std::size_t>(c) * w.rp + r] = r < p.rows ? w.q[static_cast<std::size_t>(r) * p.dqk + c] : 0.0f;
}

// S^T = scale * K Q^T of tile t into w.st, masked per row (keys past a row's limit, rows past R);
// fills w.tile_max. Returns the tile's key count.
template <class Loader>
int tile_logits(const WalkParams& p, WalkScratch& w, Loader& loader, int t) {
  const int rp = w.rp, nk = loader.keys(t);
  std::int64_t ldk = 0;
  const float* kr = loader.k_rows(t, w.k.data(), ldk);
  if (p.rows <= kSmallRows)
    key_query_dots(nk, p.rows, rp, p.dqk, kr, ldk, w.q.data(), w.st.data());
  else
    gemm(nk, rp, p.dqk, kr, ldk, 1, w.qt.data(), rp, w.st.data(), rp, false);
  const std::int64_t t0 = static_cast<std::int64_t>(t) * p.block_k;
  for (int r = 0; r < rp; ++r)
    w.lim[r] = r < p.rows ? static_cast<std::int32_t>(std::max<std::int64_t>(w.key_limit[r] - t0, -1)) : -1;
  scale_mask_max_keys(w.st.data(), rp, nk, p.scale, w.lim.data(), w.tile_max.data());
  return nk;
}

// Every visible tile's row maxima into out[t * rp + r]: what the vote needs, for any lambda.
template <class Loader>
void collect_tile_maxima(const WalkParams& p, WalkScratch& w, Loader& loader, float* out) {
  transpose_queries(p, w);
  for (int t = 0; t < p.n_tiles; ++t) {
    tile_logits(p, w, loader, t);
    std::copy(w.tile_max.begin(), w.tile_max.begin() + w.rp, out + static_cast<std::ptrdiff_t>(t) * w.rp);
  }
}

template <class Loader>
void walk(const WalkParams& p, WalkScratch& w, Loader& loader) {
  const int R = p.rows, rp = w.rp, dvp = w.dvp, bk = p.block_k;
  const bool decisions_only = p.tile_maxima != nullptr;
  float* ST = w.st.data();
  if (!decisions_only) {
    transpose_queries(p, w);
    std::fill(w.out.begin(), w.out.begin() + static_cast<std::ptrdiff_t>(R) * dvp, 0.0f);
    std::fill(w.merged_m.begin(), w.merged_m.begin() + rp, -INFINITY);
    std::fill(w.merged_l.begin(), w.merged_l.begin() + rp, 0.0f);
  }
  auto logits = [&](int t) {
    if (!decisions_only) return tile_logits(p, w, loader, t);
    const float* mx = p.tile_maxima + static_cast<std::ptrdiff_t>(t) * rp;
    std::copy(mx, mx + rp, w.tile_max.begin());
    return 0;
  };
  auto sees = [&](int r, int t) { return w.key_limit[r] >= static_cast<std::int64_t>(t) * bk; };

  const SplitCut cut = split_cut(p.n_tiles, p.splits);
  const bool seeded = p.max_seed && cut.count > 1;
  for (int k = 0; k < cut.count; ++k) {
    const int first = k * cut.chunk;
    const int len = std::min(cut.chunk, p.n_tiles - first);
    const bool from_seed = seeded && k > 0;
    for (int r = 0; r < rp; ++r) w.m[r] = from_seed ? w.seed[r] : -INFINITY;
    if (!decisions_only) {
      std::fill(w.l.begin(), w.l.begin() + rp, 0.0f);
      std::fill(w.acc.begin(), w.acc.begin() + static_cast<std::ptrdiff_t>(R) * dvp, 0.0f);
    }

    for (int i = 0; i < len; ++i) {
      const int t = first + visit_tile(p.order, len, i);  // splits > 1 implies forward
      const int nk = logits(t);
      if (seeded && t == 0) std::copy(w.tile_max.begin(), w.tile_max.begin() + rp, w.seed.begin());

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
      if (decisions_only) {
        for (int r = 0; r < rp; ++r) w.m[r] = std::max(w.m[r], w.tile_max[r]);
        continue;
      }

      // Rows that have seen no key yet keep m = -inf and get probabilities exp(-inf - 0) = 0.
      for (int r = 0; r < rp; ++r) {
        const float m_new = std::max(w.m[r], w.tile_max[r]);
        if (m_new > w.m[r]) {
          const float alpha = std::exp(w.m[r] - m_new);  // 0 when m was -inf
          w.l[r] *= alpha;
          if (r < R) scale_row(w.acc.data() + static_cast<std::ptrdiff_t>(r) * dvp, alpha, dvp);
          w.m[r] = m_new;
        }
        w.tile_max[r] = w.m[r] == -INFINITY ? 0.0f : w.m[r];  // reused: the exponent's offset
      }
      exp_sub_keys(ST, rp, nk, w.tile_max.data(), w.l.data());
      std::int64_t ldv = 0;
      const float* vr = loader.v_rows(t, w.v.data(), ldv);
      gemm(R, dvp, nk, ST, 1, rp, vr, ldv, w.acc.data(), dvp, true);
    }

    // Merge this split into the result by its log-sum-exp.
    for (int r = 0; r < R && !decisions_only; ++r) {
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

  if (decisions_only) return;
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
    const int nk = logits(t);
    for (int j = 0; j < nk; ++j)
      for (int r = 0; r < R; ++r) {
        const float s = ST[static_cast<std::ptrdiff_t>(j) * rp + r];
        if (w.lse[r] != -INFINITY && s != -INFINITY) d[r] += std::exp(static_cast<double>(s) - w.lse[r]);
      }
  }
  // A row that sees keys but kept none (possible only under replay) lost all of its mass.
  for (int r = 0; r < R; ++r)
    w.dropped[r] = w.lse[r] == -INFINITY ? (w.key_limit[r] >= 0 ? 1.0f : 0.0f)
                                         : static_cast<float>(d[r] / (1.0 + d[r]));
}

}  // namespace blasst::cpu
