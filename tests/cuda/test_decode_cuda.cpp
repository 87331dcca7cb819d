// The CUDA decode kernel against the CPU engine (the oracle) and a float64 reference.
// Every test skips where no sm_90 GPU is present.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "blasst/cuda/decode.hpp"
#include "cuda/cuda_test_util.hpp"

namespace blasst::test {
namespace {

struct GpuRun {
  cuda::DecodePlan plan;
  std::vector<float> o, lse;
  std::vector<std::uint16_t> o_bits;
  std::vector<std::uint8_t> mask;
  std::vector<std::uint64_t> counters;
};

struct DeviceBatch {
  DeviceBuffer<std::uint16_t> q, kc, vc;
  DeviceBuffer<std::int32_t> table, lens;
  explicit DeviceBatch(const PagedBatch& x) : q(x.q), kc(x.kc), vc(x.vc), table(x.table), lens(x.seq_lens) {}
  DecodeProblem problem(const PagedBatch& x) const { return x.problem(q.ptr, kc.ptr, vc.ptr, table.ptr, lens.ptr); }
};

int max_len(const PagedBatch& x) {
  int m = 0;
  for (int l : x.lens) m = std::max(m, l);
  return m;
}

// The planner's plan for a shape (one query token, d 128, bf16, 64-slot pages) and policy, with
// the planner's split count (policy.splits = 0), on an H200 (132 SMs, 228 KB of shared memory per
// SM) whether or not one is present: the planner's rules run in CI too.
constexpr int kH200Sms = 132, kH200SmemPerSm = 233472;
DecodeProblem shape_problem(int hq, int hkv, int batch, int len, int d = 128) {
  DecodeProblem p;
  p.batch = batch, p.q_tokens = 1, p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d;
  p.dtype = DType::bf16, p.page_size = 64, p.max_pages_per_seq = (len + 63) / 64, p.num_pages = batch * ((len + 63) / 64);
  p.set_contiguous_strides();
  static const std::int32_t placeholder[1] = {0};  // planning reads no device memory
  p.q = p.k_cache = p.v_cache = placeholder;
  p.block_table = p.seq_lens = placeholder;
  return p;
}
// The planner tests' policy that may skip: scale factor 64 with max seeding.
SkipPolicy seeded_policy() {
  SkipPolicy pol = SkipPolicy::with_scale_factor(64.0);
  pol.max_seed = true;
  return pol;
}
cuda::DecodePlan plan_shape(int hq, int hkv, int batch, int len, SkipPolicy pol = SkipPolicy{}, int d = 128) {
  pol.order = VisitOrder::forward;
  pol.splits = 0;
  return cuda::plan_decode_for(shape_problem(hq, hkv, batch, len, d), len, pol, kH200Sms, kH200SmemPerSm);
}

// Runs the kernel with every output on, O poisoned with 0xFF bytes (NaN) first. l2_evict_first and
// small_rings: -1 the planner's choice, else the plan's field set to it; small_rings 1 or 2: two
// CTAs per SM, 3: three (DecodePlan::ctas_per_sm).
GpuRun run_gpu(const PagedBatch& x, const SkipPolicy& pol, const std::uint8_t* replay_host = nullptr,
               cudaStream_t stream = nullptr, int l2_evict_first = -1, int small_rings = -1) {
  GpuRun r;
  DeviceBatch dev(x);
  const DecodeProblem p = dev.problem(x);
  r.plan = cuda::plan_decode(p, max_len(x), pol);
  if (l2_evict_first >= 0) r.plan.l2_evict_first = l2_evict_first != 0;
  if (small_rings >= 0) r.plan.small_rings = small_rings != 0;
  if (small_rings >= 1) r.plan.ctas_per_sm = small_rings == 3 ? 3 : 2;
  const std::size_t rows = std::size_t(x.batch) * x.q_tokens * x.hq;
  DeviceBuffer<std::uint16_t> o(rows * x.d);
  DeviceBuffer<float> lse(rows);
  DeviceBuffer<std::uint64_t> counters(std::size_t(x.batch) * x.hkv * 2);
  const std::size_t mask_bound = std::size_t(x.batch) * x.hkv * ((max_len(x) + 127) / 128) + 1;
  DeviceBuffer<std::uint8_t> mask(mask_bound), replay(mask_bound);
  DeviceBuffer<unsigned char> ws(std::max<std::size_t>(r.plan.workspace_bytes, 1));
  cudaMemset(mask.ptr, 0, mask_bound);
  cudaMemset(o.ptr, 0xff, rows * x.d * 2);
  cudaMemset(lse.ptr, 0xff, rows * 4);
  Outputs out;
  out.set_contiguous_strides(p);
  out.o = o.ptr, out.o_dtype = x.dtype, out.lse = lse.ptr, out.tile_counters = counters.ptr, out.skip_mask = mask.ptr;
  SkipPolicy run_pol = pol;
  if (replay_host) {
    std::vector<std::uint8_t> h(replay_host, replay_host + skip_mask_layout(x.problem(nullptr, nullptr, nullptr, nullptr, x.seq_lens.data()), 128).size());
    h.resize(mask_bound, 0);
    replay.upload(h);
    run_pol.replay_mask = replay.ptr;
  }
  cuda::decode(p, run_pol, r.plan, out, ws.ptr, stream);
  if (cudaStreamSynchronize(stream) != cudaSuccess) throw std::runtime_error(cudaGetErrorString(cudaGetLastError()));
  r.o_bits = o.download();
  r.o.resize(r.o_bits.size());
  for (std::size_t i = 0; i < r.o.size(); ++i) r.o[i] = from_bits(r.o_bits[i], x.dtype);
  r.lse = lse.download();
  r.mask = mask.download();
  r.counters = counters.download();
  return r;
}

struct CpuRun {
  std::vector<float> o, lse;
  std::vector<std::uint8_t> mask;
  SkipStats stats;
};

CpuRun run_cpu(const PagedBatch& x, SkipPolicy pol, const std::uint8_t* replay = nullptr) {
  CpuRun r;
  const DecodeProblem p = x.problem(x.q.data(), x.kc.data(), x.vc.data(), x.table.data(), x.seq_lens.data());
  const std::size_t rows = std::size_t(x.batch) * x.q_tokens * x.hq;
  r.o.assign(rows * x.d, NAN);
  r.lse.assign(rows, NAN);
  r.mask.assign(skip_mask_layout(p, pol.block_k).size(), 0);
  pol.replay_mask = replay;
  Outputs out;
  out.set_contiguous_strides(p);
  out.o = r.o.data(), out.lse = r.lse.data(), out.stats = &r.stats, out.skip_mask = r.mask.data();
  cpu::decode(p, pol, out);
  return r;
}

// float64 dense attention straight from the paged cache.
std::vector<double> reference_dense(const PagedBatch& x, float scale) {
  std::vector<double> o(std::size_t(x.batch) * x.q_tokens * x.hq * x.d, 0.0);
  const int G = x.hq / x.hkv;
  for (int b = 0; b < x.batch; ++b)
    for (int t = 0; t < x.q_tokens; ++t)
      for (int h = 0; h < x.hq; ++h) {
        const std::int64_t lim = std::int64_t(t) + x.lens[b] - x.q_tokens;
        const std::uint16_t* q = &x.q[((std::size_t(b) * x.q_tokens + t) * x.hq + h) * x.d];
        std::vector<double> s;
        double mx = -INFINITY;
        for (std::int64_t j = 0; j <= lim; ++j) {
          const std::size_t page = x.table[std::size_t(b) * x.max_pages + j / x.page_size];
          const std::uint16_t* k = &x.kc[((page * x.page_size + j % x.page_size) * x.hkv + h / G) * x.d];
          double dot = 0;
          for (int c = 0; c < x.d; ++c) dot += double(from_bits(q[c], x.dtype)) * from_bits(k[c], x.dtype);
          s.push_back(dot * scale);
          mx = std::max(mx, s.back());
        }
        double sum = 0;
        for (double& v : s) sum += (v = std::exp(v - mx));
        double* out = &o[((std::size_t(b) * x.q_tokens + t) * x.hq + h) * x.d];
        for (std::int64_t j = 0; j <= lim; ++j) {
          const std::size_t page = x.table[std::size_t(b) * x.max_pages + j / x.page_size];
          const std::uint16_t* v = &x.vc[((page * x.page_size + j % x.page_size) * x.hkv + h / G) * x.d];
          for (int c = 0; c < x.d; ++c) out[c] += s[j] / sum * from_bits(v[c], x.dtype);
        }
      }
  return o;
}

double tolerance(DType t) { return t == DType::bf16 ? 1.2e-2 : 2.5e-3; }

std::string describe(const PagedBatch& x, const SkipPolicy& pol, std::uint64_t seed) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "seed %llu, batch %d, q_tokens %d, Hq %d, Hkv %d, d %d, page %d, %s, mode %d value %g splits %d seed %d",
                static_cast<unsigned long long>(seed), x.batch, x.q_tokens, x.hq, x.hkv, x.d, x.page_size, to_string(x.dtype),
                static_cast<int>(pol.mode), pol.value, pol.splits, int(pol.max_seed));
  return buf;
}

