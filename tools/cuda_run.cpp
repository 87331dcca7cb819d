// The command line's GPU path (see cuda_run.hpp).
#include "cuda_run.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "blasst/convert.hpp"
#include "blasst/types.hpp"

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

constexpr std::size_t kElemBytes = 2;  // the kernels' inputs: bf16 / fp16

// What every GPU run checks first (the outputs the CLI asks for, the kernel's own refusal), then
// the device it runs on.
CudaRunInfo begin_run(const Outputs& out, const std::string& unsupported) {
  if (out.dropped_mass)
    throw Error("--dropped-mass is computed by the CPU engine's extra pass: use --device cpu for it");
  if (out.o_dtype != DType::f32) throw Error("internal: the CLI's O is float32");
  if (!unsupported.empty()) throw Error("--device cuda: " + unsupported);
  CudaRunInfo info;
  info.device_name = first_device();
  return info;
}

// The kernel's outputs on the device (O in the input dtype, and LSE, mask and tile counters where
// the host asks for them), then read back into the CLI's host outputs: O as float32, and the
// statistics from the counters with each sequence's lambda.
class DeviceOutputs {
 public:
  DeviceOutputs(const Outputs& host, DType t, std::int64_t rows, int d_v, std::size_t mask_alloc, int counter_rows)
      : host_(host), t_(t), o_elems_(rows * d_v), lse_bytes_(host.lse ? std::size_t(rows) * 4 : 0),
        o_(std::size_t(o_elems_) * 2), lse_(lse_bytes_), mask_(host.skip_mask ? mask_alloc : 0),
        counters_(std::size_t(counter_rows) * 16) {}

  // The kernel's Outputs for problem p.
  template <class Problem> Outputs device(const Problem& p) const {
    Outputs d;
    d.set_contiguous_strides(p);
    d.o = o_.get(), d.o_dtype = p.dtype;
    d.lse = host_.lse ? lse_.get<float>() : nullptr;
    d.skip_mask = host_.skip_mask ? mask_.get<std::uint8_t>() : nullptr;
    d.tile_counters = counters_.get<std::uint64_t>();
    return d;
  }
  void clear_mask() { mask_.zero(); }

  // kv_lens: each sequence's key count, for its lambda; heads: the counters' heads per sequence.
  void read_back(const SkipPolicy& policy, std::int64_t mask_bytes, const std::vector<std::int64_t>& kv_lens,
                 int heads) const {
    std::vector<std::uint16_t> o(static_cast<std::size_t>(o_elems_));
    o_.download(o.data(), o.size() * 2);
    convert_row(o.data(), t_, static_cast<float*>(host_.o), o_elems_);
    if (host_.lse) lse_.download(host_.lse, lse_bytes_);
    if (host_.skip_mask) mask_.download(host_.skip_mask, std::size_t(mask_bytes));
    if (!host_.stats) return;
    const int batch = static_cast<int>(kv_lens.size());
    std::vector<std::uint64_t> c(std::size_t(batch) * heads * 2);
    counters_.download(c.data(), c.size() * 8);
    std::vector<double> lambda;
    for (std::int64_t len : kv_lens) lambda.push_back(sequence_lambda(policy, len));
    *host_.stats = stats_from_counters(c.data(), batch, heads, std::move(lambda));
  }

 private:
  const Outputs& host_;
  DType t_;
  std::int64_t o_elems_;
  std::size_t lse_bytes_;
  DeviceBytes o_, lse_, mask_, counters_;
};

void finish(const char* what) {
  check(cudaGetLastError(), what);
  check(cudaDeviceSynchronize(), what);
}

}  // namespace

