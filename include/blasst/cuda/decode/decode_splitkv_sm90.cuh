// Split-KV paged decode with the BLASST skip. One CTA walks one chunk of one vote group's visible
// key tiles (vote group = the query heads of one KV head x the query tokens of one sequence).
//
// Per tile: the K tile arrives through a ring of NSK shared-memory stages by cp.async, gathered
// out of the paged cache by warps 0-3 (one page lookup per key, a step ahead, into a ring of row
// offsets) and completing on the stage's mbarrier; warps 4-7 load V the same way, so each barrier
// tracks one tensor's copies. S = scale * Q K^T on tensor cores (mma.sync m16n8k16); each row's
// tile maximum goes
// through shared memory so every warp sees the whole group; the group votes with one
// __syncthreads_and (skip_vote.hpp decides each row). Only a kept tile's V is loaded, and its P V
// product is deferred to the next kept tile so the V load overlaps the next tiles' Q K^T.
//
// Warps: WM slices of 16 rows times WN slices of BK / WN keys. Rows beyond the group do not vote.
// Shared-memory rows are padded by 16 bytes so ldmatrix over 8 consecutive rows is conflict-free.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#include "blasst/cuda/common/ptx.cuh"
#include "blasst/cuda/decode/decode_params.cuh"
#include "blasst/skip_vote.hpp"

namespace blasst::cuda {

template <class T_, int D_, int BK_, int WM_, int WN_, int NSK_, int NSV_>
struct DecodeTraits {
  using T = T_;
  static constexpr int D = D_, BK = BK_, WM = WM_, WN = WN_, NSK = NSK_, NSV = NSV_;
  static constexpr int kWarps = WM * WN, kThreads = 32 * kWarps;
  static constexpr int RP = 16 * WM;  // rows held by the CTA (group rows padded)
  static constexpr int KW = BK / WN;  // keys per warp
  static constexpr int NT = KW / 8;   // S n-tiles per warp
  static constexpr int KS = KW / 16;  // P V k-steps per warp
  static constexpr int DT = D / 8;    // output n-tiles
  static constexpr int CPR = D / 8;   // 16-byte chunks per row
  static constexpr int RS = D + 8;    // shared-memory row stride in elements (16 bytes of padding)
  static constexpr bool kDefer = NSV >= 2;
  static_assert(D % 16 == 0, "head dim must be a multiple of 16");
  static_assert(KW % 16 == 0, "keys per warp must be a multiple of 16");

  static constexpr int NR = NSK + 1;  // row-offset ring: steps whose loads are pending
  static constexpr int kLoaders = kThreads / 2;  // threads loading K (the other half loads V)
  static_assert(kThreads == 256 && BK <= kLoaders, "eight warps; one offset per key per loader");