// Decisions against the CPU engine (boundary ties at most 0.1 %), statistics against the mask,
// the output against the CPU engine replaying the kernel's mask, and every output row written.
void check_against_cpu(const PagedBatch& x, const SkipPolicy& pol, std::uint64_t seed, double* sparsity = nullptr,
                       int small_rings = -1) {
  SCOPED_TRACE(describe(x, pol, seed));
  const GpuRun g = run_gpu(x, pol, nullptr, nullptr, -1, small_rings);
  SkipPolicy cpu_pol = pol;
  cpu_pol.splits = g.plan.splits;
  const CpuRun c = run_cpu(x, cpu_pol);
  std::int64_t visited = 0, mismatched = 0, skipped = 0;
  for (std::size_t i = 0; i < c.mask.size(); ++i) {
    visited += c.mask[i] != tile_unvisited;
    skipped += g.mask[i] == tile_skipped;
    mismatched += c.mask[i] != g.mask[i];
  }
  EXPECT_LE(mismatched, std::max<std::int64_t>(1, visited / 1000)) << "of " << visited << " tiles";
  std::int64_t cv = 0, cs = 0;
  for (std::size_t i = 0; i < g.counters.size(); i += 2) cv += g.counters[i], cs += g.counters[i + 1];
  EXPECT_EQ(cv, visited);
  EXPECT_EQ(cs, skipped);
  for (std::size_t i = c.mask.size(); i < g.mask.size(); ++i) EXPECT_EQ(g.mask[i], 0) << "mask written past its layout";

  const CpuRun replay = run_cpu(x, cpu_pol, g.mask.data());
  for (float v : g.o) ASSERT_FALSE(std::isnan(v)) << "an output element was not written";
  EXPECT_LT(rel_l2(g.o, replay.o), tolerance(x.dtype));
  for (std::size_t i = 0; i < g.lse.size(); ++i) {
    if (std::isinf(replay.lse[i])) {
      EXPECT_TRUE(std::isinf(g.lse[i]) && g.lse[i] < 0) << "row " << i;
    } else {
      EXPECT_NEAR(g.lse[i], replay.lse[i], 2e-3 + 1e-4 * std::fabs(replay.lse[i])) << "row " << i;
    }
  }
  if (sparsity) *sparsity = visited ? double(skipped) / visited : 0.0;
}

// A batch layout of the small-ring tests: dtype, query and KV heads, query tokens per sequence.
struct WalkLayout {
  DType dt;
  int hq, hkv, q_tokens;
};
// The skip policies those tests walk: scale factor 16 on 1, 2 and 5 splits (max seeding from 2
// on), 64 on 3 splits without max seeding, and the threshold 3e-3 on 2 splits. With 1e-3 a group of
// 64 rows (8/1 x 8 tokens, HeadDim64RingsMatchTheRingKernel) skipped only 7-16 % of its tiles over
// 40 seeds of the CPU engine, under the tests' 10 % floor for 5 of them (a flaky precondition, seen
// on the H200 in session 22); 3e-3 gives 17-29 % there, 25-35 % at 32-48 rows.
std::vector<SkipPolicy> skip_walk_policies() {
  std::vector<SkipPolicy> pols;
  for (int splits : {1, 2, 5}) {
    SkipPolicy a = SkipPolicy::with_scale_factor(16.0);
    a.max_seed = splits > 1, a.splits = splits;
    pols.push_back(a);
  }
  SkipPolicy plain = SkipPolicy::with_scale_factor(64.0);
  plain.splits = 3;
  pols.push_back(plain);
  SkipPolicy thr = SkipPolicy::with_threshold(3e-3);
  thr.splits = 2;
  pols.push_back(thr);
  return pols;
}

