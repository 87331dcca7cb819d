// The one parameter struct of the CUDA decode kernels (device pointers, element strides).
#pragma once

#include <cstdint>

namespace blasst::cuda {

struct DecodeParams {
  const void* q;
  std::int64_t q_sb, q_st, q_sh;
  const void* k_cache;
  std::int64_t k_sp, k_ss, k_sh;
  const void* v_cache;
  std::int64_t v_sp, v_ss, v_sh;
  const std::int32_t* block_table;
  const std::int32_t* seq_lens;
  int max_pages_per_seq, page_size;
  int box_rows;  // slots per TMA box: gcd(page_size, block_k)
  int batch, q_tokens, hkv, group;  // group = Hq / Hkv
  int rows;                         // group * q_tokens
  // Vote groups larger than one CTA's rows are split over a cluster of `chunks` CTAs (consecutive
  // in grid x), `chunk_rows` rows each, that exchange their votes through shared memory.
  int chunks, chunk_rows;
  float scale;

  // Policy (SkipPolicy::Mode as int, see lambda_for) and geometry.
  int mode;
  double value;
  int splits;
  bool max_seed;
  const std::uint8_t* replay;  // SkipMaskLayout order, or null
  bool l2_evict_first;         // the cache's TMA loads carry an L2 evict-first policy (DecodePlan)

  // Outputs.
  void* o;
  std::int64_t o_sb, o_st, o_sh;
  float* lse;
  std::int64_t lse_sb, lse_st, lse_sh;
  std::uint64_t* counters;  // [batch * hkv][2] or null
  std::uint8_t* mask;       // SkipMaskLayout order, or null

  // Split-KV workspace: normalised partial outputs and their LSE, [batch][hkv][split][rows](x dv).
  float* part_o;
  float* part_lse;

#ifdef BLASST_DECODE_DEBUG_TIMELINE
  // A timing experiment only (docs/DECODE.md): per CTA of the split kernel, kTimelineSlots stamps
  // (decode_splitkv_sm90.cuh, BLASST_TL), printed by debug_decode_timeline_print.
  std::uint64_t* timeline;
#endif
};

#ifdef BLASST_DECODE_DEBUG_TIMELINE
inline constexpr int kTimelineSlots = 16;
#endif

}  // namespace blasst::cuda
