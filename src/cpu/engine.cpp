// The CPU engine: prefill and paged decode over the shared group walk, threaded over vote groups.
#include "blasst/cpu/engine.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "blasst/skip_vote.hpp"
#include "cpu/group_walk.hpp"
#include "cpu/thread_pool.hpp"

namespace blasst::cpu {
namespace {

const std::uint8_t* at(const void* base, std::int64_t elem, DType t) {
  return static_cast<const std::uint8_t*>(base) + elem * static_cast<std::int64_t>(dtype_size(t));
}
std::uint8_t* at(void* base, std::int64_t elem, DType t) {
  return static_cast<std::uint8_t*>(base) + elem * static_cast<std::int64_t>(dtype_size(t));
}

void check_cpu_policy(const SkipPolicy& pol) {
  validate(pol);
  if (pol.splits < 1) throw Error("splits must be >= 1 for the CPU engine (0 is for GPU planners)");
}

void check_outputs(const Outputs& o, bool decode, int batch, std::int64_t rows) {
  if (rows == 0) return;  // nothing will be written
  if (o.o == nullptr) throw Error("the output O must not be null");
  if (o.o_stride_token == 0 || o.o_stride_head == 0 || (decode && batch > 1 && o.o_stride_batch == 0))
    throw Error("output strides are not set (see Outputs::set_contiguous_strides)");
  for (const float* p : {o.lse, o.dropped_mass})
    if (p != nullptr && (o.lse_stride_token == 0 || o.lse_stride_head == 0 ||
                         (decode && batch > 1 && o.lse_stride_batch == 0)))
      throw Error("LSE strides are not set (see Outputs::set_contiguous_strides)");
}

// Where one group's rows go, and the per-group bookkeeping shared by both phases.
struct RowSink {
  const Outputs& out;
  int dv;
  void write(const WalkScratch& w, int r, std::int64_t o_off, std::int64_t lse_off) const {
    store_row(w.out.data() + static_cast<std::ptrdiff_t>(r) * w.dvp, out.o_dtype,
              at(out.o, o_off, out.o_dtype), dv);
    if (out.lse) out.lse[lse_off] = w.lse[r];
    if (out.dropped_mass) out.dropped_mass[lse_off] = w.dropped[r];
  }
};

struct GroupCounts {
  std::int64_t visited = 0, skipped = 0;
};

GroupCounts record(const WalkScratch& w, int n_tiles, std::uint8_t* mask_slice) {
  GroupCounts c;
  c.visited = n_tiles;
  for (int t = 0; t < n_tiles; ++t) c.skipped += w.state[t] == tile_skipped;
  if (mask_slice) std::copy(w.state.begin(), w.state.begin() + n_tiles, mask_slice);
  return c;
}

void fill_stats(SkipStats* stats, int batch, int heads, std::vector<double> lambdas,
                const std::vector<GroupCounts>& per_item,
                const std::vector<std::int64_t>& item_slot) {
  if (!stats) return;
  stats->batch = batch;
  stats->heads = heads;
  stats->visited.assign(static_cast<std::size_t>(batch) * heads, 0);
  stats->skipped.assign(static_cast<std::size_t>(batch) * heads, 0);
  for (std::size_t i = 0; i < per_item.size(); ++i) {
    stats->visited[item_slot[i]] += per_item[i].visited;
    stats->skipped[item_slot[i]] += per_item[i].skipped;
  }
  stats->lambda = std::move(lambdas);
}

struct Seq {
  std::int64_t q0, sq, k0, sk;
  int q_tiles;
  double lambda;
};

// Key tiles of one prefill sequence and KV head. float32 rows are used in place (values too when
// their padded width stays inside the row); other types are converted into the scratch.
struct PrefillLoader {
  const PrefillProblem& p;
  const Seq& s;
  int hkv, bk;
  int keys(int t) const { return static_cast<int>(std::min<std::int64_t>(bk, s.sk - std::int64_t{t} * bk)); }
  const float* rows(const void* base, std::int64_t stride_token, std::int64_t stride_head, int dim, int width,
                    int t, float* scratch, std::int64_t& ld) const {
    const std::int64_t tok0 = s.k0 + std::int64_t{t} * bk;
    if (p.dtype == DType::f32 && dim == width) {
      ld = stride_token;
      return static_cast<const float*>(base) + tok0 * stride_token + hkv * stride_head;
    }
    ld = width;
    const int nk = keys(t);
    for (int j = 0; j < nk; ++j)
      convert_row(at(base, (tok0 + j) * stride_token + hkv * stride_head, p.dtype), p.dtype, scratch + j * ld, dim);
    return scratch;
  }
  const float* k_rows(int t, float* scratch, std::int64_t& ld) const {
    return rows(p.k, p.k_stride_token, p.k_stride_head, p.head_dim_qk, p.head_dim_qk, t, scratch, ld);
  }
  const float* v_rows(int t, float* scratch, std::int64_t& ld) const {
    return rows(p.v, p.v_stride_token, p.v_stride_head, p.head_dim_v, round_up(p.head_dim_v, kPad), t, scratch, ld);
  }
};

// Key tiles of one decode sequence and KV head, gathered from the paged cache into the scratch.
struct PagedLoader {
  const DecodeProblem& p;
  int b, hkv, bk;
  std::int64_t sk;
  int keys(int t) const { return static_cast<int>(std::min<std::int64_t>(bk, sk - std::int64_t{t} * bk)); }
  const float* gather(const void* cache, std::int64_t sp, std::int64_t ss, std::int64_t sh, int dim, int width,
                      int t, float* scratch, std::int64_t& ld) const {
    ld = width;
    const int nk = keys(t);
    for (int j = 0; j < nk; ++j) {
      const std::int64_t pos = std::int64_t{t} * bk + j;
      const std::int64_t page = p.block_table[static_cast<std::int64_t>(b) * p.max_pages_per_seq + pos / p.page_size];
      convert_row(at(cache, page * sp + (pos % p.page_size) * ss + hkv * sh, p.dtype), p.dtype, scratch + j * ld, dim);
    }
    return scratch;
  }
  const float* k_rows(int t, float* scratch, std::int64_t& ld) const {
    return gather(p.k_cache, p.k_stride_page, p.k_stride_slot, p.k_stride_head, p.head_dim_qk, p.head_dim_qk, t,
                  scratch, ld);
  }
  const float* v_rows(int t, float* scratch, std::int64_t& ld) const {
    return gather(p.v_cache, p.v_stride_page, p.v_stride_slot, p.v_stride_head, p.head_dim_v,
                  round_up(p.head_dim_v, kPad), t, scratch, ld);
  }
};

WalkParams base_params(const SkipPolicy& pol, float scale, int dqk, int dv, bool want_dropped) {
  WalkParams wp;
  wp.dqk = dqk;
  wp.dv = dv;
  wp.block_k = pol.block_k;
  wp.splits = pol.splits;
  wp.order = pol.order;
  wp.max_seed = pol.max_seed;
  wp.scale = scale;
  wp.want_dropped = want_dropped;
  return wp;
}

}  // namespace

void prefill(const PrefillProblem& p, const SkipPolicy& pol, const Outputs& out) {
  validate_shapes(p);
  check_cpu_policy(pol);
  validate_host_indices(p);
  check_outputs(out, false, p.batch, p.total_q);

  const int G = p.num_heads_q / p.num_heads_kv, BQ = pol.block_q, BK = pol.block_k;
  const float scale = effective_softmax_scale(p.softmax_scale, p.head_dim_qk);
  const bool need_layout = out.skip_mask != nullptr || pol.replay_mask != nullptr;
  const SkipMaskLayout layout = need_layout ? skip_mask_layout(p, BQ, BK) : SkipMaskLayout{};
  if (out.skip_mask) std::fill(out.skip_mask, out.skip_mask + layout.size(), tile_unvisited);

  std::vector<Seq> seqs(p.batch);
  std::vector<double> lambdas(p.batch);
  struct Item {
    int b, h, qt;
  };
  std::vector<Item> items;
  for (int b = 0; b < p.batch; ++b) {
    Seq& s = seqs[b];
    s.q0 = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
    s.k0 = p.cu_seqlens_k ? p.cu_seqlens_k[b] : 0;
    s.sq = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - s.q0 : p.total_q;
    s.sk = p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - s.k0 : p.total_k;
    s.q_tiles = static_cast<int>((s.sq + BQ - 1) / BQ);
    s.lambda = lambdas[b] = sequence_lambda(pol, s.sk);
    // Later query tiles see more keys under a causal mask: hand them out first.
    for (int qt = s.q_tiles - 1; qt >= 0; --qt)
      for (int h = 0; h < p.num_heads_q; ++h) items.push_back({b, h, qt});
  }

  std::vector<GroupCounts> counts(items.size());
  const RowSink sink{out, p.head_dim_v};
  pool().parallel_for(static_cast<std::int64_t>(items.size()), [&](std::int64_t i, int) {
    thread_local WalkScratch w;
    const Item it = items[i];
    const Seq& s = seqs[it.b];
    const int hkv = it.h / G;
    const std::int64_t r0 = std::int64_t{it.qt} * BQ;

    WalkParams wp = base_params(pol, scale, p.head_dim_qk, p.head_dim_v, out.dropped_mass != nullptr);
    wp.rows = static_cast<int>(std::min<std::int64_t>(BQ, s.sq - r0));
    std::int64_t max_limit = -1;
    for (int r = 0; r < wp.rows; ++r)
      max_limit = std::max(max_limit, row_key_limit(p.causal, r0 + r, s.sq, s.sk));
    wp.n_tiles = visible_tiles(max_limit, BK);
    wp.log_threshold = skip_log_threshold(s.lambda);
    const int group = it.h * s.q_tiles + it.qt;
    if (pol.replay_mask) wp.replay = pol.replay_mask + layout.index(it.b, group, 0);

    w.prepare(wp);
    for (int r = 0; r < wp.rows; ++r) {
      const std::int64_t tok = s.q0 + r0 + r;
      convert_row(at(p.q, tok * p.q_stride_token + it.h * p.q_stride_head, p.dtype), p.dtype,
                  w.q.data() + static_cast<std::ptrdiff_t>(r) * p.head_dim_qk, p.head_dim_qk);
      w.key_limit[r] = row_key_limit(p.causal, r0 + r, s.sq, s.sk);
    }
    PrefillLoader loader{p, s, hkv, BK};
    walk(wp, w, loader);

    for (int r = 0; r < wp.rows; ++r) {
      const std::int64_t tok = s.q0 + r0 + r;
      sink.write(w, r, tok * out.o_stride_token + it.h * out.o_stride_head,
                 tok * out.lse_stride_token + it.h * out.lse_stride_head);
    }
    counts[i] = record(w, wp.n_tiles, out.skip_mask ? out.skip_mask + layout.index(it.b, group, 0) : nullptr);
  });

  std::vector<std::int64_t> slot(items.size());
  for (std::size_t i = 0; i < items.size(); ++i)
    slot[i] = static_cast<std::int64_t>(items[i].b) * p.num_heads_q + items[i].h;
  fill_stats(out.stats, p.batch, p.num_heads_q, std::move(lambdas), counts, slot);
}

void decode(const DecodeProblem& p, const SkipPolicy& pol, const Outputs& out) {
  validate_shapes(p);
  check_cpu_policy(pol);
  validate_host_indices(p);
  check_outputs(out, true, p.batch, std::int64_t{p.batch} * p.q_tokens);

  const int G = p.num_heads_q / p.num_heads_kv, BK = pol.block_k, T = p.q_tokens;
  const float scale = effective_softmax_scale(p.softmax_scale, p.head_dim_qk);
  const bool need_layout = out.skip_mask != nullptr || pol.replay_mask != nullptr;
  const SkipMaskLayout layout = need_layout ? skip_mask_layout(p, BK) : SkipMaskLayout{};
  if (out.skip_mask) std::fill(out.skip_mask, out.skip_mask + layout.size(), tile_unvisited);

  std::vector<double> lambdas(p.batch);
  for (int b = 0; b < p.batch; ++b) lambdas[b] = sequence_lambda(pol, p.seq_lens[b]);
  const std::int64_t n_items = static_cast<std::int64_t>(p.batch) * p.num_heads_kv;
  std::vector<GroupCounts> counts(static_cast<std::size_t>(n_items));
  const RowSink sink{out, p.head_dim_v};

  pool().parallel_for(n_items, [&](std::int64_t i, int) {
    thread_local WalkScratch w;
    const int b = static_cast<int>(i / p.num_heads_kv), hkv = static_cast<int>(i % p.num_heads_kv);
    const std::int64_t sk = p.seq_lens[b];

    WalkParams wp = base_params(pol, scale, p.head_dim_qk, p.head_dim_v, out.dropped_mass != nullptr);
    wp.rows = T * G;
    wp.n_tiles = visible_tiles(row_key_limit(true, T - 1, T, sk), BK);
    wp.log_threshold = skip_log_threshold(lambdas[b]);
    if (pol.replay_mask) wp.replay = pol.replay_mask + layout.index(b, hkv, 0);

    w.prepare(wp);
    for (int t = 0; t < T; ++t)
      for (int g = 0; g < G; ++g) {
        const int r = t * G + g, h = hkv * G + g;
        convert_row(at(p.q, b * p.q_stride_batch + t * p.q_stride_token + h * p.q_stride_head, p.dtype),
                    p.dtype, w.q.data() + static_cast<std::ptrdiff_t>(r) * p.head_dim_qk, p.head_dim_qk);
        w.key_limit[r] = row_key_limit(true, t, T, sk);
      }
    PagedLoader loader{p, b, hkv, BK, sk};
    walk(wp, w, loader);

    for (int t = 0; t < T; ++t)
      for (int g = 0; g < G; ++g) {
        const int h = hkv * G + g;
        sink.write(w, t * G + g, b * out.o_stride_batch + t * out.o_stride_token + h * out.o_stride_head,
                   b * out.lse_stride_batch + t * out.lse_stride_token + h * out.lse_stride_head);
      }
    counts[i] = record(w, wp.n_tiles, out.skip_mask ? out.skip_mask + layout.index(b, hkv, 0) : nullptr);
  });

  std::vector<std::int64_t> slot(static_cast<std::size_t>(n_items));
  for (std::int64_t i = 0; i < n_items; ++i) slot[i] = i;
  fill_stats(out.stats, p.batch, p.num_heads_kv, std::move(lambdas), counts, slot);
}

}  // namespace blasst::cpu
