// The CUDA prefill kernel against the CPU engine; every test skips where no sm_90 GPU is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <thread>

#include "blasst/cuda/prefill.hpp"
#include "cuda/cuda_test_util.hpp"

namespace blasst::test {
namespace {

// A packed varlen batch in 16-bit host arrays; query rows are each sequence's last positions.
struct Packed {
  int hq = 0, hkv = 0, d = 0;
  DType dtype = DType::bf16;
  std::vector<std::int32_t> cu_q{0}, cu_k{0};
  std::vector<std::uint16_t> q, k, v;
  int max_q = 0;
  PrefillProblem problem(const void* qp, const void* kp, const void* vp, const std::int32_t* cq,
                         const std::int32_t* ck, bool causal) const {
    PrefillProblem p;
    p.batch = static_cast<int>(cu_q.size()) - 1, p.cu_seqlens_q = cq, p.cu_seqlens_k = ck;
    p.total_q = cu_q.back(), p.total_k = cu_k.back();
    p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d, p.causal = causal, p.dtype = dtype;
    p.q = qp, p.k = kp, p.v = vp;
    p.set_contiguous_strides();
    return p;
  }
};

Packed make_packed(std::uint64_t seed, const std::vector<std::pair<int, int>>& lens, int hq, int hkv, int d,
                   DType dtype) {
  Packed x;
  x.hq = hq, x.hkv = hkv, x.d = d, x.dtype = dtype;
  for (std::size_t i = 0; i < lens.size(); ++i) {
    const auto [sq, sk] = lens[i];
    SyntheticSpec spec;
    spec.seed = seed + i;
    const SyntheticQKV s = synthetic_qkv(sq, sk, hq, hkv, d, d, spec);
    for (float f : s.q) x.q.push_back(to_bits(f, dtype));
    for (float f : s.k) x.k.push_back(to_bits(f, dtype));
    for (float f : s.v) x.v.push_back(to_bits(f, dtype));
    x.cu_q.push_back(x.cu_q.back() + sq), x.cu_k.push_back(x.cu_k.back() + sk);
    x.max_q = std::max(x.max_q, sq);
  }
  return x;
}

struct Result {
  std::vector<float> o, lse;
  std::vector<std::uint16_t> o_bits;
  std::vector<std::uint8_t> mask;
  std::vector<std::uint64_t> counters;
};

constexpr cuda::PrefillKernel kKernels[] = {cuda::PrefillKernel::wgmma_pingpong, cuda::PrefillKernel::wgmma,
                                             cuda::PrefillKernel::mma_sync};

// K and V of a packed batch in paged caches [pages, page_size, Hkv, d]: pages shuffled, spare
// pages and every slot past a sequence's keys NaN (a read of them would show in O).
struct PagedKV {
  std::vector<std::uint16_t> k, v;
  std::vector<std::int32_t> table;
  int page_size = 0, max_pages = 0, num_pages = 0;
  // p's K and V become these caches (uploaded to kc, vc) with the table at tp.
  void apply(PrefillProblem& p, const void* kc, const void* vc, const std::int32_t* tp) const {
    p.k = kc, p.v = vc, p.block_table = tp;
    p.page_size = page_size, p.max_pages_per_seq = max_pages, p.num_pages = num_pages;
    p.k_stride_page = p.k_stride_token * page_size, p.v_stride_page = p.v_stride_token * page_size;
  }
};
PagedKV page_kv(const Packed& x, int page_size) {
  PagedKV c;
  c.page_size = page_size;
  const int batch = static_cast<int>(x.cu_k.size()) - 1, row = x.hkv * x.d;
  std::vector<int> pages(batch);
  int used = 0;
  for (int b = 0; b < batch; ++b) {
    pages[b] = (x.cu_k[b + 1] - x.cu_k[b] + page_size - 1) / page_size;
    used += pages[b], c.max_pages = std::max(c.max_pages, pages[b]);
  }
  c.max_pages += 1, c.num_pages = used + 3;
  std::vector<std::int32_t> ids(c.num_pages);
  std::iota(ids.begin(), ids.end(), 0);
  std::mt19937_64 gen(fresh_seed());
  std::shuffle(ids.begin(), ids.end(), gen);
  const std::uint16_t nan = x.dtype == DType::bf16 ? 0x7fc0 : 0x7e00;
  c.k.assign(std::size_t(c.num_pages) * page_size * row, nan);
  c.v.assign(c.k.size(), nan);
  c.table.assign(std::size_t(batch) * c.max_pages, -1);
  for (int b = 0, next = 0; b < batch; ++b) {
    for (int i = 0; i < pages[b]; ++i) c.table[std::size_t(b) * c.max_pages + i] = ids[next++];
    for (int j = 0; j < x.cu_k[b + 1] - x.cu_k[b]; ++j) {
      const std::size_t slot = std::size_t(c.table[std::size_t(b) * c.max_pages + j / page_size]) * page_size + j % page_size;
      std::copy_n(x.k.begin() + std::size_t(x.cu_k[b] + j) * row, row, c.k.begin() + slot * row);
      std::copy_n(x.v.begin() + std::size_t(x.cu_k[b] + j) * row, row, c.v.begin() + slot * row);
    }
  }
  return c;
}

// page_size > 0: K and V from paged caches (page_kv) instead of the packed arrays.
Result run_gpu(const Packed& x, bool causal, const SkipPolicy& pol, cuda::PrefillKernel kernel,
            const std::uint8_t* replay = nullptr, int page_size = 0) {
  const PagedKV paged = page_size > 0 ? page_kv(x, page_size) : PagedKV{};
  DeviceBuffer<std::uint16_t> q(x.q), k(page_size > 0 ? paged.k : x.k), v(page_size > 0 ? paged.v : x.v);
  DeviceBuffer<std::int32_t> cq(x.cu_q), ck(x.cu_k), table(paged.table);
  PrefillProblem p = x.problem(q.ptr, k.ptr, v.ptr, cq.ptr, ck.ptr, causal);
  if (page_size > 0) paged.apply(p, k.ptr, v.ptr, table.ptr);
  const PrefillProblem ph = x.problem(nullptr, nullptr, nullptr, x.cu_q.data(), x.cu_k.data(), causal);
  const std::int64_t mask_size = skip_mask_layout(ph, 64, pol.block_k).size();
  const cuda::PrefillPlan plan = cuda::plan_prefill(p, x.max_q, pol, kernel);
  const std::size_t rows = std::size_t(p.total_q) * x.hq;
  DeviceBuffer<std::uint16_t> o(rows * x.d + 1);
  DeviceBuffer<float> lse(rows + 1);
  DeviceBuffer<std::uint64_t> counters(std::size_t(p.batch) * x.hq * 2);
  DeviceBuffer<std::uint8_t> mask(mask_size + 1), rep(mask_size + 1);
  cudaMemset(o.ptr, 0xff, o.n * 2);
  cudaMemset(lse.ptr, 0xff, lse.n * 4);
  cudaMemset(mask.ptr, 0, mask.n);
  Outputs out;
  out.set_contiguous_strides(p);
  out.o = o.ptr, out.o_dtype = x.dtype, out.lse = lse.ptr, out.tile_counters = counters.ptr, out.skip_mask = mask.ptr;
  SkipPolicy run_pol = pol;
  if (replay) {
    std::vector<std::uint8_t> h(replay, replay + mask_size);
    h.push_back(0);
    rep.upload(h);
    run_pol.replay_mask = rep.ptr;
  }
  cuda::prefill(p, run_pol, plan, out, nullptr);
  if (cudaDeviceSynchronize() != cudaSuccess) throw std::runtime_error(cudaGetErrorString(cudaGetLastError()));
  Result r;
  r.o_bits = o.download();
  r.o_bits.resize(rows * x.d);
  for (auto b : r.o_bits) r.o.push_back(from_bits(b, x.dtype));
  r.lse = lse.download();
  r.lse.resize(rows);
  r.mask = mask.download();
  r.mask.resize(mask_size);
  r.counters = counters.download();
  return r;
}

Result run_cpu(const Packed& x, bool causal, SkipPolicy pol, const std::uint8_t* replay = nullptr) {
  const PrefillProblem p = x.problem(x.q.data(), x.k.data(), x.v.data(), x.cu_q.data(), x.cu_k.data(), causal);
  Result r;
  r.o.assign(std::size_t(p.total_q) * x.hq * x.d, NAN);
  r.lse.assign(std::size_t(p.total_q) * x.hq, NAN);
  r.mask.assign(skip_mask_layout(p, 64, pol.block_k).size(), 0);
  pol.replay_mask = replay;
  Outputs out;
  out.set_contiguous_strides(p);
  out.o = r.o.data(), out.lse = r.lse.data(), out.skip_mask = r.mask.data();
  cpu::prefill(p, pol, out);
  return r;
}

// float64 dense attention of a packed batch (bottom-right aligned causal mask).
std::vector<double> reference_dense(const Packed& x, bool causal) {
  // The inputs in double once, and the rows spread over threads (each output row is written by one
  // thread, so the result does not depend on the thread count): the one-thread form with a
  // conversion per product took 8-16 s per call and most of the key-tile tests' minutes.
  auto widen = [&](const std::vector<std::uint16_t>& in) {
    std::vector<double> out(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) out[i] = from_bits(in[i], x.dtype);
    return out;
  };
  const std::vector<double> qd = widen(x.q), kd = widen(x.k), vd = widen(x.v);
  const std::int64_t total_q = x.cu_q.back();
  std::vector<double> o(std::size_t(total_q) * x.hq * x.d, 0.0);
  const double scale = 1.0 / std::sqrt(double(x.d));
  std::vector<std::pair<std::size_t, std::int64_t>> rows;  // (sequence, query row)
  for (std::size_t b = 0; b + 1 < x.cu_q.size(); ++b)
    for (std::int64_t i = 0; i < x.cu_q[b + 1] - x.cu_q[b]; ++i) rows.emplace_back(b, i);
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    std::vector<double> s;
    for (std::size_t r; (r = next.fetch_add(1)) < rows.size();) {
      const auto [b, i] = rows[r];
      const std::int64_t sq = x.cu_q[b + 1] - x.cu_q[b], sk = x.cu_k[b + 1] - x.cu_k[b];
      const std::int64_t lim = row_key_limit(causal, i, sq, sk);
      if (lim < 0) continue;
      for (int h = 0; h < x.hq; ++h) {
        const int hk = h / (x.hq / x.hkv);
        const double* q = &qd[((x.cu_q[b] + i) * x.hq + h) * x.d];
        s.assign(lim + 1, 0.0);
        double mx = -INFINITY, sum = 0;
        for (std::int64_t j = 0; j <= lim; ++j) {
          const double* k = &kd[((x.cu_k[b] + j) * x.hkv + hk) * x.d];
          double dot = 0;
          for (int c = 0; c < x.d; ++c) dot += q[c] * k[c];
          mx = std::max(mx, s[j] = dot * scale);
        }
        for (double& v : s) sum += (v = std::exp(v - mx));
        double* out = &o[((x.cu_q[b] + i) * x.hq + h) * x.d];
        for (std::int64_t j = 0; j <= lim; ++j) {
          const double* v = &vd[((x.cu_k[b] + j) * x.hkv + hk) * x.d];
          const double w = s[j] / sum;
          for (int c = 0; c < x.d; ++c) out[c] += w * v[c];
        }
      }
    }
  };
  std::vector<std::thread> pool(std::max(1u, std::min(16u, std::thread::hardware_concurrency())) - 1);
  for (std::thread& t : pool) t = std::thread(work);
  work();
  for (std::thread& t : pool) t.join();
  return o;
}

// Every kernel against the CPU engine: decisions (boundary ties aside), counters, and the output
// against the CPU engine replaying the kernel's own mask.
void check(const Packed& x, bool causal, const SkipPolicy& pol, std::uint64_t seed) {
  const Result c = run_cpu(x, causal, pol);
  const PrefillProblem ph = x.problem(nullptr, nullptr, nullptr, x.cu_q.data(), x.cu_k.data(), causal);
  for (cuda::PrefillKernel kernel : kKernels) {
    if (!cuda::prefill_unsupported_reason(ph, pol, kernel).empty()) continue;  // mma_sync: no head dim 256
    char what[200];
    std::snprintf(what, sizeof what, "kernel %s seed %llu Hq %d Hkv %d d %d %s causal %d order %s value %g",
                  cuda::to_string(kernel), static_cast<unsigned long long>(seed), x.hq, x.hkv, x.d,
                  to_string(x.dtype), int(causal), to_string(pol.order), pol.value);
    SCOPED_TRACE(what);
    const Result g = run_gpu(x, causal, pol, kernel);
    std::int64_t visited = 0, mism = 0, skipped = 0;
    for (std::size_t i = 0; i < c.mask.size(); ++i) {
      visited += c.mask[i] != tile_unvisited;
      skipped += g.mask[i] == tile_skipped;
      mism += c.mask[i] != g.mask[i];
    }
    EXPECT_LE(mism, std::max<std::int64_t>(1, visited / 1000)) << "of " << visited;
    std::int64_t cv = 0, cs = 0;
    for (std::size_t i = 0; i < g.counters.size(); i += 2) cv += g.counters[i], cs += g.counters[i + 1];
    EXPECT_EQ(cv, visited);
    EXPECT_EQ(cs, skipped);
    const Result rep = run_cpu(x, causal, pol, g.mask.data());
    for (float v : g.o) ASSERT_FALSE(std::isnan(v)) << "an output element was not written";
    EXPECT_LT(rel_l2(g.o, rep.o), x.dtype == DType::bf16 ? 1.2e-2 : 2.5e-3);
    int bad_lse = 0;  // report the first few rows only
    for (std::size_t i = 0; i < g.lse.size() && bad_lse < 5; ++i) {
      const bool ok = std::isinf(rep.lse[i]) ? std::isinf(g.lse[i]) && g.lse[i] < 0
                                             : std::fabs(g.lse[i] - rep.lse[i]) <= 2e-3 + 1e-4 * std::fabs(rep.lse[i]);
      EXPECT_TRUE(ok) << "row " << i << ": lse " << g.lse[i] << ", CPU engine " << rep.lse[i];
      bad_lse += !ok;
    }
  }
}

SkipPolicy policy(double a, VisitOrder order, int head_dim = 128) {
  SkipPolicy p = a > 0 ? SkipPolicy::with_scale_factor(a) : SkipPolicy{};
  p.block_q = 64, p.block_k = prefill_block_k(head_dim), p.order = order;
  return p;
}

// The policy as a kernel takes it: the mma_sync kernel has 128-key tiles only (the default at head
// dim 128 is 192), which changes nothing for dense runs and thresholds of 0.
SkipPolicy for_kernel(SkipPolicy pol, cuda::PrefillKernel kernel) {
  if (kernel == cuda::PrefillKernel::mma_sync) pol.block_k = 128;
  return pol;
}

TEST(CudaPrefill, MatchesCpuEngineAcrossShapes) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  for (DType dt : {DType::bf16, DType::f16})
    for (int d : {64, 128, 256})
      for (auto [hq, hkv] : std::vector<std::pair<int, int>>{{8, 8}, {8, 2}, {16, 2}, {16, 1}}) {
        const Packed x = make_packed(seed + d + hq, {{1, 1}, {17, 300}, {0, 40}, {1013, 1013}, {300, 2000}, {300, 100}},
                                     hq, hkv, d, dt);
        for (VisitOrder order : {VisitOrder::reverse, VisitOrder::sink_first, VisitOrder::forward}) {
          check(x, true, policy(0, order, d), seed);
          check(x, true, policy(8, order, d), seed);
        }
        check(x, false, policy(8, VisitOrder::reverse, d), seed);
      }
}

