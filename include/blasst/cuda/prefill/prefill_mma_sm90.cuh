// Prefill with the BLASST skip, first version: FA2-style tensor-core tiles (mma.sync) fed by TMA,
// one producer warp and four consumer warps per CTA. A CTA owns one vote group: BQ = 64 query
// rows of one query head (16 per consumer warp, each warp holding whole rows, so a row's tile
// maximum needs no shared memory); BK = 128 keys per tile. Per tile: K arrives by TMA (one box
// per 64 channels), S = scale * Q K^T, each warp evaluates its rows' agreement and the four warps
// vote with one bar.red.and; the decision goes to the producer, which loads V only for kept
// tiles; P V waits one kept tile behind its V load. Visit orders forward, reverse and sink-first.
// K and V rows past a sequence's end (the next sequence's keys, or TMA's zero fill past the
// tensor) are masked out of S and multiplied by P = 0.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#include "blasst/cuda/common/ptx.cuh"
#include "blasst/cuda/prefill/prefill_params.cuh"
#include "blasst/skip_vote.hpp"

namespace blasst::cuda {

template <class T_, int D_, int NSK_, int NSV_>
struct PrefillTraits {
  using T = T_;
  static constexpr int D = D_, BQ = 64, BK = 128, NSK = NSK_, NSV = NSV_;
  static constexpr int kConsumerWarps = 4, kConsumers = 128, kThreads = kConsumers + 32;
  static constexpr int NT = BK / 8, KS = BK / 16, DT = D / 8, CPR = D / 8, RSQ = D + 8, NH = D / 64;
  static constexpr int NDEC = NSK + 1;
  static_assert(NSV == 2, "one P V product waits behind its V load");
  static_assert(D % 64 == 0, "head dim must be a multiple of 64");
  static constexpr std::size_t kTileBytes = std::size_t(BK) * D * sizeof(T);
  static constexpr std::size_t kQOffset = (NSK + NSV) * kTileBytes;
  static constexpr std::size_t kDecOffset = kQOffset + std::size_t(BQ) * RSQ * sizeof(T);
  static constexpr std::size_t kBarOffset = (kDecOffset + NDEC + 15) / 16 * 16;
  static constexpr int kBars = 2 * NSK + 2 * NSV + NDEC;
  static constexpr std::size_t kSmemBytes = kBarOffset + kBars * sizeof(std::uint64_t) + 1024;
};

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    prefill_mma_kernel(const __grid_constant__ PrefillParams p, const __grid_constant__ CUtensorMap tm_k,
                       const __grid_constant__ CUtensorMap tm_v) {
  using T = typename Tr::T;
  constexpr int D = Tr::D, BQ = Tr::BQ, BK = Tr::BK, NSK = Tr::NSK, NSV = Tr::NSV, NDEC = Tr::NDEC;
  constexpr int NT = Tr::NT, KS = Tr::KS, DT = Tr::DT, CPR = Tr::CPR, RSQ = Tr::RSQ, NH = Tr::NH;
  constexpr int kConsumers = Tr::kConsumers, kBarrier = 1;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t(1023));
  unsigned char* sK = smem;
  unsigned char* sV = smem + NSK * Tr::kTileBytes;
  T* sQ = reinterpret_cast<T*>(smem + Tr::kQOffset);
  std::uint8_t* sDec = smem + Tr::kDecOffset;
  std::uint64_t* bars = reinterpret_cast<std::uint64_t*>(smem + Tr::kBarOffset);
  std::uint64_t *full_k = bars, *empty_k = bars + NSK, *full_v = bars + 2 * NSK, *empty_v = bars + 2 * NSK + NSV;
  std::uint64_t* dec_bar = bars + 2 * NSK + 2 * NSV;

  const int qt = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const std::int64_t q0 = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
  const std::int64_t k0 = p.cu_seqlens_k ? p.cu_seqlens_k[b] : 0;
  const std::int64_t sq = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - q0 : p.total_q;
  const std::int64_t sk = p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - k0 : p.total_k;
  const std::int64_t r0 = std::int64_t(qt) * BQ;
  if (r0 >= sq) return;  // past this sequence's query tiles
  const int rows = static_cast<int>(min(std::int64_t(BQ), sq - r0));
  std::int64_t max_lim = -1;
  for (int r = 0; r < rows; ++r) max_lim = max(max_lim, row_key_limit(p.causal, r0 + r, sq, sk));
  const int n = visible_tiles(max_lim, BK);
  const VisitOrder order = static_cast<VisitOrder>(p.order);
  const int hkv = h / p.group;

