// The Python extension blasst._C: thin wrappers that take DLPack tensors (numpy arrays, torch
// tensors) and call the C++ API. Argument handling, allocation and defaults live in python/blasst.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/synthetic.hpp"
#if defined(BLASST_WITH_CUDA)
#include "blasst/cuda/decode.hpp"
#include "blasst/cuda/prefill.hpp"
#endif

namespace nb = nanobind;
using namespace blasst;

namespace {

using Array = nb::ndarray<nb::ro>;
using MutArray = nb::ndarray<>;

DType dtype_of(const nb::dlpack::dtype& t, const char* name) {
  if (t == nb::dtype<float>()) return DType::f32;
  if (t.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float) && t.bits == 16) return DType::f16;
  if (t.code == static_cast<std::uint8_t>(nb::dlpack::dtype_code::Bfloat) && t.bits == 16) return DType::bf16;
  throw nb::type_error((std::string(name) + ": expected float32, float16 or bfloat16").c_str());
}

template <class A> void require(const A& a, const char* name, std::size_t ndim, bool cuda) {
  if (a.ndim() != ndim)
    throw nb::value_error((std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                           std::to_string(a.ndim())).c_str());
  const bool on_cuda = a.device_type() == nb::device::cuda::value;
  if (on_cuda != cuda || (!cuda && a.device_type() != nb::device::cpu::value))
    throw nb::value_error((std::string(name) + (cuda ? ": expected a CUDA tensor" : ": expected a CPU array")).c_str());
  if (ndim > 0 && a.stride(ndim - 1) != 1 && a.shape(ndim - 1) > 1)
    throw nb::value_error((std::string(name) + ": the last dimension must be contiguous").c_str());
}

template <class A> const std::int32_t* int32_data(const A& a, const char* name) {
  if (a.dtype() != nb::dtype<std::int32_t>()) throw nb::type_error((std::string(name) + ": expected int32").c_str());
  if (a.ndim() >= 1 && a.stride(a.ndim() - 1) != 1 && a.shape(a.ndim() - 1) > 1)
    throw nb::value_error((std::string(name) + ": must be contiguous").c_str());
  return static_cast<const std::int32_t*>(a.data());
}

// A block table's int32 entries, rows max_pages_per_seq apart (a column slice of a wider table is
// not: its rows would be read as the wrong ones).
const std::int32_t* block_table_data(const Array& bt) {
  if (bt.shape(0) > 1 && bt.stride(0) != std::int64_t(bt.shape(1)))
    throw nb::value_error("block_table must be contiguous (rows of max_pages_per_seq entries)");
  return int32_data(bt, "block_table");
}

SkipPolicy policy_of(int mode, double value, int block_q, int block_k, const std::string& order, int splits,
                     bool max_seed) {
  SkipPolicy p;
  p.mode = static_cast<SkipPolicy::Mode>(mode);
  p.value = value;
  p.block_q = block_q;
  p.block_k = block_k;
  p.order = parse_visit_order(order);
  p.splits = splits;
  p.max_seed = max_seed;
  return p;
}

// (visited, skipped, lambda, batch, heads) of a SkipStats.
using StatsTuple = std::tuple<std::vector<std::int64_t>, std::vector<std::int64_t>, std::vector<double>, int, int>;
StatsTuple stats_tuple(const SkipStats& s) { return {s.visited, s.skipped, s.lambda, s.batch, s.heads}; }

void set_lse(Outputs& out, const std::optional<MutArray>& lse, std::size_t ndim, bool cuda) {
  if (!lse) return;
  require(*lse, "lse", ndim, cuda);
  if (lse->dtype() != nb::dtype<float>()) throw nb::type_error("lse: expected float32");
  out.lse = static_cast<float*>(lse->data());
  out.lse_stride_batch = ndim == 3 ? lse->stride(0) : 0;
  out.lse_stride_token = lse->stride(ndim - 2);
  out.lse_stride_head = lse->stride(ndim - 1);
}