// The small rings at two CTAs per SM (run_gpu's small_rings 1) against the ring kernel, for a walk
// whose S sums alike in both: the same bits, LSE, mask and counters; the CPU engine's decisions
// (the walk must skip); the ring kernel's mask replayed on the small rings gives its bits. Returns
// the ring kernel's run.
GpuRun expect_two_ctas_walk_as_the_rings(const PagedBatch& x, const SkipPolicy& pol, std::uint64_t seed) {
  const GpuRun two = run_gpu(x, pol, nullptr, nullptr, -1, 1), rings = run_gpu(x, pol, nullptr, nullptr, -1, 0);
  EXPECT_EQ(two.o_bits, rings.o_bits);
  EXPECT_EQ(std::memcmp(two.lse.data(), rings.lse.data(), two.lse.size() * 4), 0);
  EXPECT_EQ(two.mask, rings.mask);
  EXPECT_EQ(two.counters, rings.counters);
  double sparsity = 0;
  check_against_cpu(x, pol, seed, &sparsity, 1);
  EXPECT_GT(sparsity, 0.1) << "the walks must skip for this test to mean anything";
  const GpuRun replayed = run_gpu(x, pol, rings.mask.data(), nullptr, -1, 1);
  EXPECT_EQ(replayed.o_bits, rings.o_bits);
  return rings;
}

TEST(CudaDecode, DenseMatchesFloat64) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  for (DType dt : {DType::bf16, DType::f16})
    for (int d : {64, 128, 256}) {
      const PagedBatch x = make_paged(seed + d, {1, 17, 300, 1013}, 1, 8, 2, d, 16, dt, false);
      SCOPED_TRACE(describe(x, SkipPolicy{}, seed));
      SkipPolicy pol;
      pol.order = VisitOrder::forward;
      pol.splits = 0;
      const GpuRun g = run_gpu(x, pol);
      const std::vector<double> ref = reference_dense(x, 1.0f / std::sqrt(float(d)));
      std::vector<float> reff(ref.begin(), ref.end());
      EXPECT_LT(rel_l2(g.o, reff), tolerance(dt));
    }
}

TEST(CudaDecode, SkipMatchesCpuEngineAcrossShapes) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  struct Shape { int hq, hkv, q_tokens, d; };
  const Shape shapes[] = {{8, 8, 1, 128}, {8, 4, 1, 128}, {16, 4, 1, 64}, {32, 4, 1, 128}, {64, 4, 1, 128},
                          {128, 4, 1, 64}, {8, 1, 1, 128}, {32, 1, 1, 128}, {32, 8, 3, 128}, {32, 8, 8, 128},
                          {16, 2, 2, 256}, {8, 8, 1, 256}, {32, 8, 1, 256}, {64, 2, 2, 128}, {128, 2, 2, 64},
                          {32, 1, 1, 256}, {20, 4, 4, 256}};  // 32 and 20 rows at d 256: two row warps
  for (const Shape& s : shapes)
    for (DType dt : {DType::bf16, DType::f16}) {
      const PagedBatch x = make_paged(seed ^ (s.hq * 131 + s.d), {2000, 17, 0, 1013, 4096}, s.q_tokens, s.hq, s.hkv,
                                      s.d, 16, dt, true);
      for (int splits : {1, 3}) {
        SkipPolicy pol = SkipPolicy::with_scale_factor(8.0);
        pol.order = VisitOrder::forward;
        pol.splits = splits;
        check_against_cpu(x, pol, seed);
      }
    }
}

// Vote groups with more rows than one CTA holds (128; 32 at head dim 256) run on a cluster of
// CTAs that exchange their votes: decisions and outputs must match the CPU engine as for one CTA.
TEST(CudaDecode, LargeVoteGroupsSpanAClusterOfCtas) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  struct Shape { int hq, hkv, q_tokens, d; };
  // Rows (CTAs x rows each): 256 (4 x 64, MQA and GQA), 160 at d 64 (3 x 54), 129 (3 x 43),
  // at d 256 40 (2 x 20), 64 (2 x 32) and 256 (8 x 32), 384 at d 64 (6 x 64), and 768 (6 x 128:
  // more than 8 CTAs of 64 rows, so CTAs of 8 row warps).
  const Shape shapes[] = {{32, 1, 8, 128}, {64, 2, 8, 128}, {20, 1, 8, 64}, {129, 1, 1, 128}, {8, 1, 5, 256},
                          {16, 2, 8, 256}, {32, 1, 8, 256}, {96, 1, 4, 64}, {96, 1, 8, 128}};
  for (const Shape& s : shapes) {
    const DType dt = (s.hq + s.d) % 2 ? DType::f16 : DType::bf16;
    const PagedBatch x = make_paged(seed ^ (s.hq * 977 + s.q_tokens * 31 + s.d), {1500, 0, 17, 3000}, s.q_tokens,
                                    s.hq, s.hkv, s.d, 16, dt, true);
    for (int splits : {1, 3}) {
      SkipPolicy pol = SkipPolicy::with_scale_factor(8.0);
      pol.order = VisitOrder::forward;
      pol.splits = splits;
      pol.max_seed = splits > 1;
      check_against_cpu(x, pol, seed);
    }
  }
  // Dense against float64 on the largest group.
  const PagedBatch x = make_paged(seed + 7, {1, 700, 2049}, 8, 32, 1, 128, 64, DType::bf16, false);
  SkipPolicy pol;
  pol.order = VisitOrder::forward;
  const GpuRun g = run_gpu(x, pol);
  const std::vector<double> ref = reference_dense(x, 1.0f / std::sqrt(128.0f));
  EXPECT_LT(rel_l2(g.o, std::vector<float>(ref.begin(), ref.end())), tolerance(DType::bf16));
}

TEST(CudaDecode, PageSizesAndShuffledTables) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  // 3001 and 5000: one page per sequence, the contiguous case, in boxes of a whole tile.
  for (int page : {1, 16, 32, 64, 128, 48, 3001, 5000}) {
    const PagedBatch x = make_paged(seed + page, {1, 129, 3000, 0, 777}, 1, 16, 2, 128, page, DType::bf16, true);
    SkipPolicy pol = SkipPolicy::with_scale_factor(4.0);
    pol.order = VisitOrder::forward;
    pol.splits = 0;
    check_against_cpu(x, pol, seed);
  }
}

TEST(CudaDecode, SplitsAndMaxSeed) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  const PagedBatch x = make_paged(seed, {16384, 9000}, 1, 32, 8, 128, 64, DType::bf16, true);
  for (int splits : {1, 4, 16, 64}) {
    double plain = 0, seeded = 0;
    SkipPolicy pol = SkipPolicy::with_scale_factor(16.0);
    pol.order = VisitOrder::forward;
    pol.splits = splits;
    check_against_cpu(x, pol, seed, &plain);
    pol.max_seed = true;
    check_against_cpu(x, pol, seed, &seeded);
    std::printf("[ splits %2d ] sparsity %.3f, with max seeding %.3f\n", splits, plain, seeded);
    EXPECT_GE(seeded + 1e-9, plain - 0.01);
  }
}

