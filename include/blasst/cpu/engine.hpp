// The CPU engine: the exact reference of the BLASST contract (BLASST.md section 2), multi-threaded.
// Inputs may be float32, float16 or bfloat16; all arithmetic is float32. It is the oracle for every
// GPU test and the engine behind calibration on captured tensors.
#pragma once

#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"

namespace blasst::cpu {

// Both validate the problem, the policy and the host index arrays first and throw blasst::Error.
void prefill(const PrefillProblem& problem, const SkipPolicy& policy, const Outputs& out);
void decode(const DecodeProblem& problem, const SkipPolicy& policy, const Outputs& out);

// Worker threads used by the engine: BLASST_NUM_THREADS if set, else the hardware concurrency.
int num_threads();
void set_num_threads(int n);  // n < 1 restores the default

}  // namespace blasst::cpu
