// Prefill with the BLASST skip, FlashAttention-3 class (sm_90a): TMA loads, wgmma, one producer
// warpgroup and NWG consumer warpgroups per CTA (head dims 128 and 256: two, setmaxnreg 40 / 232;
// head dim 64: three, setmaxnreg 32 / 160, since there the softmax outweighs the products).
//
// A CTA owns BQ = 64 NWG query rows of one query head; each consumer warpgroup owns 64 of them and
// is its own vote group (block_q = 64 in the contract's terms), so a warpgroup votes alone with one
// 128-thread bar.red.and and never waits for another. K and V tiles (BK keys: 128, 176 or 192 at
// head dim 128; 64 or 80 at head dim 256, where the registers hold a 64 x 256 O; 128 at 64;
// blasst::prefill_block_k is the default) arrive by TMA into 128-byte-swizzled stages that
// wgmma reads through shared-memory descriptors: S = Q K^T with both operands K-major in shared
// memory, O += P V with P from registers and V MN-major.
//
// The CTA walks the tiles visible to its furthest-seeing row in the contract's visit order; a
// warpgroup whose rows see fewer tiles (causal: at most one fewer) treats the others as unvisited,
// which leaves its own visit order intact for forward, reverse and sink-first.
//
// Per tile, a warpgroup issues S(j) = Q K(j)^T, then O += P(j-1) V(j-1) for the previous tile if
// it was kept, and overlaps the softmax of S(j) with that product (FA3's intra-warpgroup overlap);
// O is rescaled after that product completes, when no wgmma is in flight. One producer thread
// loads Q and the K ring, another the V ring.
// With ping-pong on, the warpgroups take turns issuing their products (named barriers, round
// robin), so one warpgroup's softmax runs while another's products occupy the tensor cores. A skipped tile costs
// its S product, the row maxima and the vote; it skips the exponentials, the row sums, the O
// rescale and the P V product. K rows past a sequence's end (the next sequence's keys, or TMA's
// zero fill) are masked out of S and meet P = 0 in P V.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#include "blasst/cuda/common/ptx.cuh"
#include "blasst/cuda/common/wgmma_ops.cuh"
#include "blasst/cuda/prefill/prefill_params.cuh"
#include "blasst/skip_vote.hpp"

