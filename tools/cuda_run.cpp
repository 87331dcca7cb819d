// The command line's GPU path (see cuda_run.hpp).
#include "cuda_run.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "blasst/types.hpp"
#include "cli_util.hpp"

#if BLASST_WITH_CUDA
#include <cuda_runtime.h>

#include "blasst/cuda/decode.hpp"
#include "blasst/cuda/prefill.hpp"
#endif

namespace blasst::cli {

#if BLASST_WITH_CUDA
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("--device cuda: ") + what + ": " + cudaGetErrorString(e));
}

// Device memory owned for one run.
class DeviceBytes {
 public:
  explicit DeviceBytes(std::size_t n) : n_(n) {
    if (n) check(cudaMalloc(&p_, n), "cudaMalloc");
  }
  DeviceBytes(const void* host, std::size_t n) : DeviceBytes(n) {
    if (n) check(cudaMemcpy(p_, host, n, cudaMemcpyHostToDevice), "copy to the device");
  }
  ~DeviceBytes() { cudaFree(p_); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  template <class T = void> T* get() const { return static_cast<T*>(p_); }
  void zero() {
    if (n_) check(cudaMemset(p_, 0, n_), "cudaMemset");
  }
  void download(void* host, std::size_t n) const {
    if (n) check(cudaMemcpy(host, p_, n, cudaMemcpyDeviceToHost), "copy to the host");
  }

 private:
  void* p_ = nullptr;
  std::size_t n_ = 0;
};

// The device every run uses: device 0 (CUDA_VISIBLE_DEVICES picks another), with a clear error
// when there is none.
std::string first_device() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0)
    throw Error(std::string("--device cuda: no usable CUDA device (") +
                (e != cudaSuccess ? cudaGetErrorString(e) : "none found") + "); run on the CPU with --device cpu");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  if (prop.major != 9 || prop.minor != 0)
    throw Error("--device cuda: the CUDA kernels are built for sm_90a (Hopper); device 0 (" + std::string(prop.name) +
                ") is sm_" + std::to_string(prop.major) + std::to_string(prop.minor));
  check(cudaSetDevice(0), "cudaSetDevice");
  return prop.name;
}

// The kernel's 16-bit O, read back as the CLI's float32 O.
void download_o(const DeviceBytes& d, DType t, std::int64_t elems, void* host_o) {
  std::vector<std::uint8_t> h(static_cast<std::size_t>(elems) * 2);
  d.download(h.data(), h.size());
  float* o = static_cast<float*>(host_o);
  for (std::size_t i = 0; i < static_cast<std::size_t>(elems); ++i) o[i] = element_as_float(h.data(), t, i);
}

void check_outputs(const Outputs& out) {
  if (out.dropped_mass)
    throw Error("--dropped-mass is computed by the CPU engine's extra pass: use --device cpu for it");
  if (out.o_dtype != DType::f32) throw Error("internal: the CLI's O is float32");
}

}  // namespace

CudaRunInfo run_prefill_cuda(const PrefillProblem& hp, const SkipPolicy& policy, const Outputs& out,
                             std::int64_t mask_bytes) {
  check_outputs(out);
  if (const std::string why = cuda::prefill_unsupported_reason(hp, policy); !why.empty())
    throw Error("--device cuda: " + why);
  CudaRunInfo info;
  info.device_name = first_device();
  const std::size_t es = 2;  // bf16 / fp16
  const DeviceBytes q(hp.q, std::size_t(hp.total_q) * hp.num_heads_q * hp.head_dim_qk * es);
  const DeviceBytes k(hp.k, std::size_t(hp.total_k) * hp.num_heads_kv * hp.head_dim_qk * es);
  const DeviceBytes v(hp.v, std::size_t(hp.total_k) * hp.num_heads_kv * hp.head_dim_v * es);
  const std::size_t cu_bytes = hp.cu_seqlens_q ? std::size_t(hp.batch + 1) * 4 : 0;
  const DeviceBytes cq(hp.cu_seqlens_q, cu_bytes), ck(hp.cu_seqlens_k, cu_bytes);
  int max_q = static_cast<int>(hp.total_q);
  if (hp.cu_seqlens_q) {
    max_q = 0;
    for (int b = 0; b < hp.batch; ++b) max_q = std::max(max_q, hp.cu_seqlens_q[b + 1] - hp.cu_seqlens_q[b]);
  }
  PrefillProblem p = hp;
  p.q = q.get(), p.k = k.get(), p.v = v.get();
  p.cu_seqlens_q = hp.cu_seqlens_q ? cq.get<std::int32_t>() : nullptr;
  p.cu_seqlens_k = hp.cu_seqlens_k ? ck.get<std::int32_t>() : nullptr;

  const std::int64_t rows = hp.total_q * hp.num_heads_q;
  DeviceBytes o(std::size_t(rows) * hp.head_dim_v * es), lse(out.lse ? std::size_t(rows) * 4 : 0),
      mask(out.skip_mask ? std::size_t(mask_bytes) : 0), counters(std::size_t(hp.batch) * hp.num_heads_q * 16);
  mask.zero();  // the caller clears the prefill mask (cuda/prefill.hpp)
  Outputs d;
  d.set_contiguous_strides(p);
  d.o = o.get(), d.o_dtype = p.dtype;
  d.lse = out.lse ? lse.get<float>() : nullptr;
  d.skip_mask = out.skip_mask ? mask.get<std::uint8_t>() : nullptr;
  d.tile_counters = counters.get<std::uint64_t>();

  const cuda::PrefillPlan plan = cuda::plan_prefill(p, max_q, policy);
  cuda::prefill(p, policy, plan, d, nullptr);
  check(cudaGetLastError(), "prefill launch");
  check(cudaDeviceSynchronize(), "prefill");

  download_o(o, p.dtype, rows * hp.head_dim_v, out.o);
  if (out.lse) lse.download(out.lse, std::size_t(rows) * 4);
  if (out.skip_mask) mask.download(out.skip_mask, std::size_t(mask_bytes));
  if (out.stats) {
    std::vector<std::uint64_t> c(std::size_t(hp.batch) * hp.num_heads_q * 2);
    counters.download(c.data(), c.size() * 8);
    std::vector<double> lambda(static_cast<std::size_t>(hp.batch));
    for (int b = 0; b < hp.batch; ++b)
      lambda[b] = sequence_lambda(policy, hp.cu_seqlens_k ? hp.cu_seqlens_k[b + 1] - hp.cu_seqlens_k[b] : hp.total_k);
    *out.stats = stats_from_counters(c.data(), hp.batch, hp.num_heads_q, std::move(lambda));
  }
  return info;
}