// The split combine runs 1, 2, 4 or 8 warps per row (up to 32, 64, 128 and more splits): each
// against the CPU engine with the skip, and dense against float64; the short sequence leaves
// splits empty at the larger counts.
TEST(CudaDecode, ManySplitsCombine) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  const PagedBatch x = make_paged(seed, {65536, 5000}, 1, 8, 1, 128, 64, DType::bf16, true);
  const std::vector<double> ref = reference_dense(x, 1.0f / std::sqrt(128.0f));
  for (int splits : {20, 50, 100, 200}) {
    SkipPolicy pol = SkipPolicy::with_scale_factor(16.0);
    pol.order = VisitOrder::forward;
    pol.splits = splits;
    pol.max_seed = true;
    check_against_cpu(x, pol, seed);
    SkipPolicy dense;
    dense.order = VisitOrder::forward;
    dense.splits = splits;
    const GpuRun g = run_gpu(x, dense);
    EXPECT_LT(rel_l2(g.o, std::vector<float>(ref.begin(), ref.end())), tolerance(DType::bf16)) << "splits " << splits;
  }
}

TEST(CudaDecode, LongSequence128K) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  const PagedBatch x = make_paged(seed, {131072}, 1, 32, 8, 128, 64, DType::bf16, true);
  SkipPolicy pol = SkipPolicy::with_scale_factor(32.0);
  pol.order = VisitOrder::forward;
  pol.splits = 0;
  check_against_cpu(x, pol, seed);
}

TEST(CudaDecode, ThresholdZeroIsBitIdenticalToDense) {
  REQUIRE_HOPPER();
  const PagedBatch x = make_paged(fresh_seed(), {5000, 300}, 2, 16, 4, 128, 32, DType::bf16, true);
  SkipPolicy dense;
  dense.order = VisitOrder::forward;
  dense.splits = 4;
  SkipPolicy zero = SkipPolicy::with_threshold(0.0);
  zero.order = VisitOrder::forward;
  zero.splits = 4;
  EXPECT_EQ(run_gpu(x, dense).o_bits, run_gpu(x, zero).o_bits);
}

// Dense policies whose chunks hold 16 tiles or more run on two CTAs per SM of one K and one V stage
// (DecodePlan::small_rings): the same bits as the ring kernel's dense walk (threshold 0 walks
// as dense) with the same splits, and the float64 reference.
TEST(CudaDecode, DenseSmallRingsMatchTheRings) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  for (DType dt : {DType::bf16, DType::f16}) {
    const PagedBatch x = make_paged(seed, {8192, 17, 0, 5000, 1, 8000}, 1, 32, 8, 128, 16, dt, true);
    const std::vector<double> ref = reference_dense(x, 1.0f / std::sqrt(128.0f));
    const std::vector<float> reff(ref.begin(), ref.end());
    for (int splits : {1, 2}) {
      SCOPED_TRACE(describe(x, SkipPolicy{}, seed) + " splits " + std::to_string(splits));
      SkipPolicy dense;
      dense.order = VisitOrder::forward;
      dense.splits = splits;
      SkipPolicy zero = SkipPolicy::with_threshold(0.0);
      zero.order = VisitOrder::forward;
      zero.splits = splits;
      const GpuRun small = run_gpu(x, dense), rings = run_gpu(x, zero);
      EXPECT_TRUE(small.plan.small_rings);
      EXPECT_FALSE(rings.plan.small_rings);
      EXPECT_EQ(small.o_bits, rings.o_bits);
      EXPECT_EQ(std::memcmp(small.lse.data(), rings.lse.data(), small.lse.size() * 4), 0);
      EXPECT_EQ(small.counters, rings.counters);
      EXPECT_LT(rel_l2(small.o, reff), tolerance(dt));
      // Three CTAs per SM (skip walks' small rings) sum S in another order: float64 is the judge.
      const GpuRun three = run_gpu(x, dense, nullptr, nullptr, -1, 3);
      EXPECT_LT(rel_l2(three.o, reff), tolerance(dt));
      EXPECT_EQ(three.counters, rings.counters);
    }
  }
}

// Walks that may skip on the small rings (DecodePlan::small_rings: one K and one V stage, a kept
// tile's P V as soon as its V lands). Two CTAs per SM: the same bits, mask and counters as the ring
// kernel (whose P V products wait in a queue) at the same splits, for scale factors with and
// without max seeding, a threshold and a replayed mask; and the CPU engine's decisions and output.
// Three CTAs per SM (S summed in one chain): the CPU engine's decisions (ties aside) and output,
// and the ring kernel's output when replaying its mask.
TEST(CudaDecode, SkipWalksOnSmallRingsMatchTheRings) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  struct Layout {
    DType dt;
    int hq, hkv;
  };
  for (const Layout lay : {Layout{DType::bf16, 32, 8}, Layout{DType::f16, 32, 8}, Layout{DType::bf16, 8, 1}}) {
    const DType dt = lay.dt;
    const PagedBatch x = make_paged(seed, {8192, 17, 0, 5000, 1, 8000, 129}, 1, lay.hq, lay.hkv, 128, 16, dt, true);
    for (SkipPolicy pol : skip_walk_policies()) {
      pol.order = VisitOrder::forward;
      SCOPED_TRACE(describe(x, pol, seed));
      const GpuRun rings = expect_two_ctas_walk_as_the_rings(x, pol, seed);  // sparsity 0.31-0.91 here
      double sparsity3 = 0;
      check_against_cpu(x, pol, seed, &sparsity3, 3);
      EXPECT_GT(sparsity3, 0.1);
      const GpuRun replayed3 = run_gpu(x, pol, rings.mask.data(), nullptr, -1, 3);
      EXPECT_EQ(replayed3.counters, rings.counters);
      EXPECT_LT(rel_l2(replayed3.o, rings.o), tolerance(dt));
    }
  }
}

// Skip walks of groups of 17-32 rows (two row warps) at head dim 128 on two CTAs per SM of two K
// stages and one V stage: the same bits, mask and counters as the ring kernel at the same splits
// (S sums alike; only the P V queue differs), the CPU engine's decisions, and a replayed mask.
// MQA of 24 and 32 rows, GQA of 32, and 6 speculative tokens of a 4-row group (24 rows).
TEST(CudaDecode, TwoRowWarpSkipWalksMatchTheRings) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  for (const WalkLayout lay : {WalkLayout{DType::bf16, 32, 1, 1}, WalkLayout{DType::f16, 64, 2, 1},
                               WalkLayout{DType::bf16, 24, 1, 1}, WalkLayout{DType::bf16, 32, 8, 6}}) {
    const PagedBatch x = make_paged(seed ^ (lay.hq * 13 + lay.q_tokens), {8192, 17, 0, 5000, 1, 8000, 129}, lay.q_tokens,
                                    lay.hq, lay.hkv, 128, 16, lay.dt, true);
    for (SkipPolicy pol : skip_walk_policies()) {
      pol.order = VisitOrder::forward;
      SCOPED_TRACE(describe(x, pol, seed));
      EXPECT_EQ(expect_two_ctas_walk_as_the_rings(x, pol, seed).plan.warps_m, 2);
    }
  }
}

