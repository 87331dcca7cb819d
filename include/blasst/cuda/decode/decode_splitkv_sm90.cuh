// Split-KV paged decode with the BLASST skip. One CTA walks one chunk of one vote group's visible
// key tiles (vote group = the query heads of one KV head x the query tokens of one sequence).
//
// Warp-specialised: WM x WN consumer warps and one producer warp that issues the TMA loads. Per tile: K arrives in one of NSK
// shared-memory stages by TMA, one 4-D box (64 channels x 1 head x BR slots x 1 page) per
// gcd(page_size, BK) rows and 64 channels, 128-byte swizzled; S = scale * Q K^T on tensor cores
// (mma.sync m16n8k16); each row's tile maximum goes through shared memory so every consumer warp
// sees the whole group; the group votes with one bar.red.and (skip_vote.hpp decides each row) and
// posts the decision to the producer, which loads the tile's V only if it was kept. A kept tile's
// P V product waits behind NSV - 1 later kept tiles (one, with one V stage: DecodeTraits::kDeferPV),
// so V loads overlap the following Q K^T.
// Stages are handed back through "empty" mbarriers, so the producer runs up to NSK tiles ahead.
//
// Consumer warps: WM slices of 16 rows times WN slices of BK / WN keys. Rows beyond the group do
// not vote. V rows past the end of a sequence (stale slots of its last page) are masked to zero in
// registers before P V.
//
// Dense walks (no threshold, or lambda >= 1 at this sequence's length; no replayed mask) are
// eager: the producer loads each tile's V right behind its K, every consumer warp runs P V on the
// tile at once, and the warps never meet per tile: each key slice keeps its own running max and
// the slices merge by their maxima at the end (as splits do).
//
// A vote group with more rows than one CTA holds (more than 64, or 32 at head dim 256; CTAs of
// 128 rows only for groups of more than 8 x 64: src/cuda/decode.cu, cta_rows_for) runs on a
// thread block cluster: CTA r of the cluster holds rows [r * chunk_rows, (r + 1) * chunk_rows) and
// walks the same tiles. Per tile each CTA votes on its rows, its first consumer thread stores the
// result into every CTA's vote slot and arrives on that CTA's vote mbarrier (release, cluster
// scope), and the consumers wait on their own vote mbarrier (acquire) before reading all slots: the
// whole group decides, every CTA the same. Only rank 0 writes the skip mask and the counters.
#pragma once

#include <cuda_bf16.h>
#include <cuda.h>
#include <cuda_fp16.h>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "blasst/cuda/common/ptx.cuh"
#include "blasst/cuda/decode/decode_params.cuh"
#include "blasst/skip_vote.hpp"

namespace blasst::cuda {

// CPS_: CTAs per SM the launch bounds promise (0: two where the shared memory allows, else one). 3
// is the small rings of a skip walk (DecodePlan::ctas_per_sm): 136 registers a thread.
template <class T_, int D_, int BK_, int WM_, int WN_, int NSK_, int NSV_, int CPS_ = 0>
struct DecodeTraits {
  using T = T_;
  static constexpr int D = D_, BK = BK_, WM = WM_, WN = WN_, NSK = NSK_, NSV = NSV_;
  static constexpr int kConsumerWarps = WM * WN, kConsumers = 32 * kConsumerWarps;
  static constexpr int kThreads = kConsumers + 32;  // plus the producer warp
  static constexpr int RP = 16 * WM;  // rows held by the CTA (group rows padded)
  static constexpr int KW = BK / WN;  // keys per warp
  static constexpr int NT = KW / 8;   // S n-tiles per warp
  static constexpr int KS = KW / 16;  // P V k-steps per warp
  static constexpr int DT = D / 8;    // output n-tiles
  static constexpr int CPR = D / 8;   // 16-byte chunks per row
  static constexpr int RSQ = D + 8;   // Q's shared-memory row stride (16 bytes of padding)
  static constexpr int NH = D / 64;   // 128-byte column slices of a key row (one TMA box each)
  static constexpr int kQueue = NSV - 1;  // P V products deferred behind their V loads (in registers)
  // One V stage, one K stage (the small rings at head dim 128) or two at head dim 256: a skip
  // walk's kept tile waits with its P and O rescale (in shared memory) until the next kept tile's
  // vote or the walk's end, and the producer asks for K of tile j + NSK as soon as the consumers
  // have read K of tile j, before it serves decision j. A kept tile's V load then overlaps the next
  // tiles' K loads and Q K^T instead of holding the walk. On the H200 at 70 % (PERF.md, session 23):
  // 1.6-2.2 % faster on three CTAs per SM at head dim 128, 6 % on two; 1.3-4.1 % at head dim 256
  // with one row warp, 3-7 % with two. Not on clusters (3 % slower there: the launch's kCluster).
  // The products run in the same order on the same values, so the bits are those of P V at once.
  static constexpr bool kDeferPV = NSV == 1 && (NSK == 1 || D == 256);
  // Decisions the producer's K loads run ahead (kDefer: the kernel's kDeferPV without clusters).
  __host__ __device__ static constexpr int lag(bool defer) { return NSK - 1 + (defer ? 1 : 0); }
  // Narrow key slices have registers to spare: Q fragments stay in registers and Q K^T runs two
  // accumulator sets (half the head dim each) to halve the MMA dependency chains. Not at three
  // CTAs per SM, whose 136 registers would spill at head dim 128 (168 bytes with the accumulators,
  // 32 without, Q in shared memory): there S sums the head dim in one chain, so its bits differ
  // from the others' (head dim 64 on three CTAs per SM takes the same path).
  static constexpr bool kQInRegs = NT <= 4 && D <= 128 && CPS_ < 3;
  static constexpr bool kSplitAcc = NT <= 4 && CPS_ < 3;
  static constexpr int NDEC = lag(kDeferPV) + 2;  // decision ring: the producer lags lag() steps
  // K and V tiles a dense walk keeps in flight: two at head dim 128 with one or two row warps
  // (measured there only; see the producer), fewer than the rings hold; elsewhere the rings.
  static constexpr int kEagerDepth = D == 128 && WM < 4 ? 2 : NSK > NSV ? NSK : NSV;
  // One V stage: no queue in registers (a kept tile's product runs as soon as its V lands, or,
  // kDeferPV, at the next kept tile). Such small rings leave room for two or three CTAs on an SM.
  static_assert(NSV >= 1, "a V stage");
  static constexpr int kQSlots = kQueue > 0 ? kQueue : 1;  // the queue's arrays (one slot for P at least)
  static_assert(D % 64 == 0, "head dim must be a multiple of 64");
  static_assert(KW % 16 == 0, "keys per warp must be a multiple of 16");

