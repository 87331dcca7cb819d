// CUDA prefill with the BLASST skip (Hopper, sm_90a). The default kernel is FlashAttention-3 class
// (include/blasst/cuda/prefill/prefill_wgmma_sm90.cuh: TMA, wgmma, a producer warpgroup and two
// consumer warpgroups taking turns); the first, FA2-style kernel (mma.sync,
// prefill_mma_sm90.cuh; head dims 64 and 128) stays selectable for comparison. Vote groups are
// 64 query rows of one head; key tiles by default blasst::prefill_block_k(head dim) keys: 192 at
// head dim 128, 80 at 256, 128 at 64. The wgmma kernels also take 128 and 176 at head dim 128 and
// 64 at 256 when the policy's block_k asks for them; the mma_sync kernel takes 128 only. Plan on
// the host, run on a stream without allocation or synchronisation.
#pragma once

#include <string>

#include <cuda_runtime.h>

#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"

namespace blasst::cuda {

enum class PrefillKernel {
  wgmma_pingpong,  // default: wgmma, two consumer warpgroups taking turns on the tensor cores
  wgmma,           // wgmma without the turn-taking (for measurement)
  mma_sync,        // the FA2-style mma.sync kernel (for measurement)
};
const char* to_string(PrefillKernel k);

struct PrefillPlan {
  int batch = 0, num_heads_q = 0, head_dim = 0;
  int max_q_tiles = 0;  // query tiles of the longest sequence (128 rows for wgmma, 64 for mma_sync)
  int block_k = 0;      // the key tile: the policy's block_k
  PrefillKernel kernel = PrefillKernel::wgmma_pingpong;
};

// Why this problem/policy cannot run on the CUDA prefill kernel, or "" if it can.
std::string prefill_unsupported_reason(const PrefillProblem& p, const SkipPolicy& policy,
                                       PrefillKernel kernel = PrefillKernel::wgmma_pingpong);

// Host-only. max_seqlen_q bounds every sequence's query count (cu_seqlens live on the device).
PrefillPlan plan_prefill(const PrefillProblem& p, int max_seqlen_q, const SkipPolicy& policy,
                         PrefillKernel kernel = PrefillKernel::wgmma_pingpong);

// Device pointers throughout (cu_seqlens included). out.o takes p.dtype; out.lse,
// out.tile_counters ([batch * Hq][2]) and out.skip_mask (SkipMaskLayout order; the caller sizes and
// clears it) are optional; policy.replay_mask is a device mask in the same layout.
void prefill(const PrefillProblem& p, const SkipPolicy& policy, const PrefillPlan& plan, const Outputs& out,
             cudaStream_t stream);

}  // namespace blasst::cuda