// Skip walks (max seeding) of 17-32 rows at head dim 128 take two CTAs per SM of two K stages and
// one V stage where each chunk holds 64 tiles or more; dense walks, walks without max seeding and
// one KV head over a wave keep the ring kernel. No GPU needed.
TEST(DecodePlanner, TwoRowWarpSkipWalksOnTwoCtasPerSm) {
  SkipPolicy seeded = seeded_policy();
  struct Case {
    int hq, hkv, batch, len;
    bool small;
    int splits;
  };
  const Case cases[] = {
      {256, 8, 8, 32768, true, 4},    // 64 groups: 4 chunks of 64 tiles
      {256, 8, 64, 32768, true, 4},   // 512 groups, many waves: 4 of 64
      {256, 8, 64, 8192, true, 1},    // one chunk of 64 tiles
      {32, 1, 64, 32768, true, 4},    // MQA under a wave
      {32, 1, 8, 32768, false, 16},   // 33 chunks of 8 tiles: the ring kernel's 16
      {32, 1, 512, 32768, false, 1},  // MQA over a wave: the ring kernel
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.hq) + "/" + std::to_string(c.hkv) + " batch " + std::to_string(c.batch) + " len " +
                 std::to_string(c.len));
    const cuda::DecodePlan plan = plan_shape(c.hq, c.hkv, c.batch, c.len, seeded);
    EXPECT_EQ(plan.warps_m, 2);
    EXPECT_EQ(plan.small_rings, c.small);
    EXPECT_EQ(plan.ctas_per_sm, c.small ? 2 : 1);
    EXPECT_EQ(plan.splits, c.splits);
  }
  EXPECT_FALSE(plan_shape(256, 8, 8, 32768).small_rings);  // dense
  SkipPolicy plain = SkipPolicy::with_scale_factor(64.0);
  EXPECT_FALSE(plan_shape(256, 8, 8, 32768, plain).small_rings);  // no max seeding
}

// Head dim 64 with one CTA per group (up to 16 rows) runs on rings of two K and two V stages, three
// CTAs per SM, for every policy: against the CPU engine (decisions, O and LSE with the kernel's
// mask replayed) and against the six-stage ring kernel within tolerance (S sums the head dim in
// another order there), dense, skip with and without max seeding, an explicit threshold and a
// replayed mask; groups of 1, 3, 4 and 8 rows (MQA among them) and speculative tokens. Groups of
// 17-32 rows (24 and 32, MQA and 6 speculative tokens) take the same rings at two CTAs per SM, and
// 33-64 rows (48 and 64) two CTAs of two K stages and one V, with the ring kernel's bits.
TEST(CudaDecode, HeadDim64RingsMatchTheRingKernel) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  for (const WalkLayout lay : {WalkLayout{DType::bf16, 9, 3, 1}, WalkLayout{DType::f16, 16, 4, 1},
                               WalkLayout{DType::bf16, 8, 1, 1}, WalkLayout{DType::bf16, 4, 4, 1},
                               WalkLayout{DType::f16, 8, 4, 4}, WalkLayout{DType::bf16, 32, 1, 1},
                               WalkLayout{DType::f16, 24, 1, 1}, WalkLayout{DType::bf16, 32, 8, 6},
                               WalkLayout{DType::bf16, 48, 1, 1}, WalkLayout{DType::f16, 8, 1, 8}}) {
    // Up to 16 rows: three CTAs per SM; 17-32 rows (two row warps) and 33-64 (four): two, with the
    // ring kernel's bits.
    const int rows = lay.q_tokens * lay.hq / lay.hkv, ctas = rows <= 16 ? 3 : 2, arg = ctas == 3 ? 3 : 1;
    const PagedBatch x =
        make_paged(seed ^ (lay.hq * 7 + lay.q_tokens), {8192, 17, 0, 5000, 1, 8000, 129}, lay.q_tokens, lay.hq, lay.hkv,
                   64, 16, lay.dt, true);
    std::vector<SkipPolicy> pols = skip_walk_policies();
    pols.insert(pols.begin(), SkipPolicy{});  // dense
    SkipPolicy planned = SkipPolicy::with_scale_factor(16.0);
    planned.max_seed = true, planned.splits = 0;  // the planner's split count
    pols.push_back(planned);
    for (SkipPolicy pol : pols) {
      pol.order = VisitOrder::forward;
      SCOPED_TRACE(describe(x, pol, seed));
      const GpuRun small = run_gpu(x, pol, nullptr, nullptr, -1, arg), rings = run_gpu(x, pol, nullptr, nullptr, -1, 0);
      EXPECT_EQ(rings.plan.ctas_per_sm, ctas) << "the default plan (run_gpu turned only its small_rings off)";
      EXPECT_LT(rel_l2(small.o, rings.o), tolerance(lay.dt));
      if (ctas == 2) {
        EXPECT_EQ(small.o_bits, rings.o_bits);
      }
      double sparsity = 0;
      check_against_cpu(x, pol, seed, &sparsity, arg);
      if (pol.mode != SkipPolicy::Mode::dense) {
        EXPECT_GT(sparsity, 0.1) << "the walks must skip for this test to mean anything";
      } else {
        EXPECT_EQ(sparsity, 0.0);
      }
      // The ring kernel's decisions replayed on the small rings: the same counts.
      const GpuRun replayed = run_gpu(x, pol, rings.mask.data(), nullptr, -1, arg);
      EXPECT_EQ(replayed.counters, rings.counters);
      EXPECT_LT(rel_l2(replayed.o, rings.o), tolerance(lay.dt));
    }
  }
}

