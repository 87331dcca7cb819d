#include "blasst/output.hpp"

#include <numeric>

namespace blasst {
namespace {

int ceil_div(std::int64_t a, std::int64_t b) { return static_cast<int>((a + b - 1) / b); }

SkipMaskLayout finish(SkipMaskLayout l) {
  l.offsets.assign(l.tiles_k.size() + 1, 0);
  for (std::size_t b = 0; b < l.tiles_k.size(); ++b)
    l.offsets[b + 1] = l.offsets[b] + static_cast<std::int64_t>(l.groups[b]) * l.tiles_k[b];
  return l;
}

}  // namespace

SkipMaskLayout skip_mask_layout(const PrefillProblem& p, int block_q, int block_k) {
  SkipMaskLayout l;
  l.block_q = block_q;
  for (int b = 0; b < p.batch; ++b) {
    const std::int64_t sq = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b] : p.total_q;
    const std::int64_t sk = p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b] : p.total_k;
    l.tiles_k.push_back(ceil_div(sk, block_k));
    l.groups.push_back(p.num_heads_q * ceil_div(sq, block_q));
  }
  return finish(std::move(l));
}

SkipMaskLayout skip_mask_layout(const DecodeProblem& p, int block_k) {
  SkipMaskLayout l;
  for (int b = 0; b < p.batch; ++b) {
    l.tiles_k.push_back(ceil_div(p.seq_lens[b], block_k));
    l.groups.push_back(p.num_heads_kv);
  }
  return finish(std::move(l));
}

std::int64_t SkipStats::tiles_visited() const {
  return std::accumulate(visited.begin(), visited.end(), std::int64_t{0});
}
std::int64_t SkipStats::tiles_skipped() const {
  return std::accumulate(skipped.begin(), skipped.end(), std::int64_t{0});
}
double SkipStats::sparsity() const {
  const std::int64_t v = tiles_visited();
  return v > 0 ? static_cast<double>(tiles_skipped()) / static_cast<double>(v) : 0.0;
}
std::int64_t SkipStats::visited_for_head(int h) const {
  std::int64_t s = 0;
  for (int b = 0; b < batch; ++b) s += visited[static_cast<std::size_t>(b) * heads + h];
  return s;
}
std::int64_t SkipStats::skipped_for_head(int h) const {
  std::int64_t s = 0;
  for (int b = 0; b < batch; ++b) s += skipped[static_cast<std::size_t>(b) * heads + h];
  return s;
}

SkipStats stats_from_counters(const std::uint64_t* counters, int batch, int heads, std::vector<double> lambda) {
  SkipStats s;
  s.batch = batch;
  s.heads = heads;
  const std::size_t n = static_cast<std::size_t>(batch) * heads;
  s.visited.resize(n);
  s.skipped.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    s.visited[i] = static_cast<std::int64_t>(counters[2 * i]);
    s.skipped[i] = static_cast<std::int64_t>(counters[2 * i + 1]);
  }
  s.lambda = std::move(lambda);
  return s;
}

void Outputs::set_contiguous_strides(const PrefillProblem& p) {
  o_stride_head = p.head_dim_v;
  o_stride_token = static_cast<std::int64_t>(p.num_heads_q) * p.head_dim_v;
  o_stride_batch = 0;
  lse_stride_head = 1;
  lse_stride_token = p.num_heads_q;
  lse_stride_batch = 0;
}

void Outputs::set_contiguous_strides(const DecodeProblem& p) {
  o_stride_head = p.head_dim_v;
  o_stride_token = static_cast<std::int64_t>(p.num_heads_q) * p.head_dim_v;
  o_stride_batch = o_stride_token * p.q_tokens;
  lse_stride_head = 1;
  lse_stride_token = p.num_heads_q;
  lse_stride_batch = static_cast<std::int64_t>(p.num_heads_q) * p.q_tokens;
}

}  // namespace blasst