namespace blasst::cuda {

// Timing experiments (never in a normal build): BLASST_PREFILL_TRACE records SM clocks at 8 points
// of the first 64 iterations of both consumer warpgroups of CTA (0, 0, 0), which the host side
// prints after each uncaptured launch; BLASST_PREFILL_DEBUG_NO_SOFTMAX drops the softmax (P = S)
// to time the matrix products and the pipeline alone; BLASST_PREFILL_DEBUG_NO_V never loads V
// (packed inputs; the V stages keep zeros), the ceiling of any V-on-demand design. (Two of FA3's
// choices were measured as switches and dropped: docs/PREFILL.md.)
#ifdef BLASST_PREFILL_TRACE
__device__ unsigned g_prefill_trace[3][64][8];
#define BLASST_TRACE(k)                                                                            \
  if (trace && j < 64) g_prefill_trace[c][j][k] = static_cast<unsigned>(clock());
#else
#define BLASST_TRACE(k)
#endif

template <class T_, int D_, int BK_, int NWG_, int NSK_, int NSV_, bool PingPong_>
struct WgmmaPrefillTraits {
  using T = T_;
  static constexpr int D = D_, BK = BK_, NWG = NWG_, BQ = 64 * NWG, NSK = NSK_, NSV = NSV_, NH = D / 64;
  static constexpr bool kPingPong = PingPong_;
  static constexpr int kThreads = 128 * (NWG + 1);
  // 176- and 192-key tiles (d 128) hold a 64 x BK S and its P beside O: 240 registers, as FA3 gives
  // its 176-key tiles.
  static constexpr int kProducerRegs = NWG == 2 ? (BK >= 176 ? 24 : 40) : 32;
  static constexpr int kConsumerRegs = NWG == 2 ? (BK >= 176 ? 240 : 232) : 160;
  static_assert(D == 64 || D == 128 || D == 256, "head dims 64, 128 and 256");
  static_assert(BK == 64 || BK == 128 || ((BK == 176 || BK == 192) && D == 128) || (BK == 80 && D == 256),
                "key tiles of 64 or 128 (176 or 192 at head dim 128, 80 at 256)");
  static_assert(NWG == 2 || NWG == 3, "two or three consumer warpgroups");
  static_assert(128 * kProducerRegs + 128 * NWG * kConsumerRegs <= 65536, "register file");
  static constexpr std::size_t kTileBytes = std::size_t(BK) * D * sizeof(T);
  static constexpr std::size_t kQBytes = std::size_t(BQ) * D * sizeof(T);
  static constexpr std::size_t kKOffset = kQBytes;
  static constexpr std::size_t kVOffset = kKOffset + NSK * kTileBytes;
  static constexpr std::size_t kBarOffset = kVOffset + NSV * kTileBytes;
  static constexpr int kBars = 1 + 2 * NSK + 2 * NSV;
  static constexpr std::size_t kSmemBytes = kBarOffset + kBars * sizeof(std::uint64_t) + 1024;
};

// kPaged: K and V from paged caches (tm_k / tm_v boxes of p.box_rows slots, tm_k1 / tm_v1 of one
// slot for a sequence's last keys); otherwise packed, and tm_k1 / tm_v1 unused. kWarpBoxes (paged,
// for boxes of fewer than 32 slots): each ring's whole producer warp issues the boxes.
// kVote: a kernel of its own for policies that may skip (the host picks it: a threshold or scale
// factor that can give lambda < 1, and no replayed mask). It votes on a bound per row
// (skip_row_bound), moved only on kept tiles: one compare a row and tile. Without it the kernel
// runs dense, or replays a mask, or (a policy dense for every sequence here) finds thr = -inf; its
// loop is the one dense steps have always run, so a change to the vote cannot move the dense
// step's code (ptxas lays out the whole loop: PREFILL.md, sessions 10 and 25).
template <class Tr, bool kPaged = false, bool kWarpBoxes = false, bool kVote = false>
__global__ void __launch_bounds__(Tr::kThreads, 1)
    prefill_wgmma_kernel(const __grid_constant__ PrefillParams p, const __grid_constant__ CUtensorMap tm_q,
                         const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
                         const __grid_constant__ CUtensorMap tm_k1, const __grid_constant__ CUtensorMap tm_v1) {
  using T = typename Tr::T;
  constexpr int D = Tr::D, BQ = Tr::BQ, BK = Tr::BK, NSK = Tr::NSK, NSV = Tr::NSV, NH = Tr::NH;
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem =
      reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t(1023));
  unsigned char* sQ = smem;
  unsigned char* sK = smem + Tr::kKOffset;
  unsigned char* sV = smem + Tr::kVOffset;
  std::uint64_t* bars = reinterpret_cast<std::uint64_t*>(smem + Tr::kBarOffset);
  std::uint64_t *full_q = bars, *full_k = bars + 1, *empty_k = full_k + NSK, *full_v = empty_k + NSK,
                *empty_v = full_v + NSV;

  // Heaviest query tiles first (causal: the last tiles see the most keys).
  const int qt = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const std::int64_t q0 = p.cu_seqlens_q ? p.cu_seqlens_q[b] : 0;
  const std::int64_t k0 = p.cu_seqlens_k ? p.cu_seqlens_k[b] : 0;
  const std::int64_t sq = p.cu_seqlens_q ? p.cu_seqlens_q[b + 1] - q0 : p.total_q;
  const std::int64_t sk = p.cu_seqlens_k ? p.cu_seqlens_k[b + 1] - k0 : p.total_k;
  const std::int64_t r0 = std::int64_t(qt) * BQ;
  if (r0 >= sq) return;
  const int rows = static_cast<int>(min(std::int64_t(BQ), sq - r0));
  // Row limits grow with the row: the CTA's last row sees the most tiles.
  const int n = visible_tiles(row_key_limit(p.causal, r0 + rows - 1, sq, sk), BK);
  const VisitOrder order = static_cast<VisitOrder>(p.order);
  const int tid = threadIdx.x;
  // Broadcast from lane 0: the compiler then knows the warpgroup index is warp-uniform, and the
  // shared-memory descriptors built from it live in uniform registers.
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);

  if (tid == 0) {
    ptx::mbar_init(full_q, 1);
    for (int s = 0; s < NSK; ++s) ptx::mbar_init(&full_k[s], 1), ptx::mbar_init(&empty_k[s], 4 * Tr::NWG);
    for (int s = 0; s < NSV; ++s) ptx::mbar_init(&full_v[s], 1), ptx::mbar_init(&empty_v[s], 4 * Tr::NWG);
    ptx::fence_mbarrier_init();
  }
