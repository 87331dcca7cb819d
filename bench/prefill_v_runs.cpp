// What loading V on demand or by prediction would save in the CUDA prefill kernel, from the CPU
// engine's skip mask (no GPU).
//
//   blasst_prefill_v_runs [LEN [A [CAUSAL]]]   (default 32768 213.086 1: 70 % at causal 32K)
//
// The CUDA prefill bench's inputs (include/blasst/synthetic.hpp, Hq/Hkv 32/8, head dim 128), its
// default geometry (vote groups of 64 rows, 192-key tiles, reverse order) and scale factor A. A
// CTA of the wgmma kernels holds two vote groups and loads V(j) for both: V is needed when either
// keeps tile j. Per CTA step it counts:
// - needed: the V loads of V on demand (prefill-demand-v2), against eager V's 1;
// - predicted: the loads of V by prediction (prefill-predicted-v: eager after a kept tile, on
//   demand after a skipped one);
// - waits: steps from a skipped to a kept tile, where a predicted producer requests V only after
//   the vote (on demand, every kept tile waits).
// Per vote group it also counts what predicting a tile kept after S kept tiles in a row would do
// (prefill-spec-keep, S = 1; prefill-spec-streak, S = 8): tiles predicted and kept (the vote's wait
// saved) and predicted but skipped (a softmax wasted).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/cpu/engine.hpp"
#include "blasst/synthetic.hpp"

using namespace blasst;

int main(int argc, char** argv) {
  const int len = argc > 1 ? std::atoi(argv[1]) : 32768;
  const double a = argc > 2 ? std::atof(argv[2]) : 213.086;
  const bool causal = argc > 3 ? std::atoi(argv[3]) != 0 : true;
  const int hq = 32, hkv = 8, d = 128, BQ = 64, BK = 192;
  if (len < 1 || !(a > 0)) {
    std::fprintf(stderr, "usage: %s [LEN [A [CAUSAL]]] (LEN >= 1, A > 0)\n", argv[0]);
    return 2;
  }
  const SyntheticQKV x = synthetic_qkv(len, len, hq, hkv, d, d, SyntheticSpec{});
  PrefillProblem p;
  p.batch = 1, p.total_q = len, p.total_k = len, p.num_heads_q = hq, p.num_heads_kv = hkv;
  p.head_dim_qk = p.head_dim_v = d, p.causal = causal, p.dtype = DType::f32;
  p.q = x.q.data(), p.k = x.k.data(), p.v = x.v.data();
  p.set_contiguous_strides();
  SkipPolicy pol = SkipPolicy::with_scale_factor(a);
  pol.order = VisitOrder::reverse, pol.block_q = BQ, pol.block_k = BK;
  const SkipMaskLayout layout = skip_mask_layout(p, BQ, BK);
  std::vector<std::uint8_t> mask(layout.size());
  std::vector<float> o(std::size_t(len) * hq * d);
  Outputs out;
  out.set_contiguous_strides(p);
  out.o = o.data(), out.o_dtype = DType::f32, out.skip_mask = mask.data();
  cpu::prefill(p, pol, out);

  const int qtiles = (len + BQ - 1) / BQ;
  long steps = 0, needed = 0, predicted = 0, waits = 0, visited = 0, skipped = 0;
  for (int h = 0; h < hq; ++h)
    for (int ct = 0; 2 * ct < qtiles; ++ct) {
      // The CTA's steps: its visible tiles (from its last row), last tile first.
      const int last_row = std::min(len, (ct + 1) * 2 * BQ) - 1;
      const int n = causal ? last_row / BK + 1 : (len + BK - 1) / BK;
      bool prev = true;
      for (int j = 0; j < n; ++j) {
        const int t = n - 1 - j;
        bool need = j == 0;  // the first visited tile is never skipped
        for (int c = 0; c < 2 && 2 * ct + c < qtiles; ++c) {
          const std::uint8_t m = mask[layout.index(0, h * qtiles + 2 * ct + c, t)];
          visited += m != tile_unvisited;
          skipped += m == tile_skipped;
          need |= m == tile_kept;
        }
        ++steps;
        needed += need;
        predicted += prev || need;
        waits += !prev && need;
        prev = need;
      }
    }
  // Speculating "kept" in a vote group after a run of at least S kept tiles (the softmax runs
  // before the vote is known): per visited tile, how often it is speculated and kept (the vote's
  // wait saved) and speculated but skipped (a softmax wasted). The first visited tile never votes.
  for (int S : {1, 2, 4, 8, 16, 32}) {
    long tiles = 0, good = 0, wasted = 0;
    for (int h = 0; h < hq; ++h)
      for (int qt = 0; qt < qtiles; ++qt) {
        const int tiles_k = (len + BK - 1) / BK;
        int run = 0, jw = 0;
        for (int t = tiles_k - 1; t >= 0; --t) {
          const std::uint8_t m = mask[layout.index(0, h * qtiles + qt, t)];
          if (m == tile_unvisited) continue;
          ++tiles;
          const bool kept = m == tile_kept;
          if (jw++ > 0 && run >= S) (kept ? good : wasted) += 1;
          run = kept ? run + 1 : 0;
        }
      }
    std::printf("  speculate after %2d kept: speculated and kept %.3f, speculated and skipped %.4f of %ld tiles\n", S,
                double(good) / tiles, double(wasted) / tiles, tiles);
  }
  std::printf("len %d causal %d a %g: tile sparsity %.3f (vote groups); per CTA step: V needed %.3f, "
              "predicted loads %.3f, skip-to-keep waits %.3f (%ld steps)\n",
              len, causal ? 1 : 0, a, visited ? double(skipped) / visited : 0.0, double(needed) / steps,
              double(predicted) / steps, double(waits) / steps, steps);
}