// Head dim 64: three CTAs per SM of the two-stage rings wherever one CTA of one row warp holds a
// group, two for two and four row warps (17-64 rows), whatever the policy; the split count follows
// the planner's rules for that occupancy. Groups of more than 64 rows (clusters) keep the ring
// kernel. No GPU needed.
TEST(DecodePlanner, HeadDim64TakesTwoOrThreeCtasPerSm) {
  const int sms = kH200Sms;
  SkipPolicy seeded = seeded_policy();
  for (const SkipPolicy& pol : {SkipPolicy{}, seeded}) {
    SCOPED_TRACE(pol.mode == SkipPolicy::Mode::dense ? "dense" : "skip");
    const cuda::DecodePlan b8 = plan_shape(36, 12, 8, 8192, pol, 64);  // SmolLM2's layers stacked: 96 groups
    EXPECT_TRUE(b8.small_rings);
    EXPECT_EQ(b8.ctas_per_sm, 3);
    EXPECT_EQ(b8.splits, 3 * sms / 96);
    const cuda::DecodePlan b64 = plan_shape(36, 12, 64, 8192, pol, 64);  // 768 groups: many waves
    EXPECT_EQ(b64.ctas_per_sm, 3);
    EXPECT_EQ(b64.splits, 1);
    EXPECT_EQ(plan_shape(8, 1, 1, 131072, pol, 64).ctas_per_sm, 3);  // MQA, 8 rows
    const cuda::DecodePlan wide = plan_shape(128, 4, 8, 8192, pol, 64);  // 32 rows: two CTAs per SM
    EXPECT_TRUE(wide.small_rings);
    EXPECT_EQ(wide.ctas_per_sm, 2);
    EXPECT_EQ(wide.splits, 2 * sms / 32);
    const cuda::DecodePlan wider = plan_shape(64, 1, 8, 8192, pol, 64);  // 64 rows: two CTAs per SM
    EXPECT_TRUE(wider.small_rings);
    EXPECT_EQ(wider.ctas_per_sm, 2);
    EXPECT_EQ(wider.splits, 32);  // 2 * 132 / 8 groups, at most 64 tiles / 2
    EXPECT_FALSE(plan_shape(128, 1, 8, 8192, pol, 64).small_rings);  // 128 rows: a cluster of two
  }
  EXPECT_EQ(plan_shape(36, 12, 1, 8192, SkipPolicy{}, 64).splits, 32);  // 12 groups: 33 a wave, at most 64 / 2 tiles
  // small_rings = false plans the ring kernel (bench A/Bs).
  SkipPolicy forward;
  forward.order = VisitOrder::forward;
  const cuda::DecodePlan ring =
      cuda::plan_decode_for(shape_problem(36, 12, 8, 8192, 64), 8192, forward, sms, kH200SmemPerSm, false);
  EXPECT_FALSE(ring.small_rings);
  EXPECT_EQ(ring.ctas_per_sm, 1);
}

// The planner takes the small rings for dense walks where chunks hold 16 tiles or more (32/8 batch
// 8 at 32K: 4 splits of 64 tiles; 8/1 batch 64 at 8K: 4 of 16; 32/8 batch 1 at 128K: 33 of 32) and
// not where they would be short (8/1 batch 8 at 32K: 33 splits of 8 tiles). No GPU needed.
TEST(DecodePlanner, SmallRingsWhereChunksHold16Tiles) {
  const cuda::DecodePlan gqa = plan_shape(32, 8, 8, 32768), mqa = plan_shape(8, 1, 8, 32768);
  EXPECT_TRUE(gqa.small_rings);
  EXPECT_EQ(gqa.ctas_per_sm, 2);
  EXPECT_EQ(gqa.splits, gqa.sm_count * 2 / 64);
  EXPECT_FALSE(mqa.small_rings);
  const cuda::DecodePlan mqa64 = plan_shape(8, 1, 64, 8192), long1 = plan_shape(32, 8, 1, 131072);
  EXPECT_TRUE(mqa64.small_rings);
  EXPECT_EQ(mqa64.splits, mqa64.sm_count * 2 / 64);
  EXPECT_TRUE(long1.small_rings);
  EXPECT_EQ(long1.splits, long1.sm_count * 2 / 8);
  EXPECT_THROW(cuda::plan_decode_for(shape_problem(8, 1, 1, 64), 64, SkipPolicy{}, 0, kH200SmemPerSm), Error);
}

