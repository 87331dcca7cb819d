// The BLASST skip test and the tile geometry it runs on (BLASST.md section 2). This header is the one
// place that defines which tiles a vote group visits, in what order, how splits cut them, what lambda
// a sequence gets and when a row agrees to skip; every backend (CPU engine, CUDA kernels) calls it.
#pragma once

#include <cmath>
#include <cstdint>

#include "blasst/types.hpp"

#if defined(__CUDACC__)
#define BLASST_HD __host__ __device__ __forceinline__
#else
#define BLASST_HD inline
#endif

namespace blasst {

// Per (vote group, tile) state in an exported or replayed skip mask.
enum TileState : std::uint8_t { tile_unvisited = 0, tile_kept = 1, tile_skipped = 2 };

// Last key position (inclusive) that query row i of a sequence with sq queries and sk keys sees;
// -1 if it sees none. Causal masks are bottom-right aligned (2.1).
BLASST_HD std::int64_t row_key_limit(bool causal, std::int64_t i, std::int64_t sq, std::int64_t sk) {
  if (sk <= 0) return -1;
  if (!causal) return sk - 1;
  const std::int64_t lim = i + sk - sq;
  return lim < sk - 1 ? (lim < -1 ? -1 : lim) : sk - 1;
}

// Number of key tiles visible to a group whose furthest-seeing row sees keys 0..max_key_limit.
// Rows see a prefix of the keys, so the visible tiles are always tiles 0 .. n-1 (2.2).
BLASST_HD int visible_tiles(std::int64_t max_key_limit, int block_k) {
  return max_key_limit < 0 ? 0 : static_cast<int>(max_key_limit / block_k + 1);
}

// Tile visited at position i (0-based) of a group with n visible tiles (2.4).
BLASST_HD int visit_tile(VisitOrder order, int n, int i) {
  switch (order) {
    case VisitOrder::forward: return i;
    case VisitOrder::reverse: return n - 1 - i;
    case VisitOrder::sink_first: return i == 0 ? 0 : n - i;
  }
  return i;
}

// Split-KV cut (2.4): chunks of ceil(n / splits) tiles, the last one shorter, empty ones dropped.
struct SplitCut {
  int chunk;  // tiles per chunk
  int count;  // non-empty chunks
};
BLASST_HD SplitCut split_cut(int n, int splits) {
  if (n <= 0) return {0, 0};
  if (splits < 1) splits = 1;
  const int chunk = (n + splits - 1) / splits;
  return {chunk, (n + chunk - 1) / chunk};
}

// lambda for a sequence with kv_len keys (2.7). mode: 0 dense, 1 scale factor, 2 threshold
// (SkipPolicy::Mode). Returns 0 for "dense": a <= 0, lambda >= 1, lambda <= 0 or kv_len == 0.
BLASST_HD double lambda_for(int mode, double value, std::int64_t kv_len) {
  if (kv_len <= 0 || !(value > 0.0)) return 0.0;
  const double lambda = mode == 1 ? value / static_cast<double>(kv_len) : mode == 2 ? value : 0.0;
  return lambda < 1.0 ? lambda : 0.0;
}

// The threshold the test compares logit differences against, in the caller's units:
// ln(lambda) * units_per_nat (1 for natural-log logits, log2(e) for kernels working with exp2).
// Dense (lambda == 0) gives -inf, which no difference is below.
BLASST_HD float skip_log_threshold(double lambda, double units_per_nat = 1.0) {
  if (!(lambda > 0.0) || !(lambda < 1.0)) return -INFINITY;
  return static_cast<float>(std::log(lambda) * units_per_nat);
}

// Does row r agree to skip this tile (2.5)? sees_tile: the row sees at least one key of the tile;
// tile_max: its maximum logit over those keys; running_max: its running max before this tile.
// A row that sees nothing of the tile never vetoes; a row with no finite running max always does.
// Written without branches (bitwise operators): kernels evaluate it per row on every tile.
BLASST_HD bool row_agrees(bool sees_tile, float tile_max, float running_max, float log_threshold) {
  return (!sees_tile) | ((running_max > -INFINITY) & (tile_max - running_max < log_threshold));
}
// The same test as one compare per row and tile, for kernels that keep a bound per row and move it
// only when the running max moves: a row agrees when its tile maximum lies below
// skip_row_bound(running_max, log_threshold / units), in the logits' own units (log_threshold in
// the caller's units divided by units per logit, e.g. softmax scale x log2 e). A row that sees none
// of the tile has only -inf logits there (masked), which lie below every bound but that of a row
// with no finite running max and an infinite threshold; a row with no finite running max gets
// -FLT_MAX, which every finite logit reaches, so it vetoes any tile it sees, as row_agrees does.
// It may decide a tile differently from row_agrees only at a boundary tie (rounding: the sum
// running_max + threshold against the difference tile_max - running_max).
BLASST_HD float skip_row_bound(float running_max, float threshold_in_logits) {
  return running_max > -INFINITY ? running_max + threshold_in_logits : -3.402823466e38f;
}

}  // namespace blasst