// Paged K and V (chunked prefill against an engine's cache): the same bits, decisions and counts as
// the packed keys, on ragged batches with empty sequences, at page sizes that make boxes of 1, 16,
// 64 and 4 slots (100: gcd with the tile) and tails of single slots.
TEST(CudaPrefill, PagedEqualsPacked) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  for (int d : {64, 128, 256}) {
    const Packed x = make_packed(seed + d, {{17, 300}, {0, 40}, {300, 1013}, {1, 1}, {200, 200}}, 8, 2, d, DType::bf16);
    for (const SkipPolicy& pol : {policy(0, VisitOrder::reverse, d), policy(8, VisitOrder::reverse, d),
                                  policy(8, VisitOrder::sink_first, d)}) {
      const Result base = run_gpu(x, true, pol, cuda::PrefillKernel::wgmma_pingpong);
      for (int ps : {1, 16, 64, 100}) {
        SCOPED_TRACE(::testing::Message() << "seed " << seed << " d " << d << " page size " << ps << " a "
                                          << pol.value << " order " << int(pol.order));
        const Result r = run_gpu(x, true, pol, cuda::PrefillKernel::wgmma_pingpong, nullptr, ps);
        EXPECT_EQ(r.o_bits, base.o_bits);
        EXPECT_EQ(std::memcmp(r.lse.data(), base.lse.data(), r.lse.size() * 4), 0);
        EXPECT_EQ(r.mask, base.mask);
        EXPECT_EQ(r.counters, base.counters);
      }
    }
  }
  // A plan made for packed keys on another kernel refuses a paged problem (it would hang there).
  {
    const Packed x = make_packed(seed, {{64, 64}}, 8, 2, 128, DType::bf16);
    const PagedKV paged = page_kv(x, 16);
    DeviceBuffer<std::uint16_t> q(x.q), k(paged.k), v(paged.v), o(x.q.size());
    DeviceBuffer<std::int32_t> cq(x.cu_q), ck(x.cu_k), table(paged.table);
    PrefillProblem p = x.problem(q.ptr, k.ptr, v.ptr, cq.ptr, ck.ptr, true);
    const SkipPolicy pol = policy(0, VisitOrder::reverse);
    const cuda::PrefillPlan plan = cuda::plan_prefill(p, x.max_q, pol, cuda::PrefillKernel::wgmma);
    paged.apply(p, k.ptr, v.ptr, table.ptr);
    Outputs out;
    out.set_contiguous_strides(p);
    out.o = o.ptr, out.o_dtype = DType::bf16;
    EXPECT_THROW(cuda::prefill(p, pol, plan, out, nullptr), Error);
  }
  // Non-causal, and float16.
  const Packed h = make_packed(seed, {{100, 500}, {64, 64}}, 4, 1, 128, DType::f16);
  const Result base = run_gpu(h, false, policy(8, VisitOrder::reverse), cuda::PrefillKernel::wgmma_pingpong);
  const Result r = run_gpu(h, false, policy(8, VisitOrder::reverse), cuda::PrefillKernel::wgmma_pingpong, nullptr, 32);
  EXPECT_EQ(r.o_bits, base.o_bits);
  EXPECT_EQ(r.mask, base.mask);
}

