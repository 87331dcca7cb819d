#include "blasst/problem.hpp"

#include <cmath>
#include <string>

namespace blasst {
namespace {

std::string str(std::int64_t v) { return std::to_string(v); }

void check_heads(int hq, int hkv, int dqk, int dv) {
  if (hq < 1) throw Error("num_heads_q must be >= 1, got " + str(hq));
  if (hkv < 1) throw Error("num_heads_kv must be >= 1, got " + str(hkv));
  if (hq % hkv != 0)
    throw Error("num_heads_q (" + str(hq) + ") must be a multiple of num_heads_kv (" + str(hkv) + ")");
  if (dqk < 1) throw Error("head_dim_qk must be >= 1, got " + str(dqk));
  if (dv < 1) throw Error("head_dim_v must be >= 1, got " + str(dv));
}

void check_scale(float s) {
  if (!std::isfinite(s) || s < 0) throw Error("softmax_scale must be finite and > 0 (0 = default)");
}

}  // namespace

float effective_softmax_scale(float softmax_scale, int head_dim_qk) {
  return softmax_scale > 0 ? softmax_scale : 1.0f / std::sqrt(static_cast<float>(head_dim_qk));
}

void PrefillProblem::set_contiguous_strides() {
  q_stride_head = head_dim_qk;
  q_stride_token = static_cast<std::int64_t>(num_heads_q) * head_dim_qk;
  k_stride_head = head_dim_qk;
  k_stride_token = static_cast<std::int64_t>(num_heads_kv) * head_dim_qk;
  v_stride_head = head_dim_v;
  v_stride_token = static_cast<std::int64_t>(num_heads_kv) * head_dim_v;
  k_stride_page = k_stride_token * page_size;
  v_stride_page = v_stride_token * page_size;
}

void DecodeProblem::set_contiguous_strides() {
  q_stride_head = head_dim_qk;
  q_stride_token = static_cast<std::int64_t>(num_heads_q) * head_dim_qk;
  q_stride_batch = q_stride_token * q_tokens;
  k_stride_head = head_dim_qk;
  k_stride_slot = static_cast<std::int64_t>(num_heads_kv) * head_dim_qk;
  k_stride_page = k_stride_slot * page_size;
  v_stride_head = head_dim_v;
  v_stride_slot = static_cast<std::int64_t>(num_heads_kv) * head_dim_v;
  v_stride_page = v_stride_slot * page_size;
}

void validate_shapes(const PrefillProblem& p) {
  check_heads(p.num_heads_q, p.num_heads_kv, p.head_dim_qk, p.head_dim_v);
  check_scale(p.softmax_scale);
  if (p.batch < 1) throw Error("batch must be >= 1, got " + str(p.batch));
  if (p.total_q < 0 || p.total_k < 0) throw Error("total_q and total_k must be >= 0");
  if ((p.cu_seqlens_q == nullptr) != (p.cu_seqlens_k == nullptr))
    throw Error("cu_seqlens_q and cu_seqlens_k must be given together");
  if (p.cu_seqlens_q == nullptr && p.batch != 1)
    throw Error("a batch of " + str(p.batch) + " sequences needs cu_seqlens_q and cu_seqlens_k");
  if ((p.total_q > 0 && p.q == nullptr) || (p.total_k > 0 && (p.k == nullptr || p.v == nullptr)))
    throw Error("q, k and v must not be null");
  if (p.block_table) {
    if (p.page_size < 1) throw Error("page_size must be >= 1 with a block table, got " + str(p.page_size));
    if (p.num_pages < 0) throw Error("num_pages must be >= 0, got " + str(p.num_pages));
    if (p.max_pages_per_seq < 0) throw Error("max_pages_per_seq must be >= 0");
    if (p.num_pages > 1 && (p.k_stride_page == 0 || p.v_stride_page == 0))
      throw Error("k_stride_page and v_stride_page must be set for a paged cache (set_contiguous_strides() "
                  "derives them from page_size: call it after setting page_size)");
  } else if (p.max_pages_per_seq > 0 || p.page_size > 0 || p.num_pages > 0) {
    throw Error("page_size, num_pages and max_pages_per_seq describe a paged cache: block_table must be set");
  }
}

void validate_shapes(const DecodeProblem& p) {
  check_heads(p.num_heads_q, p.num_heads_kv, p.head_dim_qk, p.head_dim_v);
  check_scale(p.softmax_scale);
  if (p.batch < 0) throw Error("batch must be >= 0, got " + str(p.batch));
  if (p.q_tokens < 1) throw Error("q_tokens must be >= 1, got " + str(p.q_tokens));
  if (p.page_size < 1) throw Error("page_size must be >= 1, got " + str(p.page_size));
  if (p.num_pages < 0) throw Error("num_pages must be >= 0, got " + str(p.num_pages));
  if (p.max_pages_per_seq < 0) throw Error("max_pages_per_seq must be >= 0");
  if (p.batch > 0 && (p.q == nullptr || p.seq_lens == nullptr ||
                      (p.max_pages_per_seq > 0 && p.block_table == nullptr)))
    throw Error("q, block_table and seq_lens must not be null");
}

namespace {
// Packed offsets: non-decreasing from 0 to the row counts.
void validate_cu_seqlens(const PrefillProblem& p) {
  const char* names[2] = {"cu_seqlens_q", "cu_seqlens_k"};
  const std::int32_t* cu[2] = {p.cu_seqlens_q, p.cu_seqlens_k};
  const std::int64_t total[2] = {p.total_q, p.total_k};
  for (int w = 0; w < 2; ++w) {
    if (cu[w][0] != 0) throw Error(std::string(names[w]) + "[0] must be 0, got " + str(cu[w][0]));
    for (int b = 0; b < p.batch; ++b)
      if (cu[w][b + 1] < cu[w][b])
        throw Error(std::string(names[w]) + " must be non-decreasing (entry " + str(b + 1) + " is " +
                    str(cu[w][b + 1]) + " after " + str(cu[w][b]) + ")");
    if (cu[w][p.batch] != total[w])
      throw Error(std::string(names[w]) + " ends at " + str(cu[w][p.batch]) + " but there are " +
                  str(total[w]) + (w == 0 ? " query" : " key") + " rows");
  }
}

// The block table row of sequence b: len keys fit its pages, each one of the cache's. `what` names
// the length in the error ("seq_lens[3] = 5000").
void check_pages(const std::int32_t* table, int max_pages, int page_size, int num_pages, int b, std::int64_t len,
                 const std::string& what) {
  if (len > static_cast<std::int64_t>(max_pages) * page_size)
    throw Error(what + " exceeds the block table's " + str(max_pages) + " pages of " + str(page_size) + " slots");
  const std::int64_t pages = (len + page_size - 1) / page_size;
  for (std::int64_t i = 0; i < pages; ++i) {
    const std::int32_t page = table[b * static_cast<std::int64_t>(max_pages) + i];
    if (page < 0 || page >= num_pages)
      throw Error("block_table[" + str(b) + "][" + str(i) + "] = " + str(page) + " is outside the cache's " +
                  str(num_pages) + " pages");
  }
}
}  // namespace

void validate_host_indices(const PrefillProblem& p) {
  if (p.cu_seqlens_q != nullptr) validate_cu_seqlens(p);
  if (p.block_table == nullptr) return;
  for (int b = 0; b < p.batch; ++b) {
    const std::int64_t len = p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b] : p.total_k;
    check_pages(p.block_table, p.max_pages_per_seq, p.page_size, p.num_pages, b, len,
                "sequence " + str(b) + "'s key count " + str(len));
  }
}

void validate_host_indices(const DecodeProblem& p) {
  for (int b = 0; b < p.batch; ++b) {
    const std::int64_t len = p.seq_lens[b];
    if (len < 0) throw Error("seq_lens[" + str(b) + "] is negative (" + str(len) + ")");
    check_pages(p.block_table, p.max_pages_per_seq, p.page_size, p.num_pages, b, len,
                "seq_lens[" + str(b) + "] = " + str(len));
  }
}

}  // namespace blasst
