// Kernel parameters shared by the CUDA prefill kernels, and the skip-mask offset of a vote group.
#pragma once

#include <cstdint>

namespace blasst::cuda {

struct PrefillParams {
  const std::int32_t* cu_seqlens_q;  // device, batch + 1 (null: one sequence)
  const std::int32_t* cu_seqlens_k;
  std::int64_t total_q, total_k;
  int batch, hq, hkv, group;
  const void* q;
  std::int64_t q_st, q_sh;
  bool causal;
  float scale;
  int mode;
  double value;
  int order;  // VisitOrder
  const std::uint8_t* replay;
  void* o;
  std::int64_t o_st, o_sh;
  float* lse;
  std::int64_t lse_st, lse_sh;
  std::uint64_t* counters;  // [batch * hq][2]
  std::uint8_t* mask;       // SkipMaskLayout order
  // Paged K and V (the kernel's kPaged variant): key j of sequence b in page
  // block_table[b * max_pages_per_seq + j / page_size], slot j % page_size, loaded in boxes of
  // box_rows = gcd(page_size, BK) slots (which never leave a page) and rows of one slot at a
  // sequence's end.
  const std::int32_t* block_table;
  int max_pages_per_seq, page_size, box_rows;
};

// Offset of (sequence b, group, tile 0) in a SkipMaskLayout-ordered prefill mask.
__device__ __forceinline__ std::int64_t prefill_mask_base(const PrefillParams& p, int b, int group, int bq, int bk) {
  std::int64_t off = 0;
  auto len = [&](const std::int32_t* cu, std::int64_t total, int i) -> std::int64_t {
    return cu ? cu[i + 1] - cu[i] : total;
  };
  for (int i = 0; i < b; ++i)
    off += std::int64_t(p.hq) * ((len(p.cu_seqlens_q, p.total_q, i) + bq - 1) / bq) *
           ((len(p.cu_seqlens_k, p.total_k, i) + bk - 1) / bk);
  return off + std::int64_t(group) * ((len(p.cu_seqlens_k, p.total_k, b) + bk - 1) / bk);
}

}  // namespace blasst::cuda