TEST(CudaPrefill, LongCausal) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  check(make_packed(seed, {{8192, 8192}}, 8, 2, 128, DType::bf16), true, policy(16, VisitOrder::reverse), seed);
}

TEST(CudaPrefill, LongRaggedBatch) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  const Packed x = make_packed(seed, {{33000, 33000}, {0, 0}, {17, 17}, {1013, 8192}, {0, 5}}, 2, 1, 128, DType::bf16);
  check(x, true, policy(64, VisitOrder::reverse), seed);
  check(x, false, policy(0, VisitOrder::sink_first), seed);
}

// Dense output against float64 attention computed here from the same 16-bit inputs.
TEST(CudaPrefill, DenseMatchesFloat64) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  for (DType dt : {DType::bf16, DType::f16})
    for (int d : {64, 128, 256}) {
      const Packed x = make_packed(seed + d, {{333, 333}, {70, 1100}, {5, 1}}, 4, 2, d, dt);
      for (bool causal : {true, false}) {
        const std::vector<double> ref = reference_dense(x, causal);
        for (cuda::PrefillKernel kernel : kKernels) {
          if (kernel == cuda::PrefillKernel::mma_sync && d == 256) continue;
          SCOPED_TRACE(std::string(cuda::to_string(kernel)) + " d " + std::to_string(d) + " " + to_string(dt) +
                       " causal " + std::to_string(causal) + " seed " + std::to_string(seed));
          const Result g = run_gpu(x, causal, for_kernel(policy(0, VisitOrder::reverse, d), kernel), kernel);
          EXPECT_LT(rel_l2(g.o, ref), dt == DType::bf16 ? 1e-2 : 2e-3);
        }
      }
    }
}

