// Thin wrappers over the PTX the kernels use: mbarriers, TMA loads, named barriers, ldmatrix, the
// m16n8k16 tensor-core MMA (bf16 / fp16 in, fp32 accumulate) and packing helpers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>

namespace blasst::cuda::ptx {

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier ----------------------------------------------------------------------------------

__device__ __forceinline__ void mbar_init(std::uint64_t* bar, std::uint32_t count) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}

// Waits for the phase of `parity` on a 32-bit shared address (never watched by
// BLASST_MBAR_WATCHDOG): for a producer short of registers, and mbar_wait's plain form.
__device__ __forceinline__ void mbar_wait_at(std::uint32_t bar, std::uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

#ifdef BLASST_MBAR_WATCHDOG
// Debug builds only (-DBLASST_MBAR_WATCHDOG): a wait that spins far too long is reported and
// given up, so that a hung kernel ends (with wrong results) and its printf output reaches the host.
// Threads 128 on print their wait after 2^21 polls, with the record below. Threads below 128 (the
// prefill kernels' producer warpgroup, which cannot call printf at the 24-40 registers it keeps
// after setmaxnreg: that faulted with "illegal instruction") record their stuck wait per CTA (the
// CTA's linear index modulo 2^16) at 2^20 polls, as tid << 24 | (shared address / 8) << 1 | parity,
// and give up at 2^24. In the decode kernel, threads below 128 are consumer warps: they only
// record too. Read a shared address against the kernel's barrier layout (its offset past the
// 1024-aligned dynamic base). Found prefill-demand-v2's hang in session 12 (PERF.md).
static __device__ unsigned g_mbar_watchdog[1 << 16];
__device__ __forceinline__ void mbar_wait(std::uint64_t* bar, std::uint32_t parity) {
  const unsigned cta = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  for (long long i = 0;; ++i) {
    std::uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
    if (done) return;
    if (threadIdx.x < 128 && i == (1ll << 20))
      g_mbar_watchdog[cta & 0xffff] = (threadIdx.x << 24) | ((smem_addr(bar) >> 3) & 0x7fffffu) << 1 | parity;
    if (threadIdx.x >= 128 && i == (1ll << 21)) {
      printf("mbarrier watchdog: block (%d,%d,%d) tid %d waits on shared 0x%x parity %u; producer record 0x%08x\n",
             blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, smem_addr(bar), parity,
             *reinterpret_cast<volatile unsigned*>(&g_mbar_watchdog[cta & 0xffff]));
      return;
    }
    if (i == (1ll << 24)) return;
  }
}
#else
__device__ __forceinline__ void mbar_wait(std::uint64_t* bar, std::uint32_t parity) { mbar_wait_at(smem_addr(bar), parity); }
#endif

// Registers `bytes` of expected transaction bytes and arrives once; the _at forms take 32-bit
// shared addresses (as mbar_wait_at), for a producer short of registers.
__device__ __forceinline__ void mbar_arrive_expect_tx_at(std::uint32_t bar, std::uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
  mbar_arrive_expect_tx_at(smem_addr(bar), bytes);
}

// TMA load of one box of a 4-D tensor map (coordinates innermost first) into shared memory,
// completing its bytes on bar.
__device__ __forceinline__ void tma_load_4d_at(std::uint32_t smem, const void* tensor_map, int c0, int c1, int c2,
                                               int c3, std::uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];\n" ::"r"(smem),
      "l"(tensor_map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_load_4d(void* smem, const void* tensor_map, int c0, int c1, int c2, int c3,
                                            std::uint64_t* bar) {
  tma_load_4d_at(smem_addr(smem), tensor_map, c0, c1, c2, c3, smem_addr(bar));
}

// The same load with an L2 cache policy (l2_evict_first()): data streamed once need not displace
// what L2 holds for others.
__device__ __forceinline__ void tma_load_4d_hint(void* smem, const void* tensor_map, int c0, int c1, int c2, int c3,
                                                 std::uint64_t* bar, std::uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1, "
      "{%2, %3, %4, %5}], [%6], %7;\n" ::"r"(smem_addr(smem)),
      "l"(tensor_map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}
__device__ __forceinline__ std::uint64_t l2_evict_first() {
  std::uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

__device__ __forceinline__ void prefetch_tensor_map(const void* tensor_map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(tensor_map) : "memory");
}

// Orders this thread's ordinary shared-memory writes before later async-proxy (TMA) accesses.
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void mbar_arrive(std::uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}

// ---- Thread block clusters: shared memory of another CTA of the cluster ---------------------------
// All threads of every CTA of the cluster (a launch with cluster dimensions only).
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
// The shared::cluster address of `p` (this CTA's shared memory) in the CTA of the given rank.
__device__ __forceinline__ std::uint32_t cluster_addr(const void* p, int rank) {
  std::uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(smem_addr(p)), "r"(rank));
  return r;
}
__device__ __forceinline__ void st_cluster_u8(std::uint32_t addr, std::uint32_t v) {
  asm volatile("st.shared::cluster.u8 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
// Arrive on an mbarrier of another CTA (release at cluster scope: this thread's earlier stores to
// that CTA are visible to whoever waits on the barrier with mbar_wait_cluster).
__device__ __forceinline__ void mbar_arrive_cluster(std::uint32_t addr) {
  asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(addr) : "memory");
}
__device__ __forceinline__ void mbar_wait_cluster(std::uint64_t* bar, std::uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}

// Named barriers for a subset of the CTA's warps (id 0 is __syncthreads').
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ bool named_barrier_and(int id, int threads, bool pred) {
  std::uint32_t out;
  asm volatile(
      "{\n.reg .pred p, q;\n"
      "setp.ne.u32 p, %1, 0;\n"
      "bar.red.and.pred q, %2, %3, p;\n"
      "selp.u32 %0, 1, 0, q;\n}\n"
      : "=r"(out)
      : "r"(static_cast<std::uint32_t>(pred)), "r"(id), "r"(threads)
      : "memory");
  return out != 0;
}

__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a TMA stage laid out as [chunk / 8][rows][64]
// elements (one 128-byte column slice after another), 128-byte swizzled as TMA writes it.
template <int ROWS>
__device__ __forceinline__ int stage_offset(int row, int chunk) {
  return (chunk >> 3) * (ROWS * 128) + row * 128 + (((chunk & 7) ^ (row & 7)) << 4);
}

// ---- ldmatrix / mma ----------------------------------------------------------------------------

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(smem)));
}