  static constexpr std::size_t kQBytes = std::size_t(RP) * RS * sizeof(T);
  static constexpr std::size_t kTileBytes = std::size_t(BK) * RS * sizeof(T);
  static constexpr std::size_t kOffOffset = kQBytes + (NSK + NSV) * kTileBytes;
  static constexpr std::size_t kOffBytes = std::size_t(NR) * BK * 2 * sizeof(std::int64_t);
  static constexpr std::size_t kRedOffset = kOffOffset + kOffBytes;
  static constexpr std::size_t kRedBytes = std::size_t(WN) * RP * sizeof(float) + RP * sizeof(float);
  static constexpr std::size_t kBarOffset = (kRedOffset + kRedBytes + 15) / 16 * 16;
  static constexpr std::size_t kSmemBytes = kBarOffset + (NSK + NSV) * sizeof(std::uint64_t);
  // The cross-warp output reduction (WN > 1) reuses the K and V stages.
  static_assert(WN == 1 || std::size_t(WN) * RP * D * sizeof(float) + std::size_t(WN) * RP * sizeof(float) <=
                               (NSK + NSV) * kTileBytes,
                "reduction buffer does not fit");
};

// Offset of (sequence b, KV head h, tile 0) in a SkipMaskLayout-ordered decode mask.
__device__ __forceinline__ std::int64_t decode_mask_base(const DecodeParams& p, int b, int h, int bk) {
  std::int64_t off = 0;
  for (int i = 0; i < b; ++i) off += std::int64_t(p.hkv) * ((p.seq_lens[i] + bk - 1) / bk);
  return off + std::int64_t(h) * ((p.seq_lens[b] + bk - 1) / bk);
}

template <class Tr>
__global__ void __launch_bounds__(Tr::kThreads, 1) decode_splitkv_kernel(const DecodeParams p) {
  using T = typename Tr::T;
  constexpr int D = Tr::D, BK = Tr::BK, WN = Tr::WN, NSK = Tr::NSK, NSV = Tr::NSV, RP = Tr::RP;
  constexpr int NT = Tr::NT, KS = Tr::KS, DT = Tr::DT, CPR = Tr::CPR, KW = Tr::KW, RS = Tr::RS;
  constexpr int kThreads = Tr::kThreads;

  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = reinterpret_cast<T*>(smem + Tr::kQBytes);
  T* sV = sK + NSK * BK * RS;
  std::int64_t* sOff = reinterpret_cast<std::int64_t*>(smem + Tr::kOffOffset);  // [NR][2][BK], -1 past the end
  float* sRed = reinterpret_cast<float*>(smem + Tr::kRedOffset);  // [WN][RP] tile maxima
  float* sM = sRed + WN * RP;                                     // [RP] final running max
  std::uint64_t* bars = reinterpret_cast<std::uint64_t*>(smem + Tr::kBarOffset);

  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / WN, wn = warp % WN;
  const int sk = p.seq_lens[b], R = p.rows, T_ = p.q_tokens;
  const int n = visible_tiles(row_key_limit(true, T_ - 1, T_, sk), BK);
  const SplitCut cut = split_cut(n, p.splits);
  const bool direct = p.splits == 1;

  // Rows this thread holds in its accumulators.
  const int r0 = wm * 16 + (lane >> 2), r1 = r0 + 8;
  auto limit_of = [&](int r) -> int {
    return r < R ? static_cast<int>(row_key_limit(true, r / p.group, T_, sk)) : -1;
  };
  const int lim0 = limit_of(r0), lim1 = limit_of(r1);

  auto emit = [&](int row, int ch, float o0, float o1, float l, float m) {
    if (row >= R) return;
    const bool any = l > 0.0f;
    const float inv = any ? 1.0f / l : 0.0f;
    const float lse = any ? m + __logf(l) : -INFINITY;
    if (direct) {
      const int t = row / p.group, hq = h * p.group + row % p.group;
      T* o = static_cast<T*>(p.o) + b * p.o_sb + t * p.o_st + hq * p.o_sh + ch;
      *reinterpret_cast<std::uint32_t*>(o) = ptx::pack2<T>(o0 * inv, o1 * inv);
      if (ch == 0 && p.lse) p.lse[b * p.lse_sb + t * p.lse_st + hq * p.lse_sh] = lse;
    } else {
      const std::int64_t prow = ((std::int64_t(b) * p.hkv + h) * p.splits + split) * R + row;
      *reinterpret_cast<float2*>(p.part_o + prow * D + ch) = make_float2(o0 * inv, o1 * inv);
      if (ch == 0) p.part_lse[prow] = lse;
    }
  };

  if (split >= cut.count) {  // an empty chunk (or a sequence with no visible tile)
    if (split == 0 || !direct)
      for (int i = tid; i < R * (D / 2); i += kThreads) emit(i / (D / 2), 2 * (i % (D / 2)), 0.f, 0.f, 0.f, 0.f);
    return;
  }

  const int first = split * cut.chunk, len = min(cut.chunk, n - first);
  const bool seeded = p.max_seed && cut.count > 1 && split > 0;
  const int steps = len + (seeded ? 1 : 0);
  const float log_thr = skip_log_threshold(lambda_for(p.mode, p.value, sk));
  const std::int64_t mask_base = (p.mask || p.replay) ? decode_mask_base(p, b, h, BK) : 0;
  auto tile_of = [&](int j) { return seeded ? (j == 0 ? 0 : first + j - 1) : first + j; };

  constexpr int NR = Tr::NR, kLoaders = Tr::kLoaders;
  if (tid == 0) {
    for (int s = 0; s < NSK + NSV; ++s) ptx::mbar_init(&bars[s], kLoaders);
    ptx::fence_mbarrier_init();
  }

  // Row offsets (elements, K and V) of step j's tile, one key per thread; -1 past the sequence.
  const std::int32_t* table = p.block_table + std::int64_t(b) * p.max_pages_per_seq;
  auto compute_offsets = [&](int j) {
    if (j >= steps || tid >= BK) return;
    const int pos = tile_of(j) * BK + tid;
    std::int64_t* off = sOff + (j % NR) * 2 * BK;
    if (pos < sk) {
      const std::int64_t page = table[pos / p.page_size], slot = pos % p.page_size;
      off[tid] = page * p.k_sp + slot * p.k_ss + h * p.k_sh;
      off[BK + tid] = page * p.v_sp + slot * p.v_ss + h * p.v_sh;
    } else {
      off[tid] = off[BK + tid] = -1;
    }
  };
  for (int j = 0; j < NSK; ++j) compute_offsets(j);

  // Q rows of the group, zero-padded to RP rows.
  for (int c = tid; c < RP * CPR; c += kThreads) {
    const int row = c / CPR, cc = c % CPR;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row < R) {
      const int t = row / p.group, hq = h * p.group + row % p.group;
      v = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.q) + b * p.q_sb + t * p.q_st + hq * p.q_sh + cc * 8);
    }
    *reinterpret_cast<uint4*>(sQ + row * RS + cc * 8) = v;
  }
  __syncthreads();

  // Gather step j's tile into a stage: `first_thread` .. + kLoaders copy 16-byte chunks (rows past
  // the sequence are zero-filled, which keeps P V finite) and arrive on the stage's barrier.
  auto load_tile = [&](const void* cache, int which, T* dst, std::uint64_t* bar, int j, int first_thread) {
    const int t = tid - first_thread;
    if (t < 0 || t >= kLoaders) return;
    const T* base = static_cast<const T*>(cache);
    const std::int64_t* off = sOff + (j % NR) * 2 * BK + which * BK;
#pragma unroll 4
    for (int c = t; c < BK * CPR; c += kLoaders) {
      const int key = c / CPR, cc = c % CPR;
      const std::int64_t o = off[key];
      ptx::cp_async_16(dst + key * RS + cc * 8, o >= 0 ? base + o + cc * 8 : base, o >= 0);
    }
    ptx::mbar_arrive_on_cp_async(bar);
  };
  auto issue_k = [&](int j) { load_tile(p.k_cache, 0, sK + (j % NSK) * BK * RS, &bars[j % NSK], j, 0); };
  auto issue_v = [&](int vi, int j) {
    load_tile(p.v_cache, 1, sV + (vi % NSV) * BK * RS, &bars[NSK + vi % NSV], j, kLoaders);
  };
  for (int j = 0; j < NSK - 1 && j < steps; ++j) issue_k(j);

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  std::uint32_t pend_p[KS][4];
  float pend_alpha[2] = {1.f, 1.f};
  int pend_vi = -1, vi = 0, visited = 0, skipped = 0;

  // O = O * alpha + P V for the kept tile whose V went into load number v.
  auto flush = [&](int v, const std::uint32_t (&P)[KS][4], const float (&alpha)[2]) {
    ptx::mbar_wait(&bars[NSK + v % NSV], (v / NSV) & 1);
    const T* vst = sV + (v % NSV) * BK * RS;
    if (alpha[0] != 1.f || alpha[1] != 1.f) {
#pragma unroll
      for (int i = 0; i < DT; ++i) {
        o[i][0] *= alpha[0], o[i][1] *= alpha[0], o[i][2] *= alpha[1], o[i][3] *= alpha[1];
      }
    }
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const int key = wn * KW + ks * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
#pragma unroll
      for (int dp = 0; dp < DT / 2; ++dp) {
        std::uint32_t bv[4];
        ptx::ldmatrix_x4_trans(bv, vst + key * RS + (2 * dp + (lane >> 4)) * 8);
        ptx::mma_16816<T>(o[2 * dp], P[ks], bv[0], bv[1]);
        ptx::mma_16816<T>(o[2 * dp + 1], P[ks], bv[2], bv[3]);
      }
    }
  };

  for (int j = 0; j < steps; ++j) {
    const int tile = tile_of(j);
    if (j + NSK - 1 < steps) issue_k(j + NSK - 1);  // into the stage step j-1 finished reading
    ptx::mbar_wait(&bars[j % NSK], (j / NSK) & 1);
    const T* kst = sK + (j % NSK) * BK * RS;

    float s[NT][4];
#pragma unroll
    for (int i = 0; i < NT; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      std::uint32_t a[4];
      const int qrow = wm * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
      ptx::ldmatrix_x4(a, sQ + qrow * RS + (2 * ks + (lane >> 4)) * 8);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        const int key = wn * KW + np * 16 + (lane & 7) + 8 * (lane >> 4);
        std::uint32_t bk[4];
        ptx::ldmatrix_x4(bk, kst + key * RS + (2 * ks + ((lane >> 3) & 1)) * 8);
        ptx::mma_16816<T>(s[2 * np], a, bk[0], bk[1]);
        ptx::mma_16816<T>(s[2 * np + 1], a, bk[2], bk[3]);
      }
    }

    // Scale, mask (keys past a row's limit, rows beyond the group) and the rows' tile maxima.
    const int key0 = tile * BK + wn * KW + 2 * (lane & 3);
    const int rel0 = lim0 - key0, rel1 = lim1 - key0;  // last visible key offset of each row
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int i = 0; i < NT; ++i) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = (i * 8 + (e & 1) <= (e < 2 ? rel0 : rel1)) ? s[i][e] * p.scale : -INFINITY;
      mx0 = fmaxf(mx0, fmaxf(s[i][0], s[i][1]));
      mx1 = fmaxf(mx1, fmaxf(s[i][2], s[i][3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    if ((lane & 3) == 0) sRed[wn * RP + r0] = mx0, sRed[wn * RP + r1] = mx1;
    __syncthreads();
    // Every thread is past step j-1 now, so its offset slot can take step j + NSK's; the vote's
    // barrier below publishes them before step j + 1 issues that load.
    compute_offsets(j + NSK);
    float tmax0 = sRed[r0], tmax1 = sRed[r1];
#pragma unroll
    for (int w = 1; w < WN; ++w) tmax0 = fmaxf(tmax0, sRed[w * RP + r0]), tmax1 = fmaxf(tmax1, sRed[w * RP + r1]);

    // The vote: every row of the group must agree (BLASST.md 2.5).
    const int t0 = tile * BK;
    const bool agree = row_agrees(lim0 >= t0, tmax0, m[0], log_thr) && row_agrees(lim1 >= t0, tmax1, m[1], log_thr);
    const bool all = __syncthreads_and(agree) != 0;
    if (seeded && j == 0) {  // tile 0 only seeds the running max
      m[0] = tmax0, m[1] = tmax1;
      continue;
    }
    const bool skip = p.replay ? p.replay[mask_base + tile] == tile_skipped : (j > 0 && all);
    ++visited;
    if (tid == 0 && p.mask) p.mask[mask_base + tile] = skip ? tile_skipped : tile_kept;
    if (skip) {
      ++skipped;
      continue;
    }

    issue_v(vi, j);
    const int my_vi = vi++;
    const float mn0 = fmaxf(m[0], tmax0), mn1 = fmaxf(m[1], tmax1);
    const float alpha[2] = {mn0 == -INFINITY ? 1.f : __expf(m[0] - mn0), mn1 == -INFINITY ? 1.f : __expf(m[1] - mn1)};
    // The previous kept tile's P V goes first (its V had this tile's Q K^T to arrive); then this
    // tile's P takes its place.
    if constexpr (Tr::kDefer) {
      if (pend_vi >= 0) flush(pend_vi, pend_p, pend_alpha);
    }
    float ls0 = 0.f, ls1 = 0.f;
#pragma unroll
    for (int i = 0; i < NT; ++i) {
      s[i][0] = mn0 == -INFINITY ? 0.f : __expf(s[i][0] - mn0);
      s[i][1] = mn0 == -INFINITY ? 0.f : __expf(s[i][1] - mn0);
      s[i][2] = mn1 == -INFINITY ? 0.f : __expf(s[i][2] - mn1);
      s[i][3] = mn1 == -INFINITY ? 0.f : __expf(s[i][3] - mn1);
      ls0 += s[i][0] + s[i][1];
      ls1 += s[i][2] + s[i][3];
    }
    l[0] = l[0] * alpha[0] + ls0, l[1] = l[1] * alpha[1] + ls1;
    m[0] = mn0, m[1] = mn1;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      pend_p[ks][0] = ptx::pack2<T>(s[2 * ks][0], s[2 * ks][1]);
      pend_p[ks][1] = ptx::pack2<T>(s[2 * ks][2], s[2 * ks][3]);
      pend_p[ks][2] = ptx::pack2<T>(s[2 * ks + 1][0], s[2 * ks + 1][1]);
      pend_p[ks][3] = ptx::pack2<T>(s[2 * ks + 1][2], s[2 * ks + 1][3]);
    }
    pend_alpha[0] = alpha[0], pend_alpha[1] = alpha[1];
    pend_vi = my_vi;
    if constexpr (!Tr::kDefer) {
      flush(pend_vi, pend_p, pend_alpha);
      pend_vi = -1;
    }
  }
  if constexpr (Tr::kDefer) {
    if (pend_vi >= 0) flush(pend_vi, pend_p, pend_alpha);
  }

  if (tid == 0 && p.counters) {
    atomicAdd(reinterpret_cast<unsigned long long*>(&p.counters[(std::int64_t(b) * p.hkv + h) * 2]),
              static_cast<unsigned long long>(visited));
    atomicAdd(reinterpret_cast<unsigned long long*>(&p.counters[(std::int64_t(b) * p.hkv + h) * 2 + 1]),
              static_cast<unsigned long long>(skipped));
  }

#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l[0] += __shfl_xor_sync(0xffffffffu, l[0], off);
    l[1] += __shfl_xor_sync(0xffffffffu, l[1], off);
  }
  const int ch0 = 2 * (lane & 3);
  if constexpr (WN == 1) {
#pragma unroll
    for (int i = 0; i < DT; ++i) {
      emit(r0, i * 8 + ch0, o[i][0], o[i][1], l[0], m[0]);
      emit(r1, i * 8 + ch0, o[i][2], o[i][3], l[1], m[1]);
    }
  } else {
    // Sum the key slices of the warps through shared memory (the stages are free now).
    __syncthreads();
    float* red = reinterpret_cast<float*>(sK);  // [WN][RP][D]
    float* redl = red + WN * RP * D;            // [WN][RP]
#pragma unroll
    for (int i = 0; i < DT; ++i) {
      *reinterpret_cast<float2*>(red + (wn * RP + r0) * D + i * 8 + ch0) = make_float2(o[i][0], o[i][1]);
      *reinterpret_cast<float2*>(red + (wn * RP + r1) * D + i * 8 + ch0) = make_float2(o[i][2], o[i][3]);
    }
    if ((lane & 3) == 0) {
      redl[wn * RP + r0] = l[0], redl[wn * RP + r1] = l[1];
      if (wn == 0) sM[r0] = m[0], sM[r1] = m[1];
    }
    __syncthreads();
    for (int i = tid; i < R * (D / 2); i += kThreads) {
      const int row = i / (D / 2), ch = 2 * (i % (D / 2));
      float a0 = 0.f, a1 = 0.f, ll = 0.f;
#pragma unroll
      for (int w = 0; w < WN; ++w) {
        const float2 v = *reinterpret_cast<const float2*>(red + (w * RP + row) * D + ch);
        a0 += v.x, a1 += v.y, ll += redl[w * RP + row];
      }
      emit(row, ch, a0, a1, ll, sM[row]);
    }
  }
}

