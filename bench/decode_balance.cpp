// Decode load balance at a target tile sparsity, from the CPU engine's skip mask (no GPU).
//
//   blasst_decode_balance [LEN [BATCH [HQ [HKV [TARGET]]]]]   (default 32768 8 32 8 0.7)
//
// One generated sequence (include/blasst/synthetic.hpp, head dim 128, the CUDA decode bench's
// inputs; every sequence of the batch is that one, as in the bench), key tiles of 128, max seeding.
// For each split count it finds the scale factor for TARGET sparsity and charges each CTA
// (sequence, KV head, split) its K tiles, its kept V tiles and, past the first split, the seeding
// K tile. It then times the CTAs in launch order (split fastest, then head, then sequence) on 132
// SMs, one CTA per SM, in a fluid model: the DRAM bandwidth is shared evenly by the running CTAs,
// each capped at CAP times its fair share (an SM alone cannot pull the whole bandwidth). The
// output is the skip's speedup over dense with the same splits for several caps, i.e. what the
// imbalance of the kept tiles between CTAs leaves of the ideal 1 / bytes. Session 4 measured 1.38x
// at 32/8, batch 8, 32K, 2 splits, which the model meets at a cap of about 1.8 (docs/PERF.md).
// Last, for one wave of three CTAs per SM, the SMs' loads if CTA L of the launch order runs on SM
// L mod 132, with blockIdx.x as the split and with the splits rotated by group. That placement
// model does not match the GPU: it gave the rotation 2-5 %, and the rotation measured level
// (docs/PERF.md, session 19).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/cpu/engine.hpp"
#include "blasst/synthetic.hpp"
#include "sparsity_search.hpp"

using namespace blasst;

