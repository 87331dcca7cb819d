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

// Keys first .. first + nk - 1 of one sequence and KV head from a paged cache (key j in page
// table[j / page_size], slot j % page_size; sp, ss, sh: page, slot and head strides), converted
// into scratch rows `ld` apart. Prefill over a paged cache and decode both read through it.
const float* gather_paged(const void* cache, DType dt, const std::int32_t* table, int page_size, std::int64_t sp,
                          std::int64_t ss, std::int64_t sh, int hkv, std::int64_t first, int nk, int dim,
                          float* scratch, std::int64_t ld) {
  for (int j = 0; j < nk; ++j) {
    const std::int64_t pos = first + j;
    convert_row(at(cache, table[pos / page_size] * sp + (pos % page_size) * ss + hkv * sh, dt), dt, scratch + j * ld,
                dim);
  }
  return scratch;
}

// Key tiles of one prefill sequence and KV head. float32 rows are used in place (values too when
// their padded width stays inside the row); other types, and rows of a paged cache, are converted
// into the scratch.
struct PrefillLoader {
  const PrefillProblem& p;
  const Seq& s;
  int b, hkv, bk;
  int keys(int t) const { return static_cast<int>(std::min<std::int64_t>(bk, s.sk - std::int64_t{t} * bk)); }
  const float* rows(const void* base, std::int64_t stride_token, std::int64_t stride_head, std::int64_t stride_page,
                    int dim, int width, int t, float* scratch, std::int64_t& ld) const {
    if (p.block_table) {
      ld = width;
      return gather_paged(base, p.dtype, p.block_table + static_cast<std::int64_t>(b) * p.max_pages_per_seq,
                          p.page_size, stride_page, stride_token, stride_head, hkv, std::int64_t{t} * bk, keys(t), dim,
                          scratch, ld);
    }
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
    return rows(p.k, p.k_stride_token, p.k_stride_head, p.k_stride_page, p.head_dim_qk, p.head_dim_qk, t, scratch, ld);
  }
  const float* v_rows(int t, float* scratch, std::int64_t& ld) const {
    return rows(p.v, p.v_stride_token, p.v_stride_head, p.v_stride_page, p.head_dim_v, round_up(p.head_dim_v, kPad), t,
                scratch, ld);
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
    return gather_paged(cache, p.dtype, p.block_table + static_cast<std::int64_t>(b) * p.max_pages_per_seq,
                        p.page_size, sp, ss, sh, hkv, std::int64_t{t} * bk, keys(t), dim, scratch, ld);
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

// Prefill vote groups (sequence, query head, query tile), later query tiles first: under a
// causal mask they see more keys.
struct PrefillGroups {
  struct Item {
    int b, h, qt;
  };
  std::vector<Seq> seqs;
  std::vector<Item> items;
  PrefillGroups(const PrefillProblem& p, const SkipPolicy& pol) : seqs(p.batch) {
    const int BQ = pol.block_q;
    for (int b = 0; b < p.batch; ++b) {
      Seq& s = seqs[b];
      s.q0 = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
      s.k0 = p.cu_seqlens_k ? p.cu_seqlens_k[b] : 0;
      s.sq = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - s.q0 : p.total_q;
      s.sk = p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - s.k0 : p.total_k;
      s.q_tiles = static_cast<int>((s.sq + BQ - 1) / BQ);
      s.lambda = sequence_lambda(pol, s.sk);
      for (int qt = s.q_tiles - 1; qt >= 0; --qt)
        for (int h = 0; h < p.num_heads_q; ++h) items.push_back({b, h, qt});
    }
  }

  // fn(i, item, wp, w, loader) for every group on the pool, with the group's query rows and key
  // limits in w and wp's geometry and threshold (from the policy) set.
  template <class Fn>
  void run(const PrefillProblem& p, const SkipPolicy& pol, bool want_dropped, Fn&& fn) const {
    const int G = p.num_heads_q / p.num_heads_kv, BQ = pol.block_q, BK = pol.block_k;
    const float scale = effective_softmax_scale(p.softmax_scale, p.head_dim_qk);
    pool().parallel_for(static_cast<std::int64_t>(items.size()), [&](std::int64_t i, int) {
      thread_local WalkScratch w;
      const Item it = items[i];
      const Seq& s = seqs[it.b];
      const std::int64_t r0 = std::int64_t{it.qt} * BQ;
      WalkParams wp = base_params(pol, scale, p.head_dim_qk, p.head_dim_v, want_dropped);
      wp.rows = static_cast<int>(std::min<std::int64_t>(BQ, s.sq - r0));
      std::int64_t max_limit = -1;
      for (int r = 0; r < wp.rows; ++r) max_limit = std::max(max_limit, row_key_limit(p.causal, r0 + r, s.sq, s.sk));
      wp.n_tiles = visible_tiles(max_limit, BK);
      wp.log_threshold = skip_log_threshold(s.lambda);
      w.prepare(wp);
      for (int r = 0; r < wp.rows; ++r) {
        const std::int64_t tok = s.q0 + r0 + r;
        convert_row(at(p.q, tok * p.q_stride_token + it.h * p.q_stride_head, p.dtype), p.dtype,
                    w.q.data() + static_cast<std::ptrdiff_t>(r) * p.head_dim_qk, p.head_dim_qk);
        w.key_limit[r] = row_key_limit(p.causal, r0 + r, s.sq, s.sk);
      }
      PrefillLoader loader{p, s, it.b, it.h / G, BK};
      fn(i, it, wp, w, loader);
    });
  }
};

// Decode vote groups (sequence, KV head): fn(i, b, hkv, wp, w, loader), rows token-major.
template <class Fn>
void run_decode_groups(const DecodeProblem& p, const SkipPolicy& pol, bool want_dropped, Fn&& fn) {
  const int G = p.num_heads_q / p.num_heads_kv, BK = pol.block_k, T = p.q_tokens;
  const float scale = effective_softmax_scale(p.softmax_scale, p.head_dim_qk);
  pool().parallel_for(static_cast<std::int64_t>(p.batch) * p.num_heads_kv, [&](std::int64_t i, int) {
    thread_local WalkScratch w;
    const int b = static_cast<int>(i / p.num_heads_kv), hkv = static_cast<int>(i % p.num_heads_kv);
    const std::int64_t sk = p.seq_lens[b];
    WalkParams wp = base_params(pol, scale, p.head_dim_qk, p.head_dim_v, want_dropped);
    wp.rows = T * G;
    wp.n_tiles = visible_tiles(row_key_limit(true, T - 1, T, sk), BK);
    wp.log_threshold = skip_log_threshold(sequence_lambda(pol, sk));
    w.prepare(wp);
    for (int t = 0; t < T; ++t)
      for (int g = 0; g < G; ++g) {
        const int r = t * G + g, h = hkv * G + g;
        convert_row(at(p.q, b * p.q_stride_batch + t * p.q_stride_token + h * p.q_stride_head, p.dtype), p.dtype,
                    w.q.data() + static_cast<std::ptrdiff_t>(r) * p.head_dim_qk, p.head_dim_qk);
        w.key_limit[r] = row_key_limit(true, t, T, sk);
      }
    PagedLoader loader{p, b, hkv, BK, sk};
    fn(i, b, hkv, wp, w, loader);
  });
}

// Skipped tiles of one group for each lambda, replaying the vote over its tile maxima.
template <class Loader>
std::vector<std::int64_t> sweep_group(WalkParams wp, WalkScratch& w, Loader& loader,
                                      const std::vector<double>& lambdas) {
  std::vector<float> maxima(static_cast<std::size_t>(wp.n_tiles) * w.rp);
  collect_tile_maxima(wp, w, loader, maxima.data());
  wp.tile_maxima = maxima.data();
  std::vector<std::int64_t> skipped(lambdas.size(), 0);
  for (std::size_t l = 0; l < lambdas.size(); ++l) {
    wp.log_threshold = skip_log_threshold(lambdas[l]);
    walk(wp, w, loader);
    for (int t = 0; t < wp.n_tiles; ++t) skipped[l] += w.state[t] == tile_skipped;
  }
  return skipped;
}

CalibrationSweep finish_sweep(std::vector<double> lambdas, std::vector<std::int64_t> kv_len,
                              const std::vector<int>& item_seq, const std::vector<int>& item_tiles,
                              const std::vector<std::vector<std::int64_t>>& item_skipped) {
  CalibrationSweep c;
  c.lambdas = std::move(lambdas);
  c.kv_len = std::move(kv_len);
  const std::size_t nl = c.lambdas.size();
  c.visited.assign(c.kv_len.size(), 0);
  c.skipped.assign(c.kv_len.size() * nl, 0);
  for (std::size_t i = 0; i < item_seq.size(); ++i) {
    c.visited[item_seq[i]] += item_tiles[i];
    for (std::size_t l = 0; l < nl; ++l) c.skipped[item_seq[i] * nl + l] += item_skipped[i][l];
  }
  return c;
}

}  // namespace

void prefill(const PrefillProblem& p, const SkipPolicy& pol, const Outputs& out) {
  validate_shapes(p);
  check_cpu_policy(pol);
  validate_host_indices(p);
  check_outputs(out, false, p.batch, p.total_q);

  const bool need_layout = out.skip_mask != nullptr || pol.replay_mask != nullptr;
  const SkipMaskLayout layout = need_layout ? skip_mask_layout(p, pol.block_q, pol.block_k) : SkipMaskLayout{};
  if (out.skip_mask) std::fill(out.skip_mask, out.skip_mask + layout.size(), tile_unvisited);

  const PrefillGroups groups(p, pol);
  std::vector<GroupCounts> counts(groups.items.size());
  const RowSink sink{out, p.head_dim_v};
  groups.run(p, pol, out.dropped_mass != nullptr, [&](std::int64_t i, const PrefillGroups::Item& it, WalkParams& wp,
                                                       WalkScratch& w, PrefillLoader& loader) {
    const Seq& s = groups.seqs[it.b];
    const int group = it.h * s.q_tiles + it.qt;
    if (pol.replay_mask) wp.replay = pol.replay_mask + layout.index(it.b, group, 0);
    walk(wp, w, loader);
    const std::int64_t r0 = std::int64_t{it.qt} * pol.block_q;
    for (int r = 0; r < wp.rows; ++r) {
      const std::int64_t tok = s.q0 + r0 + r;
      sink.write(w, r, tok * out.o_stride_token + it.h * out.o_stride_head,
                 tok * out.lse_stride_token + it.h * out.lse_stride_head);
    }
    counts[i] = record(w, wp.n_tiles, out.skip_mask ? out.skip_mask + layout.index(it.b, group, 0) : nullptr);
  });

  std::vector<double> lambdas(p.batch);
  for (int b = 0; b < p.batch; ++b) lambdas[b] = groups.seqs[b].lambda;
  std::vector<std::int64_t> slot(groups.items.size());
  for (std::size_t i = 0; i < groups.items.size(); ++i)
    slot[i] = static_cast<std::int64_t>(groups.items[i].b) * p.num_heads_q + groups.items[i].h;
  fill_stats(out.stats, p.batch, p.num_heads_q, std::move(lambdas), counts, slot);
}

void decode(const DecodeProblem& p, const SkipPolicy& pol, const Outputs& out) {
  validate_shapes(p);
  check_cpu_policy(pol);
  validate_host_indices(p);
  check_outputs(out, true, p.batch, std::int64_t{p.batch} * p.q_tokens);

  const int G = p.num_heads_q / p.num_heads_kv, T = p.q_tokens;
  const bool need_layout = out.skip_mask != nullptr || pol.replay_mask != nullptr;
  const SkipMaskLayout layout = need_layout ? skip_mask_layout(p, pol.block_k) : SkipMaskLayout{};
  if (out.skip_mask) std::fill(out.skip_mask, out.skip_mask + layout.size(), tile_unvisited);

  const std::int64_t n_items = static_cast<std::int64_t>(p.batch) * p.num_heads_kv;
  std::vector<GroupCounts> counts(static_cast<std::size_t>(n_items));
  const RowSink sink{out, p.head_dim_v};
  run_decode_groups(p, pol, out.dropped_mass != nullptr, [&](std::int64_t i, int b, int hkv, WalkParams& wp,
                                                             WalkScratch& w, PagedLoader& loader) {
    if (pol.replay_mask) wp.replay = pol.replay_mask + layout.index(b, hkv, 0);
    walk(wp, w, loader);
    for (int t = 0; t < T; ++t)
      for (int g = 0; g < G; ++g) {
        const int h = hkv * G + g;
        sink.write(w, t * G + g, b * out.o_stride_batch + t * out.o_stride_token + h * out.o_stride_head,
                   b * out.lse_stride_batch + t * out.lse_stride_token + h * out.lse_stride_head);
      }
    counts[i] = record(w, wp.n_tiles, out.skip_mask ? out.skip_mask + layout.index(b, hkv, 0) : nullptr);
  });

  std::vector<double> lambdas(p.batch);
  for (int b = 0; b < p.batch; ++b) lambdas[b] = sequence_lambda(pol, p.seq_lens[b]);
  std::vector<std::int64_t> slot(static_cast<std::size_t>(n_items));
  for (std::int64_t i = 0; i < n_items; ++i) slot[i] = i;
  fill_stats(out.stats, p.batch, p.num_heads_kv, std::move(lambdas), counts, slot);
}

CalibrationSweep sweep_prefill(const PrefillProblem& p, const SkipPolicy& geometry, const std::vector<double>& lambdas) {
  validate_shapes(p);
  check_cpu_policy(geometry);
  validate_host_indices(p);
  const PrefillGroups groups(p, geometry);
  std::vector<int> seq(groups.items.size()), tiles(groups.items.size());
  std::vector<std::vector<std::int64_t>> skipped(groups.items.size());
  groups.run(p, geometry, false, [&](std::int64_t i, const PrefillGroups::Item& it, WalkParams& wp, WalkScratch& w,
                                     PrefillLoader& loader) {
    seq[i] = it.b, tiles[i] = wp.n_tiles;
    skipped[i] = sweep_group(wp, w, loader, lambdas);
  });
  std::vector<std::int64_t> kv_len(p.batch);
  for (int b = 0; b < p.batch; ++b) kv_len[b] = groups.seqs[b].sk;
  return finish_sweep(lambdas, std::move(kv_len), seq, tiles, skipped);
}

CalibrationSweep sweep_decode(const DecodeProblem& p, const SkipPolicy& geometry, const std::vector<double>& lambdas) {
  validate_shapes(p);
  check_cpu_policy(geometry);
  validate_host_indices(p);
  const std::size_t n = static_cast<std::size_t>(p.batch) * p.num_heads_kv;
  std::vector<int> seq(n), tiles(n);
  std::vector<std::vector<std::int64_t>> skipped(n);
  run_decode_groups(p, geometry, false, [&](std::int64_t i, int b, int, WalkParams& wp, WalkScratch& w,
                                            PagedLoader& loader) {
    seq[i] = b, tiles[i] = wp.n_tiles;
    skipped[i] = sweep_group(wp, w, loader, lambdas);
  });
  std::vector<std::int64_t> kv_len(p.seq_lens, p.seq_lens + p.batch);
  return finish_sweep(lambdas, std::move(kv_len), seq, tiles, skipped);
}

}  // namespace blasst::cpu
