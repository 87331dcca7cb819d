// Host side of the CUDA prefill: support checks, the plan and the dispatch over compiled variants.
#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "blasst/cuda/prefill.hpp"
#include "blasst/cuda/prefill/prefill_mma_sm90.cuh"
#include "blasst/cuda/prefill/prefill_wgmma_sm90.cuh"
#include "cuda/check.hpp"
#include "cuda/tensor_map.hpp"

namespace blasst::cuda {
namespace {

template <class T, int D>
using PrefillTraitsFor = PrefillTraits<T, D, (D == 64 ? 4 : 3), 2>;

struct Maps {
  CUtensorMap q, k, v;
  CUtensorMap k1, v1;  // paged: boxes of one slot (a sequence's last keys); else unused
};

// The wgmma kernel's geometry per head dim besides its key tile (prefill_block_k): consumer
// warpgroups (query rows / 64) and K / V stages. Head dim 64: three warpgroups (192 rows) hide more
// of the softmax, which there costs as much as the products.
struct WgmmaGeometry {
  int nwg, stages;
};
constexpr WgmmaGeometry wgmma_geometry(int d) {
  return d == 64 ? WgmmaGeometry{3, 3} : WgmmaGeometry{2, 2};
}
template <class T, int D, bool PingPong, int BK = prefill_block_k(D)>
using WgmmaTraitsFor =
    WgmmaPrefillTraits<T, D, BK, wgmma_geometry(D).nwg, wgmma_geometry(D).stages, wgmma_geometry(D).stages, PingPong>;
// Head dim 128 takes 192-key tiles by default (prefill_block_k; the widest whose 2 + 2 stages fit
// in shared memory beside Q), and on request 128 (the mma_sync kernel's only tile) and 176 (FA3's
// non-causal tile, the default until 2026-11-30).
constexpr int kAltBlockK128 = 128, kPrevBlockK128 = 176;
// Head dim 256 takes 80-key tiles by default (FA3's tile there; 2 + 2 stages fill shared memory
// beside a 128 x 256 Q), and 64 on request (the default until 2026-11-30).
constexpr int kPrevBlockK256 = 64;
// The key tiles the wgmma kernels take on request beside prefill_block_k(d).
std::vector<int> requested_block_ks(int d) {
  if (d == 128) return {kAltBlockK128, kPrevBlockK128};
  if (d == 256) return {kPrevBlockK256};
  return {};
}
// Whether a kernel takes key tiles of bk at head dim d: mma_sync 128 only; the wgmma kernels
// prefill_block_k(d) and requested_block_ks(d).
bool takes_block_k(PrefillKernel kernel, int d, int bk) {
  if (kernel == PrefillKernel::mma_sync) return bk == 128;
  const std::vector<int> more = requested_block_ks(d);
  return bk == prefill_block_k(d) || std::find(more.begin(), more.end(), bk) != more.end();
}

// Whether a policy may skip anywhere, with no replayed mask: lambda_for's lambda is not dense for
// the longest sequence (a scale factor above 0, a threshold in (0, 1)). Per sequence lambda may
// still come out dense (a scale factor above a sequence's length); the vote kernel then keeps every
// tile.
bool may_skip(const PrefillParams& p) {
  return !p.replay && lambda_for(p.mode, p.value, std::numeric_limits<std::int64_t>::max()) > 0.0;
}

template <class T, int D>
void launch(const PrefillParams& params, const Maps& maps, const PrefillPlan& plan, cudaStream_t stream) {
  const dim3 grid(plan.max_q_tiles, plan.num_heads_q, plan.batch);
  // Policies that may skip run the kernel's vote variant (kVote); dense ones, and replays, the
  // loop without it.
  const bool vote = may_skip(params);
  auto wgmma = [&](auto traits, auto paged, auto warp_boxes) {
    using Tr = decltype(traits);
    constexpr bool kPaged = decltype(paged)::value, kWarpBoxes = decltype(warp_boxes)::value;
    auto run = [&](auto with_vote) {
      constexpr auto kernel = prefill_wgmma_kernel<Tr, kPaged, kWarpBoxes, decltype(with_vote)::value>;
      set_smem_limit_once<kernel>(Tr::kSmemBytes);
      kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(params, maps.q, maps.k, maps.v, maps.k1, maps.v1);
    };
    if (vote)
      run(std::true_type{});
    else
      run(std::false_type{});
  };
  constexpr std::false_type packed{};
  if (!takes_block_k(plan.kernel, D, plan.block_k))
    throw Error("internal: no prefill variant with " + std::to_string(plan.block_k) + "-key tiles at head dim " +
                std::to_string(D));
  auto wgmma_tiles = [&](auto pingpong) {  // the key tile: the plan's
    constexpr bool kPP = decltype(pingpong)::value;
    if constexpr (kPP) {  // paged K and V: the ping-pong kernel with its default tile only
      // Boxes of fewer than 32 slots (pages of 16, 8, ... or sizes prime to the tile): the
      // producer's whole warp issues them (prefill_wgmma_sm90.cuh, kWarpBoxes).
      if (params.block_table)
        return params.box_rows < 32 ? wgmma(WgmmaTraitsFor<T, D, kPP>{}, std::true_type{}, std::true_type{})
                                    : wgmma(WgmmaTraitsFor<T, D, kPP>{}, std::true_type{}, packed);
    }
    if constexpr (D == 128) {
      if (plan.block_k == kAltBlockK128) return wgmma(WgmmaTraitsFor<T, D, kPP, kAltBlockK128>{}, packed, packed);
      if (plan.block_k == kPrevBlockK128) return wgmma(WgmmaTraitsFor<T, D, kPP, kPrevBlockK128>{}, packed, packed);
    }
    if constexpr (D == 256) {
      if (plan.block_k == kPrevBlockK256) return wgmma(WgmmaTraitsFor<T, D, kPP, kPrevBlockK256>{}, packed, packed);
    }
    wgmma(WgmmaTraitsFor<T, D, kPP>{}, packed, packed);
  };
  if (plan.kernel == PrefillKernel::wgmma_pingpong) {
    wgmma_tiles(std::true_type{});
  } else if (plan.kernel == PrefillKernel::wgmma) {
    wgmma_tiles(std::false_type{});
  } else {
    if constexpr (D != 256) {
      using Tr = PrefillTraitsFor<T, D>;
      set_smem_limit_once<prefill_mma_kernel<Tr>>(Tr::kSmemBytes);
      prefill_mma_kernel<Tr><<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(params, maps.k, maps.v);
    } else {
      throw Error("internal: the mma_sync prefill kernel has no head dim 256");
    }
  }
  BLASST_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void dispatch(int d, const PrefillParams& params, const Maps& maps, const PrefillPlan& plan, cudaStream_t stream) {
  switch (d) {
    case 64: return launch<T, 64>(params, maps, plan, stream);
    case 128: return launch<T, 128>(params, maps, plan, stream);
    case 256: return launch<T, 256>(params, maps, plan, stream);
  }
  throw Error("internal: no prefill variant for head dim " + std::to_string(d));
}

// Packed [tokens, heads, d] as (channel, head, token, 1) with boxes of 64 channels x `rows` tokens.
CUtensorMap packed_map(const void* base, DType dt, int d, int heads, std::int64_t tokens, std::int64_t st,
                       std::int64_t sh, int rows, const char* what) {
  if (tokens == 0) return CUtensorMap{};
  return tensor_map_4d(base, dt, {d, heads, tokens, 1}, {sh, st, st * tokens}, rows, what);
}

}  // namespace

std::string prefill_unsupported_reason(const PrefillProblem& p, const SkipPolicy& pol, PrefillKernel kernel) {
  if (p.dtype == DType::f32) return "the CUDA prefill kernel takes bfloat16 or float16 inputs, not float32";
  if (p.head_dim_qk != p.head_dim_v) return "the CUDA prefill kernel needs head_dim_qk == head_dim_v";
  const int d = p.head_dim_qk;
  if (kernel == PrefillKernel::mma_sync ? (d != 64 && d != 128) : (d != 64 && d != 128 && d != 256))
    return std::string("the CUDA prefill kernel (") + to_string(kernel) + ") supports head dims 64, 128" +
           (kernel == PrefillKernel::mma_sync ? "" : " and 256") + ", got " + std::to_string(d);
  const int bk = kernel == PrefillKernel::mma_sync ? 128 : prefill_block_k(d);
  if (pol.block_q != 64 || !takes_block_k(kernel, d, pol.block_k)) {
    std::string tiles = std::to_string(bk);
    if (kernel != PrefillKernel::mma_sync)
      for (int more : requested_block_ks(d)) tiles += " or " + std::to_string(more);
    return "the CUDA prefill kernel (" + std::string(to_string(kernel)) + ") at head dim " + std::to_string(d) +
           " votes over 64 query rows and " + std::to_string(bk) + "-key tiles (block_q 64, block_k " + tiles + ")";
  }
  if (pol.splits > 1) return "the CUDA prefill kernel has no split-KV";
  if (pol.max_seed) return "max seeding is a split-KV option (decode)";
  if (p.total_k > 0x7fffffff || p.total_q > 0x7fffffff) return "more than 2^31 tokens";
  const auto aligned = [](std::int64_t s) { return s % 8 == 0; };
  if (!aligned(p.q_stride_token) || !aligned(p.q_stride_head) || !aligned(p.k_stride_token) ||
      !aligned(p.k_stride_head) || !aligned(p.v_stride_token) || !aligned(p.v_stride_head))
    return "the CUDA prefill kernel needs strides that are multiples of 8 elements (16-byte rows)";
  if (p.block_table) {
    if (kernel != PrefillKernel::wgmma_pingpong || pol.block_k != prefill_block_k(d))
      return "paged K and V (a block table) run on the wgmma-pingpong kernel with its default " +
             std::to_string(prefill_block_k(d)) + "-key tiles only";
    if (!aligned(p.k_stride_page) || !aligned(p.v_stride_page))
      return "the CUDA prefill kernel needs page strides that are multiples of 8 elements";
  }
  return "";
}

const char* to_string(PrefillKernel k) {
  switch (k) {
    case PrefillKernel::wgmma_pingpong: return "wgmma-pingpong";
    case PrefillKernel::wgmma: return "wgmma";
    case PrefillKernel::mma_sync: return "mma-sync";
  }
  return "?";
}

PrefillPlan plan_prefill(const PrefillProblem& p, int max_seqlen_q, const SkipPolicy& pol, PrefillKernel kernel) {
  validate_shapes(p);
  validate(pol);
  if (const std::string why = prefill_unsupported_reason(p, pol, kernel); !why.empty()) throw Error(why);
  if (max_seqlen_q < 0) throw Error("max_seqlen_q must be >= 0");
  PrefillPlan plan;
  plan.batch = p.batch;
  plan.num_heads_q = p.num_heads_q;
  plan.kernel = kernel;
  plan.head_dim = p.head_dim_qk;
  plan.block_k = pol.block_k;
  const int rows = kernel == PrefillKernel::mma_sync ? 64 : 64 * wgmma_geometry(p.head_dim_qk).nwg;
  plan.max_q_tiles = (max_seqlen_q + rows - 1) / rows;
  return plan;
}

void prefill(const PrefillProblem& p, const SkipPolicy& pol, const PrefillPlan& plan, const Outputs& out,
             cudaStream_t stream) {
  if (p.batch != plan.batch || p.num_heads_q != plan.num_heads_q || p.head_dim_qk != plan.head_dim)
    throw Error("prefill: the problem does not match its plan (batch, query heads or head dim differ)");
  if (pol.block_k != plan.block_k)
    throw Error("prefill: the policy's block_k (" + std::to_string(pol.block_k) + ") is not the plan's (" +
                std::to_string(plan.block_k) + ")");
  if (out.o == nullptr && p.total_q > 0) throw Error("prefill: the output O must not be null");
  // A plan made for a packed problem must not run a paged one on a kernel or tile that cannot.
  if (p.block_table)
    if (const std::string why = prefill_unsupported_reason(p, pol, plan.kernel); !why.empty())
      throw Error("prefill: " + why);
  if (out.o_dtype != p.dtype) throw Error("prefill: O must have the input dtype on the CUDA backend");
  if (plan.max_q_tiles == 0 || p.total_q == 0) return;
  PrefillParams d{};
  d.cu_seqlens_q = p.cu_seqlens_q, d.cu_seqlens_k = p.cu_seqlens_k;
  d.total_q = p.total_q, d.total_k = p.total_k;
  d.batch = p.batch, d.hq = p.num_heads_q, d.hkv = p.num_heads_kv, d.group = p.num_heads_q / p.num_heads_kv;
  d.q = p.q, d.q_st = p.q_stride_token, d.q_sh = p.q_stride_head;
  d.causal = p.causal;
  d.scale = effective_softmax_scale(p.softmax_scale, p.head_dim_qk);
  d.mode = static_cast<int>(pol.mode), d.value = pol.value, d.order = static_cast<int>(pol.order);
  d.replay = pol.replay_mask;
  d.o = out.o, d.o_st = out.o_stride_token, d.o_sh = out.o_stride_head;
  d.lse = out.lse, d.lse_st = out.lse_stride_token, d.lse_sh = out.lse_stride_head;
  d.counters = out.tile_counters, d.mask = out.skip_mask;
  d.block_table = p.block_table, d.max_pages_per_seq = p.max_pages_per_seq, d.page_size = p.page_size;
  d.box_rows = p.block_table ? std::gcd(p.page_size, plan.block_k) : 0;
  if (out.tile_counters)
    BLASST_CUDA_CHECK(cudaMemsetAsync(out.tile_counters, 0, std::size_t(p.batch) * p.num_heads_q * 2 * 8, stream));
  Maps maps;
  const bool mma = plan.kernel == PrefillKernel::mma_sync;
  const WgmmaGeometry g = wgmma_geometry(p.head_dim_qk);
  const int bk = plan.block_k;
  maps.q = mma ? CUtensorMap{}
               : packed_map(p.q, p.dtype, p.head_dim_qk, p.num_heads_q, p.total_q, p.q_stride_token, p.q_stride_head,
                            64 * g.nwg, "Q");
  if (p.block_table) {  // (channel, head, slot, page) with boxes of box_rows slots, and of one
    auto cache = [&](const void* base, int dim, std::int64_t sp, std::int64_t ss, std::int64_t sh, int rows,
                     const char* what) {
      if (p.num_pages == 0) return CUtensorMap{};  // no keys: nothing is loaded
      return tensor_map_4d(base, p.dtype, {dim, p.num_heads_kv, p.page_size, p.num_pages}, {sh, ss, sp}, rows, what);
    };
    maps.k = cache(p.k, p.head_dim_qk, p.k_stride_page, p.k_stride_token, p.k_stride_head, d.box_rows, "the K cache");
    maps.v = cache(p.v, p.head_dim_v, p.v_stride_page, p.v_stride_token, p.v_stride_head, d.box_rows, "the V cache");
    maps.k1 = cache(p.k, p.head_dim_qk, p.k_stride_page, p.k_stride_token, p.k_stride_head, 1, "the K cache");
    maps.v1 = cache(p.v, p.head_dim_v, p.v_stride_page, p.v_stride_token, p.v_stride_head, 1, "the V cache");
  } else {
    maps.k = packed_map(p.k, p.dtype, p.head_dim_qk, p.num_heads_kv, p.total_k, p.k_stride_token, p.k_stride_head,
                        bk, "K");
    maps.v = packed_map(p.v, p.dtype, p.head_dim_v, p.num_heads_kv, p.total_k, p.v_stride_token, p.v_stride_head,
                        bk, "V");
  }
  if (p.dtype == DType::bf16)
    dispatch<__nv_bfloat16>(p.head_dim_qk, d, maps, plan, stream);
  else
    dispatch<__half>(p.head_dim_qk, d, maps, plan, stream);
#ifdef BLASST_PREFILL_TRACE
  cudaStreamCaptureStatus cap{};
  cudaStreamIsCapturing(stream, &cap);
  if (cap == cudaStreamCaptureStatusNone && plan.kernel != PrefillKernel::mma_sync) {
    unsigned tr[2][64][8];
    BLASST_CUDA_CHECK(cudaStreamSynchronize(stream));
    BLASST_CUDA_CHECK(cudaMemcpyFromSymbol(tr, g_prefill_trace, sizeof tr));
    for (int c = 0; c < 2; ++c) {
      double acc[8] = {};
      int cnt = 0;
      for (int j = 8; j < 56; ++j, ++cnt)
        for (int k = 0; k < 8; ++k) acc[k] += double(tr[c][j][k == 0 ? 0 : k] - tr[c][j][k == 0 ? 0 : k - 1]) * (k > 0);
      const double period = double(tr[c][55][0] - tr[c][8][0]) / 47;
      std::printf("trace %s wg%d: period %.0f | kwait %.0f turn %.0f issue %.0f swait %.0f softmax %.0f pvwait %.0f tail %.0f\n",
                  to_string(plan.kernel), c, period, acc[1] / cnt, acc[2] / cnt, acc[3] / cnt, acc[4] / cnt, acc[5] / cnt,
                  acc[6] / cnt, acc[7] / cnt);
    }
  }
#endif
}

}  // namespace blasst::cuda
