// The `blasst` command line: attention and decode on .npy files, a synthetic benchmark, build info.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/convert.hpp"
#include "blasst/npy.hpp"
#include "blasst/synthetic.hpp"
#include "cli_util.hpp"
#include "commands.hpp"
#include "cuda_run.hpp"

namespace blasst::cli {
namespace {

const char* kTopUsage =
    "usage: blasst <command> [flags]\n\n"
    "commands:\n"
    "  attention   prefill attention on .npy files (packed varlen, GQA, causal)\n"
    "  decode      paged-KV decode attention on .npy files (split-KV)\n"
    "  bench       time dense against BLASST on generated inputs (sinks, locality, needles)\n"
    "  calibrate   fit the scale factor a(s) = alpha * exp(beta * s) on captured or generated Q/K\n"
    "  info        version, backends and CUDA devices\n\n"
    "`blasst <command> --help` describes each command's flags.\n";

const std::vector<Flag> kPolicyFlags = {
    {"threshold", "LAMBDA", "skip threshold lambda for every sequence (0: dense)"},
    {"scale-factor", "A", "scale factor: lambda = A / Sk per sequence (0: dense)"},
    {"block-k", "BK", "key tile size (default: attention the CUDA prefill kernel's tile for d_qk, 192 at 128, 80 at 256, else 128; decode 128)"},
    {"softmax-scale", "S", "softmax scale (default 1/sqrt(d_qk))"},
    {"lse", "LSE.npy", "write the log-sum-exp (float32, natural log)"},
    {"stats", "STATS.json", "write skip statistics as JSON"},
    {"skip-mask", "MASK.npy", "write the per (vote group, tile) decisions (uint8)"},
    {"dropped-mass", "D.npy", "write each row's exact dropped share of softmax mass (float32)"},
    {"threads", "N", "CPU engine worker threads (default: all cores)"},
    {"device", "DEV", "cpu (default: the CPU engine, the contract's reference) or cuda (the Hopper kernels)"},
    {"dtype", "T", "compute on inputs rounded to float32, float16 or bfloat16 (default: the files' dtype; "
                   "on cuda, float32 files become bfloat16)"},
};

std::vector<Flag> with_policy(std::vector<Flag> f) {
  f.insert(f.end(), kPolicyFlags.begin(), kPolicyFlags.end());
  return f;
}

const std::vector<Flag> kAttentionFlags = with_policy({
    {"q", "Q.npy", "queries [total_q, Hq, d_qk], float32 or float16"},
    {"k", "K.npy", "keys [total_k, Hkv, d_qk]"},
    {"v", "V.npy", "values [total_k, Hkv, d_v]"},
    {"out", "O.npy", "output [total_q, Hq, d_v], float32"},
    {"causal", nullptr, "bottom-right aligned causal mask"},
    {"cu-seqlens-q", "CQ.npy", "int32 [batch+1] query offsets (with --cu-seqlens-k)"},
    {"cu-seqlens-k", "CK.npy", "int32 [batch+1] key offsets"},
    {"k-cache", "KC.npy", "paged keys [num_pages, page_size, Hkv, d_qk] (with --v-cache and --block-table, "
                          "instead of --k and --v; --cu-seqlens-k then gives key counts)"},
    {"v-cache", "VC.npy", "paged values [num_pages, page_size, Hkv, d_v]"},
    {"block-table", "BT.npy", "int32 [batch, max_pages_per_seq] page ids of each sequence's keys"},
    {"block-q", "BQ", "query rows per vote group (default 64)"},
    {"order", "ORDER", "visit order: forward, reverse (default) or sink-first"},
});

const std::vector<Flag> kDecodeFlags = with_policy({
    {"q", "Q.npy", "queries [batch, q_tokens, Hq, d_qk] or [batch, Hq, d_qk]"},
    {"k-cache", "KC.npy", "key cache [num_pages, page_size, Hkv, d_qk]"},
    {"v-cache", "VC.npy", "value cache [num_pages, page_size, Hkv, d_v]"},
    {"block-table", "BT.npy", "int32 [batch, max_pages_per_seq] page ids"},
    {"seq-lens", "SL.npy", "int32 [batch] KV lengths (new tokens included)"},
    {"out", "O.npy", "output [batch, q_tokens, Hq, d_v], float32"},
    {"splits", "N", "split-KV chunks per vote group (default: 1 on cpu, the planner's choice on cuda)"},
    {"max-seed", nullptr, "seed later splits' running max from tile 0 (BLASST.md 6)"},
});

SkipPolicy policy_from(const Args& a) {
  SkipPolicy p;
  if (a.has("threshold") && a.has("scale-factor"))
    throw UsageError("--threshold and --scale-factor are exclusive");
  if (a.has("threshold")) p = SkipPolicy::with_threshold(a.get_double("threshold", 0));
  if (a.has("scale-factor")) p = SkipPolicy::with_scale_factor(a.get_double("scale-factor", 0));
  p.block_k = static_cast<int>(a.get_int("block-k", 128));
  if (a.has("block-k") && a.get_int("block-k", 0) != p.block_k) throw Error("--block-k out of range");
  return p;
}

enum class Device { cpu, cuda };

Device device_from(const Args& a) {
  const std::string d = a.get("device", "cpu");
  if (d == "cpu") return Device::cpu;
  if (d == "cuda") return Device::cuda;
  throw UsageError("--device must be cpu or cuda, got '" + d + "'");
}

// The dtype a run computes in: --dtype, else the files' own, except that the CUDA kernels take
// 16-bit inputs, so float32 files run as bfloat16 there (what serving engines run).
DType run_dtype(const Args& a, Device dev, DType file) {
  if (!a.has("dtype")) return dev == Device::cuda && file == DType::f32 ? DType::bf16 : file;
  const std::string t = a.get("dtype", "");
  if (t == "float32" || t == "fp32" || t == "f32") {
    if (dev == Device::cuda) throw Error("--dtype float32: the CUDA kernels take float16 or bfloat16 inputs");
    return DType::f32;
  }
  if (t == "float16" || t == "fp16" || t == "f16") return DType::f16;
  if (t == "bfloat16" || t == "bf16") return DType::bf16;
  throw UsageError("--dtype must be float32, float16 or bfloat16, got '" + t + "'");
}

// Rounds a loaded float tensor's elements to `to` in place (blasst/convert.hpp, the CPU engine's
// conversion), a block at a time.
void cast_tensor(npy::Array& a, DType from, DType to) {
  if (from == to) return;
  std::int64_t n = 1;
  for (std::int64_t e : a.shape) n *= e;
  const std::size_t in = from == DType::f32 ? 4 : 2, outsz = to == DType::f32 ? 4 : 2;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(n) * outsz);
  constexpr std::int64_t kBlock = 4096;
  float buf[kBlock];
  for (std::int64_t i = 0; i < n; i += kBlock) {
    const std::int64_t m = std::min(kBlock, n - i);
    convert_row(a.bytes.data() + i * in, from, buf, m);
    store_row(buf, to, out.data() + i * outsz, m);
  }
  a.bytes.swap(out);
}

float softmax_scale_from(const Args& a) {
  const double s = a.get_double("softmax-scale", 0.0);
  if (a.has("softmax-scale") && !(s > 0)) throw Error("--softmax-scale must be > 0");
  return static_cast<float>(s);
}

const char* mode_name(SkipPolicy::Mode m) {
  switch (m) {
    case SkipPolicy::Mode::dense: return "dense";
    case SkipPolicy::Mode::scale_factor: return "scale_factor";
    case SkipPolicy::Mode::threshold: return "threshold";
  }
  return "?";
}

std::string stats_json(const char* phase, const SkipStats& s, const SkipPolicy& p, const std::string& device) {
  Json j;
  j.begin_object();
  j.key("phase").value(phase);
  j.key("device").value(device);
  j.key("tiles_visited").value(s.tiles_visited());
  j.key("tiles_skipped").value(s.tiles_skipped());
  j.key("sparsity").value(s.sparsity());
  j.key("policy").begin_object().key("mode").value(mode_name(p.mode)).key("value").value(p.value).end_object();
  j.key("lambda").array(s.lambda);
  j.key("geometry").begin_object();
  if (std::string(phase) == "prefill") j.key("block_q").value(p.block_q);
  j.key("block_k").value(p.block_k).key("order").value(to_string(p.order));
  j.key("splits").value(p.splits).key("max_seed").value(p.max_seed).end_object();
  j.key("heads").value(std::string(phase) == "prefill" ? "query" : "kv");
  std::vector<std::int64_t> hv(s.heads), hs(s.heads);
  for (int h = 0; h < s.heads; ++h) hv[h] = s.visited_for_head(h), hs[h] = s.skipped_for_head(h);
  j.key("per_head").begin_object().key("visited").array(hv).key("skipped").array(hs).end_object();
  j.key("per_sequence_head").begin_object();
  for (const char* which : {"visited", "skipped"}) {
    const auto& v = std::string(which) == "visited" ? s.visited : s.skipped;
    j.key(which).begin_array();
    for (int b = 0; b < s.batch; ++b)
      j.array(std::vector<std::int64_t>(v.begin() + std::int64_t{b} * s.heads,
                                        v.begin() + std::int64_t{b + 1} * s.heads));
    j.end_array();
  }
  j.end_object().end_object();
  return j.str();
}

// Optional outputs shared by both subcommands, written only after the computation succeeded.
struct OptionalOutputs {
  std::vector<float> o, lse, dropped;
  std::vector<std::uint8_t> mask;
  SkipStats stats;

