// `blasst bench`: dense against BLASST on generated inputs (include/blasst/synthetic.hpp), on the
// CPU engine, with the speed, the tile sparsity reached and the error against dense.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/synthetic.hpp"
#include "cli_util.hpp"
#include "commands.hpp"

namespace blasst::cli {
namespace {

const std::vector<Flag> kBenchFlags = {
    {"phase", "PHASE", "prefill (default) or decode"},
    {"seq-len", "N", "query and key length (prefill) or KV length (decode); default 4096"},
    {"batch", "B", "decode batch (default 4)"},
    {"heads-q", "HQ", "query heads (default 32)"},
    {"heads-kv", "HKV", "KV heads (default 8)"},
    {"head-dim", "D", "head dim (default 128)"},
    {"non-causal", nullptr, "prefill without the causal mask"},
    {"scale-factors", "A,B,..", "scale factors to sweep (default 4,16,64,256); dense always runs"},
    {"block-q", "BQ", "prefill vote rows (default 64)"},
    {"block-k", "BK", "key tile (default: prefill the CUDA kernel's tile for the head dim, 192 at 128, 80 at 256, else 128; decode 128)"},
    {"order", "ORDER", "prefill visit order (default reverse)"},
    {"splits", "N", "decode splits (default 1)"},
    {"page-size", "P", "decode page size (default 64)"},
    {"repeats", "R", "timed runs per point, median reported (default 3)"},
    {"seed", "S", "generator seed (default 1)"},
    {"threads", "N", "worker threads (default: all cores)"},
};

std::vector<double> parse_list(const std::string& s) {
  std::vector<double> r;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (item.empty() || *end != '\0' || !std::isfinite(v) || v < 0)
      throw UsageError("--scale-factors expects non-negative numbers separated by commas, got '" + s + "'");
    r.push_back(v);
  }
  return r;
}

template <class F> double median_ms(int repeats, F&& run) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto a = std::chrono::steady_clock::now();
    run();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

int positive(const Args& a, const char* name, long long fallback, long long max = 1 << 30) {
  const long long v = a.get_int(name, fallback);
  if (v < 1 || v > max) throw Error(std::string("--") + name + " must be between 1 and " + std::to_string(max));
  return static_cast<int>(v);
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  const Args a(argc, argv, 2, kBenchFlags);
  if (a.help()) {
    std::cout << usage_text("blasst bench [flags]", kBenchFlags)
              << "\nInputs come from the synthetic generator (include/blasst/synthetic.hpp): an attention\n"
                 "sink, RoPE-like locality and retrieval needles. Speed counts dense FLOPs (prefill:\n"
                 "4 Sq Sk d Hq, halved when causal) or dense K+V bytes (decode) over the median time.\n";
    return 0;
  }
  const std::string phase = a.get("phase", "prefill");
  if (phase != "prefill" && phase != "decode") throw UsageError("--phase must be prefill or decode");
  const int n = positive(a, "seq-len", 4096), hq = positive(a, "heads-q", 32), hkv = positive(a, "heads-kv", 8);
  const int d = positive(a, "head-dim", 128, 1024), repeats = positive(a, "repeats", 3, 1000);
  apply_threads(a);
  std::vector<double> factors = parse_list(a.get("scale-factors", "4,16,64,256"));
  SyntheticSpec spec;
  spec.seed = static_cast<std::uint64_t>(a.get_int("seed", 1));

  SkipPolicy base;
  base.block_q = positive(a, "block-q", 64);
  base.block_k = positive(a, "block-k", phase == "decode" ? 128 : prefill_block_k(d));
  base.order = parse_visit_order(a.get("order", phase == "decode" ? "forward" : "reverse"));
  base.splits = positive(a, "splits", 1);
  validate(base);

  std::printf("blasst bench: %s, %s, Hq %d, Hkv %d, d %d, BQ %d, BK %d, order %s, splits %d, %d threads\n",
              phase.c_str(), phase == "prefill" ? (a.has("non-causal") ? "non-causal" : "causal") : "paged",
              hq, hkv, d, base.block_q, base.block_k, to_string(base.order), base.splits, cpu::num_threads());

  std::vector<float> dense_o;
  std::function<void(const SkipPolicy&, std::vector<float>&, SkipStats&)> run;
  double work = 0;  // FLOPs (prefill) or bytes (decode) of the dense problem
  const char* unit = "GFLOP/s";

  SyntheticQKV x;
  PrefillProblem pp;
  DecodeProblem dp;
  std::vector<float> kc, vc, qd;
  std::vector<std::int32_t> table, lens;
  if (phase == "prefill") {
    x = synthetic_qkv(n, n, hq, hkv, d, d, spec);
    pp.total_q = pp.total_k = n;
    pp.num_heads_q = hq, pp.num_heads_kv = hkv, pp.head_dim_qk = pp.head_dim_v = d;
    pp.causal = !a.has("non-causal");
    pp.q = x.q.data(), pp.k = x.k.data(), pp.v = x.v.data();
    pp.set_contiguous_strides();
    work = 4.0 * n * n * d * hq * (pp.causal ? 0.5 : 1.0);
    run = [&](const SkipPolicy& pol, std::vector<float>& o, SkipStats& st) {
      Outputs out;
      out.set_contiguous_strides(pp);
      o.resize(static_cast<std::size_t>(n) * hq * d);
      out.o = o.data();
      out.stats = &st;
      cpu::prefill(pp, pol, out);
    };
  } else {
    const int batch = positive(a, "batch", 4), ps = positive(a, "page-size", 64);
    const int pages_per = (n + ps - 1) / ps;
    dp.batch = batch, dp.q_tokens = 1, dp.num_heads_q = hq, dp.num_heads_kv = hkv;
    dp.head_dim_qk = dp.head_dim_v = d, dp.page_size = ps, dp.num_pages = batch * pages_per;
    dp.max_pages_per_seq = pages_per;
    kc.assign(static_cast<std::size_t>(dp.num_pages) * ps * hkv * d, 0.0f);
    vc.assign(kc.size(), 0.0f);
    qd.resize(static_cast<std::size_t>(batch) * hq * d);
    table.resize(static_cast<std::size_t>(batch) * pages_per);
    std::iota(table.begin(), table.end(), 0);
    std::reverse(table.begin(), table.end());  // pages out of order, as in a real cache
    lens.assign(batch, n);
    for (int b = 0; b < batch; ++b) {
      SyntheticSpec s = spec;
      s.seed = spec.seed + 1000003ull * b;
      const SyntheticQKV y = synthetic_qkv(1, n, hq, hkv, d, d, s);
      std::copy(y.q.begin(), y.q.end(), qd.begin() + static_cast<std::ptrdiff_t>(b) * hq * d);
      for (int j = 0; j < n; ++j) {
        const std::int64_t page = table[static_cast<std::size_t>(b) * pages_per + j / ps];
        const std::size_t dst = (static_cast<std::size_t>(page) * ps + j % ps) * hkv * d;
        std::copy_n(y.k.begin() + static_cast<std::ptrdiff_t>(j) * hkv * d, hkv * d, kc.begin() + dst);
        std::copy_n(y.v.begin() + static_cast<std::ptrdiff_t>(j) * hkv * d, hkv * d, vc.begin() + dst);
      }
    }
    dp.q = qd.data(), dp.k_cache = kc.data(), dp.v_cache = vc.data();
    dp.block_table = table.data(), dp.seq_lens = lens.data();
    dp.set_contiguous_strides();
    work = 2.0 * batch * n * hkv * d * 4;  // K and V, float32
    unit = "GB/s";
    run = [&](const SkipPolicy& pol, std::vector<float>& o, SkipStats& st) {
      Outputs out;
      out.set_contiguous_strides(dp);
      o.resize(static_cast<std::size_t>(dp.batch) * hq * d);
      out.o = o.data();
      out.stats = &st;
      cpu::decode(dp, pol, out);
    };
  }

  std::printf("%-14s %10s %10s %9s %9s %11s\n", "policy", "ms", unit, "sparsity", "speedup", "rel-err");
  SkipStats st;
  run(base, dense_o, st);  // warm-up
  const double dense_ms = median_ms(repeats, [&] { run(base, dense_o, st); });
  std::printf("%-14s %10.2f %10.2f %9.3f %9.2f %11.2e\n", "dense", dense_ms, work / dense_ms * 1e-6,
              st.sparsity(), 1.0, 0.0);
  for (double f : factors) {
    SkipPolicy pol = base;
    pol.mode = SkipPolicy::Mode::scale_factor;
    pol.value = f;
    std::vector<float> o;
    const double ms = median_ms(repeats, [&] { run(pol, o, st); });
    char name[32];
    std::snprintf(name, sizeof name, "a=%g", f);
    std::printf("%-14s %10.2f %10.2f %9.3f %9.2f %11.2e\n", name, ms, work / ms * 1e-6, st.sparsity(),
                dense_ms / ms, rel_l2(o, dense_o));
  }
  return 0;
}

}  // namespace blasst::cli