#ifdef BLASST_PREFILL_DEBUG_NO_V
  constexpr bool kZeroV = true;
#else
  constexpr bool kZeroV = kPaged;
#endif
  if constexpr (kZeroV) {
    // V rows past a sequence's end are not loaded (its last page's other slots may hold anything),
    // yet P V reads them with P = 0, so they must not be NaN: the V stages start zeroed, and later
    // hold only keys of this sequence. (K rows past the end are masked out of S.)
    for (int i = tid; i < int(NSV * Tr::kTileBytes / 16); i += Tr::kThreads)
      reinterpret_cast<uint4*>(sV)[i] = make_uint4(0u, 0u, 0u, 0u);
    ptx::fence_proxy_async_smem();
  }
  __syncthreads();

  if (wg == 0) {
    // ---- producers: one thread loads Q and K, another V, each waiting only on its own ring -------
    ptx::setmaxnreg_dec<Tr::kProducerRegs>();
    const int hkv = h / p.group;
    // Packed, and paged with boxes of 32 slots or more: one thread per ring. kWarpBoxes: the ring's
    // whole warp, lane i issuing boxes i, i + 32, ... of each tile (a 192-key tile of 16-slot pages
    // takes 12 per 64-channel half), so that their block-table reads overlap. Against one thread
    // (H200, PERF.md session 14): 16-slot pages 1.14x dense and 1.26x at 70 %. With the warp's
    // loop in the same kernel as the one-thread loop, 32- and 64-slot pages ran 0.92-0.96x, hence
    // a variant of its own. 32-bit shared addresses keep the warp's
    // loop within the producer's registers.
    auto load_ring = [&](const CUtensorMap* tm, const CUtensorMap* tm1, unsigned char* ring, std::uint64_t* full,
                         std::uint64_t* empty, int stages, [[maybe_unused]] int lane) {
      ptx::prefetch_tensor_map(tm);
      [[maybe_unused]] const std::uint32_t ring_a = ptx::smem_addr(ring), full_a = ptx::smem_addr(full),
                                           empty_a = ptx::smem_addr(empty);
      for (int j = 0; j < n; ++j) {
        const int st = j % stages;
        if constexpr (kWarpBoxes) {
          if (lane == 0 && j >= stages) ptx::mbar_wait_at(empty_a + st * 8, ((j / stages) - 1) & 1);
          // As below, the tile's keys below the sequence's end in boxes of box_rows slots; a short
          // last box one slot at a time (its slots share the box's page).
          const int box_rows = p.box_rows, page_size = p.page_size;
          const int key0 = visit_tile(order, n, j) * BK, rows = min(BK, static_cast<int>(sk) - key0);
          const std::int32_t* table = p.block_table + std::int64_t(b) * p.max_pages_per_seq;
          const std::uint32_t bar = full_a + st * 8;
          if (lane == 0) ptx::mbar_arrive_expect_tx_at(bar, static_cast<std::uint32_t>(rows * NH * 128));
          __syncwarp();
#pragma unroll 1
          for (int r0 = lane * box_rows; r0 < rows; r0 += 32 * box_rows) {
            const int pos = key0 + r0, page = table[pos / page_size], slot = pos % page_size;
            const int short_rows = rows - r0 >= box_rows ? 0 : rows - r0;
            const std::uint32_t dst = ring_a + st * std::uint32_t(Tr::kTileBytes) + r0 * 128;
            for (int s = 0; s < NH; ++s) {
              if (short_rows == 0) ptx::tma_load_4d_at(dst + s * (BK * 128), tm, s * 64, hkv, slot, page, bar);
#pragma unroll 1
              for (int r = 0; r < short_rows; ++r)
                ptx::tma_load_4d_at(dst + s * (BK * 128) + r * 128, tm1, s * 64, hkv, slot + r, page, bar);
            }
          }
        } else if constexpr (kPaged) {
          if (j >= stages) ptx::mbar_wait(&empty[st], ((j / stages) - 1) & 1);
          // The tile's keys below the sequence's end, in boxes of box_rows slots within a page,
          // then rows of one slot; the rest of the stage keeps older rows of this sequence (or zeros).
          const int key0 = visit_tile(order, n, j) * BK;
          const int rows = static_cast<int>(min(std::int64_t(BK), sk - key0));
          const std::int32_t* table = p.block_table + std::int64_t(b) * p.max_pages_per_seq;
          ptx::mbar_arrive_expect_tx(&full[st], static_cast<std::uint32_t>(rows * NH * 128));
          for (int r = 0; r < rows;) {
            const int pos = key0 + r, box = rows - r >= p.box_rows ? p.box_rows : 1;
            const int page = table[pos / p.page_size], slot = pos % p.page_size;
            for (int s = 0; s < NH; ++s)
              ptx::tma_load_4d(ring + st * Tr::kTileBytes + s * (BK * 128) + r * 128, box == 1 ? tm1 : tm, s * 64, hkv,
                               slot, page, &full[st]);
            r += box;
          }
        } else {
          const int key = static_cast<int>(k0 + std::int64_t(visit_tile(order, n, j)) * BK);
          if (j >= stages) ptx::mbar_wait(&empty[st], ((j / stages) - 1) & 1);
#ifdef BLASST_PREFILL_DEBUG_NO_V  // timing experiment only: V is never loaded (its stages keep zeros)
          if (full == full_v) {
            ptx::mbar_arrive(&full[st]);
            continue;
          }
#endif
          ptx::mbar_arrive_expect_tx(&full[st], static_cast<std::uint32_t>(Tr::kTileBytes));
          for (int s = 0; s < NH; ++s)
            ptx::tma_load_4d(ring + st * Tr::kTileBytes + s * (BK * 128), tm, s * 64, hkv, key, 0, &full[st]);
        }
      }
    };
    if (kWarpBoxes ? tid < 32 && n > 0 : tid == 0 && n > 0) {
      if (tid == 0) {
        ptx::prefetch_tensor_map(&tm_q);
        ptx::mbar_arrive_expect_tx(full_q, static_cast<std::uint32_t>(Tr::kQBytes));
        for (int s = 0; s < NH; ++s)
          ptx::tma_load_4d(sQ + s * (BQ * 128), &tm_q, s * 64, h, static_cast<int>(q0 + r0), 0, full_q);
      }
      load_ring(&tm_k, &tm_k1, sK, full_k, empty_k, NSK, tid);
    } else if (kWarpBoxes ? tid >= 32 && tid < 64 && n > 0 : tid == 32 && n > 0) {
      load_ring(&tm_v, &tm_v1, sV, full_v, empty_v, NSV, tid - 32);
    }
  } else {
    // ---- consumers: one vote group of 64 rows each ------------------------------------------------
    ptx::setmaxnreg_inc<Tr::kConsumerRegs>();
    const int c = wg - 1, t = tid - 128 * wg, warp = t / 32, lane = t % 32;
    const int rows_g = max(0, min(64, rows - 64 * c));
    const std::int64_t g0 = r0 + 64 * c;  // the group's first row in its sequence
    const int n_w = rows_g > 0 ? visible_tiles(row_key_limit(p.causal, g0 + rows_g - 1, sq, sk), BK) : 0;
    // Key limits fit in 32 bits (plan_prefill refuses 2^31 tokens); registers are short at NWG 3.
    const int lim_lo = rows_g > 0 ? static_cast<int>(row_key_limit(p.causal, g0, sq, sk)) : -1;
    const int lr0 = warp * 16 + lane / 4, lr1 = lr0 + 8;
    const int lim0 = lr0 < rows_g ? static_cast<int>(row_key_limit(p.causal, g0 + lr0, sq, sk)) : -1;
    const int lim1 = lr1 < rows_g ? static_cast<int>(row_key_limit(p.causal, g0 + lr1, sq, sk)) : -1;
    const float sl2 = p.scale * kLog2e;
    // The vote's threshold; -inf (no vote) when dense or when a recorded mask is replayed.
    const float thr = p.replay ? -INFINITY : skip_log_threshold(lambda_for(p.mode, p.value, sk), kLog2e);
    // kVote: the bound per row in S's own units (-inf when this sequence's lambda is dense: then
    // every row that sees a tile vetoes).
    [[maybe_unused]] const float thr_s = thr / sl2;
    const int group = h * static_cast<int>((sq + 63) / 64) + Tr::NWG * qt + c;
    // Named barriers: 1..NWG the votes, 4..3+NWG the turns (warpgroup c hands over to c + 1).
    const int vote_bar = 1 + c, my_turn = 4 + c, their_turn = 4 + (c + 1) % Tr::NWG;
    // The group's skip-mask offset (tests and replay only) waits in shared memory, not a register.
    __shared__ std::int64_t s_mask_base[Tr::NWG];
    __shared__ int s_rows[Tr::NWG];  // rows_g again for the epilogue: a register less in the loop
    // kVote with ping-pong: per warpgroup, the last tile (j + 1) that some warp kept.
    __shared__ int s_kept_at[Tr::NWG];
    if constexpr (kVote && Tr::kPingPong)
      if (t == 0) s_kept_at[c] = 0;
    if (t == 0) s_mask_base[c] = (p.mask || p.replay) ? prefill_mask_base(p, b, group, 64, BK) : 0;
    if (t == 0) s_rows[c] = rows_g;
    ptx::named_barrier_sync(vote_bar, 128);

    // Descriptors: Q rows of this group; K stages K-major; V stages MN-major (64-channel blocks
    // BK * 128 bytes apart). The low words of the three bases are computed once; each wgmma adds
    // its offset / 16 (sw128_desc_lo).
    const std::uint32_t dq = ptx::sw128_desc_lo(sQ + c * (64 * 128), 0), dk = ptx::sw128_desc_lo(sK, 0),
                        dv = ptx::sw128_desc_lo(sV, BK * 128);
    constexpr std::uint32_t kDescHi = ptx::sw128_desc_hi(1024);
    auto gemm_s = [&](float (&s)[BK / 2], int st) {
      const std::uint32_t dks = dk + st * static_cast<std::uint32_t>(Tr::kTileBytes / 16);
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        const int qoff = (ks / 4) * BQ * 128 + (ks % 4) * 32, koff = (ks / 4) * BK * 128 + (ks % 4) * 32;
        ptx::wgmma_ss<T, BK>(s, ptx::make_desc(dq + qoff / 16, kDescHi), ptx::make_desc(dks + koff / 16, kDescHi),
                             ks > 0 ? 1 : 0);
      }
    };
    float o[D / 2];
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
    std::uint32_t pf[BK / 16][4];
    auto gemm_pv = [&](int st) {
      const std::uint32_t dvs = dv + st * static_cast<std::uint32_t>(Tr::kTileBytes / 16);
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk)
        ptx::wgmma_rs<T, D>(o, pf[kk], ptx::make_desc(dvs + kk * (16 * 128 / 16), kDescHi), 1);
    };
    // P V of a kept tile as its own commit group; callers branch on a warp vote (see the loop).
    auto issue_pv = [&](int st) {
      ptx::wgmma_fence();
      gemm_pv(st);
      ptx::wgmma_commit();
    };
    auto release = [&](std::uint64_t* bar) {
      __syncwarp();
      if (lane == 0) ptx::mbar_arrive(bar);
    };

    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f, sc0 = 1.f, sc1 = 1.f;
    // kVote: each row's bound. Rows with no keys (lim -1: past the group's rows, whose S is not
    // masked outside the diagonal tiles) never veto: +inf.
    [[maybe_unused]] auto bound = [&](int lim, float m) { return lim < 0 ? INFINITY : skip_row_bound(m, thr_s); };
    [[maybe_unused]] float b0 = bound(lim0, m0), b1 = bound(lim1, m1);
    bool kept_prev = false;
    int jw = 0, skipped = 0;
    if (n > 0) ptx::mbar_wait(full_q, 0);
    if (Tr::kPingPong && c == Tr::NWG - 1 && n > 0) ptx::named_barrier_arrive(4, 256);  // warpgroup 0 first
    float s[BK / 2];