  if (tid == 0) {
    for (int s = 0; s < NSK; ++s) ptx::mbar_init(&full_k[s], 1), ptx::mbar_init(&empty_k[s], Tr::kConsumerWarps);
    for (int s = 0; s < NSV; ++s) ptx::mbar_init(&full_v[s], 1), ptx::mbar_init(&empty_v[s], Tr::kConsumerWarps);
    for (int s = 0; s < NDEC; ++s) ptx::mbar_init(&dec_bar[s], 1);
    ptx::fence_mbarrier_init();
  }
  for (int c = tid; c < BQ * CPR; c += Tr::kThreads) {
    const int row = c / CPR, cc = c % CPR;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row < rows)
      v = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.q) + (q0 + r0 + row) * p.q_st + h * p.q_sh + cc * 8);
    *reinterpret_cast<uint4*>(sQ + row * RSQ + cc * 8) = v;
  }
  __syncthreads();

  if (warp == Tr::kConsumerWarps) {
    // ---- producer: K for every visited tile, V for the kept ones ------------------------------
    ptx::prefetch_tensor_map(&tm_k);
    ptx::prefetch_tensor_map(&tm_v);
    auto load_tile = [&](const CUtensorMap* tm, unsigned char* dst, std::uint64_t* bar, int tile) {
      if (lane == 0) ptx::mbar_arrive_expect_tx(bar, static_cast<std::uint32_t>(BK * NH * 128));
      __syncwarp();
      if (lane < NH)
        ptx::tma_load_4d(dst + lane * (BK * 128), tm, lane * 64, hkv, static_cast<int>(k0 + std::int64_t(tile) * BK), 0,
                         bar);
    };
    int vi = 0;
    auto serve_decision = [&](int d) {
      ptx::mbar_wait(&dec_bar[d % NDEC], (d / NDEC) & 1);
      if (!sDec[d % NDEC]) return;
      if (vi >= NSV) ptx::mbar_wait(&empty_v[vi % NSV], ((vi / NSV) - 1) & 1);
      load_tile(&tm_v, sV + (vi % NSV) * Tr::kTileBytes, &full_v[vi % NSV], visit_tile(order, n, d));
      ++vi;
    };
    for (int j = 0; j < n; ++j) {
      if (j >= NSK) ptx::mbar_wait(&empty_k[j % NSK], ((j / NSK) - 1) & 1);
      load_tile(&tm_k, sK + (j % NSK) * Tr::kTileBytes, &full_k[j % NSK], visit_tile(order, n, j));
      if (j >= NSK - 1) serve_decision(j - (NSK - 1));
    }
    for (int d = max(0, n - (NSK - 1)); d < n; ++d) serve_decision(d);
    return;
  }

  // ---- consumers ---------------------------------------------------------------------------------
  const float log_thr = skip_log_threshold(lambda_for(p.mode, p.value, sk));
  const int group = h * static_cast<int>((sq + BQ - 1) / BQ) + qt;
  const std::int64_t mask_base = (p.mask || p.replay) ? prefill_mask_base(p, b, group, BQ, BK) : 0;
  const int lr0 = warp * 16 + (lane >> 2), lr1 = lr0 + 8;  // local rows this thread holds
  auto limit_of = [&](int r) -> std::int64_t { return r < rows ? row_key_limit(p.causal, r0 + r, sq, sk) : -1; };
  const std::int64_t lim0 = limit_of(lr0), lim1 = limit_of(lr1);

  const int qrow = warp * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);  // Q fragments come from shared memory

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  std::uint32_t pend_p[KS][4];
  float pend_a[2] = {1.f, 1.f};
  int pend_v = -1, vi = 0, skipped = 0;

  auto flush = [&](int v) {
    ptx::mbar_wait(&full_v[v % NSV], (v / NSV) & 1);
    const unsigned char* vst = sV + (v % NSV) * Tr::kTileBytes;
    if (pend_a[0] != 1.f || pend_a[1] != 1.f) {
#pragma unroll
      for (int i = 0; i < DT; ++i) o[i][0] *= pend_a[0], o[i][1] *= pend_a[0], o[i][2] *= pend_a[1], o[i][3] *= pend_a[1];
    }
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const int key = ks * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
#pragma unroll
      for (int dp = 0; dp < DT / 2; ++dp) {
        std::uint32_t bv[4];
        ptx::ldmatrix_x4_trans(bv, vst + ptx::stage_offset<BK>(key, 2 * dp + (lane >> 4)));
        ptx::mma_16816<T>(o[2 * dp], pend_p[ks], bv[0], bv[1]);
        ptx::mma_16816<T>(o[2 * dp + 1], pend_p[ks], bv[2], bv[3]);
      }
    }
    __syncwarp();
    if (lane == 0) ptx::mbar_arrive(&empty_v[v % NSV]);
  };

  for (int j = 0; j < n; ++j) {
    const int tile = visit_tile(order, n, j);
    ptx::mbar_wait(&full_k[j % NSK], (j / NSK) & 1);
    const unsigned char* kst = sK + (j % NSK) * Tr::kTileBytes;
    float s[NT][4];
#pragma unroll
    for (int i = 0; i < NT; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      std::uint32_t qa[4];
      ptx::ldmatrix_x4(qa, sQ + qrow * RSQ + (2 * ks + (lane >> 4)) * 8);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        const int key = np * 16 + (lane & 7) + 8 * (lane >> 4);
        std::uint32_t bk[4];
        ptx::ldmatrix_x4(bk, kst + ptx::stage_offset<BK>(key, 2 * ks + ((lane >> 3) & 1)));
        ptx::mma_16816<T>(s[2 * np], qa, bk[0], bk[1]);
        ptx::mma_16816<T>(s[2 * np + 1], qa, bk[2], bk[3]);
      }
    }
    __syncwarp();
    if (lane == 0) ptx::mbar_arrive(&empty_k[j % NSK]);

    const std::int64_t key0 = std::int64_t(tile) * BK + 2 * (lane & 3);
    const std::int64_t rel0 = lim0 - key0, rel1 = lim1 - key0;
    float mx0, mx1;
    ptx::scale_mask_row_max(s, rel0, rel1, p.scale, mx0, mx1);
    const std::int64_t t0 = std::int64_t(tile) * BK;
    const bool agree = row_agrees(lim0 >= t0, mx0, m[0], log_thr) && row_agrees(lim1 >= t0, mx1, m[1], log_thr);
    const bool all = ptx::named_barrier_and(kBarrier, kConsumers, agree);
    const bool skip = p.replay ? p.replay[mask_base + tile] == tile_skipped : (j > 0 && all);
    if (tid == 0) {
      sDec[j % NDEC] = skip ? 0 : 1;
      ptx::mbar_arrive(&dec_bar[j % NDEC]);
      if (p.mask) p.mask[mask_base + tile] = skip ? tile_skipped : tile_kept;
    }
    if (skip) {
      ++skipped;
      continue;
    }
    const int my_v = vi++;
    const float mn0 = fmaxf(m[0], mx0), mn1 = fmaxf(m[1], mx1);
    const float a0 = mn0 == -INFINITY ? 1.f : __expf(m[0] - mn0), a1 = mn1 == -INFINITY ? 1.f : __expf(m[1] - mn1);
    if (pend_v >= 0) flush(pend_v);
    float ls0, ls1;
    ptx::exp_row_sums(s, mn0, mn1, ls0, ls1);
    l[0] = l[0] * a0 + ls0, l[1] = l[1] * a1 + ls1;
    m[0] = mn0, m[1] = mn1;
    ptx::pack_p<T>(s, pend_p);
    pend_a[0] = a0, pend_a[1] = a1;
    pend_v = my_v;
  }
  if (pend_v >= 0) flush(pend_v);

  if (tid == 0 && p.counters) ptx::add_tile_counts(&p.counters[(std::int64_t(b) * p.hq + h) * 2], n, skipped);
  l[0] = ptx::quad_sum(l[0]), l[1] = ptx::quad_sum(l[1]);
  const int ch0 = 2 * (lane & 3);
  auto emit = [&](int lr, const float (&acc)[DT][4], int half, float ll, float mm) {
    if (lr >= rows) return;
    const bool any = ll > 0.f;
    const float inv = any ? 1.f / ll : 0.f;
    const std::int64_t tok = q0 + r0 + lr;
    T* out = static_cast<T*>(p.o) + tok * p.o_st + h * p.o_sh;
#pragma unroll
    for (int i = 0; i < DT; ++i)
      *reinterpret_cast<std::uint32_t*>(out + i * 8 + ch0) =
          ptx::pack2<T>(acc[i][2 * half] * inv, acc[i][2 * half + 1] * inv);
    if ((lane & 3) == 0 && p.lse) p.lse[tok * p.lse_st + h * p.lse_sh] = any ? mm + __logf(ll) : -INFINITY;
  };
  emit(lr0, o, 0, l[0], m[0]);
  emit(lr1, o, 1, l[1], m[1]);
}

}  // namespace blasst::cuda