// A prefill problem over DLPack arrays (v may be k where V plays no part); cu_seqlens live where
// q does. With a block table, k and v are paged caches [pages, page_size, Hkv, d], cu_seqlens are
// required, and total_k is their key count (an upper bound on the GPU, which does not read it).
PrefillProblem prefill_problem(const Array& q, const Array& k, const Array& v, const std::optional<Array>& cu_q,
                               const std::optional<Array>& cu_k, bool causal, float scale, bool cuda = false,
                               const std::optional<Array>& bt = std::nullopt, std::int64_t total_k = 0) {
  const std::size_t kv_dims = bt ? 4 : 3, h = kv_dims - 2;  // h: the head dimension's index
  require(q, "q", 3, cuda), require(k, "k", kv_dims, cuda), require(v, "v", kv_dims, cuda);
  PrefillProblem p;
  p.dtype = dtype_of(q.dtype(), "q");
  if (dtype_of(k.dtype(), "k") != p.dtype || dtype_of(v.dtype(), "v") != p.dtype)
    throw nb::type_error("q, k and v must have the same dtype");
  for (std::size_t i = 0; i < kv_dims - 1; ++i)
    if (k.shape(i) != v.shape(i))
      throw nb::value_error(bt ? "k and v disagree in pages, page size or heads" : "k and v disagree in tokens or heads");
  if (q.shape(2) != k.shape(kv_dims - 1)) throw nb::value_error("q and k disagree in head dim");
  p.total_q = q.shape(0), p.total_k = bt ? total_k : std::int64_t(k.shape(0));
  p.num_heads_q = static_cast<int>(q.shape(1)), p.num_heads_kv = static_cast<int>(k.shape(h));
  p.head_dim_qk = static_cast<int>(q.shape(2)), p.head_dim_v = static_cast<int>(v.shape(kv_dims - 1));
  p.causal = causal, p.softmax_scale = scale;
  p.q = q.data(), p.q_stride_token = q.stride(0), p.q_stride_head = q.stride(1);
  p.k = k.data(), p.k_stride_token = k.stride(h - 1), p.k_stride_head = k.stride(h);
  p.v = v.data(), p.v_stride_token = v.stride(h - 1), p.v_stride_head = v.stride(h);
  if (cu_q.has_value() != cu_k.has_value()) throw nb::value_error("cu_seqlens_q and cu_seqlens_k go together");
  if (cu_q) {
    if (cu_q->ndim() != 1 || cu_k->ndim() != 1 || cu_q->shape(0) != cu_k->shape(0) || cu_q->shape(0) < 2)
      throw nb::value_error("cu_seqlens_q and cu_seqlens_k must be 1-D with the same batch + 1 entries");
    require(*cu_q, "cu_seqlens_q", 1, cuda), require(*cu_k, "cu_seqlens_k", 1, cuda);
    p.batch = static_cast<int>(cu_q->shape(0) - 1);
    p.cu_seqlens_q = int32_data(*cu_q, "cu_seqlens_q");
    p.cu_seqlens_k = int32_data(*cu_k, "cu_seqlens_k");
  }
  if (bt) {
    if (!cu_q) throw nb::value_error("a block table needs cu_seqlens_q and cu_seqlens_k (the key counts)");
    require(*bt, "block_table", 2, cuda);
    if (bt->shape(0) != cu_q->shape(0) - 1) throw nb::value_error("block_table and cu_seqlens disagree in batch");
    p.block_table = block_table_data(*bt);
    p.max_pages_per_seq = static_cast<int>(bt->shape(1));
    p.num_pages = static_cast<int>(k.shape(0)), p.page_size = static_cast<int>(k.shape(1));
    p.k_stride_page = k.stride(0), p.v_stride_page = v.stride(0);
  }
  return p;
}