CudaRunInfo run_decode_cuda(const DecodeProblem& hp, const SkipPolicy& policy, const Outputs& out,
                            std::int64_t mask_bytes) {
  check_outputs(out);
  if (const std::string why = cuda::decode_unsupported_reason(hp, policy); !why.empty())
    throw Error("--device cuda: " + why);
  CudaRunInfo info;
  info.device_name = first_device();
  const std::size_t es = 2;
  const std::size_t slots = std::size_t(hp.num_pages) * hp.page_size * hp.num_heads_kv;
  const DeviceBytes q(hp.q, std::size_t(hp.batch) * hp.q_tokens * hp.num_heads_q * hp.head_dim_qk * es);
  const DeviceBytes kc(hp.k_cache, slots * hp.head_dim_qk * es), vc(hp.v_cache, slots * hp.head_dim_v * es);
  const DeviceBytes table(hp.block_table, std::size_t(hp.batch) * hp.max_pages_per_seq * 4);
  const DeviceBytes lens(hp.seq_lens, std::size_t(hp.batch) * 4);
  int max_len = 0;
  for (int b = 0; b < hp.batch; ++b) max_len = std::max(max_len, hp.seq_lens[b]);
  DecodeProblem p = hp;
  p.q = q.get(), p.k_cache = kc.get(), p.v_cache = vc.get();
  p.block_table = table.get<std::int32_t>(), p.seq_lens = lens.get<std::int32_t>();

  const cuda::DecodePlan plan = cuda::plan_decode(p, max_len, policy);
  info.splits = plan.splits;
  const std::int64_t rows = std::int64_t(hp.batch) * hp.q_tokens * hp.num_heads_q;
  // The kernel clears and writes its mask up to batch x Hkv x ceil(max_len / block_k) bytes.
  const std::int64_t mask_bound =
      std::int64_t(hp.batch) * hp.num_heads_kv * ((max_len + plan.block_k - 1) / plan.block_k);
  DeviceBytes o(std::size_t(rows) * hp.head_dim_v * es), lse(out.lse ? std::size_t(rows) * 4 : 0),
      mask(out.skip_mask ? std::size_t(std::max(mask_bytes, mask_bound)) : 0),
      counters(std::size_t(hp.batch) * hp.num_heads_kv * 16), workspace(plan.workspace_bytes);
  Outputs d;
  d.set_contiguous_strides(p);
  d.o = o.get(), d.o_dtype = p.dtype;
  d.lse = out.lse ? lse.get<float>() : nullptr;
  d.skip_mask = out.skip_mask ? mask.get<std::uint8_t>() : nullptr;
  d.tile_counters = counters.get<std::uint64_t>();

  cuda::decode(p, policy, plan, d, workspace.get(), nullptr);
  check(cudaGetLastError(), "decode launch");
  check(cudaDeviceSynchronize(), "decode");

  download_o(o, p.dtype, rows * hp.head_dim_v, out.o);
  if (out.lse) lse.download(out.lse, std::size_t(rows) * 4);
  if (out.skip_mask) mask.download(out.skip_mask, std::size_t(mask_bytes));
  if (out.stats) {
    std::vector<std::uint64_t> c(std::size_t(hp.batch) * hp.num_heads_kv * 2);
    counters.download(c.data(), c.size() * 8);
    std::vector<double> lambda(static_cast<std::size_t>(hp.batch));
    for (int b = 0; b < hp.batch; ++b) lambda[b] = sequence_lambda(policy, hp.seq_lens[b]);
    *out.stats = stats_from_counters(c.data(), hp.batch, hp.num_heads_kv, std::move(lambda));
  }
  return info;
}

#else  // a build without CUDA

CudaRunInfo run_prefill_cuda(const PrefillProblem&, const SkipPolicy&, const Outputs&, std::int64_t) {
  throw Error("--device cuda: this blasst was built without CUDA (configure with nvcc present and BLASST_CUDA=ON)");
}
CudaRunInfo run_decode_cuda(const DecodeProblem&, const SkipPolicy&, const Outputs&, std::int64_t) {
  throw Error("--device cuda: this blasst was built without CUDA (configure with nvcc present and BLASST_CUDA=ON)");
}

#endif

}  // namespace blasst::cli
