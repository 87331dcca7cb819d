// The skip policy: how lambda is chosen and the geometry the vote runs on (BLASST.md 2.3-2.7).
#pragma once

#include <cstdint>

#include "blasst/types.hpp"

namespace blasst {

// The prefill key tile (block_k) the CUDA kernel votes over by default at this head dim: 80 at head
// dim 256 (FA3's tile there; a 64 x 256 O must fit a warpgroup's registers beside S; 7-14 % faster
// dense than 64, which the CUDA kernels also take), 192 at 128 (the widest whose two K and two V
// stages fit beside Q; 1-2 % faster than 176, which was 3-5 % faster than 128; the kernels take
// both on request; docs/PREFILL.md), 128 otherwise. Defaults that follow it let the CPU engine and the GPU make the
// same decisions.
constexpr int prefill_block_k(int head_dim) { return head_dim == 256 ? 80 : head_dim == 128 ? 192 : 128; }

struct SkipPolicy {
  // How lambda is chosen. dense: never skip. scale_factor: lambda_b = a / Sk_b per sequence.
  // threshold: one lambda for every sequence. a <= 0, lambda <= 0 or lambda >= 1 mean dense.
  enum class Mode : std::uint8_t { dense, scale_factor, threshold };
  Mode mode = Mode::dense;
  double value = 0.0;  // the scale factor a, or the threshold lambda

  // Vote geometry. Prefill: a vote group is block_q consecutive query rows of one query head.
  // Decode: all query heads sharing a KV head times all query tokens of the sequence (block_q is
  // not used). Keys are cut into tiles of block_k positions from position 0.
  int block_q = 64;
  int block_k = 128;
  VisitOrder order = VisitOrder::reverse;

  // Split-KV: the n visible tiles of a group are cut into `splits` contiguous chunks of
  // ceil(n / splits) tiles, each visited forward with its own running state and merged by LSE.
  // splits > 1 requires order == forward. 0 lets a GPU planner choose (the CPU engine needs a
  // count: pass the plan's).
  int splits = 1;

  // Max seeding (BLASST.md 6): every split after the first starts its running max from the row
  // maxima of tile 0, which split 0 always keeps; its first tile may then be skipped too.
  bool max_seed = false;

  // Replay: take each visited tile's decision from this mask (layout of SkipMaskLayout, values of
  // TileState) instead of the test. Used to check a GPU kernel's output against the CPU engine.
  const std::uint8_t* replay_mask = nullptr;

  static SkipPolicy dense_policy() { return SkipPolicy{}; }
  static SkipPolicy with_scale_factor(double a) {
    SkipPolicy p;
    p.mode = Mode::scale_factor;
    p.value = a;
    return p;
  }
  static SkipPolicy with_threshold(double lambda) {
    SkipPolicy p;
    p.mode = Mode::threshold;
    p.value = lambda;
    return p;
  }
};

// Throws blasst::Error if the policy is malformed (non-finite or negative value, block sizes < 1,
// splits < 0, splits > 1 with a non-forward order, max_seed with a non-forward order).
void validate(const SkipPolicy& p);

// lambda for a sequence with kv_len keys; 0 means dense (no tile may be skipped).
double sequence_lambda(const SkipPolicy& p, std::int64_t kv_len);

}  // namespace blasst