// Merges the splits of each row by their LSE: one warp per (sequence, KV head, row).
template <class T, int D>
__global__ void decode_combine_kernel(const DecodeParams p) {
  const std::int64_t gw = (std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  const std::int64_t total = std::int64_t(p.batch) * p.hkv * p.rows;
  if (gw >= total) return;
  const int row = static_cast<int>(gw % p.rows);
  const int h = static_cast<int>((gw / p.rows) % p.hkv);
  const int b = static_cast<int>(gw / (std::int64_t(p.rows) * p.hkv));
  const std::int64_t base = (std::int64_t(b) * p.hkv + h) * p.splits;
  float mx = -INFINITY;
  for (int s = 0; s < p.splits; ++s) mx = fmaxf(mx, p.part_lse[(base + s) * p.rows + row]);
  constexpr int PER = D / 32;
  float acc[PER] = {};
  float sum = 0.f;
  if (mx > -INFINITY) {
    for (int s = 0; s < p.splits; ++s) {
      const std::int64_t prow = (base + s) * p.rows + row;
      const float lse = p.part_lse[prow];
      if (lse == -INFINITY) continue;
      const float w = __expf(lse - mx);
      sum += w;
#pragma unroll
      for (int i = 0; i < PER; ++i) acc[i] += w * p.part_o[prow * D + lane + 32 * i];
    }
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  const int t = row / p.group, hq = h * p.group + row % p.group;
  T* o = static_cast<T*>(p.o) + b * p.o_sb + t * p.o_st + hq * p.o_sh;
#pragma unroll
  for (int i = 0; i < PER; ++i) o[lane + 32 * i] = ptx::from_float<T>(acc[i] * inv);
  if (lane == 0 && p.lse) p.lse[b * p.lse_sb + t * p.lse_st + hq * p.lse_sh] = sum > 0.f ? mx + __logf(sum) : -INFINITY;
}

}  // namespace blasst::cuda