TEST(CudaPrefill, ThresholdZeroIsBitIdenticalAndDeterministic) {
  REQUIRE_HOPPER();
  const Packed x = make_packed(fresh_seed(), {{700, 900}, {64, 64}}, 8, 2, 128, DType::bf16);
  SkipPolicy zero = policy(0, VisitOrder::reverse);
  zero.mode = SkipPolicy::Mode::threshold;
  for (cuda::PrefillKernel kernel : kKernels) {
    SCOPED_TRACE(cuda::to_string(kernel));
    const SkipPolicy dense = for_kernel(policy(0, VisitOrder::reverse), kernel),
                     skip = for_kernel(policy(8, VisitOrder::reverse), kernel);
    EXPECT_EQ(run_gpu(x, true, dense, kernel).o_bits, run_gpu(x, true, for_kernel(zero, kernel), kernel).o_bits);
    EXPECT_EQ(run_gpu(x, true, skip, kernel).o_bits, run_gpu(x, true, skip, kernel).o_bits);
  }
}

// A policy that may skip runs the kernel's vote variant (kVote), dense runs the other one: where
// the vote keeps every tile (a threshold of 1e-30, far below any weight here), the two must give
// the same bits, and the counters must say nothing was skipped. Head dims 64, 128 and 256 (the
// three-warpgroup and both ping-pong geometries), causal and not.
TEST(CudaPrefill, VoteKernelThatSkipsNothingIsBitIdenticalToDense) {
  REQUIRE_HOPPER();
  const std::uint64_t seed = fresh_seed();
  for (int d : {64, 128, 256}) {
    const Packed x = make_packed(seed + d, {{700, 900}, {64, 64}, {1, 300}}, 8, 2, d, DType::bf16);
    SkipPolicy keep_all = policy(0, VisitOrder::reverse, d);
    keep_all.mode = SkipPolicy::Mode::threshold;
    keep_all.value = 1e-30;
    for (bool causal : {true, false})
      for (cuda::PrefillKernel kernel : kKernels) {
        if (kernel == cuda::PrefillKernel::mma_sync && d == 256) continue;
        SCOPED_TRACE(std::string(cuda::to_string(kernel)) + " d " + std::to_string(d) + " causal " +
                     std::to_string(causal) + " seed " + std::to_string(seed));
        const Result dense = run_gpu(x, causal, for_kernel(policy(0, VisitOrder::reverse, d), kernel), kernel);
        const Result vote = run_gpu(x, causal, for_kernel(keep_all, kernel), kernel);
        std::uint64_t visited = 0, skipped = 0;
        for (std::size_t i = 0; i < vote.counters.size(); i += 2) visited += vote.counters[i], skipped += vote.counters[i + 1];
        EXPECT_GT(visited, 0u);
        EXPECT_EQ(skipped, 0u);
        EXPECT_EQ(dense.o_bits, vote.o_bits);
      }
  }
}