  // Stages first: the 128-byte swizzle is a function of address bits, so they start 1024-aligned.
  static constexpr std::size_t kTileBytes = std::size_t(BK) * D * sizeof(T);
  static constexpr std::size_t kQOffset = (NSK + NSV) * kTileBytes;
  static constexpr std::size_t kQBytes = std::size_t(RP) * RSQ * sizeof(T);
  static constexpr std::size_t kRedOffset = kQOffset + kQBytes;
  // Row stride (floats) of the key-slice merge at the end (WN > 1): 8 floats of padding put the 8
  // rows a warp stores at once on different banks (a stride of D put them all on the same 8).
  static constexpr int kMergeStride = D + 8;
  static constexpr std::size_t kRedBytes = std::size_t(WN) * RP * sizeof(float);
  // kDeferPV: the waiting tile's P fragments and O rescale, each consumer lane's own (registers
  // are short: in registers they spilled 40-112 bytes at three CTAs per SM). Unused on clusters.
  static constexpr std::size_t kPOffset = (kRedOffset + kRedBytes + 15) / 16 * 16;
  static constexpr std::size_t kPBytes = kDeferPV ? std::size_t(kConsumers) * (KS * 16 + 8) : 0;
  static constexpr std::size_t kDecOffset = kPOffset + kPBytes;
  static constexpr std::size_t kBarOffset = (kDecOffset + NDEC + 15) / 16 * 16;
  static constexpr int kBars = 2 * NSK + 2 * NSV + NDEC;  // full/empty K, full/empty V, decisions
  static constexpr std::size_t kSmemBytes = kBarOffset + kBars * sizeof(std::uint64_t) + 1024;
  static constexpr int kMinBlocks = CPS_ > 0 ? CPS_ : kSmemBytes <= 110 * 1024 ? 2 : 1;  // CTAs an SM holds (registers capped so)
  static_assert(std::size_t(kMinBlocks) * (kSmemBytes + 1024) <= 227 * 1024, "the CTAs do not fit an SM's shared memory");
  // The cross-warp output reduction (WN > 1) reuses the K and V stages.
  static_assert(WN == 1 || std::size_t(WN) * RP * kMergeStride * sizeof(float) + std::size_t(WN) * RP * sizeof(float) <=
                               (NSK + NSV) * kTileBytes,
                "reduction buffer does not fit");
};

// BLASST_DECODE_DEBUG_TIMELINE (a timing experiment only, docs/DECODE.md): BLASST_TL(slot, value)
// stores a stamp of this CTA; slots in src/cuda/decode.cu (debug_decode_timeline_print).
#ifdef BLASST_DECODE_DEBUG_TIMELINE
__device__ __forceinline__ std::uint64_t tl_globaltimer() {
  std::uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ std::uint64_t tl_smid() {
  unsigned s;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(s));
  return s;
}
#define BLASST_TL(slot, value)                                                                          \
  do {                                                                                                  \
    if (p.timeline)                                                                                     \
      p.timeline[((std::int64_t(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x) *      \
                     kTimelineSlots +                                                                   \
                 (slot)] = (value);                                                                     \
  } while (0)
#endif

// Offset of (sequence b, KV head h, tile 0) in a SkipMaskLayout-ordered decode mask.
__device__ __forceinline__ std::int64_t decode_mask_base(const DecodeParams& p, int b, int h, int bk) {
  std::int64_t off = 0;
  for (int i = 0; i < b; ++i) off += std::int64_t(p.hkv) * ((p.seq_lens[i] + bk - 1) / bk);
  return off + std::int64_t(h) * ((p.seq_lens[b] + bk - 1) / bk);
}

// kCluster: the launch has cluster dimensions (p.chunks CTAs per vote group); a separate variant, so
// that the one-CTA kernels carry none of its registers.
template <class Tr, bool kCluster>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocks)
    decode_splitkv_kernel(const __grid_constant__ DecodeParams p, const __grid_constant__ CUtensorMap tm_k,
                          const __grid_constant__ CUtensorMap tm_v) {
  using T = typename Tr::T;
  constexpr int D = Tr::D, BK = Tr::BK, WN = Tr::WN, NSK = Tr::NSK, NSV = Tr::NSV, RP = Tr::RP, NDEC = Tr::NDEC;
  constexpr int NT = Tr::NT, KS = Tr::KS, DT = Tr::DT, CPR = Tr::CPR, KW = Tr::KW, RSQ = Tr::RSQ, NH = Tr::NH;
  constexpr int kThreads = Tr::kThreads, kConsumers = Tr::kConsumers, kConsumerBarrier = 1;
  constexpr bool kDefer = Tr::kDeferPV && !kCluster;  // see DecodeTraits::kDeferPV
  constexpr int kLag = Tr::lag(kDefer);

  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t(1023));
  unsigned char* sK = smem;                           // NSK stages of [NH][BK][64]
  unsigned char* sV = smem + NSK * Tr::kTileBytes;    // NSV stages
  T* sQ = reinterpret_cast<T*>(smem + Tr::kQOffset);  // [RP][RSQ]
  float* sRed = reinterpret_cast<float*>(smem + Tr::kRedOffset);  // [WN][RP] tile maxima; at the end running maxima
  std::uint8_t* sDec = smem + Tr::kDecOffset;                     // [NDEC] 1: load V
  std::uint64_t* bars = reinterpret_cast<std::uint64_t*>(smem + Tr::kBarOffset);
  std::uint64_t *full_k = bars, *empty_k = bars + NSK, *full_v = bars + 2 * NSK, *empty_v = bars + 2 * NSK + NSV;
  std::uint64_t* dec_bar = bars + 2 * NSK + 2 * NSV;

  const int chunks = kCluster ? p.chunks : 1;
  const int split = kCluster ? blockIdx.x / chunks : blockIdx.x, rank = kCluster ? blockIdx.x % chunks : 0;
  const int h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5;
#ifdef BLASST_DECODE_DEBUG_TIMELINE
  if (tid == 0) {
    BLASST_TL(0, tl_globaltimer());
    BLASST_TL(1, clock64());
    BLASST_TL(9, tl_smid());
  }
#endif
  int lane = tid & 31;  // see the consumer loop: hidden from the compiler per tile in one variant
  const int sk = p.seq_lens[b], R = p.rows, T_ = p.q_tokens;
  // This CTA's rows of the group: [row0, row0 + Rl).
  const int row0 = kCluster ? rank * p.chunk_rows : 0, Rl = kCluster ? min(p.chunk_rows, R - row0) : R;
  __shared__ std::uint8_t s_vote[2][8];            // [tile parity][rank]: that CTA's rows all agree
  __shared__ __align__(8) std::uint64_t vote_bar[2];  // one arrival per CTA of the cluster
  const int n = visible_tiles(row_key_limit(true, T_ - 1, T_, sk), BK);
  const SplitCut cut = split_cut(n, p.splits);
  const bool direct = p.splits == 1;

  // Channels [ch, ch + 2 * N) of row lrow (this CTA's), N pairs: the partial output in one store of
  // 8 N bytes; O without splits in N stores of 4 bytes (its strides promise 4-byte alignment only).
  auto emit_n = [&](auto n_pairs, int lrow, int ch, const float* v, float l, float m) {
    constexpr int N = decltype(n_pairs)::value;
    if (lrow >= Rl) return;
    const int row = row0 + lrow;
    const bool any = l > 0.0f;
    const float inv = any ? 1.0f / l : 0.0f;
    const float lse = any ? m + __logf(l) : -INFINITY;
    if (direct) {
      const int t = row / p.group, hq = h * p.group + row % p.group;
      T* o = static_cast<T*>(p.o) + b * p.o_sb + t * p.o_st + hq * p.o_sh + ch;
#pragma unroll
      for (int i = 0; i < N; ++i)
        *reinterpret_cast<std::uint32_t*>(o + 2 * i) = ptx::pack2<T>(v[2 * i] * inv, v[2 * i + 1] * inv);
      if (ch == 0 && p.lse) p.lse[b * p.lse_sb + t * p.lse_st + hq * p.lse_sh] = lse;
    } else {
      const std::int64_t prow = ((std::int64_t(b) * p.hkv + h) * p.splits + split) * R + row;
      float* dst = p.part_o + prow * D + ch;
      if constexpr (N == 2)
        *reinterpret_cast<float4*>(dst) = make_float4(v[0] * inv, v[1] * inv, v[2] * inv, v[3] * inv);
      else
        *reinterpret_cast<float2*>(dst) = make_float2(v[0] * inv, v[1] * inv);
      if (ch == 0) p.part_lse[prow] = lse;
    }
  };
  auto emit = [&](int lrow, int ch, float o0, float o1, float l, float m) {
    const float v[2] = {o0, o1};
    emit_n(std::integral_constant<int, 1>{}, lrow, ch, v, l, m);
  };

  if (split >= cut.count) {  // an empty chunk (or a sequence with no visible tile)
    if (split == 0 || !direct)
      for (int i = tid; i < Rl * (D / 2); i += kThreads) emit(i / (D / 2), 2 * (i % (D / 2)), 0.f, 0.f, 0.f, 0.f);
    return;
  }

  const int first = split * cut.chunk, len = min(cut.chunk, n - first);
  // Dense (no threshold, or lambda >= 1 for this sequence's length) and no replayed mask: every tile
  // is kept, so the producer loads V with K and the consumer warps never synchronise per tile
  // (each key slice keeps its own running max; the slices merge at the end). Max seeding only
  // matters when something can be skipped.
  const float log_thr = skip_log_threshold(lambda_for(p.mode, p.value, sk));
  const bool eager = log_thr == -INFINITY && !p.replay;
  const bool seeded = !eager && p.max_seed && cut.count > 1 && split > 0;
  const int steps = len + (seeded ? 1 : 0);
  auto tile_of = [&](int j) { return seeded ? (j == 0 ? 0 : first + j - 1) : first + j; };

  if (tid == 0) {
    for (int s = 0; s < NSK; ++s) ptx::mbar_init(&full_k[s], 1), ptx::mbar_init(&empty_k[s], Tr::kConsumerWarps);
    for (int s = 0; s < NSV; ++s) ptx::mbar_init(&full_v[s], 1), ptx::mbar_init(&empty_v[s], Tr::kConsumerWarps);
    for (int s = 0; s < NDEC; ++s) ptx::mbar_init(&dec_bar[s], 1);
    if constexpr (kCluster) ptx::mbar_init(&vote_bar[0], chunks), ptx::mbar_init(&vote_bar[1], chunks);
    ptx::fence_mbarrier_init();
  }
  // The barriers exist before anyone waits on them; Q is read by the consumers alone (below), so
  // the producer's first K and V loads are issued without waiting for Q's global reads.
  __syncthreads();
  if constexpr (kCluster) ptx::cluster_sync();  // every CTA's vote barriers exist before the first vote
#ifdef BLASST_DECODE_DEBUG_TIMELINE
  if (tid == 0) {
    BLASST_TL(2, clock64());
    BLASST_TL(10, steps);
  }
#endif

  if (warp == Tr::kConsumerWarps) {
    // ---- producer ------------------------------------------------------------------------------
    ptx::prefetch_tensor_map(&tm_k);
    ptx::prefetch_tensor_map(&tm_v);
    // Boxes of BR slots (BR divides both the page size and BK, or is BK with one page per sequence,
    // so a box never crosses a page) and 64 channels; boxes wholly past the end of the sequence are
    // not loaded.
    const std::int32_t* table = p.block_table + std::int64_t(b) * p.max_pages_per_seq;
    const int BR = p.box_rows;
    // Optionally the cache's lines go first when L2 needs room: it is streamed once per step.
    const bool hint = p.l2_evict_first;
    const std::uint64_t policy = hint ? ptx::l2_evict_first() : 0;
    auto load_tile = [&](const CUtensorMap* tm, unsigned char* dst, std::uint64_t* bar, int tile) {
      const int boxes = (min(BK, sk - tile * BK) + BR - 1) / BR;
      if (lane == 0) ptx::mbar_arrive_expect_tx(bar, static_cast<std::uint32_t>(boxes * BR * NH * 128));
      __syncwarp();
      for (int o = lane; o < boxes * NH; o += 32) {
        const int i = o / NH, hf = o % NH;
        const int pos = tile * BK + i * BR;
        if (hint)
          ptx::tma_load_4d_hint(dst + hf * (BK * 128) + i * BR * 128, tm, hf * 64, h, pos % p.page_size,
                                table[pos / p.page_size], bar, policy);
        else
          ptx::tma_load_4d(dst + hf * (BK * 128) + i * BR * 128, tm, hf * 64, h, pos % p.page_size,
                           table[pos / p.page_size], bar);
      }
    };
    int vi = 0;
    auto serve_decision = [&](int d) {  // load V of step d if the consumers kept it
      ptx::mbar_wait(&dec_bar[d % NDEC], (d / NDEC) & 1);
      if (!sDec[d % NDEC]) return;
      if (vi >= NSV) ptx::mbar_wait(&empty_v[vi % NSV], ((vi / NSV) - 1) & 1);
      load_tile(&tm_v, sV + (vi % NSV) * Tr::kTileBytes, &full_v[vi % NSV], tile_of(d));
      ++vi;
    };
    // Dense walks keep at most kEagerDepth tiles of K and of V in flight, at head dim 128 fewer than
    // the rings hold: with all of them in flight dense ran up to 2 % slower at batch 1 and 8 (PERF.md,
    // session 11). Tile j waits until tile j - depth is consumed: that stage's barrier cannot be a
    // phase further on, since tile j - depth + stages is not loaded yet. Skip walks need the whole
    // K ring ahead of the decisions.
    const int dk = eager ? min(NSK, Tr::kEagerDepth) : NSK, dv = min(NSV, Tr::kEagerDepth);
    for (int j = 0; j < steps; ++j) {
      if (j >= dk) ptx::mbar_wait(&empty_k[(j - dk) % NSK], ((j - dk) / NSK) & 1);
      load_tile(&tm_k, sK + (j % NSK) * Tr::kTileBytes, &full_k[j % NSK], tile_of(j));
#ifdef BLASST_DECODE_DEBUG_TIMELINE
      if (j == 0 && lane == 0) BLASST_TL(3, clock64());
#endif
      if (eager) {
        if (j >= dv) ptx::mbar_wait(&empty_v[(j - dv) % NSV], ((j - dv) / NSV) & 1);
        load_tile(&tm_v, sV + (j % NSV) * Tr::kTileBytes, &full_v[j % NSV], tile_of(j));
      } else if (j >= kLag) {
        serve_decision(j - kLag);
      }
    }
    if (!eager)
      for (int d = max(0, steps - kLag); d < steps; ++d) serve_decision(d);
#ifdef BLASST_DECODE_DEBUG_TIMELINE
    if (lane == 0) BLASST_TL(11, clock64());
#endif
    if constexpr (kCluster) ptx::cluster_sync();  // see the end of the kernel
    return;
  }

  // ---- consumers -------------------------------------------------------------------------------
  // Q rows of the group, zero-padded to RP rows, while the producer's first loads are in flight.
  for (int c = tid; c < RP * CPR; c += kConsumers) {
    const int row = c / CPR, cc = c % CPR;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row < Rl) {
      const int t = (row0 + row) / p.group, hq = h * p.group + (row0 + row) % p.group;
      v = *reinterpret_cast<const uint4*>(static_cast<const T*>(p.q) + b * p.q_sb + t * p.q_st + hq * p.q_sh + cc * 8);
    }
    *reinterpret_cast<uint4*>(sQ + row * RSQ + cc * 8) = v;
  }
  ptx::named_barrier_sync(kConsumerBarrier, kConsumers);
#ifdef BLASST_DECODE_DEBUG_TIMELINE
  if (tid == 0) BLASST_TL(4, clock64());
#endif
  const int ctid = tid, cw = warp;
  const int wm = cw / WN, wn = cw % WN;
  const std::int64_t mask_base = (p.mask || p.replay) ? decode_mask_base(p, b, h, BK) : 0;

