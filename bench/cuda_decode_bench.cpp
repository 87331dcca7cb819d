// CUDA decode benchmark: our kernel dense and with the skip on generated inputs (sinks, locality,
// needles: include/blasst/synthetic.hpp), bf16, head dim 128 (--head-dim), page size 64, shuffled pages.
// Prints a table and writes CSV rows (to the file named by --csv). bench/sdpa_decode_peer.py times
// PyTorch SDPA (cuDNN, flash) on the same shapes in the same device call.
// Cache layouts: nhd = [pages, page_size, Hkv, d] (vLLM's), hnd = [pages, Hkv, page_size, d]
// (each head's page contiguous, as FlashInfer's HND).
//
//   blasst_cuda_decode_bench [--quick] [--layout nhd|hnd] [--page N] [--ordered] [--warm S] [--csv FILE]
//                            [--one HQ,HKV,BATCH,LEN [--splits N] [--target S]] [--rotate K] [--l2-evict-first 0|1] [--small-rings 0|1]
//                            [--small-ctas 2|3] [--distinct K] [--head-dim D] [--inputs DIR [--batches B1,B2,..]]
// --page: page size (default 64); --ordered: pages in order instead of shuffled; --warm: seconds of
// replays before each timing (default 0.2; steady clocks, as cuda_prefill_bench --warm).
// --rotate K: K copies of the cache (K times the memory), the timed calls taking them in turn, so
// that no call finds the previous call's lines in L2. Without it a step whose K + V is a few times
// L2 (50 MB; e.g. 8/1 batch 8 32K, 134 MB) may find part of the last replay's in L2, which a
// server (other layers in between) never does. Default 1: the same cache every call.
// --one runs one shape dense and at a = 64 (max seeding on); --splits N fixes the split count of
// both (default 0: the planner's); --target S instead runs the skip at the scale factor that
// reaches tile sparsity S with those splits (bisection, as the full run's "s=" rows).
// --l2-evict-first 0|1: every plan's DecodePlan::l2_evict_first (the cache's loads carry an L2
// evict-first policy; the planner's default is 1), so one binary A/Bs it
// (scripts/ab-bench.sh "off=DIR@--l2-evict-first 0").
// --small-rings 0: every policy runs on the ring kernel with its plan (plan_decode_for(...,
// small_rings = false)) even where the planner takes two CTAs of one K and one V stage per SM
// (DecodePlan::small_rings), for an A/B.
// --small-rings 1: every policy runs on the small rings wherever the kernel has them (head dim
// 128, one row warp, one CTA per group), with the planner's splits or --splits, for the
// planner's rules.
// --small-ctas 2|3: with --small-rings 1, the small rings at two or three CTAs per SM
// (DecodePlan::ctas_per_sm; default: the plan's where it has small rings, else 2).
// --head-dim D: the generated shapes' head dim (default 128; 64 and 256 too).
// --distinct K: K different generated sequences (generator seeds 1..K), sequence b of the batch
// holding number b % K; default 1, every sequence the same one. With one sequence the groups of
// one KV head all carry the same kept tiles (MQA: every group), which a server's batch does not.
// With BLASST_BENCH_PROFILE=1 in the environment, each timed policy runs one more step between
// cudaProfilerStart and cudaProfilerStop, for `ncu --profile-from-start off` (scripts/gpu-check.sh
// decode-bytes): the profile then holds exactly one dense step and one skip step.
//
// --inputs DIR: instead of generated sequences, one captured context: DIR/k.npy and DIR/v.npy
// ([L, Hkv, d]) and DIR/q.npy ([T, Hq, d], the queries of positions L - T .. L - 1), float32 or
// float16, e.g. a real model's tensors (scripts/capture_bench_inputs.py). Sequence b of a batch decodes
// the query of position L - 1 - (b % T) over its own copy of the keys before it (length L - (b % T)),
// so a batch of up to T sequences holds T different decode steps of one text. Heads and head dim
// come from the files (--head-dim does not apply); --batches B1,B2,.. (default 1,8,64) are the
// batch sizes, each run dense and at the 50 / 70 / 90 % rows. `sdpa_decode_peer.py --real DIR`
// times the peers on the same tensors.
//
// Each shape runs dense, a scale-factor sweep with max seeding, and (full run) the scale factors
// that reach 50, 70 and 90 % tile sparsity ("s=0.7" rows, found by bisection).
#include <cuda_bf16.h>
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/cuda/decode.hpp"
#include "blasst/synthetic.hpp"
#include "cuda_bench_util.hpp"

