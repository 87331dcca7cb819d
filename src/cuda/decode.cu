// Host side of the CUDA decode: support checks, the planner and the dispatch over compiled variants.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#ifdef BLASST_DECODE_DEBUG_TIMELINE
#include <cstdio>
#include <vector>
#endif

#include "blasst/cuda/decode.hpp"
#include "blasst/cuda/decode/decode_splitkv_sm90.cuh"
#include "cuda/check.hpp"
#include "cuda/tensor_map.hpp"

namespace blasst::cuda {
namespace {

constexpr int kBlockK = 128;

int warps_m_for(int rows) {
  for (int wm = 1; wm <= 8; wm *= 2)
    if (rows <= 16 * wm) return wm;
  return 0;
}

// The most CTAs a vote group may span (a portable cluster), and the rows one CTA holds: 4 row
// warps (64 rows), 2 at head dim 256 (32), where a warp's O takes 128 registers. Only groups too
// large for 8 such CTAs (513-1024 rows at head dims 64 / 128) take CTAs of 8 row warps (128
// rows): with the producer those are nine warps, three on one SM sub-partition, which caps a
// thread at 168 registers, and that variant spills 450-600 bytes a thread.
constexpr int kMaxChunks = 8;
constexpr int cta_rows(int d) { return d == 256 ? 32 : 64; }
constexpr int max_cta_rows(int d) { return d == 256 ? 32 : 128; }
int cta_rows_for(int rows, int d) { return rows <= kMaxChunks * cta_rows(d) ? cta_rows(d) : max_cta_rows(d); }
int chunks_for(int rows, int d) {
  const int per = cta_rows_for(rows, d);
  return std::max(1, (rows + per - 1) / per);
}

// Consumer warps: row warps x key warps 1x4, 2x2, 4x1, 8x1 (one more warp produces; four consumer
// warps keep the register cap at 255). K and V stages fill shared memory: the K ring sets how far
// the producer runs ahead, the V ring how long a kept tile's V load has before its P V product.
// Head dim 256 (64 KB a stage, three stages): one row warp takes two K stages and one V, so the
// producer asks for the next K before the vote on this one (at 70 % on the H200, session 21,
// 1.13-1.20x the earlier one K and two V stages at 4/1, 8/4, 16/8 batch 8 and 64 32K, 1.04-1.11x on
// Gemma 3 270M's captured tensors; dense level). Two row warps take two K stages and one V too
// (launch), but for dense walks on clusters, which run these traits' one K and two V stages.
constexpr int stages_k(int d, int wm) { return d == 64 ? 6 : d == 128 ? 3 : wm == 1 ? 2 : 1; }
constexpr int stages_v(int d, int wm) { return d == 64 ? 3 : d == 128 ? (wm >= 4 ? 2 : 3) : wm == 1 ? 1 : 2; }
// A CTA's traits by its row warps, stages and CTAs per SM (key slices: 4 / WM warps, one from four
// row warps on).
template <class T, int D, int WM, int NSK, int NSV, int CPS = 0>
using RingTraits = DecodeTraits<T, D, kBlockK, WM, (WM >= 4 ? 1 : 4 / WM), NSK, NSV, CPS>;
template <class T, int D, int WM>
using TraitsFor = RingTraits<T, D, WM, stages_k(D, WM), stages_v(D, WM)>;

// A paged cache as a 4-D tensor (channel, head, slot, page) with boxes of 64 channels x 1 head x
// box_rows slots x 1 page.
CUtensorMap cache_map(const void* base, DType dt, int d, int hkv, int page_size, int num_pages, std::int64_t sp,
                      std::int64_t ss, std::int64_t sh, int box_rows) {
  if (num_pages == 0) return CUtensorMap{};  // nothing is ever loaded
  return tensor_map_4d(base, dt, {d, hkv, page_size, num_pages}, {sh, ss, sp}, box_rows, "the KV cache",
                       CU_TENSOR_MAP_L2_PROMOTION_L2_128B);
}

// The launches a kernel variant serves: one CTA per vote group, a cluster of CTAs per group, or
// either (launch_tr compiles only those).
enum class Groups { one_cta, cluster, either };
// The ring kernel's: 8 row warps only in clusters (groups of more than 8 x 64 rows, cta_rows_for),
// a CTA of cta_rows both alone and in clusters, fewer rows alone.
constexpr Groups ring_groups(int d, int wm) {
  return wm * 16 > cta_rows(d) ? Groups::cluster : wm * 16 == cta_rows(d) ? Groups::either : Groups::one_cta;
}
// Head dim 64 rings (DecodePlan::small_rings, every policy): two K stages; one row warp on three CTAs
// per SM with two V stages, two and four row warps on two CTAs per SM with two and one V stages.
constexpr int d64_ring_ctas(int wm) { return wm == 1 ? 3 : 2; }
constexpr int d64_ring_stages_v(int wm) { return wm == 4 ? 1 : 2; }
// Head dim 128 small rings: one row warp on one K and one V stage (two or three CTAs per SM), two
// row warps on two K stages and one V (two CTAs per SM, skip walks).
constexpr int d128_ring_stages_k(int wm) { return wm == 1 ? 1 : 2; }
constexpr int d128_ring_stages_v = 1;
// Their traits, as launched and as the planner sizes them.
template <class T, int WM>
using D64Rings = RingTraits<T, 64, WM, 2, d64_ring_stages_v(WM), d64_ring_ctas(WM)>;
template <class T, int WM, int CPS = 0>
using D128SmallRings = RingTraits<T, 128, WM, d128_ring_stages_k(WM), d128_ring_stages_v, CPS>;

template <class Tr, Groups G>
void launch_tr(const DecodeParams& params, const CUtensorMap& tmk, const CUtensorMap& tmv, const DecodePlan& plan,
               cudaStream_t stream);

template <class T, int D, int WM>
void launch(const DecodeParams& params, const CUtensorMap& tmk, const CUtensorMap& tmv, const DecodePlan& plan,
            cudaStream_t stream) {
  const bool small = plan.small_rings && plan.chunks == 1;  // the small rings run one CTA per group
  if constexpr (D == 64 && WM <= 4) {  // two K stages, two or one V (d64_ring_stages_v)
    if (small && plan.ctas_per_sm == d64_ring_ctas(WM))
      return launch_tr<D64Rings<T, WM>, Groups::one_cta>(params, tmk, tmv, plan, stream);
  }
  if constexpr (D == 128 && WM == 2) {  // skip walks of 17-32 rows: two K stages and one V, two CTAs per SM
    if (small && plan.ctas_per_sm == 2)
      return launch_tr<D128SmallRings<T, 2, 2>, Groups::one_cta>(params, tmk, tmv, plan, stream);
  }
  if constexpr (D == 128 && WM == 1) {  // one K and one V stage (DecodePlan::small_rings), any policy
    if (small && plan.ctas_per_sm == 3)
      return launch_tr<D128SmallRings<T, 1, 3>, Groups::one_cta>(params, tmk, tmv, plan, stream);
    if (small) return launch_tr<D128SmallRings<T, 1>, Groups::one_cta>(params, tmk, tmv, plan, stream);
  }
  if constexpr (D == 256 && WM == 2) {
    // Two row warps (17-32 rows a CTA) on two K stages and one V, as one row warp for every policy
    // (stages_k), except dense walks on clusters (groups of more than 32 rows). On the H200
    // (PERF.md, session 21), at 70 % in one CTA 1.03x and 1.16x one K and two V stages (32/1
    // batch 8, 24/1 batch 64, 32K), and 1.09x more without the spill (the opaque lane); on
    // clusters of two 1.23x (64/1 batch 8). Dense 0.997-1.007x in one CTA, but 0.94x on clusters,
    // which therefore keep one K and two V stages (TraitsFor), on clusters only.
    const bool may_skip =
        (params.mode != static_cast<int>(SkipPolicy::Mode::dense) && params.value > 0) || params.replay;
    if (plan.chunks == 1 || may_skip)
      return launch_tr<RingTraits<T, D, 2, 2, 1>, Groups::either>(params, tmk, tmv, plan, stream);
    return launch_tr<TraitsFor<T, D, WM>, Groups::cluster>(params, tmk, tmv, plan, stream);
  } else {
    launch_tr<TraitsFor<T, D, WM>, ring_groups(D, WM)>(params, tmk, tmv, plan, stream);
  }
}

template <class Tr, Groups G>
void launch_tr(const DecodeParams& params, const CUtensorMap& tmk, const CUtensorMap& tmv, const DecodePlan& plan,
               cudaStream_t stream) {
  using T = typename Tr::T;
  constexpr int D = Tr::D, WM = Tr::WM;
  const dim3 grid(plan.splits * plan.chunks, plan.num_heads_kv, plan.batch);
  if (plan.chunks == 1) {
    if constexpr (G != Groups::cluster) {
      set_smem_limit_once<decode_splitkv_kernel<Tr, false>>(Tr::kSmemBytes);
      decode_splitkv_kernel<Tr, false><<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(params, tmk, tmv);
    } else {
      throw Error("internal: one decode CTA with " + std::to_string(WM) + " row warps");
    }
  } else if constexpr (G != Groups::one_cta) {  // the CTAs of one vote group form a cluster along x
    set_smem_limit_once<decode_splitkv_kernel<Tr, true>>(Tr::kSmemBytes);
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid, cfg.blockDim = dim3(Tr::kThreads), cfg.dynamicSmemBytes = Tr::kSmemBytes, cfg.stream = stream;
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = static_cast<unsigned>(plan.chunks), attr.val.clusterDim.y = 1, attr.val.clusterDim.z = 1;
    cfg.attrs = &attr, cfg.numAttrs = 1;
    BLASST_CUDA_CHECK(cudaLaunchKernelEx(&cfg, decode_splitkv_kernel<Tr, true>, params, tmk, tmv));
  } else {
    // chunks > 1: the group spans CTAs, whose rows take the cluster variant's row warps (cta_rows_for).
    throw Error("internal: a cluster of decode CTAs with " + std::to_string(WM) + " row warps");
  }
  BLASST_CUDA_CHECK(cudaGetLastError());
  // BLASST_DECODE_DEBUG_NO_COMBINE: a timing experiment only (docs/DECODE.md): the split kernel
  // alone, O left unwritten when there are splits.
#ifndef BLASST_DECODE_DEBUG_NO_COMBINE
  if (plan.splits > 1) {
    // One CTA per row; a warp per 32 splits, up to 8 (the sum's order is fixed by the split count:
    // deterministic).
    const unsigned rows = static_cast<unsigned>(std::int64_t(plan.batch) * plan.num_heads_kv * plan.rows);
    if (plan.splits > 128)
      decode_combine_kernel<T, D, 8><<<rows, 256, 0, stream>>>(params);
    else if (plan.splits > 64)
      decode_combine_kernel<T, D, 4><<<rows, 128, 0, stream>>>(params);
    else if (plan.splits > 32)
      decode_combine_kernel<T, D, 2><<<rows, 64, 0, stream>>>(params);
    else
      decode_combine_kernel<T, D, 1><<<rows, 32, 0, stream>>>(params);
    BLASST_CUDA_CHECK(cudaGetLastError());
  }
#endif
}

template <class T, int D>
void dispatch_wm(const DecodeParams& params, const CUtensorMap& tmk, const CUtensorMap& tmv, const DecodePlan& plan,
                 cudaStream_t stream) {
  switch (plan.warps_m) {
    case 1: return launch<T, D, 1>(params, tmk, tmv, plan, stream);
    case 2: return launch<T, D, 2>(params, tmk, tmv, plan, stream);
    case 4: if constexpr (D <= 128) return launch<T, D, 4>(params, tmk, tmv, plan, stream); break;
    case 8: if constexpr (D <= 128) return launch<T, D, 8>(params, tmk, tmv, plan, stream); break;
  }
  throw Error("internal: no decode variant for " + std::to_string(plan.warps_m) + " row warps");
}

template <class T>
void dispatch_d(int d, const DecodeParams& params, const CUtensorMap& tmk, const CUtensorMap& tmv,
                const DecodePlan& plan, cudaStream_t stream) {
  switch (d) {
    case 64: return dispatch_wm<T, 64>(params, tmk, tmv, plan, stream);
    case 128: return dispatch_wm<T, 128>(params, tmk, tmv, plan, stream);
    case 256: return dispatch_wm<T, 256>(params, tmk, tmv, plan, stream);
  }
  throw Error("internal: no decode variant for head dim " + std::to_string(d));
}

// Shared memory one CTA of these traits takes on an SM: its dynamic bytes (the kernel's own layout)
// and the 1 KB the runtime reserves per CTA. The planner counts CTAs per SM with it.
template <class Tr>
constexpr int cta_smem = static_cast<int>(Tr::kSmemBytes) + 1024;
template <int D, int WM>
constexpr int ring_cta_smem = cta_smem<TraitsFor<__nv_bfloat16, D, WM>>;
// The ring kernel's CTA (row warps as plan_decode picks them: at most 2 at head dim 256).
int ring_smem(int d, int wm) {
  if (d == 256) return wm == 1 ? ring_cta_smem<256, 1> : ring_cta_smem<256, 2>;
  if (d == 64)
    return wm == 1 ? ring_cta_smem<64, 1> : wm == 2 ? ring_cta_smem<64, 2> : wm == 4 ? ring_cta_smem<64, 4> : ring_cta_smem<64, 8>;
  return wm == 1 ? ring_cta_smem<128, 1> : wm == 2 ? ring_cta_smem<128, 2> : wm == 4 ? ring_cta_smem<128, 4> : ring_cta_smem<128, 8>;
}
// The head dim 64 rings' CTA (launch: one, two or four row warps; one CTA per group).
int d64_ring_smem(int wm) {
  using B = __nv_bfloat16;
  return wm == 1 ? cta_smem<D64Rings<B, 1>> : wm == 2 ? cta_smem<D64Rings<B, 2>> : cta_smem<D64Rings<B, 4>>;
}

}  // namespace

std::string decode_unsupported_reason(const DecodeProblem& p, const SkipPolicy& pol) {
  if (p.dtype == DType::f32) return "the CUDA decode kernel takes bfloat16 or float16 inputs, not float32";
  if (p.head_dim_qk != p.head_dim_v) return "the CUDA decode kernel needs head_dim_qk == head_dim_v";
  if (p.head_dim_qk != 64 && p.head_dim_qk != 128 && p.head_dim_qk != 256)
    return "the CUDA decode kernel supports head dims 64, 128 and 256, got " + std::to_string(p.head_dim_qk);
  if (pol.block_k != kBlockK)
    return "the CUDA decode kernel uses key tiles of " + std::to_string(kBlockK) + ", got block_k " +
           std::to_string(pol.block_k);
  if (pol.order != VisitOrder::forward) return "the CUDA decode kernel visits tiles forward (split-KV)";
  const int rows = p.q_tokens * (p.num_heads_q / std::max(p.num_heads_kv, 1));
  if (chunks_for(rows, p.head_dim_qk) > kMaxChunks)
    return "vote groups of " + std::to_string(rows) + " rows (q_tokens x Hq/Hkv) exceed the CUDA decode kernel's " +
           std::to_string(kMaxChunks * max_cta_rows(p.head_dim_qk)) + " at head dim " +
           std::to_string(p.head_dim_qk) + " (" + std::to_string(kMaxChunks) + " CTAs of " +
           std::to_string(max_cta_rows(p.head_dim_qk)) + " rows)";
  const auto strided = [](std::int64_t s) { return s % 8 == 0; };
  if (!strided(p.q_stride_batch) || !strided(p.q_stride_token) || !strided(p.q_stride_head) ||
      !strided(p.k_stride_page) || !strided(p.k_stride_slot) || !strided(p.k_stride_head) ||
      !strided(p.v_stride_page) || !strided(p.v_stride_slot) || !strided(p.v_stride_head))
    return "the CUDA decode kernel needs strides that are multiples of 8 elements (16-byte rows)";
  return "";
}

namespace {
// The problem and policy checks of both planners (before any device query).
void check_plannable(const DecodeProblem& p, const SkipPolicy& pol, int max_seq_len) {
  validate_shapes(p);
  validate(pol);
  if (const std::string why = decode_unsupported_reason(p, pol); !why.empty()) throw Error(why);
  if (max_seq_len < 0) throw Error("max_seq_len must be >= 0");
}

// The planner proper, on a checked problem and policy (plan_decode, plan_decode_for).
DecodePlan plan_checked(const DecodeProblem& p, int max_seq_len, const SkipPolicy& pol, int sm_count, int smem_per_sm,
                        bool small_rings);
}  // namespace

DecodePlan plan_decode(const DecodeProblem& p, int max_seq_len, const SkipPolicy& pol, int device) {
  check_plannable(p, pol, max_seq_len);
  if (device < 0) BLASST_CUDA_CHECK(cudaGetDevice(&device));
  int sm_count = 0, smem_per_sm = 0;
  BLASST_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  BLASST_CUDA_CHECK(cudaDeviceGetAttribute(&smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device));
  return plan_checked(p, max_seq_len, pol, sm_count, smem_per_sm, true);
}

DecodePlan plan_decode_for(const DecodeProblem& p, int max_seq_len, const SkipPolicy& pol, int sm_count,
                           int smem_per_sm, bool small_rings) {
  check_plannable(p, pol, max_seq_len);
  if (sm_count < 1 || smem_per_sm < 1) throw Error("plan_decode_for: sm_count and smem_per_sm must be positive");
  return plan_checked(p, max_seq_len, pol, sm_count, smem_per_sm, small_rings);
}

namespace {
DecodePlan plan_checked(const DecodeProblem& p, int max_seq_len, const SkipPolicy& pol, int sm_count, int smem_per_sm,
                        bool small_rings) {
  DecodePlan plan;
  plan.batch = p.batch;
  plan.num_heads_kv = p.num_heads_kv;
  plan.rows = p.q_tokens * (p.num_heads_q / p.num_heads_kv);
  plan.max_seq_len = max_seq_len;
  plan.block_k = pol.block_k;
  plan.chunks = chunks_for(plan.rows, p.head_dim_qk);
  plan.chunk_rows = (plan.rows + plan.chunks - 1) / plan.chunks;
  plan.warps_m = warps_m_for(plan.chunk_rows);
  plan.sm_count = sm_count;
  // The plan's workspace (the splits' partial O and LSE), once its split count is final.
  auto finish = [&]() {
    if (plan.splits > 1)
      plan.workspace_bytes = std::size_t(p.batch) * p.num_heads_kv * plan.splits * plan.rows *
                             (std::size_t(p.head_dim_v) + 1) * sizeof(float);
    return plan;
  };
  const int groups = std::max(1, p.batch * p.num_heads_kv * plan.chunks);  // CTAs per split
  const int max_tiles = (max_seq_len + pol.block_k - 1) / pol.block_k;
  // Fill every SM with resident CTAs (per_sm of them), keeping at least two tiles per chunk.
  auto splits_for = [&](int per_sm) {
    return std::clamp(std::max(1, plan.sm_count * per_sm / groups), 1, std::max(1, max_tiles / 2));
  };
  // Two CTAs of small rings per SM pay where chunks hold 16 tiles or more (the cut's chunk,
  // ceil(tiles / splits)): on the H200 with 64-256 tiles a chunk 1.007-1.028x (PERF.md, session
  // 14), with 32 (batch 1 128K, 33 splits) 1.000-1.012x and with 16 (batch 8 and 64 at 8K, 4 splits)
  // 1.003-1.017x (session 16); with 8 tiles (MQA batch 8 32K, 33 splits) 0.975x (session 14) and
  // 0.969-0.978x (session 16, also 32/8 batch 1 32K), and 0.94x with 4 (MQA batch 1 128K, 264 splits).
  const bool small_kernel = small_rings && p.head_dim_qk == 128 && plan.warps_m == 1 && plan.chunks == 1;
  auto chunk_tiles = [&](int splits) { return (max_tiles + splits - 1) / splits; };
  auto chunks_hold_16 = [&](int splits) { return chunk_tiles(splits) >= 16; };
  if (pol.mode == SkipPolicy::Mode::dense && !pol.replay_mask && small_kernel)
    plan.small_rings = chunks_hold_16(pol.splits > 0 ? pol.splits : splits_for(2));
  // Head dim 64, one CTA per group of up to 16 rows: rings of two K and two V stages, three CTAs per
  // SM, dense and skip (the split count by the rules below, as for any kernel at that occupancy).
  // The six-stage ring kernel holds one CTA per SM and, on SmolLM2-135M's captured tensors (36/12,
  // 8K, H200, session 20), streamed at 0.74-0.81x cuDNN dense; three CTAs per SM: dense 1.35x
  // faster at batch 64 (0.99-1.01x cuDNN) and 1.55x at batch 8, at 70 % 1.65x and 1.94x; two CTAs
  // of three-stage rings ran 0.96-0.98x of three at batch 64 and 0.83x at batch 8 at 70 %, four of
  // one-stage rings 0.79-1.01x. Groups of 17-32 rows (two row warps) take the same rings at two
  // CTAs per SM (three spill): on generated inputs (32/1 and 128/4, batch 8 and 64, 32K; session
  // 20) 1.20-1.39x dense and 1.12-1.36x at 70 % over the ring kernel. 33-64 rows (four row warps)
  // take two CTAs per SM of two K stages and one V (the two-stage rings spill 160-270 bytes there;
  // with one V stage there is no P V queue and no spill): on generated inputs (64/1 and 48/1,
  // 320/8; batch 8 and 64, 8K and 32K; session 21) 1.37-1.53x dense and 1.10-1.41x at 70 % over
  // the ring kernel, with its bits.
  const int d64_ctas = small_rings && p.head_dim_qk == 64 && plan.chunks == 1 ? d64_ring_ctas(plan.warps_m) : 0;
  const bool d64_rings =
      d64_ctas > 0 && d64_ctas * d64_ring_smem(plan.warps_m) <= smem_per_sm;
  if (d64_rings) plan.small_rings = true;
  const int per_sm = d64_rings           ? d64_ctas
                     : plan.small_rings ? 2
                                        : std::max(1, smem_per_sm / ring_smem(p.head_dim_qk, plan.warps_m));
  plan.splits = pol.splits > 0 ? pol.splits : splits_for(per_sm);
  plan.ctas_per_sm = per_sm;
  // A walk that may skip, with max seeding (which keeps the sparsity at any split count: the same
  // at 1-4 splits at 32/8 batch 64 32K; without it each chunk's first tile and fresh running max
  // would cost some):
  //  - On a grid of a wave or more even unsplit, GQA groups of up to 8 rows take the small rings at
  //    three CTAs per SM with up to 8 chunks of at least 64 tiles, the count whose last wave is
  //    the fullest, if that is 90 % full or more. At 70 % on the H200 against the ring plan below
  //    (session 18, forced on the merged build): 32/8 batch 64 32K 3 splits (3.9 waves) 1.029x
  //    (2 splits, 2.6 waves: 0.990x; 4, 5.2 waves: 0.972x), 64/8 1.029x (0.966x at 4); batch 32
  //    32K 3 splits 1.032x; batch 64 128K 3 splits 1.018x (32/8) and 1.014x (64/8), 6 splits
  //    1.022x and 1.013x.
  //  - Otherwise on such a grid GQA takes chunks of at least 64 tiles, up to 4 per
  //    group: each CTA lasts as long as its kept tiles, which differ by KV head, so the last
  //    wave's tail leaves SMs idle, and more, shorter CTAs shorten it. At 70 % on the H200 against
  //    one split (PERF.md, session 16): 32/8 batch 64 32K 1.025x and 128K 1.045x, batch 32 32K
  //    1.048x, 64/8 batch 32 128K 1.067x, 64/8 batch 64 32K 1.006x. MQA keeps one split there:
  //    at batch 256 32K 2 and 4 splits ran 0.993x and 0.975x of one with 8 distinct sequences in
  //    the batch (session 17), and lost 3.6 % with the bench's one sequence (session 16).
  //  - Under a wave, GQA and MQA take up to 8 chunks of at least 128 tiles where that is more
  //    than the wave's count: 32/8 batch 8 128K 1.056x, 64/8 1.087-1.091x with 8 splits instead
  //    of 2 (sessions 16 and 17); 8/1 batch 64 128K 1.020x with 8 distinct sequences, 1.002x with
  //    one (session 17). With shorter chunks more splits did not pay (32/8 batch 8 32K, session
  //    8: 4-16 splits 0.95-0.99x of 2).
  //  - Under a wave, where a GQA group has at most 8 rows, the small rings at three CTAs per SM
  //    run the walk instead, with one wave of them, where their chunks hold 16 tiles or more. At
  //    70 % on the H200 against the ring plan (session 18, by three CTAs forced on a build that
  //    had them): 32/8 batch 8 32K 1.062x, 64K 1.075x, 128K 1.052x (12 splits, two waves:
  //    1.044x), batch 16 32K 1.068x, batch 4 128K 1.067x, batch 2 128K 1.059x, batch 1 128K
  //    1.027x; 16/8 batch 8 32K 1.067x; 64/8 batch 8 32K 1.072x, 128K 1.016x, batch 16 32K
  //    1.054x, batch 2 128K 1.074x, batch 1 128K 1.030x. Not taken: 16 rows (128/8 batch 8 32K
  //    0.997x), over a wave (32/8 batch 64 32K at 2 splits 0.990x). MQA only where those chunks
  //    hold 128 tiles or more (session 19: 8/1 batch 64 128K, 6 chunks of 171 tiles, 1.021x, and
  //    1.031x with 8 distinct sequences; with 43 tiles, batch 64 32K, 0.993x, session 18 0.997x;
  //    with 21, batch 8 128K, 0.966x). Otherwise MQA takes two CTAs per SM, with the split count
  //    of the two-CTA rule below, where those chunks hold 64 tiles or more. At 8/1 and 70 %
  //    against the ring plan, with the batch's sequences distinct as in a server (PERF.md,
  //    session 24): batch 64 32K (4 chunks of 64 tiles) 1.103-1.116x, batch 16 128K (16 of 64)
  //    1.058-1.086x; with one sequence copied through the batch (the bench's default: every group
  //    then carries the same kept tiles) 0.983-0.996x and 1.006-1.007x. Not taken with 32-tile
  //    chunks: batch 32 32K 1.029-1.039x distinct but 0.988x copied, batch 8 128K (33 splits)
  //    0.988-1.017x and 0.982-0.988x. Where a GQA walk's chunks at three CTAs per SM would be
  //    short (batch 8 at 8K: 11 tiles) and a group has at most 4 rows, two CTAs per SM (their
  //    own split count by the long-chunk rule), where the ring plan stays under 3 waves and their
  //    chunks hold 16 tiles or more (session 17: 32/8 batch 8 8K 1.023x; with 2- and 8-tile
  //    chunks 0.90x and 0.92x).
  if (pol.splits == 0 && pol.mode != SkipPolicy::Mode::dense && pol.max_seed) {
    const bool small_any = small_kernel && !pol.replay_mask;  // GQA or MQA
    const bool three_any = small_any && plan.rows <= 8 &&
                           3 * cta_smem<D128SmallRings<__nv_bfloat16, 1, 3>> <= smem_per_sm;
    const bool gqa = p.num_heads_kv > 1;
    const bool small = small_any && gqa, three_fit = three_any && gqa;
    // One KV head (up to 8 rows; three CTAs per SM fit, so two do) under a wave: three CTAs per SM
    // only with chunks of 128 tiles or more; else two where their chunks hold 64 tiles or more
    // (the rules above).
    const bool mqa_fit = three_any && !gqa;
    auto take_small_rings = [&](int ctas_per_sm, int splits) {
      plan.small_rings = true;
      plan.ctas_per_sm = ctas_per_sm;
      plan.splits = splits;
    };
    // Over a wave, GQA chunks of at least 64 tiles, up to 4; under a wave, chunks of at least 128
    // tiles, up to 8, where that is more than the wave's count (the rules above).
    const int wave_splits = std::clamp(max_tiles / 64, 1, 4);
    auto long_chunks = [&](int splits) { return std::max(splits, std::min(max_tiles / 128, 8)); };
    // Groups of 17-32 rows (two row warps) at head dim 128: two CTAs per SM of two K stages and
    // one V stage, where each chunk holds 64 tiles or more (the split count by the rules below for
    // two CTAs per SM). At 70 % on the H200 against the ring kernel (PERF.md, session 20): 256/8
    // batch 64 32K 1.07x, batch 8 1.02x; 32/1 batch 64 32K 1.02x; with 8-tile chunks (32/1 batch
    // 8 32K, 33 splits) 0.91x. Two CTAs of one K stage 0.92-0.99x, three 0.74-0.79x. It spills 4
    // bytes a thread at the 168 registers two CTAs of five warps allow (32 before its lane was made
    // opaque per tile; the figures above are with 32).
    const bool rows32 = small_rings && p.head_dim_qk == 128 && plan.warps_m == 2 && plan.chunks == 1 &&
                        !pol.replay_mask &&
                        2 * cta_smem<D128SmallRings<__nv_bfloat16, 2, 2>> <= smem_per_sm;
    if (rows32 && (gqa || groups < plan.sm_count * 2)) {
      const int s = groups >= plan.sm_count * 2 ? wave_splits : long_chunks(splits_for(2));
      if (chunk_tiles(s) >= 64) {
        take_small_rings(2, s);
        return finish();
      }
    }
    if (groups >= plan.sm_count * per_sm) {
      if (gqa) plan.splits = wave_splits;
      // Three CTAs per SM: up to 8 chunks of 64 tiles or more, the count whose last wave is the
      // fullest (the first such), if it is 90 % full or more.
      int best = 0;
      double best_fill = 0;
      for (int s = 1; three_fit && s <= std::min(8, max_tiles / 64); ++s) {
        const double waves = double(groups) * s / (3.0 * plan.sm_count), fill = waves / std::ceil(waves);
        if (fill > best_fill + 1e-9) best = s, best_fill = fill;
      }
      if (best > 0 && best_fill >= 0.9) take_small_rings(3, best);
    } else {
      plan.splits = long_chunks(plan.splits);
      const int three = splits_for(3), two = long_chunks(splits_for(2));
      if ((three_fit && chunks_hold_16(three)) || (mqa_fit && chunk_tiles(three) >= 128))
        take_small_rings(3, three);
      else if (small && plan.rows <= 4 && std::int64_t(groups) * plan.splits < 3LL * plan.sm_count * per_sm &&
               chunks_hold_16(two))
        take_small_rings(2, two);
      else if (mqa_fit && chunk_tiles(two) >= 64)
        take_small_rings(2, two);
    }
  }
  return finish();
}
}  // namespace

#ifdef BLASST_DECODE_DEBUG_TIMELINE
namespace {
std::uint64_t* g_timeline = nullptr;  // kTimelineSlots per CTA of the armed call
std::size_t g_timeline_cap = 0, g_timeline_ctas = 0;
bool g_timeline_armed = false;
int g_timeline_after = 0;  // calls to let pass before the stamped one
}  // namespace

void debug_decode_timeline_arm(std::size_t max_ctas, int after_calls) {
  if (max_ctas > g_timeline_cap) {
    if (g_timeline) BLASST_CUDA_CHECK(cudaFree(g_timeline));
    BLASST_CUDA_CHECK(cudaMalloc(&g_timeline, max_ctas * kTimelineSlots * sizeof(std::uint64_t)));
    g_timeline_cap = max_ctas;
  }
  g_timeline_armed = true, g_timeline_after = after_calls;
}

void debug_decode_timeline_print(const char* label, cudaStream_t stream) {
  BLASST_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<std::uint64_t> t(g_timeline_ctas * kTimelineSlots);
  BLASST_CUDA_CHECK(cudaMemcpy(t.data(), g_timeline, t.size() * sizeof(std::uint64_t), cudaMemcpyDeviceToHost));
  struct Cta {
    const std::uint64_t* s;
  };
  std::vector<Cta> c;
  for (std::size_t i = 0; i < g_timeline_ctas; ++i)
    if (t[i * kTimelineSlots + 8] != 0) c.push_back({&t[i * kTimelineSlots]});
  if (c.empty()) {
    std::printf("timeline %s: no CTA walked\n", label);
    return;
  }
  std::uint64_t g0 = ~std::uint64_t(0), g1 = 0;
  std::vector<double> nspc;  // ns per cycle of each CTA
  std::vector<int> per_sm(1024, 0);
  for (const Cta& x : c) {
    g0 = std::min(g0, x.s[0]), g1 = std::max(g1, x.s[8]);
    if (x.s[7] > x.s[1]) nspc.push_back(double(x.s[8] - x.s[0]) / double(x.s[7] - x.s[1]));
    ++per_sm[x.s[9] % 1024];
  }
  std::sort(nspc.begin(), nspc.end());
  const double k = nspc.empty() ? 0.5 : nspc[nspc.size() / 2];  // ns per cycle
  int sms = 0, most = 0;
  for (int v : per_sm) sms += v > 0, most = std::max(most, v);
  std::printf("timeline %s: %zu CTAs walked (of %zu) on %d SMs (up to %d a SM), clock %.0f MHz; span %.2f us\n", label,
              c.size(), g_timeline_ctas, sms, most, 1e3 / k, (g1 - g0) * 1e-3);
  auto row = [&](const char* what, auto f) {
    std::vector<double> v;
    for (const Cta& x : c) v.push_back(f(x.s));
    std::sort(v.begin(), v.end());
    auto q = [&](double f) { return v[std::min(v.size() - 1, std::size_t(f * (v.size() - 1) + 0.5))]; };
    std::printf("  %-46s min %7.2f  p10 %7.2f  p50 %7.2f  p90 %7.2f  max %7.2f us\n", what, q(0), q(0.1), q(0.5),
                q(0.9), q(1));
  };
  auto cyc = [&](std::uint64_t a, std::uint64_t b) { return double(std::int64_t(b - a)) * k * 1e-3; };
  row("start after the first CTA's", [&](const std::uint64_t* s) { return (s[0] - g0) * 1e-3; });
  row("barriers set up (start to __syncthreads)", [&](const std::uint64_t* s) { return cyc(s[1], s[2]); });
  row("first K load issued, after set-up", [&](const std::uint64_t* s) { return cyc(s[2], s[3]); });
  row("Q in shared memory, after set-up", [&](const std::uint64_t* s) { return cyc(s[2], s[4]); });
  row("first K landed, after set-up", [&](const std::uint64_t* s) { return cyc(s[2], s[5]); });
  row("walk: first K landed to last product", [&](const std::uint64_t* s) { return cyc(s[5], s[6]); });
  row("walk per step (K tiles incl. a seed)", [&](const std::uint64_t* s) { return cyc(s[5], s[6]) / double(s[10]); });
  row("last load issued to last product", [&](const std::uint64_t* s) { return cyc(s[11], s[6]); });
  row("epilogue: last product to partial O written", [&](const std::uint64_t* s) { return cyc(s[6], s[7]); });
  if (c.front().s[12] != 0) {  // key slices merged through shared memory
    row("  last product to the warps' barrier", [&](const std::uint64_t* s) { return cyc(s[6], s[12]); });
    row("  slices stored, second barrier", [&](const std::uint64_t* s) { return cyc(s[12], s[13]); });
    if (c.front().s[14] != 0) {
      row("  merge", [&](const std::uint64_t* s) { return cyc(s[13], s[14]); });
      row("  partial O stores", [&](const std::uint64_t* s) { return cyc(s[14], s[7]); });
    } else {
      row("  merge and partial O stores", [&](const std::uint64_t* s) { return cyc(s[13], s[7]); });
    }
  }
  row("end, after the first CTA's start", [&](const std::uint64_t* s) { return (s[8] - g0) * 1e-3; });
  row("CTA's whole time", [&](const std::uint64_t* s) { return (s[8] - s[0]) * 1e-3; });
}
#endif

void decode(const DecodeProblem& p, const SkipPolicy& pol, const DecodePlan& plan, const Outputs& out,
            void* workspace, cudaStream_t stream) {
  if (p.batch != plan.batch || p.num_heads_kv != plan.num_heads_kv ||
      p.q_tokens * (p.num_heads_q / p.num_heads_kv) != plan.rows)
    throw Error("decode: the problem does not match its plan (batch, KV heads or rows differ)");
  if (out.o == nullptr) throw Error("decode: the output O must not be null");
  if (out.o_dtype != p.dtype) throw Error("decode: O must have the input dtype on the CUDA backend");
  if (plan.workspace_bytes > 0 && workspace == nullptr) throw Error("decode: the plan needs a workspace");
  // The split kernel stores the partial outputs 16 bytes at a time.
  if (plan.workspace_bytes > 0 && reinterpret_cast<std::uintptr_t>(workspace) % 16 != 0)
    throw Error("decode: the workspace must be 16-byte aligned");
  if (p.batch == 0) return;

  DecodeParams d{};
  d.q = p.q, d.q_sb = p.q_stride_batch, d.q_st = p.q_stride_token, d.q_sh = p.q_stride_head;
  d.k_cache = p.k_cache, d.k_sp = p.k_stride_page, d.k_ss = p.k_stride_slot, d.k_sh = p.k_stride_head;
  d.v_cache = p.v_cache, d.v_sp = p.v_stride_page, d.v_ss = p.v_stride_slot, d.v_sh = p.v_stride_head;
  d.block_table = p.block_table, d.seq_lens = p.seq_lens;
  d.max_pages_per_seq = p.max_pages_per_seq, d.page_size = p.page_size;
  d.batch = p.batch, d.q_tokens = p.q_tokens, d.hkv = p.num_heads_kv;
  d.group = p.num_heads_q / p.num_heads_kv, d.rows = plan.rows;
  d.chunks = plan.chunks, d.chunk_rows = plan.chunk_rows;
  d.scale = effective_softmax_scale(p.softmax_scale, p.head_dim_qk);
  d.mode = static_cast<int>(pol.mode), d.value = pol.value;
  d.splits = plan.splits, d.max_seed = pol.max_seed, d.replay = pol.replay_mask;
  d.l2_evict_first = plan.l2_evict_first;
  d.o = out.o, d.o_sb = out.o_stride_batch, d.o_st = out.o_stride_token, d.o_sh = out.o_stride_head;
  d.lse = out.lse, d.lse_sb = out.lse_stride_batch, d.lse_st = out.lse_stride_token, d.lse_sh = out.lse_stride_head;
  d.counters = out.tile_counters, d.mask = out.skip_mask;
#ifdef BLASST_DECODE_DEBUG_TIMELINE
  d.timeline = nullptr;
  if (g_timeline_armed && g_timeline_after-- == 0) {
    g_timeline_armed = false;
    g_timeline_ctas = std::size_t(plan.splits) * plan.chunks * plan.num_heads_kv * p.batch;
    if (g_timeline_ctas > g_timeline_cap) throw Error("decode timeline: armed for fewer CTAs");
    BLASST_CUDA_CHECK(cudaMemsetAsync(g_timeline, 0, g_timeline_ctas * kTimelineSlots * sizeof(std::uint64_t), stream));
    d.timeline = g_timeline;
  }
#endif
  if (plan.splits > 1) {
    d.part_o = static_cast<float*>(workspace);
    d.part_lse = d.part_o + std::size_t(p.batch) * p.num_heads_kv * plan.splits * plan.rows * p.head_dim_v;
  }
  if (out.tile_counters)
    BLASST_CUDA_CHECK(cudaMemsetAsync(out.tile_counters, 0,
                                      std::size_t(p.batch) * p.num_heads_kv * 2 * sizeof(std::uint64_t), stream));
  if (out.skip_mask) {
    // The mask's size depends on the device-side lengths; the plan's bound covers it.
    const std::size_t bound = std::size_t(p.batch) * p.num_heads_kv * ((plan.max_seq_len + plan.block_k - 1) / plan.block_k);
    BLASST_CUDA_CHECK(cudaMemsetAsync(out.skip_mask, 0, bound, stream));
  }
  // TMA boxes of box_rows slots never leave a page: box_rows divides the page size and the key tile.
  // With one page per sequence (a contiguous cache, e.g. transformers' [B, Hkv, L, d] seen as pages
  // of L slots, L changing every step) no tile leaves its page, so a box is the whole tile even when
  // L is odd (the gcd would be 1: 128 boxes of one row per tile). Its slots past the page lie
  // outside the tensor map and arrive as zeros; they are past the sequence too, so masked.
  d.box_rows = p.max_pages_per_seq == 1 ? plan.block_k : std::gcd(p.page_size, plan.block_k);
  const CUtensorMap tmk = cache_map(p.k_cache, p.dtype, p.head_dim_qk, p.num_heads_kv, p.page_size, p.num_pages,
                                    p.k_stride_page, p.k_stride_slot, p.k_stride_head, d.box_rows);
  const CUtensorMap tmv = cache_map(p.v_cache, p.dtype, p.head_dim_v, p.num_heads_kv, p.page_size, p.num_pages,
                                    p.v_stride_page, p.v_stride_slot, p.v_stride_head, d.box_rows);
  if (p.dtype == DType::bf16)
    dispatch_d<__nv_bfloat16>(p.head_dim_qk, d, tmk, tmv, plan, stream);
  else
    dispatch_d<__half>(p.head_dim_qk, d, tmk, tmv, plan, stream);
}

}  // namespace blasst::cuda