// Key tiles of bk at head dim d beside its default, with the given kernels: decisions and output
// against the CPU engine with the same geometry, and dense against float64.
void check_key_tiles(int d, int bk, const std::vector<cuda::PrefillKernel>& kernels) {
  const std::uint64_t seed = fresh_seed();
  for (DType dt : {DType::bf16, DType::f16}) {
    const Packed x = make_packed(seed + int(dt), {{1, 1}, {17, 300}, {0, 40}, {1013, 1013}, {300, 2000}, {177, 176}},
                                 16, 2, d, dt);
    for (bool causal : {true, false})
      for (double a : {0.0, 8.0}) {
        SkipPolicy pol = policy(a, causal ? VisitOrder::reverse : VisitOrder::sink_first, d);
        pol.block_k = bk;
        check(x, causal, pol, seed);
      }
    for (bool causal : {true, false}) {
      const std::vector<double> ref = reference_dense(x, causal);
      SkipPolicy pol = policy(0, VisitOrder::reverse, d);
      pol.block_k = bk;
      for (cuda::PrefillKernel kernel : kernels) {
        SCOPED_TRACE(std::string(cuda::to_string(kernel)) + " " + to_string(dt) + " causal " + std::to_string(causal) +
                     " seed " + std::to_string(seed));
        const Result g = run_gpu(x, causal, pol, kernel);
        EXPECT_LT(rel_l2(g.o, ref), dt == DType::bf16 ? 1e-2 : 2e-3);
      }
    }
  }
}

