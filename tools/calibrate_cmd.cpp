// `blasst calibrate`: the sparsity every lambda gives on captured (or generated) Q/K, and the fit
// a(s) = alpha * exp(beta * s) of BLASST.md section 4, written as JSON for the runtimes.
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/synthetic.hpp"
#include "cli_util.hpp"
#include "commands.hpp"

namespace blasst::cli {
namespace {

const std::vector<Flag> kCalibrateFlags = {
    {"phase", "PHASE", "prefill or decode (required)"},
    {"samples", "DIR,DIR,..", "sample folders (prefill: q.npy, k.npy [, cu_seqlens_q.npy, cu_seqlens_k.npy];"
                              " decode: q.npy, k_cache.npy, block_table.npy, seq_lens.npy)"},
    {"synthetic", "LEN,LEN,..", "generated samples of these lengths instead (include/blasst/synthetic.hpp)"},
    {"heads-q", "HQ", "query heads of generated samples (default 32)"},
    {"heads-kv", "HKV", "KV heads of generated samples (default 8)"},
    {"head-dim", "D", "head dim of generated samples (default 128)"},
    {"out", "CAL.json", "where the fit goes (required)"},
    {"model", "NAME", "model id recorded in the JSON"},
    {"causal", nullptr, "prefill samples are causal (generated ones always are)"},
    {"softmax-scale", "S", "softmax scale (default 1/sqrt(d_qk))"},
    {"block-q", "BQ", "prefill vote rows (default 64)"},
    {"block-k", "BK", "key tile (default: prefill the CUDA kernel's tile for the samples' head dim, 192 at 128, 80 at 256, else 128; decode 128)"},
    {"order", "ORDER", "prefill visit order (default reverse)"},
    {"splits", "N", "decode splits (default 1)"},
    {"max-seed", nullptr, "decode max seeding"},
    {"lambdas", "N", "number of lambdas, log-spaced 1e-6 .. 0.99 (default 20)"},
    {"threads", "N", "worker threads (default: all cores)"},
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// tile_for(d, name): the key tile for samples of head dim d (the geometry's, or one by head dim).
CalibrationSweep sweep_prefill_dir(const std::string& dir, bool causal, float scale, SkipPolicy g,
                                   const std::vector<double>& lambdas,
                                   const std::function<int(int, const std::string&)>& tile_for) {
  const npy::Array q = load_tensor("samples", dir + "/q.npy", 3), k = load_tensor("samples", dir + "/k.npy", 3);
  PrefillProblem p;
  p.dtype = float_dtype("samples", q);
  if (float_dtype("samples", k) != p.dtype) throw Error(dir + ": q.npy and k.npy differ in dtype");
  if (q.shape[2] != k.shape[2]) throw Error(dir + ": q.npy and k.npy differ in head dim");
  p.total_q = q.shape[0], p.total_k = k.shape[0];
  p.num_heads_q = as_int("Hq", q.shape[1]), p.num_heads_kv = as_int("Hkv", k.shape[1]);
  p.head_dim_qk = p.head_dim_v = as_int("d", q.shape[2]);
  p.causal = causal, p.softmax_scale = scale;
  g.block_k = tile_for(p.head_dim_qk, dir);
  p.q = q.bytes.data(), p.k = k.bytes.data(), p.v = k.bytes.data();  // V plays no part in the vote
  p.set_contiguous_strides();
  npy::Array cq, ck;
  if (std::ifstream(dir + "/cu_seqlens_q.npy").good()) {
    cq = load_tensor("samples", dir + "/cu_seqlens_q.npy", 1), ck = load_tensor("samples", dir + "/cu_seqlens_k.npy", 1);
    require_int32("samples", cq), require_int32("samples", ck);
    if (cq.shape[0] != ck.shape[0] || cq.shape[0] < 2) throw Error(dir + ": cu_seqlens files disagree");
    p.batch = as_int("batch", cq.shape[0] - 1);
    p.cu_seqlens_q = cq.data<std::int32_t>(), p.cu_seqlens_k = ck.data<std::int32_t>();
  }
  return cpu::sweep_prefill(p, g, lambdas);
}

CalibrationSweep sweep_decode_dir(const std::string& dir, float scale, const SkipPolicy& g,
                                  const std::vector<double>& lambdas) {
  const npy::Array q = load_tensor("samples", dir + "/q.npy", 4), kc = load_tensor("samples", dir + "/k_cache.npy", 4),
                   bt = load_tensor("samples", dir + "/block_table.npy", 2),
                   sl = load_tensor("samples", dir + "/seq_lens.npy", 1);
  require_int32("samples", bt), require_int32("samples", sl);
  DecodeProblem p;
  p.dtype = float_dtype("samples", q);
  if (float_dtype("samples", kc) != p.dtype) throw Error(dir + ": q.npy and k_cache.npy differ in dtype");
  p.batch = as_int("batch", q.shape[0]), p.q_tokens = as_int("q_tokens", q.shape[1]);
  p.num_heads_q = as_int("Hq", q.shape[2]), p.num_heads_kv = as_int("Hkv", kc.shape[2]);
  p.head_dim_qk = p.head_dim_v = as_int("d", q.shape[3]);
  if (kc.shape[3] != q.shape[3]) throw Error(dir + ": q.npy and k_cache.npy differ in head dim");
  if (bt.shape[0] != q.shape[0] || sl.shape[0] != q.shape[0]) throw Error(dir + ": batch sizes disagree");
  p.softmax_scale = scale;
  p.num_pages = as_int("num_pages", kc.shape[0]), p.page_size = as_int("page_size", kc.shape[1]);
  p.q = q.bytes.data(), p.k_cache = kc.bytes.data(), p.v_cache = kc.bytes.data();
  p.block_table = bt.data<std::int32_t>(), p.max_pages_per_seq = as_int("max_pages", bt.shape[1]);
  p.seq_lens = sl.data<std::int32_t>();
  p.set_contiguous_strides();
  validate_shapes(p);
  validate_host_indices(p);
  return cpu::sweep_decode(p, g, lambdas);
}

// A generated sample: causal prefill of n tokens, or one decode query over n keys (one page).
CalibrationSweep sweep_synthetic(bool decode, int n, int hq, int hkv, int d, std::uint64_t seed, const SkipPolicy& g,
                                 const std::vector<double>& lambdas) {
  SyntheticSpec spec;
  spec.seed = seed;
  const SyntheticQKV x = synthetic_qkv(decode ? 1 : n, n, hq, hkv, d, d, spec);
  if (!decode) {
    PrefillProblem p;
    p.total_q = p.total_k = n, p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d;
    p.causal = true, p.q = x.q.data(), p.k = x.k.data(), p.v = x.v.data();
    p.set_contiguous_strides();
    return cpu::sweep_prefill(p, g, lambdas);
  }
  const std::int32_t table = 0, len = n;
  DecodeProblem p;
  p.batch = 1, p.q_tokens = 1, p.num_heads_q = hq, p.num_heads_kv = hkv, p.head_dim_qk = p.head_dim_v = d;
  p.num_pages = 1, p.page_size = n, p.max_pages_per_seq = 1;
  p.q = x.q.data(), p.k_cache = x.k.data(), p.v_cache = x.v.data(), p.block_table = &table, p.seq_lens = &len;
  p.set_contiguous_strides();
  return cpu::sweep_decode(p, g, lambdas);
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

}  // namespace

int cmd_calibrate(int argc, char** argv) {
  const Args a(argc, argv, 2, kCalibrateFlags);
  if (a.help()) {
    std::cout << usage_text("blasst calibrate --phase prefill|decode (--samples DIR,.. | --synthetic LEN,..) "
                            "--out CAL.json [flags]",
                            kCalibrateFlags)
              << "\nFor every lambda the sparsity each sequence reaches under this geometry is measured by\n"
                 "replaying the vote over tile maxima (one Q K^T pass). Points with 0.1 <= s <= 0.9 are fitted\n"
                 "as a = alpha * exp(beta * s), a = lambda * L. The JSON, keyed by phase, records the fit, its\n"
                 "R^2 and range, the geometry, the model id, the date and every point.\n";
    return 0;
  }
  const std::string phase = a.required("phase");
  if (phase != "prefill" && phase != "decode") throw UsageError("--phase must be prefill or decode");
  const bool decode = phase == "decode";
  const std::string out_path = a.required("out");
  check_output_path("out", out_path);
  if (a.has("samples") == a.has("synthetic")) throw UsageError("give exactly one of --samples and --synthetic");
  SkipPolicy g;
  g.block_q = static_cast<int>(a.get_int("block-q", 64));
  g.block_k = static_cast<int>(a.get_int("block-k", 128));
  // Prefill without --block-k: the CUDA kernel's tile for the samples' head dim (below), so that
  // the fit holds for the GPU's default geometry.
  const bool bk_by_dim = !decode && !a.has("block-k");
  g.order = decode ? VisitOrder::forward : parse_visit_order(a.get("order", "reverse"));
  g.splits = static_cast<int>(a.get_int("splits", 1));
  g.max_seed = a.has("max-seed");
  if (!decode && (a.has("splits") || a.has("max-seed"))) throw UsageError("--splits and --max-seed are for decode");
  validate(g);
  if (g.splits < 1) throw Error("--splits must be >= 1");
  const long long nl = a.get_int("lambdas", 20);
  if (nl < 2 || nl > 1000) throw Error("--lambdas must be between 2 and 1000");
  apply_threads(a);
  const double scale = a.get_double("softmax-scale", 0.0);
  if (a.has("softmax-scale") && !(scale > 0)) throw Error("--softmax-scale must be > 0");
  const std::vector<double> lambdas = default_lambdas(static_cast<int>(nl));

  std::vector<std::string> names;
  std::vector<CalibrationSweep> sweeps;
  // With bk_by_dim, every sample must have the head dim of the first.
  int dim_seen = 0;
  const std::function<int(int, const std::string&)> tile_for = [&](int d, const std::string& name) {
    if (!bk_by_dim) return g.block_k;
    if (dim_seen && d != dim_seen)
      throw Error(name + ": head dim " + std::to_string(d) + " differs from the other samples' " +
                  std::to_string(dim_seen) + " (give --block-k to calibrate them together)");
    dim_seen = d;
    return g.block_k = prefill_block_k(d);
  };
  if (a.has("samples")) {
    for (const std::string& dir : split_list(a.get("samples", ""))) {
      names.push_back(dir);
      sweeps.push_back(decode ? sweep_decode_dir(dir, static_cast<float>(scale), g, lambdas)
                              : sweep_prefill_dir(dir, a.has("causal"), static_cast<float>(scale), g, lambdas, tile_for));
    }
  } else {
    const int hq = static_cast<int>(a.get_int("heads-q", 32)), hkv = static_cast<int>(a.get_int("heads-kv", 8));
    const int d = static_cast<int>(a.get_int("head-dim", 128));
    tile_for(d, "--head-dim");
    std::uint64_t seed = 1;
    for (const std::string& len : split_list(a.get("synthetic", ""))) {
      char* end = nullptr;
      const long n = std::strtol(len.c_str(), &end, 10);
      if (*end != '\0' || n < 1 || n > (1 << 24)) throw Error("--synthetic expects lengths, got '" + len + "'");
      names.push_back("synthetic:" + len);
      sweeps.push_back(sweep_synthetic(decode, static_cast<int>(n), hq, hkv, d, seed++, g, lambdas));
    }
  }
  if (sweeps.empty()) throw Error("no samples");

  std::vector<double> s, sf;
  for (const CalibrationSweep& sw : sweeps) sweep_points(sw, s, sf);
  const ScaleFit fit = fit_scale_factor(s, sf);

  Json j;
  j.begin_object().key(phase).begin_object();
  j.key("alpha").value(fit.alpha).key("beta").value(fit.beta).key("r2").value(fit.r2);
  j.key("s_min").value(fit.s_min).key("s_max").value(fit.s_max).key("points").value(fit.points);
  j.key("geometry").begin_object();
  if (!decode) j.key("block_q").value(g.block_q);
  j.key("block_k").value(g.block_k).key("order").value(to_string(g.order)).key("splits").value(g.splits);
  j.key("max_seed").value(g.max_seed).end_object();
  j.key("model").value(a.get("model", "")).key("date").value(today());
  j.key("samples").array(names);
  j.key("curve").begin_array();
  for (const CalibrationSweep& sw : sweeps)
    for (std::size_t b = 0; b < sw.kv_len.size(); ++b)
      for (std::size_t l = 0; l < sw.lambdas.size(); ++l) {
        if (sw.visited[b] == 0) continue;
        j.begin_object().key("kv_len").value(sw.kv_len[b]).key("lambda").value(sw.lambdas[l]);
        j.key("scale_factor").value(sw.lambdas[l] * static_cast<double>(sw.kv_len[b]));
        j.key("sparsity").value(sw.sparsity(static_cast<int>(b), static_cast<int>(l))).end_object();
      }
  j.end_array().end_object().end_object();
  write_text_atomic(out_path, j.str());
  std::printf("%s: a(s) = %.6g * exp(%.6g s), R^2 %.4f over %d points, s in [%.3f, %.3f]; a(0.5) = %.4g, a(0.7) = %.4g\n",
              phase.c_str(), fit.alpha, fit.beta, fit.r2, fit.points, fit.s_min, fit.s_max, fit.scale_factor(0.5),
              fit.scale_factor(0.7));
  return 0;
}

}  // namespace blasst::cli
