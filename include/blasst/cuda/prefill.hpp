// CUDA prefill with the BLASST skip (Hopper, sm_90a): first version, FA2-style tensor-core tiles
// fed by TMA (include/blasst/cuda/prefill/prefill_mma_sm90.cuh). Vote groups are 64 query rows of
// one head, key tiles 128. Plan on the host, run on a stream without allocation or synchronisation.
#pragma once

#include <string>

#include <cuda_runtime.h>

#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"

namespace blasst::cuda {

struct PrefillPlan {
  int batch = 0, num_heads_q = 0;
  int max_q_tiles = 0;  // ceil(max_seqlen_q / 64)
};

// Why this problem/policy cannot run on the CUDA prefill kernel, or "" if it can.
std::string prefill_unsupported_reason(const PrefillProblem& p, const SkipPolicy& policy);

// Host-only. max_seqlen_q bounds every sequence's query count (cu_seqlens live on the device).
PrefillPlan plan_prefill(const PrefillProblem& p, int max_seqlen_q, const SkipPolicy& policy);

// Device pointers throughout (cu_seqlens included). out.o takes p.dtype; out.lse,
// out.tile_counters ([batch * Hq][2]) and out.skip_mask (SkipMaskLayout order; the caller sizes and
// clears it) are optional; policy.replay_mask is a device mask in the same layout.
void prefill(const PrefillProblem& p, const SkipPolicy& policy, const PrefillPlan& plan, const Outputs& out,
             cudaStream_t stream);

}  // namespace blasst::cuda
