// CUDA prefill benchmark: our kernel dense and with the skip on generated inputs (sinks, locality,
// needles: include/blasst/synthetic.hpp), bf16, one sequence, Hq/Hkv 32/8. TFLOP/s counts the dense
// FLOPs (4 Sq Sk d Hq, halved when causal) over the median time. bench/sdpa_prefill_peer.py times
// PyTorch SDPA (cuDNN, flash) on the same shapes in the same device call.
//
// Each shape runs every kernel dense (cuda::PrefillKernel), the default kernel with a threshold
// that never skips (the cost of the vote alone: "vote-only"), with scale factors swept, and with
// the scale factors that reach 50, 70 and 90 % tile sparsity on these inputs ("s=0.7": found by
// bisection on log a with the kernel's own counters; a target the inputs cannot reach is
// reported as missing; at head dim 128, whose default tile is 192 keys, also "s=0.7-bk176", the
// sweep of the 176-key tiles, the default until 2026-11-30, with "dense-bk176" and "vote-bk176"). rel_err
// is each case's relative L2 error of O against the default kernel's dense O (every 16th row), so
// that cases of different key tiles compare at their accuracy as well as at their sparsity.
//
//   blasst_cuda_prefill_bench [--quick] [--csv FILE] [--dump DIR] [--inputs DIR] [--warm S] [--one D,LEN,CAUSAL[,A] [--time] [--reps N] [--block-k BK] [--target S] [--kernel K] [--alt R]]
// --warm S (default 0.5): each case replays for S seconds before it is timed, so that every case sees
// a GPU that has been busy; without it the first case after an idle spell (input generation) ran up
// to 10 % faster than the next ones at the H200's power limit (sdpa_prefill_peer.py does the same).
// The first case of each shape, right after its input generation, replays for 3 s at least.
// --dump DIR writes each shape's generated Q, K, V as float32 .npy ([S, H, D]) to DIR/d<D>_n<LEN>/,
// from which `sdpa_prefill_peer.py --inputs DIR` times the peers on the same inputs (their speed
// depends on the data: at the H200's power limit cuDNN ran 3-6 % faster on these than on randn).
// --one: A > 0 is a scale factor, A < 0 the explicit threshold -A (e.g. -1e-30: vote-only); --target S
// instead bisects for the scale factor that reaches tile sparsity S with --one's key tiles and kernel;
// --kernel K (wgmma-pingpong, the default, wgmma or mma-sync) picks --one's kernel.
// --alt R (with --one --time): then R rounds that time --one's case and dense in turn in this process
// (each after --warm seconds of its own replays), so both see the same clocks and temperature; prints
// each round, the medians, the time ratio and the cycle ratio (ms x median SM MHz). At the H200's
// power cap a long --warm (e.g. 5) and --reps (e.g. 100) give the sustained regime of a busy server.
// --page N: K and V from paged caches [pages, N, Hkv, d] in shuffled page order (chunked prefill
// against an engine's cache) instead of packed arrays; the wgmma-pingpong kernel's default tiles.
//
// --inputs DIR: instead of generated inputs, the one shape of DIR/q.npy ([S, Hq, d]), DIR/k.npy and
// DIR/v.npy ([S, Hkv, d]), float32 or float16, e.g. a real model's captured tensors
// (scripts/capture_bench_inputs.py writes them); heads and head dim come from the files, and --one's
// D and LEN must match them. `sdpa_prefill_peer.py --real DIR` times the peers on the same files.
//
// --one runs a single shape (head dim, length, causal 0/1), dense or at scale factor A, with the
// default kernel (or --kernel's): a few plain launches for a profiler (ncu), no timing loop; with --time also its
// median time and tile sparsity.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/npy.hpp"
#include "blasst/cuda/prefill.hpp"
#include "blasst/synthetic.hpp"
#include "cuda_bench_util.hpp"

