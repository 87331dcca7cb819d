// The CPU engine: the exact reference of the BLASST contract (BLASST.md section 2), multi-threaded.
// Inputs may be float32, float16 or bfloat16; all arithmetic is float32. It is the oracle for every
// GPU test and the engine behind calibration on captured tensors.
#pragma once

#include "blasst/calibrate.hpp"
#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"

namespace blasst::cpu {

// Both validate the problem, the policy and the host index arrays first and throw blasst::Error.
void prefill(const PrefillProblem& problem, const SkipPolicy& policy, const Outputs& out);
void decode(const DecodeProblem& problem, const SkipPolicy& policy, const Outputs& out);

// Calibration sweeps: for every lambda (used as a threshold), the tiles each sequence would skip
// under the policy's geometry (block sizes, order, splits, max seeding; its mode and value are
// ignored). One Q K^T pass collects the tile maxima; the vote is then replayed per lambda, so the
// counts equal the engine's own for the same threshold.
CalibrationSweep sweep_prefill(const PrefillProblem& problem, const SkipPolicy& geometry,
                               const std::vector<double>& lambdas);
CalibrationSweep sweep_decode(const DecodeProblem& problem, const SkipPolicy& geometry,
                              const std::vector<double>& lambdas);

// Worker threads used by the engine: BLASST_NUM_THREADS if set, else the hardware concurrency.
int num_threads();
void set_num_threads(int n);  // n < 1 restores the default

}  // namespace blasst::cpu