CudaRunInfo run_prefill_cuda(const PrefillProblem& hp, const SkipPolicy& policy, const Outputs& out,
                             std::int64_t mask_bytes) {
  const CudaRunInfo info = begin_run(out, cuda::prefill_unsupported_reason(hp, policy));
  const std::size_t es = kElemBytes;
  const DeviceBytes q(hp.q, std::size_t(hp.total_q) * hp.num_heads_q * hp.head_dim_qk * es);
  // Packed K and V hold total_k rows; paged caches num_pages x page_size slots.
  const std::size_t kv_rows = hp.block_table ? std::size_t(hp.num_pages) * hp.page_size : std::size_t(hp.total_k);
  const DeviceBytes k(hp.k, kv_rows * hp.num_heads_kv * hp.head_dim_qk * es);
  const DeviceBytes v(hp.v, kv_rows * hp.num_heads_kv * hp.head_dim_v * es);
  const DeviceBytes table(hp.block_table, hp.block_table ? std::size_t(hp.batch) * hp.max_pages_per_seq * 4 : 0);
  const std::size_t cu_bytes = hp.cu_seqlens_q ? std::size_t(hp.batch + 1) * 4 : 0;
  const DeviceBytes cq(hp.cu_seqlens_q, cu_bytes), ck(hp.cu_seqlens_k, cu_bytes);
  int max_q = static_cast<int>(hp.total_q);
  std::vector<std::int64_t> kv_lens = {hp.total_k};
  if (hp.cu_seqlens_q) {
    max_q = 0;
    kv_lens.clear();
    for (int b = 0; b < hp.batch; ++b) {
      max_q = std::max(max_q, hp.cu_seqlens_q[b + 1] - hp.cu_seqlens_q[b]);
      kv_lens.push_back(hp.cu_seqlens_k[b + 1] - hp.cu_seqlens_k[b]);
    }
  }
  PrefillProblem p = hp;
  p.q = q.get(), p.k = k.get(), p.v = v.get();
  p.cu_seqlens_q = hp.cu_seqlens_q ? cq.get<std::int32_t>() : nullptr;
  p.cu_seqlens_k = hp.cu_seqlens_k ? ck.get<std::int32_t>() : nullptr;
  if (hp.block_table) p.block_table = table.get<std::int32_t>();

  DeviceOutputs d(out, p.dtype, hp.total_q * hp.num_heads_q, hp.head_dim_v, std::size_t(mask_bytes),
                  hp.batch * hp.num_heads_q);
  d.clear_mask();  // the caller clears the prefill mask (cuda/prefill.hpp)
  cuda::prefill(p, policy, cuda::plan_prefill(p, max_q, policy), d.device(p), nullptr);
  finish("prefill");
  d.read_back(policy, mask_bytes, kv_lens, hp.num_heads_q);
  return info;
}

CudaRunInfo run_decode_cuda(const DecodeProblem& hp, const SkipPolicy& policy, const Outputs& out,
                            std::int64_t mask_bytes) {
  CudaRunInfo info = begin_run(out, cuda::decode_unsupported_reason(hp, policy));
  const std::size_t es = kElemBytes;
  const std::size_t slots = std::size_t(hp.num_pages) * hp.page_size * hp.num_heads_kv;
  const DeviceBytes q(hp.q, std::size_t(hp.batch) * hp.q_tokens * hp.num_heads_q * hp.head_dim_qk * es);
  const DeviceBytes kc(hp.k_cache, slots * hp.head_dim_qk * es), vc(hp.v_cache, slots * hp.head_dim_v * es);
  const DeviceBytes table(hp.block_table, std::size_t(hp.batch) * hp.max_pages_per_seq * 4);
  const DeviceBytes lens(hp.seq_lens, std::size_t(hp.batch) * 4);
  const std::vector<std::int64_t> kv_lens(hp.seq_lens, hp.seq_lens + hp.batch);
  const int max_len = kv_lens.empty() ? 0 : static_cast<int>(*std::max_element(kv_lens.begin(), kv_lens.end()));
  DecodeProblem p = hp;
  p.q = q.get(), p.k_cache = kc.get(), p.v_cache = vc.get();
  p.block_table = table.get<std::int32_t>(), p.seq_lens = lens.get<std::int32_t>();

  const cuda::DecodePlan plan = cuda::plan_decode(p, max_len, policy);
  info.splits = plan.splits;
  // The kernel clears and writes its mask up to batch x Hkv x ceil(max_len / block_k) bytes.
  const std::int64_t mask_bound =
      std::int64_t(hp.batch) * hp.num_heads_kv * ((max_len + plan.block_k - 1) / plan.block_k);
  DeviceOutputs d(out, p.dtype, std::int64_t(hp.batch) * hp.q_tokens * hp.num_heads_q, hp.head_dim_v,
                  std::size_t(std::max(mask_bytes, mask_bound)), hp.batch * hp.num_heads_kv);
  const DeviceBytes workspace(plan.workspace_bytes);
  cuda::decode(p, policy, plan, d.device(p), workspace.get(), nullptr);
  finish("decode");
  d.read_back(policy, mask_bytes, kv_lens, hp.num_heads_kv);
  return info;
}

#else  // a build without CUDA

namespace {
[[noreturn]] void no_cuda() {
  throw Error("--device cuda: this blasst was built without CUDA (configure with nvcc present and BLASST_CUDA=ON)");
}
}  // namespace

CudaRunInfo run_prefill_cuda(const PrefillProblem&, const SkipPolicy&, const Outputs&, std::int64_t) { no_cuda(); }
CudaRunInfo run_decode_cuda(const DecodeProblem&, const SkipPolicy&, const Outputs&, std::int64_t) { no_cuda(); }

#endif

}  // namespace blasst::cli