// O [total_q, Hq, d_v] and the optional LSE [total_q, Hq] of a prefill.
Outputs prefill_outputs(const PrefillProblem& p, MutArray& o, const std::optional<MutArray>& lse, bool cuda) {
  require(o, "out", 3, cuda);
  if (o.shape(0) != std::size_t(p.total_q) || o.shape(1) != std::size_t(p.num_heads_q) ||
      o.shape(2) != std::size_t(p.head_dim_v))
    throw nb::value_error("out must be [total_q, Hq, d_v]");
  Outputs out;
  out.o = o.data(), out.o_dtype = dtype_of(o.dtype(), "out");
  out.o_stride_token = o.stride(0), out.o_stride_head = o.stride(1);
  set_lse(out, lse, 2, cuda);
  return out;
}

StatsTuple prefill_cpu(const Array& q, const Array& k, const Array& v, MutArray o, std::optional<MutArray> lse,
                       std::optional<Array> cu_q, std::optional<Array> cu_k, bool causal, float scale, int mode,
                       double value, int block_q, int block_k, const std::string& order,
                       std::optional<Array> block_table, std::int64_t total_k) {
  const PrefillProblem p = prefill_problem(q, k, v, cu_q, cu_k, causal, scale, false, block_table, total_k);
  Outputs out = prefill_outputs(p, o, lse, false);
  SkipStats stats;
  out.stats = &stats;
  {
    nb::gil_scoped_release release;
    cpu::prefill(p, policy_of(mode, value, block_q, block_k, order, 1, false), out);
  }
  return stats_tuple(stats);
}

DecodeProblem decode_problem(const Array& q, const Array& kc, const Array& vc, const Array& bt, const Array& sl,
                             float scale, bool cuda) {
  require(q, "q", 4, cuda), require(kc, "k_cache", 4, cuda), require(vc, "v_cache", 4, cuda);
  require(bt, "block_table", 2, cuda), require(sl, "seq_lens", 1, cuda);
  DecodeProblem p;
  p.dtype = dtype_of(q.dtype(), "q");
  if (dtype_of(kc.dtype(), "k_cache") != p.dtype || dtype_of(vc.dtype(), "v_cache") != p.dtype)
    throw nb::type_error("q, k_cache and v_cache must have the same dtype");
  for (int i = 0; i < 3; ++i)
    if (kc.shape(i) != vc.shape(i)) throw nb::value_error("k_cache and v_cache disagree in pages, page size or heads");
  if (kc.shape(3) != q.shape(3)) throw nb::value_error("q and k_cache disagree in head dim");
  if (bt.shape(0) != q.shape(0) || sl.shape(0) != q.shape(0))
    throw nb::value_error("q, block_table and seq_lens disagree in batch");
  p.batch = static_cast<int>(q.shape(0)), p.q_tokens = static_cast<int>(q.shape(1));
  p.num_heads_q = static_cast<int>(q.shape(2)), p.num_heads_kv = static_cast<int>(kc.shape(2));
  p.head_dim_qk = static_cast<int>(q.shape(3)), p.head_dim_v = static_cast<int>(vc.shape(3));
  p.softmax_scale = scale;
  p.q = q.data(), p.q_stride_batch = q.stride(0), p.q_stride_token = q.stride(1), p.q_stride_head = q.stride(2);
  p.num_pages = static_cast<int>(kc.shape(0)), p.page_size = static_cast<int>(kc.shape(1));
  p.k_cache = kc.data(), p.k_stride_page = kc.stride(0), p.k_stride_slot = kc.stride(1), p.k_stride_head = kc.stride(2);
  p.v_cache = vc.data(), p.v_stride_page = vc.stride(0), p.v_stride_slot = vc.stride(1), p.v_stride_head = vc.stride(2);
  p.block_table = block_table_data(bt);
  p.max_pages_per_seq = static_cast<int>(bt.shape(1));
  p.seq_lens = int32_data(sl, "seq_lens");
  return p;
}

Outputs decode_outputs(const DecodeProblem& p, MutArray& o, const std::optional<MutArray>& lse, bool cuda) {
  require(o, "out", 4, cuda);
  if (o.shape(0) != std::size_t(p.batch) || o.shape(1) != std::size_t(p.q_tokens) ||
      o.shape(2) != std::size_t(p.num_heads_q) || o.shape(3) != std::size_t(p.head_dim_v))
    throw nb::value_error("out must be [batch, q_tokens, Hq, d_v]");
  Outputs out;
  out.o = o.data(), out.o_dtype = dtype_of(o.dtype(), "out");
  out.o_stride_batch = o.stride(0), out.o_stride_token = o.stride(1), out.o_stride_head = o.stride(2);
  set_lse(out, lse, 3, cuda);
  return out;
}