namespace {

// Time to run CTAs of the given costs (in order, at most `sms` at once) when a total bandwidth of
// 1 is shared evenly and each CTA gets at most cap / sms.
double fluid_time(const std::vector<double>& costs, int sms, double cap) {
  std::vector<double> left;
  std::size_t next = 0;
  double t = 0;
  while (next < costs.size() || !left.empty()) {
    while (static_cast<int>(left.size()) < sms && next < costs.size()) left.push_back(costs[next++]);
    const double rate = std::min(cap / sms, 1.0 / left.size());
    const double dt = *std::min_element(left.begin(), left.end()) / rate;
    t += dt;
    std::vector<double> keep;
    for (double l : left)
      if (l - dt * rate > 1e-9) keep.push_back(l - dt * rate);
    left.swap(keep);
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const int len = argc > 1 ? std::atoi(argv[1]) : 32768, batch = argc > 2 ? std::atoi(argv[2]) : 8;
  const int hq = argc > 3 ? std::atoi(argv[3]) : 32, hkv = argc > 4 ? std::atoi(argv[4]) : 8;
  const double target = argc > 5 ? std::atof(argv[5]) : 0.7;
  const int d = 128, bk = 128, sms = 132;
  if (len < 1 || batch < 1 || hkv < 1 || hq % hkv) {
    std::fprintf(stderr, "usage: %s [LEN [BATCH [HQ [HKV [TARGET]]]]] (HQ a multiple of HKV)\n", argv[0]);
    return 2;
  }
  const SyntheticQKV x = synthetic_qkv(1, len, hq, hkv, d, d, SyntheticSpec{});
  std::vector<std::int32_t> table{0}, lens{len};
  DecodeProblem p;
  p.batch = 1, p.q_tokens = 1, p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d;
  p.dtype = DType::f32, p.num_pages = 1, p.page_size = len, p.max_pages_per_seq = 1;
  p.q = x.q.data(), p.k_cache = x.k.data(), p.v_cache = x.v.data(), p.block_table = table.data();
  p.seq_lens = lens.data();
  p.set_contiguous_strides();
  const SkipMaskLayout layout = skip_mask_layout(p, bk);
  const int tiles = (len + bk - 1) / bk;
  std::vector<float> o(std::size_t(hq) * d);
  std::vector<std::uint8_t> mask(layout.size());
  auto sparsity_at = [&](double a, int splits) {
    SkipPolicy pol = SkipPolicy::with_scale_factor(a);
    pol.order = VisitOrder::forward, pol.splits = splits, pol.max_seed = splits > 1, pol.block_k = bk;
    Outputs out;
    out.set_contiguous_strides(p);
    out.o = o.data(), out.o_dtype = DType::f32, out.skip_mask = mask.data();
    cpu::decode(p, pol, out);
    double skipped = 0;
    for (std::uint8_t m : mask) skipped += m == static_cast<std::uint8_t>(tile_skipped);
    return skipped / (double(hkv) * tiles);
  };
  std::printf("%d/%d, batch %d, %d keys, target sparsity %.2f, %d SMs\n", hq, hkv, batch, len, target, sms);
  std::printf("%6s %9s %9s %12s %10s %10s %10s %10s\n", "splits", "sparsity", "bytes", "max/mean CTA", "cap 1",
              "cap 1.5", "cap 2", "cap 3");
  for (int splits : {1, 2, 4, 8, 16, 32}) {
    if (splits > tiles) break;
    // The mask of the last call is the one at the scale factor found (bisection's final call).
    const double sparsity =
        bench::scale_factor_for_sparsity(target, 1e-3, len, [&](double a) { return sparsity_at(a, splits); }).second;
    const int per = (tiles + splits - 1) / splits;
    std::vector<double> skip, dense;
    for (int b = 0; b < batch; ++b)
      for (int h = 0; h < hkv; ++h)
        for (int s = 0; s < splits; ++s) {
          const int t0 = s * per, t1 = std::min(tiles, t0 + per);
          double c = (s > 0 && splits > 1) ? 1 : 0;
          for (int t = t0; t < t1; ++t) c += 1 + (mask[layout.index(0, h, t)] == static_cast<std::uint8_t>(tile_kept));
          skip.push_back(c), dense.push_back(2.0 * std::max(0, t1 - t0));
        }
    const double bytes = std::accumulate(skip.begin(), skip.end(), 0.0) / std::accumulate(dense.begin(), dense.end(), 0.0);
    const double mean = std::accumulate(skip.begin(), skip.end(), 0.0) / skip.size();
    std::printf("%6d %9.3f %9.3f %12.3f", splits, sparsity, bytes, *std::max_element(skip.begin(), skip.end()) / mean);
    for (double cap : {1.0, 1.5, 2.0, 3.0}) std::printf(" %9.3fx", fluid_time(dense, sms, cap) / fluid_time(skip, sms, cap));
    std::printf("\n");
  }

  // One wave of three CTAs per SM (the small rings of a skip walk, DecodePlan::ctas_per_sm = 3):
  // if CTA L of the launch order lands on SM L mod 132, the SMs' loads (bytes, in tiles) spread
  // as below. "plain": blockIdx.x is the split; "rotated": the split is (blockIdx.x + group) mod
  // splits (branch decode-split-rotate). avg/max compares with ncu's SM busy avg/max.
  const int groups = batch * hkv, splits3 = std::clamp(3 * sms / groups, 1, std::max(1, tiles / 2));
  if (groups * splits3 <= 3 * sms) {
    const double sparsity =
        bench::scale_factor_for_sparsity(target, 1e-3, len, [&](double a) { return sparsity_at(a, splits3); }).second;
    const int per = (tiles + splits3 - 1) / splits3;
    auto cost = [&](int h, int s) {
      const int t0 = s * per, t1 = std::min(tiles, t0 + per);
      double c = s > 0 ? 1 : 0;
      for (int t = t0; t < t1; ++t) c += 1 + (mask[layout.index(0, h, t)] == static_cast<std::uint8_t>(tile_kept));
      return c;
    };
    std::printf("\nthree CTAs per SM, %d splits (sparsity %.3f), CTA L on SM L mod %d: SM load avg/max, min/max\n",
                splits3, sparsity, sms);
    for (int rotated : {0, 1}) {
      std::vector<double> sm(sms, 0.0);
      for (int b = 0; b < batch; ++b)
        for (int h = 0; h < hkv; ++h)
          for (int x = 0; x < splits3; ++x) {
            const int g = h + hkv * b, L = x + splits3 * g;
            sm[L % sms] += cost(h, rotated ? (x + g) % splits3 : x);
          }
      const double mx = *std::max_element(sm.begin(), sm.end()), mn = *std::min_element(sm.begin(), sm.end());
      std::printf("  %-8s %.3f  %.3f\n", rotated ? "rotated" : "plain", std::accumulate(sm.begin(), sm.end(), 0.0) / sms / mx,
                  mn / mx);
    }
  }
  return 0;
}
