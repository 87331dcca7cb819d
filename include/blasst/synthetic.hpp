// A documented generator of attention inputs with realistic structure, for benchmarks and tests
// when no captured model tensors are at hand. Each part lives in its own block of dimensions, so
// the logits s = <q, k> / sqrt(d) are exactly the sum of
//   locality: a RoPE-like positional part in dims [0, d/2): sum over d/4 frequencies (log-spaced
//             from 1/4 to 1/1024 per token) of cos((i - j) f), scaled to `local` at i == j;
//   sinks:    dim d/2: the first `sinks` keys and every query, adding `sink` to those keys' logits;
//   needles:  one dim each after it: `needles` random key positions per KV head, and a fraction
//             `needle_queries` of queries (at random) pointing at one of them, adding `needle`;
//   noise:    Gaussian q and k in the remaining dims, logits about N(0, noise^2).
// V is Gaussian. Query position i of a prefill with Sq queries and Sk keys is i + Sk - Sq.
// Needles are capped so that at least d/8 dims stay for the noise.
#pragma once

#include <cstdint>
#include <vector>

namespace blasst {

struct SyntheticSpec {
  std::uint64_t seed = 1;
  float noise = 1.0f;
  float local = 10.0f;
  float sink = 12.0f;
  int sinks = 4;
  float needle = 10.0f;
  int needles = 8;
  float needle_queries = 0.25f;
};

struct SyntheticQKV {
  int sq = 0, sk = 0, hq = 0, hkv = 0, dqk = 0, dv = 0;
  std::vector<float> q;  // [sq, hq, dqk]
  std::vector<float> k;  // [sk, hkv, dqk]
  std::vector<float> v;  // [sk, hkv, dv]
};

// Multi-threaded through the CPU engine's pool; deterministic for a given spec and shape.
SyntheticQKV synthetic_qkv(int sq, int sk, int hq, int hkv, int dqk, int dv, const SyntheticSpec& spec);

}  // namespace blasst