StatsTuple decode_cpu(const Array& q, const Array& kc, const Array& vc, const Array& bt, const Array& sl, MutArray o,
                      std::optional<MutArray> lse, float scale, int mode, double value, int block_k, int splits,
                      bool max_seed) {
  const DecodeProblem p = decode_problem(q, kc, vc, bt, sl, scale, false);
  Outputs out = decode_outputs(p, o, lse, false);
  SkipStats stats;
  out.stats = &stats;
  {
    nb::gil_scoped_release release;
    cpu::decode(p, policy_of(mode, value, 64, block_k, "forward", splits, max_seed), out);
  }
  return stats_tuple(stats);
}

// Calibration sweeps: (visited [batch], skipped [batch][lambdas], kv_len [batch]).
using SweepTuple = std::tuple<std::vector<std::int64_t>, std::vector<std::int64_t>, std::vector<std::int64_t>>;

SweepTuple sweep_prefill(const Array& q, const Array& k, std::optional<Array> cu_q, std::optional<Array> cu_k,
                         bool causal, float scale, int block_q, int block_k, const std::string& order,
                         const std::vector<double>& lambdas) {
  const PrefillProblem p = prefill_problem(q, k, k, cu_q, cu_k, causal, scale);  // V plays no part
  CalibrationSweep sw;
  {
    nb::gil_scoped_release release;
    sw = cpu::sweep_prefill(p, policy_of(0, 0.0, block_q, block_k, order, 1, false), lambdas);
  }
  return {sw.visited, sw.skipped, sw.kv_len};
}

SweepTuple sweep_decode(const Array& q, const Array& kc, const Array& bt, const Array& sl, float scale, int block_k,
                        int splits, bool max_seed, const std::vector<double>& lambdas) {
  const DecodeProblem p = decode_problem(q, kc, kc, bt, sl, scale, false);
  CalibrationSweep sw;
  {
    nb::gil_scoped_release release;
    sw = cpu::sweep_decode(p, policy_of(0, 0.0, 64, block_k, "forward", splits, max_seed), lambdas);
  }
  return {sw.visited, sw.skipped, sw.kv_len};
}

#if defined(BLASST_WITH_CUDA)
// The plan for this batch shape (host-only: the split count, workspace size, kernel variant).
cuda::DecodePlan decode_cuda_plan(const Array& q, const Array& kc, const Array& vc, const Array& bt, const Array& sl,
                                  float scale, int mode, double value, int block_k, int splits, bool max_seed,
                                  int max_seq_len) {
  const DecodeProblem p = decode_problem(q, kc, vc, bt, sl, scale, true);
  return cuda::plan_decode(p, max_seq_len, policy_of(mode, value, 64, block_k, "forward", splits, max_seed), q.device_id());
}

// Prefill on the CUDA kernel (torch's stream; no allocation, no synchronisation). max_seqlen_q
// bounds every sequence's query count (cu_seqlens stay on the device).
void prefill_cuda(const Array& q, const Array& k, const Array& v, MutArray o, std::optional<MutArray> lse,
                  std::optional<Array> cu_q, std::optional<Array> cu_k, bool causal, float scale, int mode, double value,
                  int block_q, int block_k, const std::string& order, int max_seqlen_q,
                  std::optional<MutArray> counters, std::uintptr_t stream, std::optional<Array> block_table,
                  std::int64_t total_k) {
  const PrefillProblem p = prefill_problem(q, k, v, cu_q, cu_k, causal, scale, true, block_table, total_k);
  Outputs out = prefill_outputs(p, o, lse, true);
  if (counters) {
    require(*counters, "counters", 1, true);
    if (counters->shape(0) != std::size_t(p.batch) * p.num_heads_q * 2)
      throw nb::value_error("counters must have batch * Hq * 2 entries");
    out.tile_counters = static_cast<std::uint64_t*>(counters->data());
  }
  const SkipPolicy pol = policy_of(mode, value, block_q, block_k, order, 1, false);
  const cuda::PrefillPlan plan = cuda::plan_prefill(p, max_seqlen_q, pol);
  cuda::prefill(p, pol, plan, out, reinterpret_cast<cudaStream_t>(stream));
}

