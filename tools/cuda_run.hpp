// The command line's GPU path: `blasst attention|decode --device cuda` run the CUDA kernels on host
// inputs (uploaded, run on the default stream, synchronised, read back). Host in, host out: the
// problems' pointers are host pointers (16-bit inputs), the outputs the CLI's float32 buffers.
#pragma once

#include <cstdint>
#include <string>

#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"

namespace blasst::cli {

// What one GPU run reports back beside its outputs.
struct CudaRunInfo {
  int splits = 1;           // decode: the split count the planner chose (or --splits)
  std::string device_name;  // e.g. "NVIDIA H200"
};

// Prefill on the GPU. out.o is float32 host memory [total_q, Hq, d_v]; out.lse, out.skip_mask
// (mask_bytes, SkipMaskLayout order) and out.stats are optional host outputs. out.dropped_mass
// must be null (the CPU engine's extra pass). Throws blasst::Error with the reason if the kernel
// cannot take the problem, or if no CUDA device (or no CUDA build) is there.
CudaRunInfo run_prefill_cuda(const PrefillProblem& host_problem, const SkipPolicy& policy, const Outputs& out,
                             std::int64_t mask_bytes);

// Decode on the GPU, likewise. policy.splits = 0 lets the planner choose.
CudaRunInfo run_decode_cuda(const DecodeProblem& host_problem, const SkipPolicy& policy, const Outputs& out,
                            std::int64_t mask_bytes);

}  // namespace blasst::cli
