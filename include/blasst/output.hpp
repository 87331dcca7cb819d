// Outputs of an attention call: O, optional LSE, skip statistics, skip mask and dropped mass.
#pragma once

#include <cstdint>
#include <vector>

#include "blasst/problem.hpp"
#include "blasst/types.hpp"

namespace blasst {

// Layout of a skip mask: one byte (TileState) per (vote group, key tile), sequence after sequence.
// Sequence b starts at offsets[b] and holds groups(b) * tiles_k(b) entries, group-major, where
// tiles_k(b) = ceil(Sk_b / block_k) and the groups are
//   prefill: (query head h, query tile qt), index h * ceil(Sq_b / block_q) + qt;
//   decode:  KV head.
// Tiles a group does not see stay tile_unvisited.
struct SkipMaskLayout {
  std::vector<std::int64_t> offsets;  // batch + 1 entries; offsets.back() is the total size
  std::vector<int> tiles_k;           // per sequence
  std::vector<int> groups;            // per sequence
  int block_q = 0;                    // prefill only
  std::int64_t size() const { return offsets.empty() ? 0 : offsets.back(); }
  std::int64_t index(int b, int group, int tile) const {
    return offsets[b] + static_cast<std::int64_t>(group) * tiles_k[b] + tile;
  }
};
// Host-side index arrays must be readable (cu_seqlens, seq_lens).
SkipMaskLayout skip_mask_layout(const PrefillProblem& p, int block_q, int block_k);
SkipMaskLayout skip_mask_layout(const DecodeProblem& p, int block_k);

// Skip statistics (BLASST.md 2.8). Counters are per (sequence, head) where "head" is the query head
// for prefill and the KV head for decode (the head that owns the vote group).
struct SkipStats {
  int batch = 0;
  int heads = 0;
  std::vector<std::int64_t> visited;  // [batch * heads]
  std::vector<std::int64_t> skipped;  // [batch * heads]
  std::vector<double> lambda;         // per sequence; 0 means dense

  std::int64_t tiles_visited() const;
  std::int64_t tiles_skipped() const;
  double sparsity() const;  // skipped / visited; 0 when nothing was visited
  std::int64_t visited_for_head(int h) const;
  std::int64_t skipped_for_head(int h) const;
};

// SkipStats from a host copy of GPU tile counters ([batch * heads][2]).
SkipStats stats_from_counters(const std::uint64_t* counters, int batch, int heads, std::vector<double> lambda);

// Where results go. o is required; everything else is optional (nullptr: not produced).
// Strides are in elements; the innermost stride is 1.
//   prefill: O [total_q, Hq, d_v], LSE and dropped_mass [total_q, Hq]
//   decode:  O [batch, q_tokens, Hq, d_v], LSE and dropped_mass [batch, q_tokens, Hq]
struct Outputs {
  void* o = nullptr;
  DType o_dtype = DType::f32;
  std::int64_t o_stride_batch = 0, o_stride_token = 0, o_stride_head = 0;  // batch: decode only

  float* lse = nullptr;  // natural log; -inf for rows that see no key
  std::int64_t lse_stride_batch = 0, lse_stride_token = 0, lse_stride_head = 0;

  SkipStats* stats = nullptr;          // CPU engine
  // GPU backends: per (sequence, head) counters in device memory, [batch * heads][2] = (visited,
  // skipped), zeroed and filled by each call; see stats_from_counters.
  std::uint64_t* tile_counters = nullptr;
  std::uint8_t* skip_mask = nullptr;  // SkipMaskLayout::size() bytes (host for CPU, device for GPU)

  // Exact share of each row's softmax mass that skipped tiles held (an extra pass over the skipped
  // tiles, for calibration and tests): sum_skipped p / sum_all p. Same layout as LSE.
  float* dropped_mass = nullptr;

  // Contiguous strides for O, LSE and dropped_mass of a problem.
  void set_contiguous_strides(const PrefillProblem& p);
  void set_contiguous_strides(const DecodeProblem& p);
};

}  // namespace blasst
