// Helpers for the CUDA tests: device detection, device buffers, 16-bit conversions, paged caches.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "blasst/blasst.hpp"
#include "blasst/convert.hpp"
#include "blasst/synthetic.hpp"

namespace blasst::test {

#define CUDA_OK(call)                                                                   \
  do {                                                                                  \
    const cudaError_t e_ = (call);                                                      \
    ASSERT_EQ(e_, cudaSuccess) << #call << ": " << cudaGetErrorString(e_);              \
  } while (0)

// The kernels are built for sm_90a: they run on compute capability 9.0 only.
inline bool have_hopper() {
  static const bool ok = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return false;
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return false;
    return p.major == 9 && p.minor == 0;
  }();
  return ok;
}

#define REQUIRE_HOPPER() \
  if (!::blasst::test::have_hopper()) GTEST_SKIP() << "no sm_90 GPU: CUDA test skipped"

template <class T> struct DeviceBuffer {
  T* ptr = nullptr;
  std::size_t n = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) : n(count) {
    if (count && cudaMalloc(&ptr, count * sizeof(T)) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
  }
  DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& host) {
    if (cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice) != cudaSuccess)
      throw std::runtime_error("upload failed");
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    if (n && cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess)
      throw std::runtime_error("download failed");
    return h;
  }
};

// 16-bit bits of f and back (bfloat16 with the library's conversion, blasst/convert.hpp).
inline std::uint16_t to_bits(float f, DType t) {
  if (t == DType::bf16) return float_to_bf16(f);
  const _Float16 h = static_cast<_Float16>(f);
  std::uint16_t r;
  std::memcpy(&r, &h, 2);
  return r;
}

inline float from_bits(std::uint16_t v, DType t) {
  if (t == DType::bf16) return bf16_to_float(v);
  _Float16 h;
  std::memcpy(&h, &v, 2);
  return static_cast<float>(h);
}

inline std::uint64_t fresh_seed() {
  if (const char* s = std::getenv("BLASST_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

// A paged decode batch in 16-bit host arrays (the same bits go to the CPU engine and the GPU).
struct PagedBatch {
  int batch = 0, q_tokens = 1, hq = 0, hkv = 0, d = 0, page_size = 0, num_pages = 0, max_pages = 0;
  DType dtype = DType::bf16;
  std::vector<int> lens;
  std::vector<std::uint16_t> q, kc, vc;  // [batch, q_tokens, hq, d], [pages, page_size, hkv, d] x2
  std::vector<std::int32_t> table, seq_lens;

  DecodeProblem problem(const void* qp, const void* kp, const void* vp, const std::int32_t* tp,
                        const std::int32_t* sp) const {
    DecodeProblem p;
    p.batch = batch, p.q_tokens = q_tokens, p.num_heads_q = hq, p.num_heads_kv = hkv;
    p.head_dim_qk = p.head_dim_v = d, p.dtype = dtype;
    p.num_pages = num_pages, p.page_size = page_size, p.max_pages_per_seq = max_pages;
    p.q = qp, p.k_cache = kp, p.v_cache = vp, p.block_table = tp, p.seq_lens = sp;
    p.set_contiguous_strides();
    return p;
  }
};

// structured: the synthetic generator (sinks, locality, needles), so tiles really get skipped;
// otherwise Gaussian. Pages are assigned in a shuffled order, with one spare page.
inline PagedBatch make_paged(std::uint64_t seed, const std::vector<int>& lens, int q_tokens, int hq, int hkv, int d,
                             int page_size, DType dtype, bool structured) {
  PagedBatch x;
  x.batch = static_cast<int>(lens.size()), x.q_tokens = q_tokens, x.hq = hq, x.hkv = hkv, x.d = d;
  x.page_size = page_size, x.dtype = dtype, x.lens = lens;
  int maxlen = 0;
  for (int l : lens) maxlen = std::max(maxlen, l);
  x.max_pages = std::max(1, (maxlen + page_size - 1) / page_size);
  int pages = 1;
  for (int l : lens) pages += (l + page_size - 1) / page_size;
  x.num_pages = pages;
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> order(pages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  x.table.assign(static_cast<std::size_t>(x.batch) * x.max_pages, -1);
  int next = 0;
  for (int b = 0; b < x.batch; ++b)
    for (int i = 0; i < (lens[b] + page_size - 1) / page_size; ++i) x.table[std::size_t(b) * x.max_pages + i] = order[next++];
  x.seq_lens.assign(lens.begin(), lens.end());
  const std::size_t slot = std::size_t(hkv) * d;
  x.kc.assign(std::size_t(pages) * page_size * slot, to_bits(0.0f, dtype));
  x.vc.assign(x.kc.size(), to_bits(0.0f, dtype));
  x.q.resize(std::size_t(x.batch) * q_tokens * hq * d);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int b = 0; b < x.batch; ++b) {
    const int n = lens[b];
    std::vector<float> q(std::size_t(q_tokens) * hq * d), k(std::size_t(n) * slot), v(k.size());
    if (structured) {
      SyntheticSpec spec;
      spec.seed = rng();
      const SyntheticQKV s = synthetic_qkv(q_tokens, n, hq, hkv, d, d, spec);
      q = s.q, k = s.k, v = s.v;
    } else {
      for (float& f : q) f = g(rng);
      for (float& f : k) f = g(rng);
      for (float& f : v) f = g(rng);
    }
    for (std::size_t i = 0; i < q.size(); ++i) x.q[std::size_t(b) * q.size() + i] = to_bits(q[i], dtype);
    for (int j = 0; j < n; ++j) {
      const std::size_t page = x.table[std::size_t(b) * x.max_pages + j / page_size];
      const std::size_t dst = (page * page_size + j % page_size) * slot;
      for (std::size_t c = 0; c < slot; ++c) {
        x.kc[dst + c] = to_bits(k[std::size_t(j) * slot + c], dtype);
        x.vc[dst + c] = to_bits(v[std::size_t(j) * slot + c], dtype);
      }
    }
  }
  for (auto& t : x.table)
    if (t < 0) t = 0;  // unused entries must still be valid page ids
  return x;
}

// Relative L2 error of a against ref (float, or a float64 reference).
template <class R>
double rel_l2(const std::vector<float>& a, const std::vector<R>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace blasst::test
