// Problem descriptors: what attention to compute, as raw pointers and element strides.
// The innermost (head-dim) stride is always 1. Host pointers for the CPU engine, device pointers
// for CUDA backends (cu_seqlens, block tables and lengths included).
#pragma once

#include <cstdint>

#include "blasst/types.hpp"

namespace blasst {

// Prefill: packed variable-length batch.
//   Q [total_q, Hq,  d_qk]   K [total_k, Hkv, d_qk]   V [total_k, Hkv, d_v]
// Sequence b owns query rows cu_seqlens_q[b] .. cu_seqlens_q[b+1] and key rows
// cu_seqlens_k[b] .. cu_seqlens_k[b+1]. With cu_seqlens_q == cu_seqlens_k == nullptr the batch is
// one sequence of total_q queries and total_k keys. Query head h reads KV head h / (Hq / Hkv).
// Causal masks are bottom-right aligned: query i sees key j iff j <= i + Sk - Sq.
struct PrefillProblem {
  int batch = 1;
  const std::int32_t* cu_seqlens_q = nullptr;  // batch + 1 entries, non-decreasing, [0] == 0
  const std::int32_t* cu_seqlens_k = nullptr;
  std::int64_t total_q = 0;
  std::int64_t total_k = 0;

  int num_heads_q = 0;
  int num_heads_kv = 0;
  int head_dim_qk = 0;
  int head_dim_v = 0;
  bool causal = false;
  float softmax_scale = 0.0f;  // 0 means 1 / sqrt(head_dim_qk)
  DType dtype = DType::f32;    // of Q, K and V

  const void* q = nullptr;
  std::int64_t q_stride_token = 0, q_stride_head = 0;
  const void* k = nullptr;
  std::int64_t k_stride_token = 0, k_stride_head = 0;
  const void* v = nullptr;
  std::int64_t v_stride_token = 0, v_stride_head = 0;

  // Optional: K and V in paged caches, as an engine's chunked prefill reads them (the new chunk's
  // keys already written to the cache). With block_table set, k and v point at caches
  // [num_pages, page_size, Hkv, d] or any layout the strides describe: k_stride_page between
  // pages, k_stride_token between slots, k_stride_head between heads (v likewise). Key position
  // j of sequence b lives in page block_table[b * max_pages_per_seq + j / page_size], slot
  // j % page_size. cu_seqlens_k (or total_k for one sequence) still gives each sequence's key
  // count, as differences; its offsets address nothing. The CPU engine and the CUDA prefill's
  // wgmma-pingpong kernel with its default key tiles run it. The CUDA backend does not read
  // total_k then, and trusts the device-side cu_seqlens_k and block table (as decode trusts
  // seq_lens and its table): only the CPU engine checks them.
  const std::int32_t* block_table = nullptr;
  int max_pages_per_seq = 0, page_size = 0, num_pages = 0;
  std::int64_t k_stride_page = 0, v_stride_page = 0;

  // Fills the strides of a contiguous [tokens, heads, dim] layout for each of Q, K and V (with a
  // block table: K and V as [num_pages, page_size, Hkv, d] caches; set page_size first).
  void set_contiguous_strides();
};

// Decode: a paged KV cache.
//   Q [batch, q_tokens, Hq, d_qk]
//   K cache [num_pages, page_size, Hkv, d_qk]   V cache [num_pages, page_size, Hkv, d_v]
//   block_table [batch, max_pages_per_seq] (int32 page ids), seq_lens [batch] (int32 KV lengths,
//   the q_tokens new tokens included). Key position p of sequence b lives in page
//   block_table[b][p / page_size], slot p % page_size.
// The q_tokens query tokens of a sequence are its last positions: token t sees keys
// j <= t + seq_len - q_tokens (causal among speculative tokens; one token sees the whole cache).
struct DecodeProblem {
  int batch = 0;
  int q_tokens = 1;
  int num_heads_q = 0;
  int num_heads_kv = 0;
  int head_dim_qk = 0;
  int head_dim_v = 0;
  float softmax_scale = 0.0f;  // 0 means 1 / sqrt(head_dim_qk)
  DType dtype = DType::f32;

  const void* q = nullptr;
  std::int64_t q_stride_batch = 0, q_stride_token = 0, q_stride_head = 0;

  int num_pages = 0;
  int page_size = 0;
  const void* k_cache = nullptr;
  std::int64_t k_stride_page = 0, k_stride_slot = 0, k_stride_head = 0;
  const void* v_cache = nullptr;
  std::int64_t v_stride_page = 0, v_stride_slot = 0, v_stride_head = 0;

  const std::int32_t* block_table = nullptr;
  int max_pages_per_seq = 0;  // row stride of block_table
  const std::int32_t* seq_lens = nullptr;

  void set_contiguous_strides();
};

// Resolved softmax scale (0 means 1/sqrt(d_qk)).
float effective_softmax_scale(float softmax_scale, int head_dim_qk);

// Throw blasst::Error with one clear line if the descriptor is inconsistent. The CPU variants also
// read the host-side index arrays (cu_seqlens, block table, lengths) and check their values.
void validate_shapes(const PrefillProblem& p);
void validate_shapes(const DecodeProblem& p);
void validate_host_indices(const PrefillProblem& p);
void validate_host_indices(const DecodeProblem& p);

}  // namespace blasst