  void bind(const Args& a, Outputs& out, std::int64_t o_elems, std::int64_t rows, std::int64_t mask_size) {
    o.assign(static_cast<std::size_t>(o_elems), 0.0f);
    out.o = o.data();
    out.o_dtype = DType::f32;
    if (a.has("lse")) lse.assign(static_cast<std::size_t>(rows), 0.0f), out.lse = lse.data();
    if (a.has("dropped-mass")) dropped.assign(static_cast<std::size_t>(rows), 0.0f), out.dropped_mass = dropped.data();
    if (a.has("skip-mask")) mask.assign(static_cast<std::size_t>(mask_size), 0), out.skip_mask = mask.data();
    out.stats = &stats;
  }
  // Every output lands, or none does.
  void save(const Args& a, const char* phase, const SkipPolicy& p, const std::string& device,
            const std::vector<std::int64_t>& o_shape, const std::vector<std::int64_t>& row_shape) const {
    StagedFiles files;
    npy::save(files.stage(a.required("out")), npy::Type::f32, o_shape, o.data());
    if (a.has("lse")) npy::save(files.stage(a.get("lse", "")), npy::Type::f32, row_shape, lse.data());
    if (a.has("dropped-mass"))
      npy::save(files.stage(a.get("dropped-mass", "")), npy::Type::f32, row_shape, dropped.data());
    if (a.has("skip-mask"))
      npy::save(files.stage(a.get("skip-mask", "")), npy::Type::u8, {static_cast<std::int64_t>(mask.size())},
                mask.data());
    if (a.has("stats")) write_text_atomic(files.stage(a.get("stats", "")), stats_json(phase, stats, p, device));
    files.commit();
  }
};

// Output folders are checked before anything is computed.
void check_output_paths(const Args& a) {
  for (const char* flag : {"out", "lse", "stats", "skip-mask", "dropped-mass"})
    if (a.has(flag)) check_output_path(flag, a.get(flag, ""));
}

int cmd_attention(int argc, char** argv) {
  const Args a(argc, argv, 2, kAttentionFlags);
  if (a.help()) {
    std::cout << usage_text("blasst attention --q Q.npy --k K.npy --v V.npy --out O.npy [flags]", kAttentionFlags);
    return 0;
  }
  // Packed --k / --v, or paged --k-cache / --v-cache / --block-table (chunked prefill against a cache).
  const bool paged = a.has("block-table") || a.has("k-cache") || a.has("v-cache");
  if (paged && (a.has("k") || a.has("v")))
    throw UsageError("--k-cache, --v-cache and --block-table replace --k and --v");
  const std::string qp = a.required("q"), kp = a.required(paged ? "k-cache" : "k"),
                    vp = a.required(paged ? "v-cache" : "v"), bp = paged ? a.required("block-table") : "";
  a.required("out");
  check_output_paths(a);
  if (a.has("cu-seqlens-q") != a.has("cu-seqlens-k"))
    throw UsageError("--cu-seqlens-q and --cu-seqlens-k must be given together");
  if (paged && !a.has("cu-seqlens-q"))
    throw UsageError("a paged cache needs --cu-seqlens-q and --cu-seqlens-k (the key counts)");
  SkipPolicy pol = policy_from(a);
  pol.block_q = static_cast<int>(a.get_int("block-q", 64));
  if (a.has("block-q") && a.get_int("block-q", 0) != pol.block_q) throw Error("--block-q out of range");
  pol.order = parse_visit_order(a.get("order", "reverse"));
  validate(pol);
  apply_threads(a);
  const Device dev = device_from(a);
  if (dev == Device::cuda && a.has("dropped-mass"))
    throw Error("--dropped-mass is computed by the CPU engine's extra pass: use --device cpu for it");

  const char *kn = paged ? "k-cache" : "k", *vn = paged ? "v-cache" : "v";
  const std::size_t kv_dims = paged ? 4 : 3;
  npy::Array q = load_tensor("q", qp, 3), k = load_tensor(kn, kp, kv_dims), v = load_tensor(vn, vp, kv_dims);
  const DType file_dt = float_dtype("q", q);
  if (float_dtype(kn, k) != file_dt || float_dtype(vn, v) != file_dt)
    throw Error(std::string("--q, --") + kn + " and --" + vn + " must have the same dtype");
  const DType dt = run_dtype(a, dev, file_dt);
  for (std::size_t i = 0; i + 1 < kv_dims; ++i)
    if (k.shape[i] != v.shape[i])
      throw Error(std::string("--") + kn + " " + shape_str(k.shape) + " and --" + vn + " " + shape_str(v.shape) +
                  (paged ? " disagree in pages, page size or heads" : " disagree in tokens or heads"));
  if (q.shape[2] != k.shape[kv_dims - 1])
    throw Error("--q head dim " + std::to_string(q.shape[2]) + " != --" + kn + " head dim " +
                std::to_string(k.shape[kv_dims - 1]));

  PrefillProblem p;
  p.total_q = q.shape[0];
  p.total_k = paged ? 0 : k.shape[0];  // paged: the key counts' sum, from --cu-seqlens-k below
  p.num_heads_q = as_int("Hq", q.shape[1]);
  p.num_heads_kv = as_int("Hkv", k.shape[kv_dims - 2]);
  p.head_dim_qk = as_int("d_qk", q.shape[2]);
  p.head_dim_v = as_int("d_v", v.shape[kv_dims - 1]);
  npy::Array bt;
  if (paged) {
    bt = load_tensor("block-table", bp, 2);
    require_int32("block-table", bt);
    p.num_pages = as_int("num_pages", k.shape[0]);
    p.page_size = as_int("page_size", k.shape[1]);
    p.max_pages_per_seq = as_int("max_pages_per_seq", bt.shape[1]);
    p.block_table = bt.data<std::int32_t>();
  }
  // Without --block-k, the tile the CUDA prefill kernel takes at this head dim, so that a run here
  // makes the decisions the GPU makes by default.
  if (!a.has("block-k")) pol.block_k = prefill_block_k(p.head_dim_qk);
  p.causal = a.has("causal");
  p.softmax_scale = softmax_scale_from(a);
  p.dtype = dt;
  p.q = q.bytes.data();
  p.k = k.bytes.data();
  p.v = v.bytes.data();
  p.set_contiguous_strides();
  npy::Array cq, ck;
  if (a.has("cu-seqlens-q")) {
    cq = load_tensor("cu-seqlens-q", a.get("cu-seqlens-q", ""), 1);
    ck = load_tensor("cu-seqlens-k", a.get("cu-seqlens-k", ""), 1);
    require_int32("cu-seqlens-q", cq);
    require_int32("cu-seqlens-k", ck);
    if (cq.shape[0] != ck.shape[0])
      throw Error("--cu-seqlens-q has " + std::to_string(cq.shape[0]) + " entries, --cu-seqlens-k " +
                  std::to_string(ck.shape[0]));
    if (cq.shape[0] < 2) throw Error("--cu-seqlens-q needs at least 2 entries (batch + 1)");
    p.batch = as_int("batch", cq.shape[0] - 1);
    p.cu_seqlens_q = cq.data<std::int32_t>();
    p.cu_seqlens_k = ck.data<std::int32_t>();
    if (paged) {
      if (bt.shape[0] != cq.shape[0] - 1)
        throw Error("--block-table has " + std::to_string(bt.shape[0]) + " rows for " +
                    std::to_string(cq.shape[0] - 1) + " sequences");
      p.total_k = p.cu_seqlens_k[p.batch];
    }
  }
  validate_shapes(p);
  validate_host_indices(p);

  Outputs out;
  out.set_contiguous_strides(p);
  OptionalOutputs opt;
  const std::int64_t rows = p.total_q * p.num_heads_q;
  const std::int64_t mask_bytes = a.has("skip-mask") ? skip_mask_layout(p, pol.block_q, pol.block_k).size() : 0;
  opt.bind(a, out, rows * p.head_dim_v, rows, mask_bytes);
  for (npy::Array* x : {&q, &k, &v}) cast_tensor(*x, file_dt, dt);
  p.q = q.bytes.data(), p.k = k.bytes.data(), p.v = v.bytes.data();
  std::string device = "cpu";
  if (dev == Device::cuda) {
    device = "cuda: " + run_prefill_cuda(p, pol, out, mask_bytes).device_name;
  } else {
    cpu::prefill(p, pol, out);
  }
  opt.save(a, "prefill", pol, device, {p.total_q, p.num_heads_q, p.head_dim_v}, {p.total_q, p.num_heads_q});
  return 0;
}

int cmd_decode(int argc, char** argv) {
  const Args a(argc, argv, 2, kDecodeFlags);
  if (a.help()) {
    std::cout << usage_text(
        "blasst decode --q Q.npy --k-cache KC.npy --v-cache VC.npy --block-table BT.npy "
        "--seq-lens SL.npy --out O.npy [flags]",
        kDecodeFlags);
    return 0;
  }
  const std::string qp = a.required("q"), kp = a.required("k-cache"), vp = a.required("v-cache"),
                    bp = a.required("block-table"), sp = a.required("seq-lens");
  a.required("out");
  check_output_paths(a);
  SkipPolicy pol = policy_from(a);
  pol.order = VisitOrder::forward;
  const Device dev = device_from(a);
  pol.splits = static_cast<int>(a.get_int("splits", dev == Device::cuda ? 0 : 1));
  if (a.has("splits") && a.get_int("splits", 0) != pol.splits) throw Error("--splits out of range");
  if (a.has("splits") && pol.splits < 1)
    throw Error("--splits must be >= 1 (on cuda, leave it out for the planner's choice)");
  pol.max_seed = a.has("max-seed");
  validate(pol);
  apply_threads(a);
  if (dev == Device::cuda && a.has("dropped-mass"))
    throw Error("--dropped-mass is computed by the CPU engine's extra pass: use --device cpu for it");

  npy::Array q = load_tensor("q", qp, 4, 3), kc = load_tensor("k-cache", kp, 4), vc = load_tensor("v-cache", vp, 4);
  const npy::Array bt = load_tensor("block-table", bp, 2), sl = load_tensor("seq-lens", sp, 1);
  const DType file_dt = float_dtype("q", q);
  if (float_dtype("k-cache", kc) != file_dt || float_dtype("v-cache", vc) != file_dt)
    throw Error("--q, --k-cache and --v-cache must have the same dtype");
  const DType dt = run_dtype(a, dev, file_dt);
  require_int32("block-table", bt);
  require_int32("seq-lens", sl);
  const bool q3 = q.shape.size() == 3;
  const std::int64_t batch = q.shape[0], qtok = q3 ? 1 : q.shape[1];
  const std::int64_t hq = q.shape[q3 ? 1 : 2], dqk = q.shape[q3 ? 2 : 3];
  if (kc.shape[0] != vc.shape[0] || kc.shape[1] != vc.shape[1] || kc.shape[2] != vc.shape[2])
    throw Error("--k-cache " + shape_str(kc.shape) + " and --v-cache " + shape_str(vc.shape) +
                " disagree in pages, page size or heads");
  if (kc.shape[3] != dqk)
    throw Error("--q head dim " + std::to_string(dqk) + " != --k-cache head dim " + std::to_string(kc.shape[3]));
  if (bt.shape[0] != batch || sl.shape[0] != batch)
    throw Error("batch mismatch: --q has " + std::to_string(batch) + ", --block-table " +
                std::to_string(bt.shape[0]) + ", --seq-lens " + std::to_string(sl.shape[0]));

  DecodeProblem p;
  p.batch = as_int("batch", batch);
  p.q_tokens = as_int("q_tokens", qtok);
  p.num_heads_q = as_int("Hq", hq);
  p.num_heads_kv = as_int("Hkv", kc.shape[2]);
  p.head_dim_qk = as_int("d_qk", dqk);
  p.head_dim_v = as_int("d_v", vc.shape[3]);
  p.softmax_scale = softmax_scale_from(a);
  p.dtype = dt;
  p.num_pages = as_int("num_pages", kc.shape[0]);
  p.page_size = as_int("page_size", kc.shape[1]);
  p.q = q.bytes.data();
  p.k_cache = kc.bytes.data();
  p.v_cache = vc.bytes.data();
  p.block_table = bt.data<std::int32_t>();
  p.max_pages_per_seq = as_int("max_pages_per_seq", bt.shape[1]);
  p.seq_lens = sl.data<std::int32_t>();
  p.set_contiguous_strides();
  validate_shapes(p);
  validate_host_indices(p);

  Outputs out;
  out.set_contiguous_strides(p);
  OptionalOutputs opt;
  const std::int64_t rows = batch * qtok * hq;
  const std::int64_t mask_bytes = a.has("skip-mask") ? skip_mask_layout(p, pol.block_k).size() : 0;
  opt.bind(a, out, rows * p.head_dim_v, rows, mask_bytes);
  for (npy::Array* x : {&q, &kc, &vc}) cast_tensor(*x, file_dt, dt);
  p.q = q.bytes.data(), p.k_cache = kc.bytes.data(), p.v_cache = vc.bytes.data();
  std::string device = "cpu";
  if (dev == Device::cuda) {
    const CudaRunInfo info = run_decode_cuda(p, pol, out, mask_bytes);
    device = "cuda: " + info.device_name;
    pol.splits = info.splits;  // the statistics record the split count that ran
  } else {
    cpu::decode(p, pol, out);
  }
  std::vector<std::int64_t> o_shape = {batch, qtok, hq, p.head_dim_v}, row_shape = {batch, qtok, hq};
  if (q3) o_shape = {batch, hq, p.head_dim_v}, row_shape = {batch, hq};
  opt.save(a, "decode", pol, device, o_shape, row_shape);
  return 0;
}

int cmd_info(int argc, char** argv) {
  const Args a(argc, argv, 2, {});
  if (a.help()) {
    std::cout << "usage: blasst info\n\nPrints the version, the backends compiled in and the CUDA devices.\n";
    return 0;
  }
  const BuildInfo info = build_info();
  std::cout << "blasst " << BLASST_VERSION << "\n"
            << "cpu engine: " << cpu::num_threads() << " threads\n"
            << "cuda: " << (info.cuda_compiled ? "compiled" : "not compiled");
  if (info.cuda_compiled)
    std::cout << " (runtime " << info.cuda_runtime_version / 1000 << "." << info.cuda_runtime_version % 1000 / 10
              << ", driver " << info.cuda_driver_version / 1000 << "." << info.cuda_driver_version % 1000 / 10 << ")";
  std::cout << "\n";
  for (const CudaDevice& d : info.devices)
    std::cout << "  device " << d.index << ": " << d.name << ", sm_" << d.cc_major << d.cc_minor << ", "
              << d.sm_count << " SMs, " << d.memory_gib << " GiB\n";
  if (info.devices.empty()) std::cout << "  no usable CUDA device: " << info.cuda_status << "\n";
  return 0;
}

}  // namespace
}  // namespace blasst::cli

int main(int argc, char** argv) {
  using namespace blasst::cli;
  try {
    if (argc < 2) {
      std::cerr << kTopUsage;
      return 2;
    }
    const std::string cmd = argv[1];
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      std::cout << kTopUsage;
      return 0;
    }
    if (cmd == "attention") return cmd_attention(argc, argv);
    if (cmd == "decode") return cmd_decode(argc, argv);
    if (cmd == "bench") return cmd_bench(argc, argv);
    if (cmd == "calibrate") return cmd_calibrate(argc, argv);
    if (cmd == "info") return cmd_info(argc, argv);
    throw UsageError("unknown command '" + cmd + "' (expected attention, decode, bench, calibrate or info)");
  } catch (const UsageError& e) {
    std::cerr << "blasst: error: " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "blasst: error: out of memory (are the shapes right?)\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "blasst: error: " << e.what() << "\n";
    return 1;
  }
}