// 128-key tiles (policy block_k 128): every kernel, the mma_sync one included.
TEST(CudaPrefill, KeyTilesOf128AtHeadDim128) {
  REQUIRE_HOPPER();
  check_key_tiles(128, 128, {std::begin(kKernels), std::end(kKernels)});
}

// 176-key tiles (policy block_k 176; FA3's non-causal tile, the default until 2026-11-30; the
// other tests run the default, 192): the wgmma kernels.
TEST(CudaPrefill, KeyTilesOf176AtHeadDim128) {
  REQUIRE_HOPPER();
  check_key_tiles(128, 176, {cuda::PrefillKernel::wgmma_pingpong, cuda::PrefillKernel::wgmma});
}

// 64-key tiles at head dim 256 (policy block_k 64, the default until 2026-11-30; the other tests
// run the default, 80): the wgmma kernels.
TEST(CudaPrefill, KeyTilesOf64AtHeadDim256) {
  REQUIRE_HOPPER();
  check_key_tiles(256, 64, {cuda::PrefillKernel::wgmma_pingpong, cuda::PrefillKernel::wgmma});
}

TEST(CudaPrefill, UnsupportedCombinationsSaySo) {
  const Packed x = make_packed(1, {{10, 10}}, 4, 2, 64, DType::bf16);
  PrefillProblem p = x.problem(nullptr, nullptr, nullptr, nullptr, nullptr, true);
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 64)), "");
  SkipPolicy pol = policy(0, VisitOrder::reverse, 64);
  pol.block_q = 32;
  EXPECT_NE(cuda::prefill_unsupported_reason(p, pol), "");
  p.dtype = DType::f32;
  EXPECT_NE(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 64)), "");
  p.dtype = DType::bf16;
  p.head_dim_qk = p.head_dim_v = 256;  // 80-key tiles there
  EXPECT_EQ(prefill_block_k(256), 80);
  EXPECT_NE(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 64)), "");
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 256)), "");
  SkipPolicy narrow = policy(0, VisitOrder::reverse, 256);  // and 64 with the wgmma kernels
  narrow.block_k = 64;
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, narrow), "");
  EXPECT_NE(cuda::prefill_unsupported_reason(p, narrow, cuda::PrefillKernel::mma_sync), "");
  narrow.block_k = 96;
  EXPECT_NE(cuda::prefill_unsupported_reason(p, narrow), "");
  EXPECT_NE(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 256), cuda::PrefillKernel::mma_sync), "");
  p.head_dim_qk = p.head_dim_v = 96;
  EXPECT_NE(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 96)), "");
  SkipPolicy wide = policy(0, VisitOrder::reverse);  // head dim 128: 192-key tiles by default
  EXPECT_EQ(prefill_block_k(128), 192);
  EXPECT_EQ(wide.block_k, 192);
  p.head_dim_qk = p.head_dim_v = 128;
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, wide), "");
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, wide, cuda::PrefillKernel::wgmma), "");
  EXPECT_NE(cuda::prefill_unsupported_reason(p, wide, cuda::PrefillKernel::mma_sync), "");
  wide.block_k = 128;  // and 128 on request, with every kernel
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, wide), "");
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, wide, cuda::PrefillKernel::mma_sync), "");
  wide.block_k = 176;  // and 176 with the wgmma kernels
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, wide), "");
  EXPECT_NE(cuda::prefill_unsupported_reason(p, wide, cuda::PrefillKernel::mma_sync), "");
  wide.block_k = 160;
  EXPECT_NE(cuda::prefill_unsupported_reason(p, wide), "");
  p.head_dim_qk = p.head_dim_v = 64;
  wide.block_k = 176;
  EXPECT_NE(cuda::prefill_unsupported_reason(p, wide), "");
  // Paged K and V (a block table): the ping-pong kernel with its default tile only.
  const std::int32_t table[1] = {0};
  p.block_table = table, p.page_size = 16, p.max_pages_per_seq = 1, p.num_pages = 1;
  p.k_stride_page = p.k_stride_token * 16, p.v_stride_page = p.v_stride_token * 16;
  EXPECT_EQ(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 64)), "");
  EXPECT_NE(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 64), cuda::PrefillKernel::wgmma), "");
  EXPECT_NE(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 64), cuda::PrefillKernel::mma_sync),
            "");
  p.k_stride_page += 4;
  EXPECT_NE(cuda::prefill_unsupported_reason(p, policy(0, VisitOrder::reverse, 64)), "");
}

}  // namespace
}  // namespace blasst::test