  // Rows this thread holds in its accumulators.
  const int r0 = wm * 16 + (lane >> 2), r1 = r0 + 8;
  auto limit_of = [&](int r) -> int {
    return r < Rl ? static_cast<int>(row_key_limit(true, (row0 + r) / p.group, T_, sk)) : -1;
  };
  const int lim0 = limit_of(r0), lim1 = limit_of(r1);

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  // Kept tiles whose P V waits for their V: a shift register, oldest in slot 0.
  constexpr int QS = Tr::kQueue;
  constexpr int QA = Tr::kQSlots;
  std::uint32_t pq_p[QA][KS][4];
  float pq_a[QA][2];
  int pq_v[QA], pq_valid[QA];
#pragma unroll
  for (int q = 0; q < QA; ++q) pq_v[q] = -1, pq_valid[q] = BK;
  int vi = 0, visited = 0, skipped = 0;
  // kDeferPV: the kept tile whose P V waits (load number vi - 1): its valid keys (0: none waits);
  // its P (this lane's fragments, slot per k-step) and O rescale (2 floats) in shared memory.
  int pend_valid = 0;
  auto p_slot = [&](int ks) { return reinterpret_cast<uint4*>(smem + Tr::kPOffset + (ks * kConsumers + ctid) * 16); };
  auto a_slot = [&] { return reinterpret_cast<float*>(smem + Tr::kPOffset + KS * kConsumers * 16) + 2 * ctid; };
  auto read_p = [&](int ks, std::uint32_t (&P)[4]) {
    const uint4 u = *p_slot(ks);
    P[0] = u.x, P[1] = u.y, P[2] = u.z, P[3] = u.w;
  };