// decode's argument checks come before any device work: a missing or misaligned workspace (the
// partial outputs are stored 16 bytes at a time) says so. No GPU needed.
TEST(DecodePlanner, WorkspaceMustBePresentAndAligned) {
  const DecodeProblem p = shape_problem(32, 8, 8, 32768);
  SkipPolicy pol;
  pol.order = VisitOrder::forward;
  pol.splits = 0;  // the planner's: 4 here
  const cuda::DecodePlan plan = cuda::plan_decode_for(p, 32768, pol, kH200Sms, kH200SmemPerSm);
  ASSERT_GT(plan.workspace_bytes, 0u);
  alignas(16) static unsigned char fake[64];  // never dereferenced: the checks throw first
  Outputs out;
  out.set_contiguous_strides(p);
  out.o = fake, out.o_dtype = DType::bf16;
  auto message = [&](void* workspace) -> std::string {
    try {
      cuda::decode(p, pol, plan, out, workspace, nullptr);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message(nullptr).find("needs a workspace"), std::string::npos);
  EXPECT_NE(message(fake + 8).find("16-byte aligned"), std::string::npos);
}

// GQA walks that may skip, with max seeding, on a grid of a wave or more even unsplit: groups of up
// to 8 rows take the small rings at three CTAs per SM, up to 8 chunks of at least 64 tiles, the
// count whose last wave is the fullest if that is 90 % full or more; otherwise (16 rows, or no
// such count) the ring kernel with chunks of at least 64 tiles, up to 4 per group (the last wave's
// tail is shorter). Under a wave, up to 8 chunks of at least 128 tiles where that is more than the
// wave's count (one KV head included); dense walks, walks without max seeding and one KV head over
// many waves keep the planner's other rules.
TEST(DecodePlanner, SkipWalksSplitOverWaves) {
  auto planned = [](int batch, int len, const SkipPolicy& pol) { return plan_shape(32, 8, batch, len, pol); };
  SkipPolicy seeded = seeded_policy();
  SkipPolicy plain = SkipPolicy::with_scale_factor(64.0);
  // 512 groups, 396 CTAs a wave: 3 splits make 3.9 waves (2: 2.6, 4: 5.2).
  const cuda::DecodePlan b64 = planned(64, 32768, seeded);
  EXPECT_TRUE(b64.small_rings);
  EXPECT_EQ(b64.ctas_per_sm, 3);
  EXPECT_EQ(b64.splits, 3);
  EXPECT_EQ(planned(64, 131072, seeded).splits, 3);   // 6 fills as well: the first is taken
  EXPECT_EQ(planned(32, 32768, seeded).splits, 3);    // 256 groups: 1.94 waves
  EXPECT_EQ(planned(256, 32768, seeded).splits, 4);   // 2048 groups: 20.7 waves
  const cuda::DecodePlan b64s = planned(64, 8192, seeded);  // 64 tiles: one chunk, 1.3 waves
  EXPECT_FALSE(b64s.small_rings);
  EXPECT_EQ(b64s.splits, 1);
  EXPECT_EQ(planned(64, 12800, seeded).splits, 1);    // 100 tiles: chunks of 64 or more
  EXPECT_EQ(planned(64, 32768, plain).splits, 1);     // no max seeding
  EXPECT_FALSE(planned(64, 32768, plain).small_rings);
  EXPECT_EQ(planned(64, 32768, SkipPolicy{}).splits, 1);  // dense
  // 16 rows a group (128/8): the ring kernel's rule.
  const cuda::DecodePlan r64 = plan_shape(128, 8, 64, 32768, seeded);
  EXPECT_FALSE(r64.small_rings);
  EXPECT_EQ(r64.splits, 4);
  EXPECT_EQ(plan_shape(128, 8, 64, 131072, seeded).splits, 4);  // 1024 tiles: still 4
  // Under a wave with 16 rows a group (128/8; up to 8 rows take the small rings, below): 64 groups.
  auto rings = [](int batch, int len, const SkipPolicy& pol) { return plan_shape(128, 8, batch, len, pol); };
  const cuda::DecodePlan b8 = rings(8, 32768, seeded);
  EXPECT_FALSE(b8.small_rings);
  EXPECT_EQ(b8.ctas_per_sm, 1);
  EXPECT_EQ(b8.splits, b8.sm_count / 64);
  EXPECT_EQ(rings(8, 131072, seeded).splits, 8);  // up to 8 chunks of 128 tiles or more
  const cuda::DecodePlan b1 = rings(1, 131072, seeded);  // the wave's own count is larger
  EXPECT_EQ(b1.splits, b1.sm_count / 8);
  EXPECT_EQ(rings(8, 131072, plain).splits, b8.sm_count / 64);  // no max seeding
  EXPECT_EQ(plan_shape(8, 1, 256, 32768, seeded).splits, 1);  // MQA over many waves: one split
  EXPECT_EQ(plan_shape(8, 1, 64, 65536, seeded).splits, 4);  // MQA under a wave: long chunks too
  // (at 128K three CTAs per SM take it: SkipWalksOnSmallRingsUnderAWave)
}

// Under a wave, GQA walks that may skip, with max seeding and up to 8 rows a group, take the small
// rings at three CTAs per SM with one wave of them where their chunks hold 16 tiles or more; where
// those chunks would be shorter, groups of up to 4 rows take two CTAs per SM (splits for two CTAs
// per SM, at least the long-chunk count) unless the ring plan would already run 3 waves or more or
// those chunks too would hold fewer than 16 tiles; MQA takes three CTAs per SM only where their
// chunks hold 128 tiles or more; 16 rows, dense's own rule, no max seeding and
// plan_decode_for(..., small_rings = false) stay on the rings. No GPU needed.
TEST(DecodePlanner, SkipWalksOnSmallRingsUnderAWave) {
  SkipPolicy seeded = seeded_policy();
  struct Case {
    int hq, hkv, batch, len;
    bool small;
    int ctas, splits;
  };
  const int sms = kH200Sms;
  const Case cases[] = {
      {32, 8, 8, 32768, true, 3, 3 * sms / 64},    // ring plan 2 splits (128 CTAs) -> 6 (43 tiles)
      {32, 8, 8, 8192, true, 2, 2 * sms / 64},     // 3 a SM: 11 tiles; 2 a SM: 4 chunks of 16
      {32, 8, 16, 32768, true, 3, 3 * sms / 128},  // 128 groups: 3 chunks of 86 tiles
      {32, 8, 8, 131072, true, 3, 3 * sms / 64},   // 6 chunks of 171 tiles (ring plan: 8)
      {32, 8, 4, 131072, true, 3, 3 * sms / 32},   // 12 of 86
      {32, 8, 2, 131072, true, 3, 3 * sms / 16},   // 24 of 43
      {32, 8, 1, 131072, true, 3, 3 * sms / 8},    // 49 of 21
      {32, 8, 1, 32768, false, 1, sms / 8},        // 3 a SM: 49 chunks of 6 tiles; 2: 33 of 8; ring 16
      {32, 8, 1, 8192, false, 1, sms / 8},         // 32 chunks of 2 tiles: ring 16
      {16, 8, 8, 32768, true, 3, 3 * sms / 64},    // 2 rows a group
      {64, 8, 8, 32768, true, 3, 3 * sms / 64},    // 8 rows a group
      {64, 8, 8, 8192, false, 1, sms / 64},        // 8 rows, 11-tile chunks: not on two a SM
      {128, 8, 8, 32768, false, 1, sms / 64},      // 16 rows a group
      {8, 1, 8, 32768, false, 1, sms / 8},         // MQA
      {8, 1, 64, 131072, true, 3, 3 * sms / 64},   // MQA, 6 chunks of 171 tiles (ring plan: 8)
      {8, 1, 64, 32768, true, 2, 2 * sms / 64},    // MQA, 3 a SM: 43-tile chunks; 2 a SM: 4 of 64
      {8, 1, 16, 131072, true, 2, 2 * sms / 16},   // MQA, 2 a SM: 16 chunks of 64 tiles
      {8, 1, 8, 131072, false, 1, sms / 8},        // MQA, 2 a SM: 33 chunks of 32 tiles: the ring plan
      {8, 1, 32, 32768, false, 1, sms / 32},       // MQA, 2 a SM: 8 chunks of 32 tiles: the ring plan
      {8, 1, 4, 131072, false, 1, sms / 4},        // MQA, 2 a SM: 66 chunks of 16: the ring plan
      {32, 8, 64, 32768, true, 3, 3},              // a wave or more: the many-waves rule
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.hq) + "/" + std::to_string(c.hkv) + " batch " + std::to_string(c.batch) + " len " +
                 std::to_string(c.len));
    const cuda::DecodePlan plan = plan_shape(c.hq, c.hkv, c.batch, c.len, seeded);
    EXPECT_EQ(plan.small_rings, c.small);
    EXPECT_EQ(plan.ctas_per_sm, c.ctas);
    EXPECT_EQ(plan.splits, c.splits);
  }
  SkipPolicy plain = SkipPolicy::with_scale_factor(64.0);
  EXPECT_FALSE(plan_shape(32, 8, 8, 32768, plain).small_rings);  // no max seeding
  seeded.order = VisitOrder::forward;
  seeded.splits = 0;  // the planner's count, as plan_shape asks
  const cuda::DecodePlan off =
      cuda::plan_decode_for(shape_problem(32, 8, 8, 32768), 32768, seeded, kH200Sms, kH200SmemPerSm, false);
  EXPECT_FALSE(off.small_rings);
  EXPECT_EQ(off.splits, sms / 64);
  SkipPolicy dense;
  dense.order = VisitOrder::forward;
  dense.splits = 0;
  const cuda::DecodePlan dense_off =
      cuda::plan_decode_for(shape_problem(32, 8, 8, 32768), 32768, dense, kH200Sms, kH200SmemPerSm, false);
  EXPECT_FALSE(dense_off.small_rings);
  EXPECT_EQ(dense_off.splits, sms / 64);
}