namespace {

using namespace blasst;

// At head dim 128 the full run also times this tile beside the default (prefill_block_k(128) = 192):
// 176 keys, the default until 2026-11-30, so that the sweep shows what the change bought.
constexpr int kAltTile = 176;

using bench::bf16_bits;

std::uint16_t* upload(const std::vector<float>& x) {
  std::vector<std::uint16_t> h(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) h[i] = bf16_bits(x[i]);
  std::uint16_t* d = nullptr;
  CK(cudaMalloc(&d, h.size() * 2));
  CK(cudaMemcpy(d, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  return d;
}

// Median ms per call of graph replays (after one warm-up call, which configures the kernel).
double time_prefill(const PrefillProblem& p, const SkipPolicy& pol, const cuda::PrefillPlan& plan, const Outputs& out,
                    int reps, int inner, double warm_s, bench::GpuState* state = nullptr) {
  cudaStream_t stream;
  CK(cudaStreamCreate(&stream));
  cuda::prefill(p, pol, plan, out, stream);
  CK(cudaStreamSynchronize(stream));
  const double ms = bench::time_graph(stream, reps, inner, [&](cudaStream_t s) { cuda::prefill(p, pol, plan, out, s); },
                                     warm_s, state);
  cudaStreamDestroy(stream);
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, one_time = false;
  double warm_s = 0.5;  // --warm: seconds of replays before each timing (steady clocks)
  int alt_rounds = 0;  // --alt R: --one's case and dense timed in turn, R rounds
  int one_reps = 7;  // --reps: graph replays timed by --one --time (more: a GPU at its power limit)
  std::string csv_path, dump_dir, inputs_dir;
  int page = 0;  // --page N: paged K and V
  int one_d = 0, one_len = 0, one_causal = 0, one_bk = 0;  // --block-k: --one's key tile (128, 176 or 192 at d 128; 64 or 80 at d 256)
  double one_target = 0;  // --target S: --one at the scale factor that reaches tile sparsity S
  double one_a = 0;
  cuda::PrefillKernel one_kernel = cuda::PrefillKernel::wgmma_pingpong;  // --kernel: --one's kernel
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--time")) one_time = true;
    else if (!std::strcmp(argv[i], "--warm") && i + 1 < argc) warm_s = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--block-k") && i + 1 < argc) one_bk = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--target") && i + 1 < argc) one_target = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) one_reps = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--alt") && i + 1 < argc) alt_rounds = std::max(0, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--page") && i + 1 < argc) page = std::max(1, std::atoi(argv[++i]));
    else if (!std::strcmp(argv[i], "--kernel") && i + 1 < argc) {
      const std::string k = argv[++i];
      bool found = false;
      for (cuda::PrefillKernel c :
           {cuda::PrefillKernel::wgmma_pingpong, cuda::PrefillKernel::wgmma, cuda::PrefillKernel::mma_sync})
        if (k == cuda::to_string(c)) one_kernel = c, found = true;
      if (!found) {
        std::fprintf(stderr, "--kernel takes wgmma-pingpong, wgmma or mma-sync, got %s\n", k.c_str());
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) csv_path = argv[++i];
    else if (!std::strcmp(argv[i], "--dump") && i + 1 < argc) dump_dir = argv[++i];
    else if (!std::strcmp(argv[i], "--inputs") && i + 1 < argc) inputs_dir = argv[++i];
    else if (!std::strcmp(argv[i], "--one") && i + 1 < argc) {
      if (std::sscanf(argv[++i], "%d,%d,%d,%lf", &one_d, &one_len, &one_causal, &one_a) < 3) {
        std::fprintf(stderr, "--one takes D,LEN,CAUSAL[,A]\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (alt_rounds > 0 && !(one_d && one_time)) {
    std::fprintf(stderr, "--alt times --one's case against dense: it needs --one D,LEN,CAUSAL[,A] and --time\n");
    return 2;
  }
  bench::print_gpu("");
  FILE* csv = csv_path.empty() ? nullptr : std::fopen(csv_path.c_str(), "w");
  if (csv) std::fprintf(csv, "d,len,causal,kernel,policy,value,ms,tflops,sparsity,speedup_vs_dense,sm_mhz,power_w,rel_err,block_k\n");
  int hq = 32, hkv = 8;
  std::vector<std::pair<int, int>> shapes;  // (head dim, length)
  for (int len : {8192, 32768, 131072}) shapes.push_back({128, len});
  shapes.push_back({64, 32768});
  shapes.push_back({256, 32768});
  if (quick) shapes = {{128, 8192}, {64, 8192}, {256, 8192}};
  SyntheticQKV loaded;  // --inputs: the files' tensors, the only shape
  if (!inputs_dir.empty()) {
    bench::FloatArray q = bench::load_floats(inputs_dir + "/q.npy", 3), k = bench::load_floats(inputs_dir + "/k.npy", 3),
                      v = bench::load_floats(inputs_dir + "/v.npy", 3);
    const int len = static_cast<int>(q.shape[0]), d = static_cast<int>(q.shape[2]);
    hq = static_cast<int>(q.shape[1]), hkv = static_cast<int>(k.shape[1]);
    if (k.shape != v.shape || k.shape[0] != len || k.shape[2] != d || hkv < 1 || hq % hkv != 0 ||
        (one_d && (one_d != d || one_len != len))) {
      std::fprintf(stderr, "--inputs %s: want q [S, Hq, d], k and v [S, Hkv, d] with Hkv dividing Hq%s\n",
                   inputs_dir.c_str(), one_d ? ", and --one's D and LEN equal to d and S" : "");
      return 2;
    }
    loaded.sq = loaded.sk = len, loaded.hq = hq, loaded.hkv = hkv, loaded.dqk = loaded.dv = d;
    loaded.q = std::move(q.x), loaded.k = std::move(k.x), loaded.v = std::move(v.x);
    shapes = {{d, len}};
    std::printf("inputs %s: Hq %d, Hkv %d, d %d, %d tokens\n", inputs_dir.c_str(), hq, hkv, d, len);
  }
  if (one_d) shapes = {{one_d, one_len}};
  const std::vector<double> factors =
      quick ? std::vector<double>{4, 16, 64, 256} : std::vector<double>{16, 64, 256, 1024, 4096};
  std::printf("%-4s %-7s %-7s %-15s %-11s %9s %9s %9s %8s %6s %5s %9s\n", "d", "len", "causal", "kernel", "policy",
              "ms", "TFLOP/s", "sparsity", "speedup", "MHz", "W", "rel_err");
  // With --inputs: dense and vote-only on the default kernel and the 50 / 70 / 90 % rows, causal.
  const bool real = !inputs_dir.empty();
  for (auto [d, len] : shapes) {
    const SyntheticQKV x = inputs_dir.empty() ? synthetic_qkv(len, len, hq, hkv, d, d, SyntheticSpec{}) : std::move(loaded);
    if (!dump_dir.empty()) {  // --dump: the inputs as float32 .npy, for the SDPA peer (--inputs)
      const std::string dir = dump_dir + "/d" + std::to_string(d) + "_n" + std::to_string(len);
      std::filesystem::create_directories(dir);
      npy::save(dir + "/q.npy", npy::Type::f32, {len, hq, d}, x.q.data());
      npy::save(dir + "/k.npy", npy::Type::f32, {len, hkv, d}, x.k.data());
      npy::save(dir + "/v.npy", npy::Type::f32, {len, hkv, d}, x.v.data());
    }
    std::uint16_t *q = upload(x.q), *k = upload(x.k), *v = upload(x.v), *o = nullptr;
    CK(cudaMalloc(&o, x.q.size() * 2));
    // --page: the packed K and V copied into caches of `page` slots, pages in shuffled order, the
    // last page's other slots NaN.
    std::int32_t* table = nullptr;
    const int num_pages = page ? (len + page - 1) / page : 0;
    if (page) {
      std::vector<std::int32_t> ids(num_pages);
      for (int i = 0; i < num_pages; ++i) ids[i] = i;
      std::uint64_t s = 0x9e3779b97f4a7c15ull;
      for (int i = num_pages - 1; i > 0; --i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        std::swap(ids[i], ids[(s >> 33) % std::uint64_t(i + 1)]);
      }
      const std::size_t row = std::size_t(hkv) * d, page_elems = row * page;
      for (std::uint16_t** kv : {&k, &v}) {
        std::uint16_t* cache = nullptr;
        CK(cudaMalloc(&cache, num_pages * page_elems * 2));
        CK(cudaMemset(cache, 0xff, num_pages * page_elems * 2));
        for (int i = 0; i < num_pages; ++i)
          CK(cudaMemcpy(cache + ids[i] * page_elems, *kv + i * page_elems,
                        std::min<std::size_t>(page, len - std::size_t(i) * page) * row * 2, cudaMemcpyDeviceToDevice));
        CK(cudaFree(*kv));
        *kv = cache;
      }
      CK(cudaMalloc(&table, num_pages * 4));
      CK(cudaMemcpy(table, ids.data(), num_pages * 4, cudaMemcpyHostToDevice));
    }
    std::uint64_t* counters = nullptr;
    CK(cudaMalloc(&counters, std::size_t(hq) * 2 * 8));
    for (bool causal : {true, false}) {
      if (one_d && causal != bool(one_causal)) continue;
      if (real && !one_d && !causal) continue;  // a causal model's tensors: causal attention
      PrefillProblem p;
      p.total_q = p.total_k = len, p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d;
      p.causal = causal, p.dtype = DType::bf16, p.q = q, p.k = k, p.v = v;
      p.set_contiguous_strides();
      if (page) {
        p.block_table = table, p.page_size = page, p.max_pages_per_seq = p.num_pages = num_pages;
        p.k_stride_page = p.k_stride_token * page, p.v_stride_page = p.v_stride_token * page;
      }
      Outputs out;
      out.set_contiguous_strides(p);
      out.o = o, out.o_dtype = DType::bf16;
      const double flops = 4.0 * len * double(len) * d * hq * (causal ? 0.5 : 1.0);
      const int inner = std::max(1, static_cast<int>(2e12 / flops));
      double dense_ms = 0;
      struct Case {
        cuda::PrefillKernel kernel;
        SkipPolicy pol;
        std::string name;
        int block_k = 0;  // 0: prefill_block_k(d) (192 at d 128); else this tile (kAltTile at d 128)
      };
      std::vector<Case> cases;
      for (cuda::PrefillKernel k : {cuda::PrefillKernel::wgmma_pingpong, cuda::PrefillKernel::wgmma,
                                    cuda::PrefillKernel::mma_sync})
        if (real ? k == cuda::PrefillKernel::wgmma_pingpong
                 : k != cuda::PrefillKernel::mma_sync || (len <= 8192 && d != 256))  // mma_sync: 128-key tiles only
          cases.push_back({k, SkipPolicy{}, "dense", k == cuda::PrefillKernel::mma_sync ? 128 : 0});
      cases.push_back({cuda::PrefillKernel::wgmma_pingpong, SkipPolicy::with_threshold(1e-30), "vote-only"});
      if (d == 128 && !real) {  // the previous default tile beside the default: dense and vote-only
        cases.push_back({cuda::PrefillKernel::wgmma_pingpong, SkipPolicy{}, "dense-bk" + std::to_string(kAltTile), kAltTile});
        cases.push_back({cuda::PrefillKernel::wgmma_pingpong, SkipPolicy::with_threshold(1e-30),
                         "vote-bk" + std::to_string(kAltTile), kAltTile});
      }
      for (double a : factors) {
        if (real) break;
        char name[32];
        std::snprintf(name, sizeof name, "a=%g", a);
        cases.push_back({cuda::PrefillKernel::wgmma_pingpong, SkipPolicy::with_scale_factor(a), name});
      }
      // The bench's geometry; bk: the key tile (0: prefill_block_k(d)).
      auto geometry = [&](SkipPolicy pol, int bk = 0) {
        pol.block_q = 64, pol.block_k = bk ? bk : prefill_block_k(d), pol.order = VisitOrder::reverse;
        return pol;
      };
      // Tile sparsity of one launch (counters read back).
      auto sparsity_of = [&](const SkipPolicy& pol, const cuda::PrefillPlan& plan) {
        out.tile_counters = counters;
        cuda::prefill(p, pol, plan, out, nullptr);
        std::vector<std::uint64_t> c(std::size_t(hq) * 2);
        CK(cudaMemcpy(c.data(), counters, c.size() * 8, cudaMemcpyDeviceToHost));
        out.tile_counters = nullptr;
        double vis = 0, skp = 0;
        for (std::size_t i = 0; i < c.size(); i += 2) vis += c[i], skp += c[i + 1];
        return vis > 0 ? skp / vis : 0.0;
      };
      // The default kernel at scale factor a, with key tiles of bk (0: the default).
      auto sparsity_at = [&](double a, int bk, cuda::PrefillKernel kernel = cuda::PrefillKernel::wgmma_pingpong) {
        const SkipPolicy pol = geometry(SkipPolicy::with_scale_factor(a), bk);
        return sparsity_of(pol, cuda::plan_prefill(p, len, pol, kernel));
      };
      if (one_d) {
        if (one_target > 0)  // --target: the scale factor that reaches this sparsity with these tiles
          one_a = bench::scale_factor_for_sparsity(one_target, 1.0, double(len),
                                                   [&](double x) { return sparsity_at(x, one_bk, one_kernel); })
                      .first;
        const SkipPolicy pol = geometry(one_a > 0   ? SkipPolicy::with_scale_factor(one_a)
                                        : one_a < 0 ? SkipPolicy::with_threshold(-one_a)
                                                    : SkipPolicy{},
                                        one_bk);
        const cuda::PrefillPlan plan = cuda::plan_prefill(p, len, pol, one_kernel);
        for (int it = 0; it < 4; ++it) cuda::prefill(p, pol, plan, out, nullptr);
        CK(cudaDeviceSynchronize());
        std::printf("ran d %d, len %d, causal %d, a %g: 4 launches\n", d, len, int(causal), one_a);
        if (one_time) {  // --time: also the median time and the sparsity of that one case
          const double sparsity = sparsity_of(pol, plan);
          bench::GpuState gs;
          const double ms = time_prefill(p, pol, plan, out, one_reps, std::min(inner, 20), warm_s, &gs);
          std::printf("d %d len %d causal %d a %g %s: sparsity %.3f, %.3f ms, %.1f TFLOP/s, %.0f MHz, %.0f W\n", d,
                      len, int(causal), one_a, cuda::to_string(one_kernel), sparsity, ms,
                      flops / (ms * 1e-3) / 1e12, gs.sm_mhz, gs.power_w);
          if (alt_rounds > 0) {  // --alt: this case and dense in turn, same process, same inputs
            const SkipPolicy dense_pol = geometry(SkipPolicy{}, one_bk);
            const cuda::PrefillPlan dense_plan = cuda::plan_prefill(p, len, dense_pol, one_kernel);
            std::vector<double> r_ms, r_cyc, c_ms, d_ms;
            for (int r = 0; r < alt_rounds; ++r) {
              bench::GpuState gc, gd;
              double mc = 0, md = 0;
              auto time_case = [&] { mc = time_prefill(p, pol, plan, out, one_reps, std::min(inner, 20), warm_s, &gc); };
              auto time_dense = [&] {
                md = time_prefill(p, dense_pol, dense_plan, out, one_reps, std::min(inner, 20), warm_s, &gd);
              };
              if (r % 2 == 0) time_case(), time_dense();  // ABBA: neither side always follows the other
              else time_dense(), time_case();
              // Cycles need NVML's clocks (0 without it: the cycle ratio is then reported as 0).
              const double cyc = gc.sm_mhz > 0 && gd.sm_mhz > 0 ? (mc * gc.sm_mhz) / (md * gd.sm_mhz) : 0.0;
              std::printf("alt %d: case %.4f ms %.0f MHz %.0f W | dense %.4f ms %.0f MHz %.0f W | time %.4f cycles %.4f\n",
                          r, mc, gc.sm_mhz, gc.power_w, md, gd.sm_mhz, gd.power_w, mc / md, cyc);
              c_ms.push_back(mc), d_ms.push_back(md), r_ms.push_back(mc / md), r_cyc.push_back(cyc);
            }
            auto median = [](std::vector<double> v) {
              std::sort(v.begin(), v.end());
              return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
            };
            std::printf("alt medians: case %.4f ms, dense %.4f ms, case / dense time %.4f, cycles %.4f (%d rounds)\n",
                        median(c_ms), median(d_ms), median(r_ms), median(r_cyc), alt_rounds);
          }
        }
        continue;
      }
      if (!quick)
        for (int bk : {0, d == 128 ? kAltTile : -1}) {  // at head dim 128 also the previous tile's own sweep
          if (bk < 0 || (real && bk)) continue;
          for (double target : {0.5, 0.7, 0.9}) {
            // a = len is lambda = 1: dense
            const auto [a, got] = bench::scale_factor_for_sparsity(target, 1.0, double(len),
                                                                   [&](double x) { return sparsity_at(x, bk); });
            char name[32];
            if (bk) std::snprintf(name, sizeof name, "s=%.1f-bk%d", target, bk);
            else std::snprintf(name, sizeof name, "s=%.1f", target);
            if (std::fabs(got - target) > 0.05) {
              std::printf("%-4d %-7d %-7s %-15s %-11s   no scale factor reaches it (%.3f at a=%.4g)\n", d, len,
                          causal ? "yes" : "no", "wgmma-pingpong", name, got, a);
              continue;
            }
            cases.push_back({cuda::PrefillKernel::wgmma_pingpong, SkipPolicy::with_scale_factor(a), name, bk});
          }
        }
      // Accuracy of each case: the relative L2 error of O against the first case (the default
      // kernel, dense) over every 16th query row (copied back after the counters' launch).
      const std::size_t row_bytes = std::size_t(hq) * d * 2, sample_rows = (std::size_t(len) + 15) / 16;
      std::vector<std::uint16_t> ref_o, case_o;
      auto sample_o = [&](std::vector<std::uint16_t>& dst) {
        dst.resize(sample_rows * hq * d);
        CK(cudaMemcpy2D(dst.data(), row_bytes, o, 16 * row_bytes, row_bytes, sample_rows, cudaMemcpyDeviceToHost));
      };
      auto rel_err = [&]() {
        double num = 0, den = 0;
        for (std::size_t i = 0; i < case_o.size(); ++i) {
          const double r = bench::bf16_float(ref_o[i]), x = bench::bf16_float(case_o[i]);
          num += (x - r) * (x - r), den += r * r;
        }
        return den > 0 ? std::sqrt(num / den) : 0.0;
      };
      for (Case& cs : cases) {
        const SkipPolicy pol = geometry(cs.pol, cs.block_k);
        const cuda::PrefillPlan plan = cuda::plan_prefill(p, len, pol, cs.kernel);
        const double sparsity = sparsity_of(pol, plan);
        sample_o(case_o);
        if (ref_o.empty()) ref_o = case_o;  // the default kernel, dense, comes first
        const double err = rel_err();
        bench::GpuState gs;
        // The first case of a shape follows the input generation, an idle spell: 0.5 s of replays did
        // not bring the board back to its steady (power-limited) state there (session 6: 446 W
        // against ~690 W for every later case), so it warms longer.
        const double warm = &cs == &cases.front() ? std::max(warm_s, 3.0) : warm_s;
        const double ms = time_prefill(p, pol, plan, out, quick ? 3 : 7, std::min(inner, 20), warm, &gs);
        if (dense_ms == 0) dense_ms = ms;
        const char* kname = cuda::to_string(cs.kernel);
        std::printf("%-4d %-7d %-7s %-15s %-11s %9.3f %9.1f %9.3f %8.2f %6.0f %5.0f %9.2e\n", d, len,
                    causal ? "yes" : "no", kname, cs.name.c_str(), ms, flops / (ms * 1e-3) / 1e12, sparsity,
                    dense_ms / ms, gs.sm_mhz, gs.power_w, err);
        if (csv)
          std::fprintf(csv, "%d,%d,%d,%s,%s,%.6g,%.5f,%.2f,%.4f,%.4f,%.0f,%.0f,%.3e,%d\n", d, len, int(causal), kname,
                       cs.name.c_str(), pol.value, ms, flops / (ms * 1e-3) / 1e12, sparsity, dense_ms / ms, gs.sm_mhz,
                       gs.power_w, err, pol.block_k);
      }
    }
    for (void* ptr : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)counters, (void*)table}) cudaFree(ptr);
  }
  if (csv) std::fclose(csv);
  return 0;
}