// D (16x8 f32) += A (16x16, row) * B (16x8, col).
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                          std::uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats packed into one register of two 16-bit elements (lower half first).
template <class T> __device__ __forceinline__ std::uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
}

// ---- wgmma (sm_90a) ----------------------------------------------------------------------------

// Shared-memory matrix descriptor for a 128-byte-swizzled operand (the layout TMA's 128-byte swizzle
// writes: rows of 128 bytes, 8-row atoms of 1024 bytes, 1024-byte aligned). lbo/sbo in bytes:
// K-major: sbo = 1024 between 8-row groups, lbo unused; MN-major: lbo between 64-element column
// blocks, sbo = 1024 between 8-row (k) groups.

// Built in two words, for loops that step through a tile: the low word holds the start address / 16
// and the leading offset, the high word the stride offset and the swizzle mode (make_desc joins
// them). Shared-memory addresses stay below 2^18, so the descriptor of base + off (off a multiple
// of 16) is the low word plus off / 16 with no carry: one integer add per wgmma.
__device__ __forceinline__ std::uint32_t sw128_desc_lo(const void* smem, std::uint32_t lbo) {
  return static_cast<std::uint32_t>((smem_addr(smem) & 0x3FFFF) >> 4) | (((lbo >> 4) & 0x3FFF) << 16);
}
__host__ __device__ constexpr std::uint32_t sw128_desc_hi(std::uint32_t sbo) {
  return ((sbo >> 4) & 0x3FFF) | (1u << 30);
}
__device__ __forceinline__ std::uint64_t make_desc(std::uint32_t lo, std::uint32_t hi) {
  return (std::uint64_t(hi) << 32) | lo;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses to accumulators across wgmma issue and wait points.
template <int N> __device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N, int M> __device__ __forceinline__ void fence_regs(std::uint32_t (&r)[N][M]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < M; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

template <int R> __device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R)); }
template <int R> __device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R)); }

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---- accumulator fragments ----------------------------------------------------------------------

