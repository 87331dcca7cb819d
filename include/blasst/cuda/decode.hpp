// CUDA split-KV paged decode with the BLASST skip (Hopper, sm_90a; runs on sm_80+ too).
// Plan once per batch shape on the host, run many times on a stream: run() allocates nothing,
// never synchronises and copies nothing to the host, so a decode step can be captured in a graph.
#pragma once

#include <cstddef>
#include <string>

#include <cuda_runtime.h>

#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"

namespace blasst::cuda {

struct DecodePlan {
  int batch = 0, num_heads_kv = 0, rows = 0;  // rows of a vote group: q_tokens * Hq / Hkv
  int max_seq_len = 0;                        // the longest sequence run() may see
  int splits = 1;                             // KV chunks per vote group
  int block_k = 128;
  int warps_m = 1;                            // 16-row warp slices per CTA
  int chunks = 1;                             // CTAs (a cluster) sharing one vote group's rows
  int chunk_rows = 0;                         // rows per CTA of the cluster
  int sm_count = 0;
  std::size_t workspace_bytes = 0;            // device scratch run() needs (0 if splits == 1)
  // The cache's loads carry an L2 evict-first policy: the cache streams through L2 once per step,
  // so it need not displace what is read again (Q, page tables, partials). On by default; a hint
  // only (same bits either way). PERF.md, session 13: with the cache rotated as a server sees it,
  // MQA 8/1 batch 8 32K 1.03x, batch 64 1.02x dense, 32/8 batch 8 1.01x.
  bool l2_evict_first = true;
  // Walks on small rings (one K and one V stage at head dim 128, one row warp; other rings
  // below), two or three CTAs per SM (ctas_per_sm), as cuDNN's decode kernel runs; the splits are
  // planned for that many CTAs per SM. At head dim 128 with one CTA of one row warp per vote group
  // (up to 16 rows), and at head dims 64 and 128 with two row warps (below); run() takes the ring
  // kernel elsewhere. A kept tile's P V runs as soon as its V lands (one V stage, no queue), and
  // the other CTAs on the SM stream meanwhile. The planner sets it for
  //  - a dense policy (no threshold, no replayed mask) where each chunk still holds 16 tiles or
  //    more, two CTAs per SM. PERF.md, session 14: 32/8 batch 8 32K 1.019x, batch 64 1.009x;
  //    session 16: 16-tile chunks (batch 8 and 64 at 8K) 1.003-1.017x;
  //  - a GQA policy that may skip, with max seeding, up to 8 rows per group, three CTAs per SM:
  //    under a wave of the ring kernel one wave of them, where chunks still hold 16 tiles or more
  //    (PERF.md, session 18: at 70 % 1.02-1.08x over the ring kernel, 32/8 and 64/8, batch 1-16,
  //    32K-128K; where those chunks would be shorter, two CTAs per SM take a group of up to 4 rows
  //    as in session 17, e.g. batch 8 at 8K); over a wave up to 8 chunks of 64 tiles or more, the
  //    count whose last wave is fullest, if at least 90 % full (1.018-1.031x at batch 32-256);
  //  - the same under a wave for one KV head (MQA) where the chunks hold 128 tiles or more
  //    (session 19: 8/1 batch 64 and 128 at 128K 1.021-1.025x).
  // With two CTAs per SM the same bits as the ring kernel at the same splits, for any policy
  // (tested); three sum S in another order (DecodeTraits::kSplitAcc), so bits and, at boundary
  // ties, decisions may differ from the ring kernel's (tested against the CPU engine).
  // Skip walks (max seeding) of groups of 17-32 rows at head dim 128 (two row warps, one CTA per
  // group) take two CTAs per SM of two K stages and one V stage where chunks hold 64 tiles or
  // more (session 20: 1.02-1.07x at 70 %; the same bits as the ring kernel).
  // At head dim 64 (one CTA of one or two row warps per group, up to 32 rows) the planner sets it
  // for every policy: rings of two K and two V stages at three CTAs per SM (two for two row warps),
  // where the ring kernel's six K stages hold one CTA per SM (PERF.md, session 20: 1.35-1.94x on
  // SmolLM2-135M's captured tensors; 1.12-1.37x for 32-row groups on generated ones).
  bool small_rings = false;
  // CTAs per SM the splits were planned for: on the small rings 2 or 3 (the kernel is chosen by
  // it; at head dim 64 3, or 2 for two row warps; 2 for two row warps at 128), on the ring kernel
  // what its shared memory allows (1 at head dims 128 and 256).
  int ctas_per_sm = 1;
};

// Why this problem/policy cannot run on the CUDA decode kernel, or "" if it can.
std::string decode_unsupported_reason(const DecodeProblem& p, const SkipPolicy& policy);

// Host-only. policy.splits > 0 forces the split count; 0 lets the planner choose from the batch,
// heads, max_seq_len, the policy (dense or not, max seeding) and the device's SM count and shared
// memory (docs/DECODE.md, "Plan once, run many"). Throws blasst::Error if unsupported.
DecodePlan plan_decode(const DecodeProblem& p, int max_seq_len, const SkipPolicy& policy, int device = -1);

// What plan_decode decides for a device of sm_count SMs with smem_per_sm bytes of shared memory per
// SM (plan_decode queries both): the same plan without a device, e.g. to plan ahead or to test the
// planner's rules. small_rings = false plans every walk for the ring kernel (DecodePlan::small_rings
// never set), e.g. to time one against the other. Host-only; throws blasst::Error as plan_decode does.
DecodePlan plan_decode_for(const DecodeProblem& p, int max_seq_len, const SkipPolicy& policy, int sm_count,
                           int smem_per_sm, bool small_rings = true);

// All pointers of p and out are device pointers (block_table and seq_lens included). out.o takes
// p.dtype; out.lse, out.tile_counters and out.skip_mask are optional. The mask is written in
// SkipMaskLayout order and must hold batch * Hkv * ceil(max_seq_len / block_k) bytes (it is
// cleared to that bound first). policy.replay_mask, if set, is a device mask in the same layout.
// Every sequence must be at most plan.max_seq_len long. workspace (plan.workspace_bytes, where
// that is not 0) must be 16-byte aligned, as cudaMalloc's and torch's allocations are. Errors are
// blasst::Error.
void decode(const DecodeProblem& p, const SkipPolicy& policy, const DecodePlan& plan, const Outputs& out,
            void* workspace, cudaStream_t stream);

#ifdef BLASST_DECODE_DEBUG_TIMELINE
// A timing experiment only (docs/DECODE.md; build with -DBLASST_DECODE_DEBUG_TIMELINE for CUDA and
// C++): the decode call after the next `after_calls` stamps each CTA of its split kernel (set-up,
// first K, walk, epilogue, SM), and print summarises them (after synchronising the stream).
void debug_decode_timeline_arm(std::size_t max_ctas, int after_calls);
void debug_decode_timeline_print(const char* label, cudaStream_t stream);
#endif

}  // namespace blasst::cuda
