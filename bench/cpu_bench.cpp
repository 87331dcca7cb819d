// CPU engine benchmarks (Google Benchmark): the float32 FMA peak of this machine, measured on all
// threads, next to dense and BLASST prefill and decode on generated inputs
// (include/blasst/synthetic.hpp). Counters: GFLOP/s of the dense problem (prefill) or GB/s of
// dense K+V (decode), the tile sparsity, and the share of the measured FMA peak.
//
//   ./build/bench/blasst_cpu_bench --benchmark_filter=Prefill8K
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/synthetic.hpp"

namespace {

using namespace blasst;

// FMA throughput of one thread: 12 independent vector accumulators, so latency is hidden.
double fma_gflops_one_thread(double seconds) {
#if defined(__AVX512F__)
  constexpr int W = 16;
#else
  constexpr int W = 8;
#endif
  typedef float vf __attribute__((vector_size(W * 4)));
  vf acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = vf{} + 1.0f + i * 1e-3f;
  const vf b = vf{} + 0.999999f, c = vf{} + 1e-7f;
  std::int64_t iters = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (int k = 0; k < 100000; ++k)
      for (int i = 0; i < 12; ++i) acc[i] = acc[i] * b + c;
    iters += 100000;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  float sink = 0;
  for (int i = 0; i < 12; ++i) sink += acc[i][0];
  benchmark::DoNotOptimize(sink);
  return 2.0 * W * 12 * static_cast<double>(iters) / elapsed * 1e-9;
}

double machine_fma_peak() {
  static const double peak = [] {
    const int n = cpu::num_threads();
    std::vector<double> r(n);
    std::vector<std::thread> t;
    for (int i = 0; i < n; ++i) t.emplace_back([&r, i] { r[i] = fma_gflops_one_thread(0.5); });
    for (auto& x : t) x.join();
    double s = 0;
    for (double v : r) s += v;
    return s;
  }();
  return peak;
}

void BM_FmaPeak(benchmark::State& state) {
  for (auto _ : state) state.counters["GFLOP/s"] = machine_fma_peak();
  state.counters["threads"] = cpu::num_threads();
}
BENCHMARK(BM_FmaPeak)->Iterations(1)->Unit(benchmark::kMillisecond);

struct PrefillCase {
  SyntheticQKV x;
  PrefillProblem p;
  std::vector<float> o;
  PrefillCase(int n, int hq, int hkv, int d, bool causal) : x(synthetic_qkv(n, n, hq, hkv, d, d, SyntheticSpec{})) {
    p.total_q = p.total_k = n;
    p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d, p.causal = causal;
    p.q = x.q.data(), p.k = x.k.data(), p.v = x.v.data();
    p.set_contiguous_strides();
    o.resize(static_cast<std::size_t>(n) * hq * d);
  }
};

// Args: sequence length, causal, scale factor x 100 (0 = dense).
void BM_Prefill(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  const bool causal = state.range(1) != 0;
  static std::unique_ptr<PrefillCase> c;
  if (!c || c->p.total_q != n || c->p.causal != causal) c = std::make_unique<PrefillCase>(n, 32, 8, 128, causal);
  SkipPolicy pol = state.range(2) > 0 ? SkipPolicy::with_scale_factor(state.range(2) / 100.0) : SkipPolicy{};
  SkipStats st;
  Outputs out;
  out.set_contiguous_strides(c->p);
  out.o = c->o.data();
  out.stats = &st;
  for (auto _ : state) cpu::prefill(c->p, pol, out);
  const double flops = 4.0 * n * n * 128 * 32 * (causal ? 0.5 : 1.0);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["sparsity"] = st.sparsity();
  state.counters["peak_share"] = benchmark::Counter(flops * 1e-9 / machine_fma_peak(),
                                                    benchmark::Counter::kIsIterationInvariantRate);
}
// Dense and three scale factors on the generator's defaults at 8K (BQ 64, BK 128, reverse).
BENCHMARK(BM_Prefill)->Name("Prefill8K")->Args({8192, 1, 0})->Args({8192, 1, 1600})->Args({8192, 1, 6400})->Args({8192, 1, 25600})
    ->Args({8192, 0, 0})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);
BENCHMARK(BM_Prefill)->Name("Prefill2K")->Args({2048, 1, 0})->Args({2048, 1, 25600})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