// The L2 evict-first policy is a cache hint only: the same step gives the same bits, dense and with
// the skip (and the same decisions).
TEST(CudaDecode, L2EvictFirstIsBitIdentical) {
  REQUIRE_HOPPER();
  const PagedBatch x = make_paged(fresh_seed(), {9000, 4097}, 1, 8, 1, 128, 64, DType::bf16, true);
  for (double a : {0.0, 16.0}) {
    SkipPolicy pol = a > 0 ? SkipPolicy::with_scale_factor(a) : SkipPolicy{};
    pol.order = VisitOrder::forward;
    pol.max_seed = a > 0;
    const GpuRun plain = run_gpu(x, pol, nullptr, nullptr, 0), hinted = run_gpu(x, pol, nullptr, nullptr, 1);
    EXPECT_EQ(plain.o_bits, hinted.o_bits) << "a " << a;
    EXPECT_EQ(plain.mask, hinted.mask) << "a " << a;
  }
}

TEST(CudaDecode, Deterministic) {
  REQUIRE_HOPPER();
  const PagedBatch x = make_paged(fresh_seed(), {20000, 7000, 1}, 1, 32, 8, 128, 64, DType::bf16, true);
  SkipPolicy pol = SkipPolicy::with_scale_factor(16.0);
  pol.order = VisitOrder::forward;
  pol.splits = 0;
  const GpuRun a = run_gpu(x, pol), b = run_gpu(x, pol);
  EXPECT_EQ(a.o_bits, b.o_bits);
  EXPECT_EQ(a.mask, b.mask);
  EXPECT_EQ(a.counters, b.counters);
}

TEST(CudaDecode, ReplayedMaskMatchesCpuReplay) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  const PagedBatch x = make_paged(seed, {3000, 2048}, 1, 32, 8, 128, 64, DType::bf16, false);
  SkipPolicy pol;
  pol.order = VisitOrder::forward;
  pol.splits = 2;
  std::vector<std::uint8_t> mask = run_cpu(x, pol).mask;
  std::mt19937 rng(static_cast<unsigned>(seed));
  for (auto& m : mask)
    if (m == tile_kept && rng() % 3 == 0) m = tile_skipped;
  const GpuRun g = run_gpu(x, pol, mask.data());
  const CpuRun c = run_cpu(x, pol, mask.data());
  EXPECT_LT(rel_l2(g.o, c.o), tolerance(DType::bf16));
}

TEST(CudaDecode, GraphCaptureReplaysTheSameStep) {
  REQUIRE_HOPPER();
  const PagedBatch x = make_paged(fresh_seed(), {8192, 4000, 100}, 1, 32, 8, 128, 64, DType::bf16, true);
  SkipPolicy pol = SkipPolicy::with_scale_factor(16.0);
  pol.order = VisitOrder::forward;
  pol.splits = 0;
  const GpuRun direct = run_gpu(x, pol);

  DeviceBatch dev(x);
  const DecodeProblem p = dev.problem(x);
  const cuda::DecodePlan plan = cuda::plan_decode(p, max_len(x), pol);
  DeviceBuffer<std::uint16_t> o(std::size_t(x.batch) * x.hq * x.d);
  DeviceBuffer<unsigned char> ws(std::max<std::size_t>(plan.workspace_bytes, 1));
  Outputs out;
  out.set_contiguous_strides(p);
  out.o = o.ptr, out.o_dtype = x.dtype;
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  cuda::decode(p, pol, plan, out, ws.ptr, stream);  // first call configures the kernel
  CUDA_OK(cudaStreamSynchronize(stream));
  CUDA_OK(cudaMemset(o.ptr, 0xff, o.n * 2));
  cudaGraph_t graph;
  CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  cuda::decode(p, pol, plan, out, ws.ptr, stream);
  CUDA_OK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) CUDA_OK(cudaGraphLaunch(exec, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  EXPECT_EQ(o.download(), direct.o_bits);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(CudaDecode, UnsupportedCombinationsSaySo) {
  PagedBatch x = make_paged(1, {10}, 1, 8, 2, 128, 16, DType::bf16, false);
  DecodeProblem p = x.problem(nullptr, nullptr, nullptr, nullptr, nullptr);
  SkipPolicy pol;
  pol.order = VisitOrder::forward;
  EXPECT_EQ(cuda::decode_unsupported_reason(p, pol), "");
  p.dtype = DType::f32;
  EXPECT_NE(cuda::decode_unsupported_reason(p, pol), "");
  p.dtype = DType::bf16;
  pol.block_k = 64;
  EXPECT_NE(cuda::decode_unsupported_reason(p, pol), "");
  pol.block_k = 128;
  pol.order = VisitOrder::reverse;
  EXPECT_NE(cuda::decode_unsupported_reason(p, pol), "");
  pol.order = VisitOrder::forward;
  p.head_dim_qk = p.head_dim_v = 96;
  EXPECT_NE(cuda::decode_unsupported_reason(p, pol), "");
  p.head_dim_qk = p.head_dim_v = 128;
  p.num_heads_q = 64, p.q_tokens = 4;  // 128 rows: a cluster of 2
  EXPECT_EQ(cuda::decode_unsupported_reason(p, pol), "");
  p.q_tokens = 8;  // 256 rows: a cluster of 4
  EXPECT_EQ(cuda::decode_unsupported_reason(p, pol), "");
  p.num_heads_q = 128, p.num_heads_kv = 1, p.q_tokens = 8;  // 1024 rows: a cluster of 8
  EXPECT_EQ(cuda::decode_unsupported_reason(p, pol), "");
  p.num_heads_q = 129;  // 1032 rows: more than 8 CTAs
  EXPECT_NE(cuda::decode_unsupported_reason(p, pol), "");
  p.num_heads_q = 32, p.head_dim_qk = p.head_dim_v = 256;  // 256 rows at head dim 256: 8 CTAs
  EXPECT_EQ(cuda::decode_unsupported_reason(p, pol), "");
  p.num_heads_q = 33;  // 264
  EXPECT_NE(cuda::decode_unsupported_reason(p, pol), "");
}

}  // namespace
}  // namespace blasst::test