namespace {

using namespace blasst;

using bench::bf16_bits;

struct Shape {
  int hq, hkv, batch, len, d = 128;
};

struct Setup {
  Shape s;
  DecodeProblem p;
  std::uint16_t *q = nullptr, *kc = nullptr, *vc = nullptr, *o = nullptr;
  std::int32_t* lens = nullptr;
  std::uint64_t* counters = nullptr;
  std::size_t bytes = 0;  // dense K + V bytes
  // The block tables: tables[c] maps the batch onto copy c of the pages (--rotate; one without).
  std::vector<std::int32_t*> tables;
};

// --inputs: the captured context (k, v: [L, Hkv, d]; q: [T, Hq, d]), empty without.
bench::FloatArray g_in_q, g_in_k, g_in_v;
int g_page = 64;         // --page
bool g_hnd = true;
double g_warm = 0.2;     // --warm
int g_rotate = 1;        // --rotate
int g_evict_first = -1;  // --l2-evict-first 0|1 (-1: the planner's choice)
int g_small_rings = -1;  // --small-rings 0|1 (-1: the planner's choice)
int g_small_ctas = 0;    // --small-ctas 2|3 (0: the plan's)
bool g_shuffle = true;  // --ordered: each sequence's pages in order, sequences one after another
int g_distinct = 1;     // --distinct: generated sequences, taken in turn by the batch

// g_distinct generated sequences, uploaded once; sequence b of the batch gets a copy of number
// b % g_distinct in its own pages.
bool make_setup(const Shape& s, Setup& st) {
  st.s = s;
  const bool real = !g_in_k.x.empty();
  const int kD = s.d, T = real ? static_cast<int>(g_in_q.shape[0]) : 1;
  const int pages_per = (s.len + g_page - 1) / g_page;
  const std::size_t slot = std::size_t(s.hkv) * kD, page_elems = std::size_t(g_page) * slot;
  const std::size_t total_pages = std::size_t(s.batch) * pages_per;
  // Sequence lengths: with --inputs, sequence b decodes position L - 1 - (b % T).
  std::vector<std::int32_t> lens(s.batch, s.len);
  if (real)
    for (int b = 0; b < s.batch; ++b) lens[b] = s.len - b % T;
  st.bytes = 0;
  for (int b = 0; b < s.batch; ++b) st.bytes += std::size_t(lens[b]) * slot * 2 * 2;
  std::size_t free_b = 0, total_b = 0;
  CK(cudaMemGetInfo(&free_b, &total_b));
  if (std::size_t(s.batch) * s.len * slot * 4 * g_rotate + (64ull << 20) > free_b * 0.9) return false;
  const int nd = real ? 1 : std::max(1, std::min(g_distinct, s.batch));
  const std::size_t seq_elems = std::size_t(pages_per) * page_elems;
  std::vector<std::uint16_t> k1(nd * seq_elems, 0), v1(k1.size(), 0), qd(std::size_t(nd) * s.hq * kD);
  for (int d = 0; d < nd; ++d) {
    SyntheticQKV x;  // generated; with --inputs the captured context is read in place (queries below)
    if (!real) {
      SyntheticSpec spec;
      spec.seed = 1 + std::uint64_t(d);
      x = synthetic_qkv(1, s.len, s.hq, s.hkv, kD, kD, spec);
    }
    const float *xk = real ? g_in_k.x.data() : x.k.data(), *xv = real ? g_in_v.x.data() : x.v.data();
    for (int j = 0; j < s.len; ++j)
      for (int hh = 0; hh < s.hkv; ++hh) {
        const std::size_t src = (std::size_t(j) * s.hkv + hh) * kD;
        const std::size_t dst =
            d * seq_elems + (g_hnd ? (std::size_t(j / g_page) * s.hkv + hh) * g_page * kD + std::size_t(j % g_page) * kD : src);
        for (int c = 0; c < kD; ++c) k1[dst + c] = bf16_bits(xk[src + c]), v1[dst + c] = bf16_bits(xv[src + c]);
      }
    if (!real)
      for (std::size_t i = 0; i < std::size_t(s.hq) * kD; ++i) qd[d * std::size_t(s.hq) * kD + i] = bf16_bits(x.q[i]);
  }
  std::vector<std::uint16_t> q(std::size_t(s.batch) * s.hq * kD);
  const std::size_t qn = std::size_t(s.hq) * kD;
  for (int b = 0; b < s.batch; ++b)
    for (std::size_t i = 0; i < qn; ++i)
      q[b * qn + i] = real ? bf16_bits(g_in_q.x[std::size_t(T - 1 - b % T) * qn + i]) : qd[(b % nd) * qn + i];
  // Pages of sequence b are a shuffled set (in order with --ordered); its contents are generated
  // sequence b % nd's pages.
  std::vector<std::int32_t> perm(total_pages);
  std::iota(perm.begin(), perm.end(), 0);
  if (g_shuffle) std::shuffle(perm.begin(), perm.end(), std::mt19937(7));
  CK(cudaMalloc(&st.kc, total_pages * g_rotate * page_elems * 2));
  CK(cudaMalloc(&st.vc, total_pages * g_rotate * page_elems * 2));
  std::uint16_t *k_dev, *v_dev;
  CK(cudaMalloc(&k_dev, k1.size() * 2));
  CK(cudaMalloc(&v_dev, v1.size() * 2));
  CK(cudaMemcpy(k_dev, k1.data(), k1.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(v_dev, v1.data(), v1.size() * 2, cudaMemcpyHostToDevice));
  for (std::size_t i = 0; i < total_pages; ++i) {
    const std::size_t b = i / pages_per;
    const std::size_t src = (b % nd) * seq_elems + (i % pages_per) * page_elems, dst = std::size_t(perm[i]) * page_elems;
    CK(cudaMemcpyAsync(st.kc + dst, k_dev + src, page_elems * 2, cudaMemcpyDeviceToDevice));
    CK(cudaMemcpyAsync(st.vc + dst, v_dev + src, page_elems * 2, cudaMemcpyDeviceToDevice));
  }
  for (int c = 1; c < g_rotate; ++c) {  // --rotate: copies of the pages, after the first copy's
    CK(cudaMemcpyAsync(st.kc + c * total_pages * page_elems, st.kc, total_pages * page_elems * 2,
                       cudaMemcpyDeviceToDevice));
    CK(cudaMemcpyAsync(st.vc + c * total_pages * page_elems, st.vc, total_pages * page_elems * 2,
                       cudaMemcpyDeviceToDevice));
  }
  CK(cudaDeviceSynchronize());
  CK(cudaFree(k_dev));
  CK(cudaFree(v_dev));
  CK(cudaMalloc(&st.q, q.size() * 2));
  CK(cudaMemcpy(st.q, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  st.tables.assign(g_rotate, nullptr);
  for (int c = 0; c < g_rotate; ++c) {
    std::vector<std::int32_t> tc(perm);
    for (auto& t : tc) t += static_cast<std::int32_t>(c * total_pages);
    CK(cudaMalloc(&st.tables[c], tc.size() * 4));
    CK(cudaMemcpy(st.tables[c], tc.data(), tc.size() * 4, cudaMemcpyHostToDevice));
  }
  CK(cudaMalloc(&st.lens, lens.size() * 4));
  CK(cudaMemcpy(st.lens, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&st.o, q.size() * 2));
  CK(cudaMalloc(&st.counters, std::size_t(s.batch) * s.hkv * 2 * 8));
  DecodeProblem& p = st.p;
  p.batch = s.batch, p.q_tokens = 1, p.num_heads_q = s.hq, p.num_heads_kv = s.hkv;
  p.head_dim_qk = p.head_dim_v = kD, p.dtype = DType::bf16;
  p.num_pages = static_cast<int>(total_pages * g_rotate), p.page_size = g_page, p.max_pages_per_seq = pages_per;
  p.q = st.q, p.k_cache = st.kc, p.v_cache = st.vc, p.block_table = st.tables[0], p.seq_lens = st.lens;
  p.set_contiguous_strides();
  if (g_hnd) {
    p.k_stride_slot = p.v_stride_slot = kD;
    p.k_stride_head = p.v_stride_head = std::int64_t(g_page) * kD;
  }
  return true;
}

void free_setup(Setup& st) {
  for (void* ptr : {(void*)st.q, (void*)st.kc, (void*)st.vc, (void*)st.o, (void*)st.lens, (void*)st.counters})
    cudaFree(ptr);
  for (std::int32_t* t : st.tables) cudaFree(t);
  st.tables.clear();
}

struct Result {
  double ms, sparsity;
  int splits;
  bench::GpuState gpu;  // SM clock and power during the timing
};

// Tile sparsity from the counters of the last decode call that wrote them.
double counted_sparsity(const Setup& st) {
  std::vector<std::uint64_t> c(std::size_t(st.s.batch) * st.s.hkv * 2);
  CK(cudaMemcpy(c.data(), st.counters, c.size() * 8, cudaMemcpyDeviceToHost));
  double visited = 0, skipped = 0;
  for (std::size_t i = 0; i < c.size(); i += 2) visited += c[i], skipped += c[i + 1];
  return visited > 0 ? skipped / visited : 0.0;
}

// Median of `reps` graph replays of `inner` back-to-back decode calls (after one call with the
// counters on, which gives the sparsity). reps == 0: that one call only, no timing.
Result time_policy(Setup& st, const SkipPolicy& pol, int reps, int inner) {
  cuda::DecodePlan plan = cuda::plan_decode(st.p, st.s.len, pol);
  if (g_small_rings == 0 && plan.small_rings) {  // the ring kernel's own plan
    int dev = 0, smem = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
    plan = cuda::plan_decode_for(st.p, st.s.len, pol, plan.sm_count, smem, false);
  }
  if (g_small_rings == 1) {  // run() takes them only where the kernel has them
    if (g_small_ctas > 0) plan.ctas_per_sm = g_small_ctas;
    else if (!plan.small_rings) plan.ctas_per_sm = 2;
    plan.small_rings = true;
  }
  if (g_evict_first >= 0) plan.l2_evict_first = g_evict_first != 0;
  void* ws = nullptr;
  if (plan.workspace_bytes) CK(cudaMalloc(&ws, plan.workspace_bytes));
  Outputs out;
  out.set_contiguous_strides(st.p);
  out.o = st.o, out.o_dtype = DType::bf16, out.tile_counters = st.counters;
  cudaStream_t stream;
  CK(cudaStreamCreate(&stream));
  cuda::decode(st.p, pol, plan, out, ws, stream);
  CK(cudaStreamSynchronize(stream));
  const double sparsity = counted_sparsity(st);
  out.tile_counters = nullptr;  // time the kernel as a server would run it
  bench::GpuState gs;
  const double ms =
      reps > 0 ? bench::time_graph(
                     stream, reps, inner,
                     [&, call = 0](cudaStream_t s) mutable {  // --rotate: the copies in turn
                       DecodeProblem p = st.p;
                       p.block_table = st.tables[call++ % st.tables.size()];
                       cuda::decode(p, pol, plan, out, ws, s);
                     },
                     g_warm, &gs)
               : 0.0;
  if (reps > 0 && std::getenv("BLASST_BENCH_PROFILE")) {
    CK(cudaStreamSynchronize(stream));
    CK(cudaProfilerStart());
    cuda::decode(st.p, pol, plan, out, ws, stream);
    CK(cudaStreamSynchronize(stream));
    CK(cudaProfilerStop());
  }
#ifdef BLASST_DECODE_DEBUG_TIMELINE
  if (reps > 0) {  // three steps back to back, the last one stamped (docs/DECODE.md)
    cuda::debug_decode_timeline_arm(std::size_t(plan.splits) * plan.chunks * plan.num_heads_kv * st.p.batch, 2);
    for (int i = 0; i < 3; ++i) {
      DecodeProblem p = st.p;
      p.block_table = st.tables[i % st.tables.size()];
      cuda::decode(p, pol, plan, out, ws, stream);
    }
    char label[96];
    std::snprintf(label, sizeof label, "%s, %d splits, %d CTAs a SM", pol.mode == SkipPolicy::Mode::dense ? "dense" : "skip",
                  plan.splits, plan.small_rings ? plan.ctas_per_sm : 1);
    cuda::debug_decode_timeline_print(label, stream);
  }
#endif
  cudaStreamDestroy(stream);
  if (ws) cudaFree(ws);
  return {ms, sparsity, plan.splits, gs};
}

// Tile sparsity of one decode call, for the bisection below.
double sparsity_of(Setup& st, const SkipPolicy& pol) { return time_policy(st, pol, 0, 0).sparsity; }

// The skip rows' policy: scale factor a, forward, with max seeding, `splits` splits (0: the planner's).
SkipPolicy skip_policy(double a, int splits) {
  SkipPolicy pol = SkipPolicy::with_scale_factor(a);
  pol.order = VisitOrder::forward;
  pol.splits = splits;
  pol.max_seed = true;
  return pol;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string csv_path, one;  // --one HQ,HKV,BATCH,LEN: that shape alone (for profiling)
  int one_splits = 0;         // --splits: --one's split count (0: the planner's)
  double one_target = 0;      // --target: --one's skip at this tile sparsity
  int head_dim = 128;         // --head-dim: of the generated shapes (64, 128 or 256)
  std::string inputs_dir;     // --inputs: a captured context instead of generated sequences
  std::vector<int> batches = {1, 8, 64};  // --batches: the batch sizes with --inputs
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) csv_path = argv[++i];
    else if (!std::strcmp(argv[i], "--one") && i + 1 < argc) one = argv[++i];
    else if (!std::strcmp(argv[i], "--splits") && i + 1 < argc) one_splits = std::max(0, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--target") && i + 1 < argc) one_target = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--layout") && i + 1 < argc) g_hnd = !std::strcmp(argv[++i], "hnd");
    else if (!std::strcmp(argv[i], "--page") && i + 1 < argc) g_page = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--ordered")) g_shuffle = false;
    else if (!std::strcmp(argv[i], "--rotate") && i + 1 < argc) g_rotate = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--l2-evict-first") && i + 1 < argc) g_evict_first = std::atoi(argv[++i]) != 0;
    else if (!std::strcmp(argv[i], "--small-rings") && i + 1 < argc) g_small_rings = std::atoi(argv[++i]) != 0;
    else if (!std::strcmp(argv[i], "--small-ctas") && i + 1 < argc) g_small_ctas = std::atoi(argv[++i]) == 3 ? 3 : 2;
    else if (!std::strcmp(argv[i], "--warm") && i + 1 < argc) g_warm = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--distinct") && i + 1 < argc) g_distinct = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--head-dim") && i + 1 < argc) head_dim = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--inputs") && i + 1 < argc) inputs_dir = argv[++i];
    else if (!std::strcmp(argv[i], "--batches") && i + 1 < argc) {
      batches.clear();
      for (const char* c = argv[++i]; *c;) {
        char* end = nullptr;
        const long b = std::strtol(c, &end, 10);
        if (end == c || b < 1) {
          std::fprintf(stderr, "--batches takes positive integers separated by commas\n");
          return 2;
        }
        batches.push_back(static_cast<int>(b));
        c = *end == ',' ? end + 1 : end;
      }
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (one.empty() && (one_splits > 0 || one_target > 0)) {
    std::fprintf(stderr, "--splits and --target go with --one\n");
    return 2;
  }
  char setup[128];
  std::snprintf(setup, sizeof setup, ", cache layout %s, page size %d, pages %s, %d distinct sequence%s",
                g_hnd ? "hnd" : "nhd", g_page, g_shuffle ? "shuffled" : "in order", g_distinct, g_distinct > 1 ? "s" : "");
  bench::print_gpu(setup);
  FILE* csv = csv_path.empty() ? nullptr : std::fopen(csv_path.c_str(), "w");
  if (csv) std::fprintf(csv, "hq,hkv,batch,len,policy,value,splits,ms,tbps,sparsity,speedup_vs_dense,sm_mhz,power_w\n");

  std::vector<Shape> shapes;
  for (auto [hq, hkv] : std::vector<std::pair<int, int>>{{32, 8}, {64, 8}, {8, 1}})
    for (int batch : {1, 8, 64})
      for (int len : {8192, 32768, 131072}) shapes.push_back({hq, hkv, batch, len});
  if (quick) shapes = {{32, 8, 8, 32768}, {32, 8, 1, 131072}, {8, 1, 1, 131072}, {32, 8, 1, 8192}};
  if (head_dim != 64 && head_dim != 128 && head_dim != 256) {
    std::fprintf(stderr, "--head-dim takes 64, 128 or 256\n");
    return 2;
  }
  for (Shape& s : shapes) s.d = head_dim;
  // Skip rows use max seeding (BLASST.md 6): without it each split's first tile and fresh running
  // max cost most of the sparsity (the last table shows how much).
  std::vector<double> factors = {0.01, 0.05, 0.25, 1, 4, 16};
  if (!inputs_dir.empty() && one.empty()) factors.clear();  // a captured context: dense and the s= rows
  if (!one.empty()) {
    Shape s{};
    if (std::sscanf(one.c_str(), "%d,%d,%d,%d", &s.hq, &s.hkv, &s.batch, &s.len) != 4) return 2;
    s.d = head_dim;
    shapes = {s};
    factors = {64};
  }
  if (!inputs_dir.empty()) {  // the captured context's shape at each batch size (--one: its batch)
    g_in_q = bench::load_floats(inputs_dir + "/q.npy", 3);
    g_in_k = bench::load_floats(inputs_dir + "/k.npy", 3);
    g_in_v = bench::load_floats(inputs_dir + "/v.npy", 3);
    Shape s{static_cast<int>(g_in_q.shape[1]), static_cast<int>(g_in_k.shape[1]), 1, static_cast<int>(g_in_k.shape[0]),
            static_cast<int>(g_in_k.shape[2])};
    if (g_in_k.shape != g_in_v.shape || g_in_q.shape[2] != s.d || s.hkv < 1 || s.hq % s.hkv != 0 ||
        g_in_q.shape[0] < 1 || g_in_q.shape[0] > s.len ||
        (!one.empty() && (shapes[0].hq != s.hq || shapes[0].hkv != s.hkv || shapes[0].len != s.len))) {
      std::fprintf(stderr, "--inputs %s: want q [T, Hq, d], k and v [L, Hkv, d] with Hkv dividing Hq and T <= L%s\n",
                   inputs_dir.c_str(), one.empty() ? "" : ", and --one's HQ, HKV and LEN equal to theirs");
      return 2;
    }
    std::printf("inputs %s: Hq %d, Hkv %d, d %d, %d keys, %d decode queries\n", inputs_dir.c_str(), s.hq, s.hkv, s.d,
                s.len, static_cast<int>(g_in_q.shape[0]));
    if (!one.empty()) batches = {shapes[0].batch};
    shapes.clear();
    for (int b : batches) {
      s.batch = b;
      shapes.push_back(s);
    }
  }

  std::printf("%-6s %-6s %-6s %-7s %-9s %6s %9s %8s %9s %8s %6s %5s\n", "Hq", "Hkv", "batch", "len", "policy",
              "splits", "ms", "TB/s", "sparsity", "speedup", "MHz", "W");
  for (const Shape& s : shapes) {
    Setup st;
    if (!make_setup(s, st)) {
      std::printf("%d/%d batch %d len %d: skipped (does not fit in memory)\n", s.hq, s.hkv, s.batch, s.len);
      continue;
    }
    SkipPolicy dense;
    dense.order = VisitOrder::forward;
    dense.splits = one_splits;
    const int inner = std::max(1, static_cast<int>(2e9 / double(st.bytes)));
    const Result d = time_policy(st, dense, quick ? 5 : 11, std::min(inner, 50));
    auto report = [&](const char* name, double value, const Result& r) {
      const double tbps = double(st.bytes) / (r.ms * 1e-3) / 1e12;
      std::printf("%-6d %-6d %-6d %-7d %-9s %6d %9.4f %8.3f %9.3f %8.2f %6.0f %5.0f\n", s.hq, s.hkv, s.batch, s.len, name,
                  r.splits, r.ms, tbps, r.sparsity, d.ms / r.ms, r.gpu.sm_mhz, r.gpu.power_w);
      if (csv)
        std::fprintf(csv, "%d,%d,%d,%d,%s,%g,%d,%.6f,%.4f,%.4f,%.4f,%.0f,%.0f\n", s.hq, s.hkv, s.batch, s.len, name, value,
                     r.splits, r.ms, tbps, r.sparsity, d.ms / r.ms, r.gpu.sm_mhz, r.gpu.power_w);
    };
    report("dense", 0, d);
    if (!one.empty() && one_target > 0) {  // --target: the scale factor for that sparsity
      const double a = bench::scale_factor_for_sparsity(one_target, 1e-3, double(s.len), [&](double x) {
                         return sparsity_of(st, skip_policy(x, one_splits));
                       }).first;
      factors = {a};
    }
    for (double a : factors) {
      char name[32];
      std::snprintf(name, sizeof name, "a=%g+s", a);
      report(name, a, time_policy(st, skip_policy(a, one_splits), quick ? 5 : 11, std::min(inner, 50)));
    }
    // Scale factors for 50, 70 and 90 % tile sparsity on these inputs (issue 3's sweep), found by
    // bisection on log a with the kernel's own counters; a target the inputs cannot reach within
    // 0.05 is reported as missing.
    if (!quick && one.empty())
      for (double target : {0.5, 0.7, 0.9}) {
        const auto [a, got] = bench::scale_factor_for_sparsity(  // a = len: lambda = 1
            target, 1e-3, double(s.len), [&](double x) { return sparsity_of(st, skip_policy(x, 0)); });
        char name[32];
        std::snprintf(name, sizeof name, "s=%.1f", target);
        if (std::fabs(got - target) > 0.05) {
          std::printf("%-6d %-6d %-6d %-7d %-9s no scale factor reaches it (%.3f at a=%.4g)\n", s.hq, s.hkv, s.batch,
                      s.len, name, got, a);
          continue;
        }
        report(name, a, time_policy(st, skip_policy(a, 0), 11, std::min(inner, 50)));
      }
    free_setup(st);
  }

  // Max seeding: sparsity given back at 4, 16 and 64 splits (32/8, batch 1, 32K).
  if (one.empty() && inputs_dir.empty()) {
    Setup st;
    if (make_setup({32, 8, 1, 32768}, st)) {
      for (int splits : {1, 4, 16, 64})
        for (bool seed : {false, true}) {
          SkipPolicy pol = SkipPolicy::with_scale_factor(16.0);
          pol.order = VisitOrder::forward;
          pol.splits = splits;
          pol.max_seed = seed;
          const Result r = time_policy(st, pol, 3, 5);
          std::printf("max-seed %-5s splits %2d: sparsity %.3f, %.4f ms\n", seed ? "on" : "off", splits, r.sparsity, r.ms);
          if (csv)
            std::fprintf(csv, "32,8,1,32768,%s,16,%d,%.6f,,%.4f,,%.0f,%.0f\n", seed ? "a=16+seed" : "a=16", splits, r.ms,
                         r.sparsity, r.gpu.sm_mhz, r.gpu.power_w);
        }
      free_setup(st);
    }
  }
  if (csv) std::fclose(csv);
  return 0;
}