// One decode step with a plan: no allocation, no host query, no synchronisation (graph-capturable).
void decode_cuda(const cuda::DecodePlan& plan, const Array& q, const Array& kc, const Array& vc, const Array& bt,
                 const Array& sl, MutArray o, std::optional<MutArray> lse, std::optional<MutArray> counters,
                 std::optional<MutArray> workspace, float scale, int mode, double value, bool max_seed,
                 std::uintptr_t stream) {
  const DecodeProblem p = decode_problem(q, kc, vc, bt, sl, scale, true);
  Outputs out = decode_outputs(p, o, lse, true);
  if (counters) out.tile_counters = static_cast<std::uint64_t*>(counters->data());
  const SkipPolicy pol = policy_of(mode, value, 64, plan.block_k, "forward", plan.splits, max_seed);
  cuda::decode(p, pol, plan, out, workspace ? workspace->data() : nullptr, reinterpret_cast<cudaStream_t>(stream));
}
#endif

// The documented input generator (include/blasst/synthetic.hpp) as three float32 numpy arrays that
// share one owner: q [sq, hq, dqk], k [sk, hkv, dqk], v [sk, hkv, dv].
auto synthetic(int sq, int sk, int hq, int hkv, int dqk, int dv, std::uint64_t seed) {
  SyntheticSpec spec;
  spec.seed = seed;
  auto* x = new SyntheticQKV(synthetic_qkv(sq, sk, hq, hkv, dqk, dv, spec));
  nb::capsule owner(x, [](void* ptr) noexcept { delete static_cast<SyntheticQKV*>(ptr); });
  using F32 = nb::ndarray<nb::numpy, float>;
  auto z = [](int n) { return static_cast<std::size_t>(n); };
  return std::make_tuple(F32(x->q.data(), {z(sq), z(hq), z(dqk)}, owner), F32(x->k.data(), {z(sk), z(hkv), z(dqk)}, owner),
                         F32(x->v.data(), {z(sk), z(hkv), z(dv)}, owner));
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "blasst: BLASST dynamic block-sparse attention (C++ core)";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("prefill_cpu", &prefill_cpu);
  m.def("decode_cpu", &decode_cpu);
#if defined(BLASST_WITH_CUDA)
  nb::class_<cuda::DecodePlan>(m, "CudaDecodePlan")
      .def_ro("splits", &cuda::DecodePlan::splits)
      .def_ro("workspace_bytes", &cuda::DecodePlan::workspace_bytes)
      .def_ro("max_seq_len", &cuda::DecodePlan::max_seq_len)
      .def_ro("small_rings", &cuda::DecodePlan::small_rings)
      .def_ro("ctas_per_sm", &cuda::DecodePlan::ctas_per_sm);
  m.def("decode_cuda_plan", &decode_cuda_plan);
  m.def("decode_cuda", &decode_cuda);
  m.def("prefill_cuda", &prefill_cuda);
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("sweep_prefill", &sweep_prefill);
  m.def("sweep_decode", &sweep_decode);
  m.def("default_lambdas", &default_lambdas);
  m.def("prefill_block_k", [](int head_dim) { return prefill_block_k(head_dim); });
  m.def("fit_scale_factor", [](const std::vector<double>& s, const std::vector<double>& a) {
    const ScaleFit f = fit_scale_factor(s, a);
    return std::make_tuple(f.alpha, f.beta, f.r2, f.s_min, f.s_max, f.points);
  });
  m.def("synthetic_qkv", &synthetic);
  m.def("num_threads", &cpu::num_threads);
  m.def("set_num_threads", &cpu::set_num_threads);
}