  // O = O * alpha + P V for the kept tile whose V went into load number v; `valid` rows of it
  // exist. Rows past `valid` (stale slots of the sequence's last page) may hold anything, and
  // 0 * NaN is NaN: in that tile their V fragments are zeroed in registers (the stage is never
  // written, so warps that share a key slice need not wait for each other). Then the stage goes
  // back to the producer.
  auto flush = [&](int v, int valid, const std::uint32_t (&P)[KS][4], const float (&alpha)[2]) {
    ptx::mbar_wait(&full_v[v % NSV], (v / NSV) & 1);
    const unsigned char* vst = sV + (v % NSV) * Tr::kTileBytes;
    if (alpha[0] != 1.f || alpha[1] != 1.f) {
#pragma unroll
      for (int i = 0; i < DT; ++i) {
        o[i][0] *= alpha[0], o[i][1] *= alpha[0], o[i][2] *= alpha[1], o[i][3] *= alpha[1];
      }
    }
    // Two copies of the product: the masked one runs on a sequence's last tile only.
    auto product = [&](auto masked) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const int key = wn * KW + ks * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
        const int k = wn * KW + ks * 16 + 2 * (lane & 3);  // bv[0], bv[2]: keys k, k + 1 (low, high half)
        if (decltype(masked)::value && k - 2 * (lane & 3) >= valid) break;  // nothing left in the tile
#pragma unroll
        for (int dp = 0; dp < DT / 2; ++dp) {
          std::uint32_t bv[4];
          ptx::ldmatrix_x4_trans(bv, vst + ptx::stage_offset<BK>(key, 2 * dp + (lane >> 4)));
          if constexpr (decltype(masked)::value) {  // bv[1], bv[3]: keys k + 8, k + 9
            const std::uint32_t m0 = (k < valid ? 0xffffu : 0u) | (k + 1 < valid ? 0xffff0000u : 0u);
            const std::uint32_t m1 = (k + 8 < valid ? 0xffffu : 0u) | (k + 9 < valid ? 0xffff0000u : 0u);
            bv[0] &= m0, bv[2] &= m0, bv[1] &= m1, bv[3] &= m1;
          }
          ptx::mma_16816<T>(o[2 * dp], P[ks], bv[0], bv[1]);
          ptx::mma_16816<T>(o[2 * dp + 1], P[ks], bv[2], bv[3]);
        }
      }
    };
    if (valid < wn * KW + KW)
      product(std::true_type{});
    else
      product(std::false_type{});
    __syncwarp();
    if (lane == 0) ptx::mbar_arrive(&empty_v[v % NSV]);
  };

  // kDeferPV: the waiting tile's P V (its P in Pw), with the O rescale it was kept with.
  auto flush_waiting = [&](int v, const std::uint32_t (&Pw)[KS][4]) {
    const float* a = a_slot();
    const float pa[2] = {a[0], a[1]};
    flush(v, pend_valid, Pw, pa);
  };

  constexpr int QF = Tr::kQInRegs ? D / 16 : 1;
  std::uint32_t qa[QF][4];
  const int qrow = wm * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
  auto q_frag = [&](int ks) -> const std::uint32_t(&)[4] {
    if constexpr (Tr::kQInRegs) {
      return qa[ks];
    } else {
      ptx::ldmatrix_x4(qa[0], sQ + qrow * RSQ + (2 * ks + (lane >> 4)) * 8);
      return qa[0];
    }
  };
  if constexpr (Tr::kQInRegs) {
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) ptx::ldmatrix_x4(qa[ks], sQ + qrow * RSQ + (2 * ks + (lane >> 4)) * 8);
  }

  for (int j = 0; j < steps; ++j) {
    // Two row warps on two K stages and one V (head dim 128 on two CTAs per SM, 168 registers;
    // 256 on one) and head dim 128 on three CTAs per SM (128): the compiler hoists the lane's
    // fragment offsets out of the loop and spills them (4, 88 and 32 bytes); an opaque lane makes
    // it recompute them per tile. Not elsewhere: head dim 64 on three CTAs per SM spills with it
    // and not without, and at 256 it made one row warp 0.5 % and dense clusters 6 % slower
    // (PERF.md, session 21).
    if constexpr ((Tr::WM == 2 && Tr::NSK == 2 && Tr::NSV == 1) || (Tr::D == 128 && Tr::kMinBlocks == 3))
      asm volatile("" : "+r"(lane));
    const int tile = tile_of(j);
    ptx::mbar_wait(&full_k[j % NSK], (j / NSK) & 1);
#ifdef BLASST_DECODE_DEBUG_TIMELINE
    if (j == 0 && ctid == 0) BLASST_TL(5, clock64());
#endif
    const unsigned char* kst = sK + (j % NSK) * Tr::kTileBytes;

    // S = Q K^T (with kSplitAcc, the second half of the head dim accumulates into s2).
    constexpr int NT2 = Tr::kSplitAcc ? NT : 1;
    float s[NT][4], s2[NT2][4];
#pragma unroll
    for (int i = 0; i < NT; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = 0.f;
#pragma unroll
    for (int i = 0; i < NT2; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s2[i][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const std::uint32_t(&a)[4] = q_frag(ks);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        const int key = wn * KW + np * 16 + (lane & 7) + 8 * (lane >> 4);
        std::uint32_t bk[4];
        ptx::ldmatrix_x4(bk, kst + ptx::stage_offset<BK>(key, 2 * ks + ((lane >> 3) & 1)));
        if constexpr (Tr::kSplitAcc) {
          float(&acc0)[4] = ks < D / 32 ? s[2 * np] : s2[2 * np];
          float(&acc1)[4] = ks < D / 32 ? s[2 * np + 1] : s2[2 * np + 1];
          ptx::mma_16816<T>(acc0, a, bk[0], bk[1]);
          ptx::mma_16816<T>(acc1, a, bk[2], bk[3]);
        } else {
          ptx::mma_16816<T>(s[2 * np], a, bk[0], bk[1]);
          ptx::mma_16816<T>(s[2 * np + 1], a, bk[2], bk[3]);
        }
      }
    }
    if constexpr (Tr::kSplitAcc) {
#pragma unroll
      for (int i = 0; i < NT; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[i][e] += s2[i % NT2][e];
    }
    __syncwarp();
    if (lane == 0) ptx::mbar_arrive(&empty_k[j % NSK]);  // this warp is done with the K stage

    // Scale, mask (keys past a row's limit, rows beyond the group) and the rows' tile maxima.
    const int key0 = tile * BK + wn * KW + 2 * (lane & 3);
    const int rel0 = lim0 - key0, rel1 = lim1 - key0;  // last visible key offset of each row
    float tmax0, tmax1;
    ptx::scale_mask_row_max(s, rel0, rel1, p.scale, tmax0, tmax1);
    if (eager) {  // every tile kept; each key slice keeps its own running max
      ++visited;
      if (ctid == 0 && rank == 0 && p.mask) p.mask[mask_base + tile] = tile_kept;
      const float mn0 = fmaxf(m[0], tmax0), mn1 = fmaxf(m[1], tmax1);
      const float alpha[2] = {mn0 == -INFINITY ? 1.f : __expf(m[0] - mn0), mn1 == -INFINITY ? 1.f : __expf(m[1] - mn1)};
      float ls0, ls1;
      ptx::exp_row_sums(s, mn0, mn1, ls0, ls1);
      l[0] = l[0] * alpha[0] + ls0, l[1] = l[1] * alpha[1] + ls1;
      m[0] = mn0, m[1] = mn1;
      // P goes through the queue's last slot (unused by an eager walk: it shares the registers).
      ptx::pack_p<T>(s, pq_p[QA - 1]);
      flush(j, min(BK, sk - tile * BK), pq_p[QA - 1], alpha);  // V j went into load number j
      continue;
    }
    if constexpr (WN > 1) {  // the rows' maxima over every key slice of the tile
      if ((lane & 3) == 0) sRed[wn * RP + r0] = tmax0, sRed[wn * RP + r1] = tmax1;
      ptx::named_barrier_sync(kConsumerBarrier, kConsumers);
      tmax0 = sRed[r0], tmax1 = sRed[r1];
#pragma unroll
      for (int w = 1; w < WN; ++w) tmax0 = fmaxf(tmax0, sRed[w * RP + r0]), tmax1 = fmaxf(tmax1, sRed[w * RP + r1]);
    }

    // The vote: every row of the group must agree (BLASST.md 2.5). The barrier also keeps sRed
    // from being overwritten by the next tile before every warp has read it.
    const int t0 = tile * BK;
    const bool agree = row_agrees(lim0 >= t0, tmax0, m[0], log_thr) && row_agrees(lim1 >= t0, tmax1, m[1], log_thr);
    bool all = ptx::named_barrier_and(kConsumerBarrier, kConsumers, agree);
    if constexpr (kCluster) {  // the other CTAs' rows (see the top of this file)
      const int slot = j & 1;
      if (ctid == 0)
        for (int q = 0; q < chunks; ++q) {
          ptx::st_cluster_u8(ptx::cluster_addr(&s_vote[slot][rank], q), all ? 1u : 0u);
          ptx::mbar_arrive_cluster(ptx::cluster_addr(&vote_bar[slot], q));
        }
      ptx::mbar_wait_cluster(&vote_bar[slot], (j >> 1) & 1);
      for (int q = 0; q < chunks; ++q) all = all && reinterpret_cast<volatile std::uint8_t*>(s_vote[slot])[q] != 0;
    }
    const bool seed_step = seeded && j == 0;  // tile 0 only seeds the running max
    const bool skip = seed_step || (p.replay ? p.replay[mask_base + tile] == tile_skipped : (j > 0 && all));
    if (ctid == 0) {
      sDec[j % NDEC] = skip ? 0 : 1;
      ptx::mbar_arrive(&dec_bar[j % NDEC]);  // release: the producer reads sDec after its wait
    }
    if (seed_step) {
      m[0] = tmax0, m[1] = tmax1;
      continue;
    }
    ++visited;
    if (ctid == 0 && rank == 0 && p.mask) p.mask[mask_base + tile] = skip ? tile_skipped : tile_kept;
    if (skip) {
      ++skipped;
      continue;
    }

    const int my_vi = vi++;
    const float mn0 = fmaxf(m[0], tmax0), mn1 = fmaxf(m[1], tmax1);
    const float alpha[2] = {mn0 == -INFINITY ? 1.f : __expf(m[0] - mn0), mn1 == -INFINITY ? 1.f : __expf(m[1] - mn1)};
    if constexpr (kDefer) {  // one V stage: this tile's P waits; the previous kept tile's P V runs
      float ls0, ls1;
      ptx::exp_row_sums(s, mn0, mn1, ls0, ls1);
      l[0] = l[0] * alpha[0] + ls0, l[1] = l[1] * alpha[1] + ls1;
      m[0] = mn0, m[1] = mn1;
      std::uint32_t P[KS][4], Pw[KS][4];
      ptx::pack_p<T>(s, P);
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {  // swap with the waiting tile's P
        read_p(ks, Pw[ks]);
        *p_slot(ks) = make_uint4(P[ks][0], P[ks][1], P[ks][2], P[ks][3]);
      }
      if (pend_valid > 0) flush_waiting(my_vi - 1, Pw);
      float* a = a_slot();
      a[0] = alpha[0], a[1] = alpha[1];
      pend_valid = min(BK, sk - tile * BK);
      continue;
    }
    if constexpr (QS == 0) {  // one V stage: this tile's P V at once (the same sums in the same order)
      float ls0, ls1;
      ptx::exp_row_sums(s, mn0, mn1, ls0, ls1);
      l[0] = l[0] * alpha[0] + ls0, l[1] = l[1] * alpha[1] + ls1;
      m[0] = mn0, m[1] = mn1;
      ptx::pack_p<T>(s, pq_p[0]);
      flush(my_vi, min(BK, sk - tile * BK), pq_p[0], alpha);
      continue;
    }
    // The oldest pending product goes first (its V had the tiles since to arrive); this tile's P
    // then enters the queue.
    if (pq_v[0] >= 0) flush(pq_v[0], pq_valid[0], pq_p[0], pq_a[0]);
#pragma unroll
    for (int q = 0; q + 1 < QS; ++q) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
#pragma unroll
        for (int e = 0; e < 4; ++e) pq_p[q][ks][e] = pq_p[q + 1][ks][e];
      pq_a[q][0] = pq_a[q + 1][0], pq_a[q][1] = pq_a[q + 1][1];
      pq_v[q] = pq_v[q + 1], pq_valid[q] = pq_valid[q + 1];
    }
    float ls0, ls1;
    ptx::exp_row_sums(s, mn0, mn1, ls0, ls1);
    l[0] = l[0] * alpha[0] + ls0, l[1] = l[1] * alpha[1] + ls1;
    m[0] = mn0, m[1] = mn1;
    ptx::pack_p<T>(s, pq_p[QA - 1]);
    pq_a[QA - 1][0] = alpha[0], pq_a[QA - 1][1] = alpha[1];
    pq_v[QA - 1] = my_vi;
    pq_valid[QA - 1] = min(BK, sk - tile * BK);
  }
#pragma unroll
  for (int q = 0; q < QS; ++q)
    if (pq_v[q] >= 0) flush(pq_v[q], pq_valid[q], pq_p[q], pq_a[q]);
  if constexpr (kDefer) {
    if (pend_valid > 0) {
      std::uint32_t P[KS][4];
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) read_p(ks, P[ks]);
      flush_waiting(vi - 1, P);
    }
  }