// Max / sum over the 4 threads of a quad: the threads that hold one row of an mma.sync m16n8 or
// wgmma accumulator fragment.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Scales an m16n8 fragment tile (NT blocks of 8 columns; this thread's rows are elements 0-1 and
// 2-3) by `scale`, sets columns past each row's last visible one (rel0 / rel1, relative to this
// thread's first column) to -inf, and returns both rows' maxima over the quad.
template <int NT, class I>
__device__ __forceinline__ void scale_mask_row_max(float (&s)[NT][4], I rel0, I rel1, float scale, float& mx0,
                                                   float& mx1) {
  mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
  for (int i = 0; i < NT; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[i][e] = (i * 8 + (e & 1) <= (e < 2 ? rel0 : rel1)) ? s[i][e] * scale : -INFINITY;
    mx0 = fmaxf(mx0, fmaxf(s[i][0], s[i][1]));
    mx1 = fmaxf(mx1, fmaxf(s[i][2], s[i][3]));
  }
  mx0 = quad_max(mx0), mx1 = quad_max(mx1);
}

// The online-softmax step of the same fragment after the row maxima are known: s = exp(s - mn)
// per row (0 where the row has no finite maximum yet) and each row's sum of this thread's part.
template <int NT>
__device__ __forceinline__ void exp_row_sums(float (&s)[NT][4], float mn0, float mn1, float& ls0, float& ls1) {
  ls0 = 0.f, ls1 = 0.f;
#pragma unroll
  for (int i = 0; i < NT; ++i) {
    s[i][0] = mn0 == -INFINITY ? 0.f : __expf(s[i][0] - mn0);
    s[i][1] = mn0 == -INFINITY ? 0.f : __expf(s[i][1] - mn0);
    s[i][2] = mn1 == -INFINITY ? 0.f : __expf(s[i][2] - mn1);
    s[i][3] = mn1 == -INFINITY ? 0.f : __expf(s[i][3] - mn1);
    ls0 += s[i][0] + s[i][1];
    ls1 += s[i][2] + s[i][3];
  }
}

// Those probabilities as the A operand of P V (mma.sync m16n8k16: k-step ks covers n-tiles 2 ks and
// 2 ks + 1).
template <class T, int NT>
__device__ __forceinline__ void pack_p(const float (&s)[NT][4], std::uint32_t (&p)[NT / 2][4]) {
#pragma unroll
  for (int ks = 0; ks < NT / 2; ++ks) {
    p[ks][0] = pack2<T>(s[2 * ks][0], s[2 * ks][1]);
    p[ks][1] = pack2<T>(s[2 * ks][2], s[2 * ks][3]);
    p[ks][2] = pack2<T>(s[2 * ks + 1][0], s[2 * ks + 1][1]);
    p[ks][3] = pack2<T>(s[2 * ks + 1][2], s[2 * ks + 1][3]);
  }
}

// Adds a vote group's visited and skipped tile counts to its pair of statistics counters.
__device__ __forceinline__ void add_tile_counts(std::uint64_t* pair, int visited, int skipped) {
  atomicAdd(reinterpret_cast<unsigned long long*>(pair), static_cast<unsigned long long>(visited));
  atomicAdd(reinterpret_cast<unsigned long long*>(pair + 1), static_cast<unsigned long long>(skipped));
}

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
}  // namespace blasst::cuda::ptx