#ifdef BLASST_PREFILL_TRACE
    const bool trace = t == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0;
#endif
    for (int j = 0; j < n; ++j) {
      BLASST_TRACE(0)
      const int tile = visit_tile(order, n, j), st = j % NSK, pst = (j + NSV - 1) % NSV;
      const bool vis = tile < n_w;
      ptx::mbar_wait(&full_k[st], (j / NSK) & 1);
      BLASST_TRACE(1)
      if (Tr::kPingPong) ptx::named_barrier_sync(my_turn, 256);
      BLASST_TRACE(2)
      // The one conditional issue (P V of a kept tile) and its wait branch on a warp vote:
      // ptxas serialises all wgmma of a kernel whose waits or issues sit in paths it cannot
      // prove warp-uniform (warnings C7518 / C7520 / C7514, printed with -Xptxas -v). An empty
      // commit group instead costs a dummy HGMMA per tile that waits on the tensor pipe. S is
      // computed even for a tile this warpgroup does not see (at most the causal diagonal tile
      // of the upper group).
      ptx::fence_regs(s);
      ptx::wgmma_fence();
      gemm_s(s, st);
      ptx::wgmma_commit();
      if (j > 0) ptx::mbar_wait(&full_v[pst], ((j - 1) / NSV) & 1);
      // One branch on the warp vote holds the P V issue, the hand-over and the wait for S(j):
      // ptxas serialises the wgmma (C7514) when the issue and the wait sit in separate branches.
      ptx::fence_regs(o);
      ptx::fence_regs(pf);
      if (__all_sync(0xffffffffu, kept_prev)) {
        issue_pv(pst);
        if (Tr::kPingPong) ptx::named_barrier_arrive(their_turn, 256);
        ptx::wgmma_wait<1>();  // S(j) is the older group
      } else {
        if (Tr::kPingPong) ptx::named_barrier_arrive(their_turn, 256);
        ptx::wgmma_wait<0>();
      }
      BLASST_TRACE(3)
      ptx::fence_regs(s);
      BLASST_TRACE(4)
      release(&empty_k[st]);
      bool keep = false;
      if (vis) {
        const int t0 = tile * BK;
        if (t0 + BK - 1 > lim_lo) {
          const int rel0 = lim0 - t0 - 2 * (lane & 3), rel1 = lim1 - t0 - 2 * (lane & 3);
#pragma unroll
          for (int i = 0; i < BK / 8; ++i)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              if (i * 8 + (e & 1) > (e < 2 ? rel0 : rel1)) s[4 * i + e] = -INFINITY;
        }
        // Row maxima as interleaved chains (a single chain is BK / 4 dependent FMNMX); two at
        // head dim 64, where three warpgroups leave 160 registers.
        constexpr int NC = Tr::NWG == 3 ? 2 : 4;
        float a0[NC], a1[NC];
        [[maybe_unused]] bool early = false;
        if constexpr (kVote) {
          // One element at a time into each chain (element k of a row into chain k % NC): no
          // temporaries, which the vote kernel's two more live bounds had left ptxas one of,
          // serialising the pairs (SASS, session 25).
#pragma unroll
          for (int u = 0; u < NC; ++u) a0[u] = s[4 * (u / 2) + u % 2], a1[u] = s[4 * (u / 2) + 2 + u % 2];
#pragma unroll
          for (int k = NC; k < BK / 8; ++k) {
            a0[k % NC] = fmaxf(a0[k % NC], s[4 * (k / 2) + k % 2]);
            a1[k % NC] = fmaxf(a1[k % NC], s[4 * (k / 2) + 2 + k % 2]);
          }
          // The early post (ping-pong): a warp whose rows veto on the first half of their maxima
          // posts now, so that the post's atomic completes while the second half is reduced, ahead
          // of its bar.arrive (posted at the arrive it cost as much as waiting: PREFILL.md, session
          // 26). Only after a kept tile: kept tiles come in runs, and the runs of skipped tiles,
          // short and most of the tiles at high sparsity, then skip the check.
          if (Tr::kPingPong && kept_prev) {
            float h0 = a0[0], h1 = a1[0];
#pragma unroll
            for (int u = 1; u < NC; ++u) h0 = fmaxf(h0, a0[u]), h1 = fmaxf(h1, a1[u]);
            early = !__all_sync(0xffffffffu, (h0 < b0) & (h1 < b1));
            if (early)
              asm volatile("red.shared.max.u32 [%0], %1;" ::"r"(ptx::smem_addr(&s_kept_at[c])), "r"(j + 1) : "memory");
          }
#pragma unroll
          for (int k = BK / 8; k < BK / 4; ++k) {
            a0[k % NC] = fmaxf(a0[k % NC], s[4 * (k / 2) + k % 2]);
            a1[k % NC] = fmaxf(a1[k % NC], s[4 * (k / 2) + 2 + k % 2]);
          }
        } else {
#pragma unroll
          for (int u = 0; u < NC; ++u) {
            a0[u] = fmaxf(s[4 * u], s[4 * u + 1]);
            a1[u] = fmaxf(s[4 * u + 2], s[4 * u + 3]);
          }
#pragma unroll
          for (int i = NC; i < BK / 8; ++i) {
            a0[i % NC] = fmaxf(a0[i % NC], fmaxf(s[4 * i], s[4 * i + 1]));
            a1[i % NC] = fmaxf(a1[i % NC], fmaxf(s[4 * i + 2], s[4 * i + 3]));
          }
        }
#pragma unroll
        for (int u = 1; u < NC; ++u) a0[0] = fmaxf(a0[0], a0[u]), a1[0] = fmaxf(a1[0], a1[u]);
        // This thread's maxima of its parts of its two rows; the row maxima (quad shuffles) are
        // needed only by a kept tile.
        float mx0 = a0[0], mx1 = a1[0];
        // The vote (skipped entirely when dense), then the mask's replay or export (tests only).
        // Each thread tests its own parts of its rows: the warpgroup's AND over them is, row by
        // row, the test of the row maximum (the difference to the running max is monotone in the
        // tile value), so the decision is the one row maxima give, without the shuffles before
        // the barrier.
        bool skip = false;
        if constexpr (kVote && Tr::kPingPong) {
          // A warp with a row that vetoes knows the tile is kept: it posts that and goes on
          // (bar.arrive); only warps whose rows all agree wait for the others and read the post.
          // Rows that see none of the tile hold -inf there (masked above), below their bound.
          // The post is the tile's number (j + 1) in one slot per warpgroup, so nothing is cleared:
          // posts of tile j + 1 come after the turn that every warp of the warpgroup passes after
          // reading tile j's. Posted by a shared-memory atomic and read by a volatile load (strong
          // operations both); the hand-over is ordered by the barrier (bar.arrive releases,
          // bar.sync acquires). racecheck does not follow a bar.arrive hand-over that a loop
          // repeats, and reports it for plain stores, but not for atomic writes (probes, PERF.md
          // sessions 25-26).
          if (!__all_sync(0xffffffffu, (mx0 < b0) & (mx1 < b1))) {
            // Every lane (no branch and reconvergence around a lane-0 post), no return value:
            // red.max (the posts only grow), which ptxas aggregates over the warp into one atomic.
            if (!early)
              asm volatile("red.shared.max.u32 [%0], %1;" ::"r"(ptx::smem_addr(&s_kept_at[c])), "r"(j + 1) : "memory");
            ptx::named_barrier_arrive(vote_bar, 128);
          } else {
            ptx::named_barrier_sync(vote_bar, 128);
            skip = *reinterpret_cast<volatile int*>(&s_kept_at[c]) != j + 1 && jw > 0;
          }
        } else if constexpr (kVote) {
          skip = ptx::named_barrier_and(vote_bar, 128, (mx0 < b0) & (mx1 < b1)) && jw > 0;
        } else if (thr > -INFINITY) {
          const bool agree =
              row_agrees(lim0 >= t0, mx0 * sl2, m0 * sl2, thr) & row_agrees(lim1 >= t0, mx1 * sl2, m1 * sl2, thr);
          skip = ptx::named_barrier_and(vote_bar, 128, agree) && jw > 0;
        }
        if (p.replay || p.mask) {
          if (p.replay) skip = p.replay[s_mask_base[c] + tile] == tile_skipped;
          if (t == 0 && p.mask) p.mask[s_mask_base[c] + tile] = skip ? tile_skipped : tile_kept;
        }
        ++jw;
        skipped += skip;
#ifdef BLASST_PREFILL_DEBUG_NO_SOFTMAX  // timing experiment only (see the top of this file)
        if (true) {
          keep = true;
        } else
#endif
        if (!skip) {
          mx0 = ptx::quad_max(mx0), mx1 = ptx::quad_max(mx1);
          const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
          const float base0 = mn0 == -INFINITY ? 0.f : mn0 * sl2, base1 = mn1 == -INFINITY ? 0.f : mn1 * sl2;
          sc0 = ptx::exp2_approx(m0 * sl2 - base0), sc1 = ptx::exp2_approx(m1 * sl2 - base1);
          constexpr int NS = Tr::NWG == 3 ? 1 : 2;  // interleaved sums per row
          float r0[NS], r1[NS];
#pragma unroll
          for (int u = 0; u < NS; ++u) r0[u] = r1[u] = 0.f;
#pragma unroll
          for (int i = 0; i < BK / 8; ++i) {
            s[4 * i] = ptx::exp2_approx(fmaf(s[4 * i], sl2, -base0));
            s[4 * i + 1] = ptx::exp2_approx(fmaf(s[4 * i + 1], sl2, -base0));
            s[4 * i + 2] = ptx::exp2_approx(fmaf(s[4 * i + 2], sl2, -base1));
            s[4 * i + 3] = ptx::exp2_approx(fmaf(s[4 * i + 3], sl2, -base1));
            r0[i % NS] += s[4 * i] + s[4 * i + 1];
            r1[i % NS] += s[4 * i + 2] + s[4 * i + 3];
          }
#pragma unroll
          for (int u = 1; u < NS; ++u) r0[0] += r0[u], r1[0] += r1[u];
          l0 = l0 * sc0 + r0[0], l1 = l1 * sc1 + r1[0];
          m0 = mn0, m1 = mn1;
          if constexpr (kVote) b0 = bound(lim0, m0), b1 = bound(lim1, m1);
          keep = true;
        }
      }
      BLASST_TRACE(5)
      ptx::wgmma_wait<0>();
      ptx::fence_regs(o);
      ptx::fence_regs(pf);
      BLASST_TRACE(6)
      if (j > 0) release(&empty_v[pst]);
      if (keep) {
        // O holds the products up to the last kept tile; bring it to this tile's maxima before
        // P V of this tile is issued (next iteration), while no wgmma is in flight.
#pragma unroll
        for (int i = 0; i < D / 8; ++i) o[4 * i] *= sc0, o[4 * i + 1] *= sc0, o[4 * i + 2] *= sc1, o[4 * i + 3] *= sc1;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
          pf[kk][0] = ptx::pack2<T>(s[8 * kk], s[8 * kk + 1]);
          pf[kk][1] = ptx::pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
          pf[kk][2] = ptx::pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
          pf[kk][3] = ptx::pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
        }
      }
      kept_prev = keep;
      BLASST_TRACE(7)
    }
    const int last = (n + NSV - 1) % NSV;
    if (n > 0) ptx::mbar_wait(&full_v[last], ((n - 1) / NSV) & 1);
    ptx::fence_regs(o);
    ptx::fence_regs(pf);
    if (__all_sync(0xffffffffu, kept_prev)) issue_pv(last);
    ptx::wgmma_wait<0>();
    ptx::fence_regs(o);
    if (n > 0) release(&empty_v[last]);

    const int rows_e = s_rows[c];
    if (t == 0 && p.counters && rows_e > 0)
      ptx::add_tile_counts(&p.counters[(std::int64_t(b) * p.hq + h) * 2], jw, skipped);
    l0 = ptx::quad_sum(l0), l1 = ptx::quad_sum(l1);
    const int ch0 = 2 * (lane & 3);
    auto emit = [&](int lr, int half, float ll, float mm) {
      if (lr >= rows_e) return;
      const bool any = ll > 0.f;
      const float inv = any ? 1.f / ll : 0.f;
      const std::int64_t tok = q0 + g0 + lr;
      T* out = static_cast<T*>(p.o) + tok * p.o_st + std::int64_t(h) * p.o_sh;
#pragma unroll
      for (int i = 0; i < D / 8; ++i)
        *reinterpret_cast<std::uint32_t*>(out + i * 8 + ch0) =
            ptx::pack2<T>(o[4 * i + 2 * half] * inv, o[4 * i + 2 * half + 1] * inv);
      if ((lane & 3) == 0 && p.lse)
        p.lse[tok * p.lse_st + std::int64_t(h) * p.lse_sh] = any ? (mm * sl2 + __log2f(ll)) * kLn2 : -INFINITY;
    };
    emit(lr0, 0, l0, m0);
    emit(lr1, 1, l1, m1);
  }
}

}  // namespace blasst::cuda