#ifdef BLASST_DECODE_DEBUG_TIMELINE
  if (ctid == 0) BLASST_TL(6, clock64());
#endif
  if (ctid == 0 && rank == 0 && p.counters)
    ptx::add_tile_counts(&p.counters[(std::int64_t(b) * p.hkv + h) * 2], visited, skipped);

  l[0] = ptx::quad_sum(l[0]), l[1] = ptx::quad_sum(l[1]);
  const int ch0 = 2 * (lane & 3);
  if constexpr (WN == 1) {
#pragma unroll
    for (int i = 0; i < DT; ++i) {
      emit(r0, i * 8 + ch0, o[i][0], o[i][1], l[0], m[0]);
      emit(r1, i * 8 + ch0, o[i][2], o[i][3], l[1], m[1]);
    }
  } else {
    // Sum the key slices of the warps through shared memory (every stage has been consumed).
    ptx::named_barrier_sync(kConsumerBarrier, kConsumers);
#ifdef BLASST_DECODE_DEBUG_TIMELINE
    if (ctid == 0) BLASST_TL(12, clock64());
#endif
    // The same base as smem, but reached by arithmetic on the shared array (not through an
    // integer), so that the compiler knows these are shared memory: LDS and STS instead of
    // generic loads and stores. (For the whole kernel that moved registers and spills in other
    // variants: here only.) With the padded rows and the merge below, this epilogue took 1.45
    // instead of 2.5 us a CTA at MQA batch 8 (per-CTA timeline, PERF.md session 28).
    unsigned char* smem_s = smem_raw + ((1024u - (static_cast<unsigned>(__cvta_generic_to_shared(smem_raw)) & 1023u)) & 1023u);
    constexpr int MS = Tr::kMergeStride;
    float* red = reinterpret_cast<float*>(smem_s);  // [WN][RP][MS] over the stages (sK)
    float* redl = red + WN * RP * MS;               // [WN][RP]
    float* sMax = reinterpret_cast<float*>(smem_s + Tr::kRedOffset);  // sRed
#pragma unroll
    for (int i = 0; i < DT; ++i) {
      *reinterpret_cast<float2*>(red + (wn * RP + r0) * MS + i * 8 + ch0) = make_float2(o[i][0], o[i][1]);
      *reinterpret_cast<float2*>(red + (wn * RP + r1) * MS + i * 8 + ch0) = make_float2(o[i][2], o[i][3]);
    }
    if ((lane & 3) == 0) {
      redl[wn * RP + r0] = l[0], redl[wn * RP + r1] = l[1];
      sMax[wn * RP + r0] = m[0], sMax[wn * RP + r1] = m[1];
    }
    ptx::named_barrier_sync(kConsumerBarrier, kConsumers);
#ifdef BLASST_DECODE_DEBUG_TIMELINE
    if (ctid == 0) BLASST_TL(13, clock64());
#endif
    // The slices' running maxima are equal unless the walk was eager; weights are exactly 1 then.
    // TPR threads per row, each 4 channels at a time (16-byte loads and stores), so that a row's
    // weights are found once per thread and the loads of all its channels overlap. The sums are
    // the same, in the same order (slice 0 first), as one channel at a time.
    constexpr int TPR = kConsumers / RP, NC4 = D / (4 * TPR);
    static_assert(kConsumers % RP == 0 && D % (4 * TPR) == 0, "the merge's thread layout");
    const int mrow = ctid / TPR, mj = ctid % TPR;
    if (mrow < Rl) {
      float mm = sMax[mrow];
#pragma unroll
      for (int w = 1; w < WN; ++w) mm = fmaxf(mm, sMax[w * RP + mrow]);
      float wt[WN], ll = 0.f;
#pragma unroll
      for (int w = 0; w < WN; ++w) {
        const float mw = sMax[w * RP + mrow];
        wt[w] = mw == mm ? 1.f : mw == -INFINITY ? 0.f : __expf(mw - mm);
        ll += wt[w] * redl[w * RP + mrow];
      }
      float4 acc[NC4];  // every channel merged first, then all stored
#pragma unroll
      for (int k = 0; k < NC4; ++k) {
        acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int w = 0; w < WN; ++w) {
          const float4 v = *reinterpret_cast<const float4*>(red + (w * RP + mrow) * MS + 4 * (mj + TPR * k));
          acc[k].x += wt[w] * v.x, acc[k].y += wt[w] * v.y, acc[k].z += wt[w] * v.z, acc[k].w += wt[w] * v.w;
        }
      }
#ifdef BLASST_DECODE_DEBUG_TIMELINE
      if (ctid == 0) BLASST_TL(14, clock64());
#endif
#pragma unroll
      for (int k = 0; k < NC4; ++k) {
        const float v[4] = {acc[k].x, acc[k].y, acc[k].z, acc[k].w};
        emit_n(std::integral_constant<int, 2>{}, mrow, 4 * (mj + TPR * k), v, ll, mm);
      }
    }
  }
#ifdef BLASST_DECODE_DEBUG_TIMELINE
  if (ctid == 0) {
    BLASST_TL(7, clock64());
    BLASST_TL(8, tl_globaltimer());
  }
#endif
  // No CTA of a cluster leaves while another may still store a vote into its shared memory.
  if constexpr (kCluster) ptx::cluster_sync();
}

// Merges the splits of each row by their LSE: one CTA of W warps per (sequence, KV head, row).
// Every warp finds the largest LSE (lanes read 32 splits at once); warp w then sums the weighted
// partial outputs of the blocks of 32 splits w, w + W, ... (weights passed by shuffle, so the
// loads are independent and overlap), and warp 0 adds the W partial sums (shared memory). Many
// splits (a short batch on a long context) are spread over the warps instead of one warp's
// latency chain.
template <class T, int D, int W>
__global__ void __launch_bounds__(32 * W) decode_combine_kernel(const DecodeParams p) {
  const std::int64_t gr = blockIdx.x;  // the row
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int row = static_cast<int>(gr % p.rows);
  const int h = static_cast<int>((gr / p.rows) % p.hkv);
  const int b = static_cast<int>(gr / (std::int64_t(p.rows) * p.hkv));
  const std::int64_t base = (std::int64_t(b) * p.hkv + h) * p.splits;
  const float* lse = p.part_lse + base * p.rows + row;  // split s at lse[s * rows]
  float mx = -INFINITY;
  for (int s = lane; s < p.splits; s += 32) mx = fmaxf(mx, lse[std::int64_t(s) * p.rows]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  constexpr int PER = D / 32;
  float acc[PER] = {};
  float sum = 0.f;
  if (mx > -INFINITY) {
    for (int s0 = 32 * w; s0 < p.splits; s0 += 32 * W) {
      const int s = s0 + lane;
      const float l = s < p.splits ? lse[std::int64_t(s) * p.rows] : -INFINITY;
      const float wt = l == -INFINITY ? 0.f : __expf(l - mx);
      sum += wt;
      const int n = min(32, p.splits - s0);
      // Rounds of JB splits: all their loads first (JB x PER in flight per lane), then the sums in
      // split order; splits past n load nothing and add 0 (their weight is 0), so the result is
      // the plain split-ordered sum.
      constexpr int JB = PER <= 4 ? 16 : 8;
#pragma unroll
      for (int j0 = 0; j0 < 32; j0 += JB) {
        if (j0 >= n) break;
        float v[JB][PER];
#pragma unroll
        for (int j = 0; j < JB; ++j) {
          const float* po = p.part_o + ((base + s0 + j0 + j) * p.rows + row) * D + lane;
#pragma unroll
          for (int i = 0; i < PER; ++i) v[j][i] = j0 + j < n ? po[32 * i] : 0.f;
        }
#pragma unroll
        for (int j = 0; j < JB; ++j) {
          const float wj = __shfl_sync(0xffffffffu, wt, j0 + j);
#pragma unroll
          for (int i = 0; i < PER; ++i) acc[i] += wj * v[j][i];  // wj == 0: a skipped split
        }
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  }
  if constexpr (W > 1) {
    __shared__ float s_acc[W - 1][D];
    __shared__ float s_sum[W - 1];
    if (w > 0) {
#pragma unroll
      for (int i = 0; i < PER; ++i) s_acc[w - 1][lane + 32 * i] = acc[i];
      if (lane == 0) s_sum[w - 1] = sum;
    }
    __syncthreads();
    if (w > 0) return;
#pragma unroll
    for (int v = 0; v < W - 1; ++v) {
#pragma unroll
      for (int i = 0; i < PER; ++i) acc[i] += s_acc[v][lane + 32 * i];
      sum += s_sum[v];
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
