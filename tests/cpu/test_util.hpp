// Test helpers for the CPU engine tests: seeded random and structured inputs, problem and output
// builders (contiguous or strided, float32 / float16 / bfloat16, paged with shuffled block tables),
// output poisoning, and the comparison of an engine run against the float64 reference.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "blasst/cpu/engine.hpp"
#include "blasst/output.hpp"
#include "blasst/policy.hpp"
#include "blasst/problem.hpp"
#include "blasst/types.hpp"
#include "cpu/reference.hpp"

namespace bt {

using blasst::DecodeProblem;
using blasst::DType;
using blasst::Outputs;
using blasst::PrefillProblem;
using blasst::SkipPolicy;
using blasst::VisitOrder;
using bref::RefResult;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInfF = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------
// Seeds: fresh per test (std::random_device) unless BLASST_TEST_SEED fixes them.

inline std::uint64_t fresh_seed() {
  if (const char* s = std::getenv("BLASST_TEST_SEED"); s != nullptr && *s != '\0')
    return std::strtoull(s, nullptr, 0);
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

struct Rng {
  explicit Rng(std::uint64_t seed) : gen(seed) {}
  std::mt19937_64 gen;
  double normal() { return nd(gen); }
  double uniform() { return ud(gen); }
  int uniform_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen); }  // [lo, hi]
  std::normal_distribution<double> nd{0.0, 1.0};
  std::uniform_real_distribution<double> ud{0.0, 1.0};
};

// Declares `Rng name` seeded freshly and records the seed in every failure message of the scope.
#define BT_SEEDED_RNG(name)                                                                     \
  const std::uint64_t name##_seed = ::bt::fresh_seed();                                         \
  SCOPED_TRACE(::testing::Message() << "seed " << name##_seed                                   \
                                    << " (reproduce with BLASST_TEST_SEED=" << name##_seed << ")"); \
  ::bt::Rng name(name##_seed)

// ---------------------------------------------------------------------------------------------
// Typed host storage.

inline std::uint16_t nan_bits(DType t) { return t == DType::f16 ? 0x7e00 : 0x7fc0; }

struct HostBuf {
  DType dt = DType::f32;
  std::vector<float> f;
  std::vector<std::uint16_t> h;

  // n elements, all NaN (padding and unwritten slots stay NaN).
  void init(std::size_t n, DType t) {
    dt = t;
    f.clear();
    h.clear();
    if (t == DType::f32) f.assign(n, kNaN);
    else h.assign(n, nan_bits(t));
  }
  void set(std::size_t i, float x) {
    switch (dt) {
      case DType::f32: f[i] = x; break;
      case DType::f16: h[i] = bref::double_to_half(static_cast<double>(x)); break;
      case DType::bf16: h[i] = bref::float_to_bf16(x); break;
    }
  }
  double get(std::size_t i) const { return bref::load(data(), dt, static_cast<std::int64_t>(i)); }
  const void* data() const { return dt == DType::f32 ? static_cast<const void*>(f.data()) : h.data(); }
  std::size_t size() const { return dt == DType::f32 ? f.size() : h.size(); }
};

// ---------------------------------------------------------------------------------------------
// Input fills.

// Structured logits, in units of the softmax-scaled logit: an attention sink at key 0, a linear
// (ALiBi-like) decay with the distance between query and key position that reaches -decay at the
// far end of the sequence, a few "needle" keys strongly aligned with one query each, and Gaussian
// noise.
struct Structure {
  double sink = 8.0;
  double decay = 24.0;
  double noise = 1.0;
  double needle = 10.0;
  int needles = 3;  // per (sequence, KV head)
};

struct Fill {
  bool structured = false;
  double temperature = 1.0;  // random fills: std of the scaled logits
  Structure s;
  static Fill random(double t = 1.0) {
    Fill f;
    f.temperature = t;
    return f;
  }
  static Fill structure(Structure s = {}) {
    Fill f;
    f.structured = true;
    f.s = s;
    return f;
  }
};

// Fills one KV head's keys and the query rows of its query heads. qrows[r] points to d floats of
// query row r at key position qpos[r] that sees keys 0..qlim[r]; krows[j] to d floats of key j.
// scale is the softmax scale the engine will apply. Needs d >= 8 for structured fills.
inline void fill_group(Rng& rng, const Fill& fill, int d, double scale,
                       const std::vector<float*>& qrows, const std::vector<std::int64_t>& qpos,
                       const std::vector<std::int64_t>& qlim, const std::vector<float*>& krows) {
  if (!fill.structured) {
    // scale * q.k has std temperature.
    const double adj = fill.temperature / (scale * std::sqrt(static_cast<double>(d)));
    for (float* q : qrows)
      for (int c = 0; c < d; ++c) q[c] = static_cast<float>(adj * rng.normal());
    for (float* k : krows)
      for (int c = 0; c < d; ++c) k[c] = static_cast<float>(rng.normal());
    return;
  }
  const Structure& s = fill.s;
  const int n0 = 3;       // channel 0: sink; 1, 2: position; 3..: noise
  const int nn = d - n0;
  const double a_noise = std::sqrt(s.noise) / std::pow(static_cast<double>(nn), 0.25);
  const double a_sink = std::sqrt(s.sink);
  const double c = s.decay / static_cast<double>(std::max<std::size_t>(krows.size(), 1));
  std::vector<std::vector<double>> Q(qrows.size(), std::vector<double>(d, 0.0));
  std::vector<std::vector<double>> K(krows.size(), std::vector<double>(d, 0.0));
  // q_r . k_j = c * (j - qpos[r]) on channels 1, 2.
  for (std::size_t r = 0; r < qrows.size(); ++r) {
    Q[r][0] = a_sink;
    Q[r][1] = 1.0;
    Q[r][2] = -c * static_cast<double>(qpos[r]);
    for (int x = n0; x < d; ++x) Q[r][x] = a_noise * rng.normal();
  }
  for (std::size_t j = 0; j < krows.size(); ++j) {
    K[j][0] = j == 0 ? a_sink : 0.0;
    K[j][1] = c * static_cast<double>(j);
    K[j][2] = j == 0 ? 0.0 : 1.0;  // the sink does not decay
    for (int x = n0; x < d; ++x) K[j][x] = a_noise * rng.normal();
  }
  // Needles: key j aligned with the noise part of one query row r that sees it, without decay
  // for that row.
  if (krows.size() > 1 && !qrows.empty()) {
    for (int nd = 0; nd < s.needles; ++nd) {
      const std::int64_t j = rng.uniform_int(1, static_cast<int>(krows.size()) - 1);
      std::vector<std::size_t> cand;
      for (std::size_t r = 0; r < qrows.size(); ++r)
        if (qlim[r] >= j) cand.push_back(r);
      if (cand.empty()) continue;
      const std::size_t r = cand[rng.uniform_int(0, static_cast<int>(cand.size()) - 1)];
      double n2 = 0.0;
      for (int x = n0; x < d; ++x) n2 += Q[r][x] * Q[r][x];
      if (n2 <= 0.0) continue;
      for (int x = n0; x < d; ++x) K[j][x] += s.needle * Q[r][x] / n2;
      K[j][1] = c * static_cast<double>(qpos[r]);
    }
  }
  for (std::size_t r = 0; r < qrows.size(); ++r)
    for (int x = 0; x < d; ++x) qrows[r][x] = static_cast<float>(Q[r][x] / scale);
  for (std::size_t j = 0; j < krows.size(); ++j)
    for (int x = 0; x < d; ++x) krows[j][x] = static_cast<float>(K[j][x]);
}

inline void fill_values(Rng& rng, std::vector<float>& v) {
  for (auto& x : v) x = static_cast<float>(rng.normal());
}

// ---------------------------------------------------------------------------------------------
// Prefill: logical (contiguous float) data, then a case in some dtype and layout.

struct PrefillData {
  std::vector<int> sq, sk;
  int hq = 0, hkv = 0, dqk = 0, dv = 0;
  bool causal = true;
  float softmax_scale = 0.0f;
  std::int64_t total_q = 0, total_k = 0;
  std::vector<float> q, k, v;  // [tok][H][d]
  std::int64_t q_start(int b) const { return std::accumulate(sq.begin(), sq.begin() + b, std::int64_t{0}); }
  std::int64_t k_start(int b) const { return std::accumulate(sk.begin(), sk.begin() + b, std::int64_t{0}); }
};

inline PrefillData make_prefill_data(Rng& rng, std::vector<int> sq, std::vector<int> sk, int hq,
                                     int hkv, int dqk, int dv, bool causal, const Fill& fill,
                                     float softmax_scale = 0.0f) {
  PrefillData D;
  D.sq = std::move(sq);
  D.sk = std::move(sk);
  D.hq = hq;
  D.hkv = hkv;
  D.dqk = dqk;
  D.dv = dv;
  D.causal = causal;
  D.softmax_scale = softmax_scale;
  D.total_q = std::accumulate(D.sq.begin(), D.sq.end(), std::int64_t{0});
  D.total_k = std::accumulate(D.sk.begin(), D.sk.end(), std::int64_t{0});
  D.q.assign(static_cast<std::size_t>(D.total_q) * hq * dqk, 0.0f);
  D.k.assign(static_cast<std::size_t>(D.total_k) * hkv * dqk, 0.0f);
  D.v.assign(static_cast<std::size_t>(D.total_k) * hkv * dv, 0.0f);
  fill_values(rng, D.v);
  const double scale = bref::scale_of(softmax_scale, dqk);
  const int gs = hq / hkv;
  for (std::size_t b = 0; b < D.sq.size(); ++b) {
    const std::int64_t q0 = D.q_start(static_cast<int>(b)), k0 = D.k_start(static_cast<int>(b));
    const std::int64_t sqb = D.sq[b], skb = D.sk[b];
    for (int g = 0; g < hkv; ++g) {
      std::vector<float*> qrows, krows;
      std::vector<std::int64_t> qpos, qlim;
      for (int h = g * gs; h < (g + 1) * gs; ++h)
        for (std::int64_t i = 0; i < sqb; ++i) {
          qrows.push_back(&D.q[((q0 + i) * hq + h) * dqk]);
          const std::int64_t pos = i + skb - sqb;
          qpos.push_back(causal ? pos : skb - 1);
          qlim.push_back(causal ? std::min(pos, skb - 1) : skb - 1);
        }
      for (std::int64_t j = 0; j < skb; ++j) krows.push_back(&D.k[((k0 + j) * hkv + g) * dqk]);
      fill_group(rng, fill, dqk, scale, qrows, qpos, qlim, krows);
    }
  }
  return D;
}

// A prefill problem's storage. pad > 0 makes every stride non-contiguous (head stride d + pad,
// token stride H * (d + pad) + pad) with NaN in the gaps.
struct PrefillCase {
  PrefillData d;
  DType dtype = DType::f32;
  int pad = 0;
  bool use_cu = true;
  std::vector<std::int32_t> cu_q, cu_k;
  HostBuf q, k, v;
  std::int64_t qst = 0, qsh = 0, kst = 0, ksh = 0, vst = 0, vsh = 0;

  PrefillProblem problem() const {
    PrefillProblem p;
    p.batch = static_cast<int>(d.sq.size());
    p.cu_seqlens_q = use_cu ? cu_q.data() : nullptr;
    p.cu_seqlens_k = use_cu ? cu_k.data() : nullptr;
    p.total_q = d.total_q;
    p.total_k = d.total_k;
    p.num_heads_q = d.hq;
    p.num_heads_kv = d.hkv;
    p.head_dim_qk = d.dqk;
    p.head_dim_v = d.dv;
    p.causal = d.causal;
    p.softmax_scale = d.softmax_scale;
    p.dtype = dtype;
    p.q = q.data();
    p.q_stride_token = qst;
    p.q_stride_head = qsh;
    p.k = k.data();
    p.k_stride_token = kst;
    p.k_stride_head = ksh;
    p.v = v.data();
    p.v_stride_token = vst;
    p.v_stride_head = vsh;
    return p;
  }
};

inline void pack(const std::vector<float>& src, std::int64_t tokens, int heads, int dim, int pad,
                 DType dt, HostBuf& dst, std::int64_t& st, std::int64_t& sh) {
  sh = dim + pad;
  st = heads * sh + pad;
  dst.init(static_cast<std::size_t>(std::max<std::int64_t>(tokens * st, 1)), dt);
  for (std::int64_t t = 0; t < tokens; ++t)
    for (int h = 0; h < heads; ++h)
      for (int c = 0; c < dim; ++c)
        dst.set(static_cast<std::size_t>(t * st + h * sh + c), src[(t * heads + h) * dim + c]);
}

inline PrefillCase build_prefill(const PrefillData& d, DType dt = DType::f32, int pad = 0) {
  PrefillCase c;
  c.d = d;
  c.dtype = dt;
  c.pad = pad;
  c.use_cu = true;
  c.cu_q = {0};
  c.cu_k = {0};
  for (std::size_t b = 0; b < d.sq.size(); ++b) {
    c.cu_q.push_back(c.cu_q.back() + d.sq[b]);
    c.cu_k.push_back(c.cu_k.back() + d.sk[b]);
  }
  pack(d.q, d.total_q, d.hq, d.dqk, pad, dt, c.q, c.qst, c.qsh);
  pack(d.k, d.total_k, d.hkv, d.dqk, pad, dt, c.k, c.kst, c.ksh);
  pack(d.v, d.total_k, d.hkv, d.dv, pad, dt, c.v, c.vst, c.vsh);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Decode: logical data per sequence, then a paged case.

struct DecodeData {
  int batch = 0, q_tokens = 1, hq = 0, hkv = 0, dqk = 0, dv = 0;
  float softmax_scale = 0.0f;
  std::vector<int> seq_lens;
  std::vector<float> q;                 // [b][t][hq][dqk]
  std::vector<std::vector<float>> k, v;  // per b: [pos][hkv][d]
};

inline DecodeData make_decode_data(Rng& rng, std::vector<int> seq_lens, int q_tokens, int hq,
                                   int hkv, int dqk, int dv, const Fill& fill,
                                   float softmax_scale = 0.0f) {
  DecodeData D;
  D.batch = static_cast<int>(seq_lens.size());
  D.seq_lens = std::move(seq_lens);
  D.q_tokens = q_tokens;
  D.hq = hq;
  D.hkv = hkv;
  D.dqk = dqk;
  D.dv = dv;
  D.softmax_scale = softmax_scale;
  D.q.assign(static_cast<std::size_t>(D.batch) * q_tokens * hq * dqk, 0.0f);
  const double scale = bref::scale_of(softmax_scale, dqk);
  const int gs = hq / hkv;
  for (int b = 0; b < D.batch; ++b) {
    const std::int64_t L = D.seq_lens[b];
    D.k.emplace_back(static_cast<std::size_t>(L) * hkv * dqk, 0.0f);
    D.v.emplace_back(static_cast<std::size_t>(L) * hkv * dv, 0.0f);
    fill_values(rng, D.v.back());
    for (int g = 0; g < hkv; ++g) {
      std::vector<float*> qrows, krows;
      std::vector<std::int64_t> qpos, qlim;
      for (int t = 0; t < q_tokens; ++t)
        for (int h = g * gs; h < (g + 1) * gs; ++h) {
          qrows.push_back(&D.q[((static_cast<std::size_t>(b) * q_tokens + t) * hq + h) * dqk]);
          const std::int64_t pos = t + L - q_tokens;
          qpos.push_back(pos);
          qlim.push_back(std::min(pos, L - 1));
        }
      for (std::int64_t j = 0; j < L; ++j) krows.push_back(&D.k[b][(j * hkv + g) * dqk]);
      fill_group(rng, fill, dqk, scale, qrows, qpos, qlim, krows);
    }
  }
  return D;
}

struct DecodeCase {
  DecodeData d;
  DType dtype = DType::f32;
  int page_size = 0, num_pages = 0, max_pages = 0;
  std::vector<std::int32_t> table, seq_lens;
  HostBuf q, kc, vc;
  std::int64_t qsb = 0, qst = 0, qsh = 0;
  std::int64_t ksp = 0, kss = 0, ksh = 0, vsp = 0, vss = 0, vsh = 0;

  DecodeProblem problem() const {
    DecodeProblem p;
    p.batch = d.batch;
    p.q_tokens = d.q_tokens;
    p.num_heads_q = d.hq;
    p.num_heads_kv = d.hkv;
    p.head_dim_qk = d.dqk;
    p.head_dim_v = d.dv;
    p.softmax_scale = d.softmax_scale;
    p.dtype = dtype;
    p.q = q.data();
    p.q_stride_batch = qsb;
    p.q_stride_token = qst;
    p.q_stride_head = qsh;
    p.num_pages = num_pages;
    p.page_size = page_size;
    p.k_cache = kc.data();
    p.k_stride_page = ksp;
    p.k_stride_slot = kss;
    p.k_stride_head = ksh;
    p.v_cache = vc.data();
    p.v_stride_page = vsp;
    p.v_stride_slot = vss;
    p.v_stride_head = vsh;
    p.block_table = table.data();
    p.max_pages_per_seq = max_pages;
    p.seq_lens = seq_lens.data();
    return p;
  }
};

// page_size 0: one page per sequence of the longest length, identity block table ("contiguous").
// Otherwise pages of page_size slots, assigned in a shuffled order (rng) with spare_pages unused
// pages mixed in. Slots past a sequence's end and unused pages hold NaN. pad > 0: non-contiguous
// strides everywhere (gaps hold NaN). unused_entry: block-table value past a sequence's pages.
inline DecodeCase build_decode(const DecodeData& d, DType dt, int page_size, Rng* rng = nullptr,
                               int pad = 0, int spare_pages = 0, std::int32_t unused_entry = 0) {
  DecodeCase c;
  c.d = d;
  c.dtype = dt;
  const int maxlen = d.seq_lens.empty() ? 1 : std::max(1, *std::max_element(d.seq_lens.begin(), d.seq_lens.end()));
  c.page_size = page_size > 0 ? page_size : maxlen;
  std::vector<int> need(d.batch);
  int total = 0;
  for (int b = 0; b < d.batch; ++b) {
    need[b] = page_size > 0 ? static_cast<int>((d.seq_lens[b] + c.page_size - 1) / c.page_size) : 1;
    total += need[b];
  }
  c.max_pages = std::max(1, *std::max_element(need.begin(), need.end()) + (page_size > 0 ? 1 : 0));
  c.num_pages = std::max(1, total + spare_pages);
  std::vector<std::int32_t> ids(c.num_pages);
  std::iota(ids.begin(), ids.end(), 0);
  if (rng != nullptr && page_size > 0) std::shuffle(ids.begin(), ids.end(), rng->gen);
  c.table.assign(static_cast<std::size_t>(d.batch) * c.max_pages, unused_entry);
  int next = 0;
  for (int b = 0; b < d.batch; ++b)
    for (int i = 0; i < need[b]; ++i) c.table[b * c.max_pages + i] = ids[next++];
  c.seq_lens.assign(d.seq_lens.begin(), d.seq_lens.end());

  // Q [b][t][h][d] with gaps.
  c.qsh = d.dqk + pad;
  c.qst = d.hq * c.qsh + pad;
  c.qsb = d.q_tokens * c.qst + pad;
  c.q.init(static_cast<std::size_t>(std::max<std::int64_t>(d.batch * c.qsb, 1)), dt);
  for (int b = 0; b < d.batch; ++b)
    for (int t = 0; t < d.q_tokens; ++t)
      for (int h = 0; h < d.hq; ++h)
        for (int x = 0; x < d.dqk; ++x)
          c.q.set(b * c.qsb + t * c.qst + h * c.qsh + x,
                  d.q[((static_cast<std::size_t>(b) * d.q_tokens + t) * d.hq + h) * d.dqk + x]);
  auto cache = [&](const std::vector<std::vector<float>>& src, int dim, HostBuf& dst,
                   std::int64_t& sp, std::int64_t& ss, std::int64_t& sh) {
    sh = dim + pad;
    ss = d.hkv * sh + pad;
    sp = c.page_size * ss + pad;
    dst.init(static_cast<std::size_t>(c.num_pages * sp), dt);
    for (int b = 0; b < d.batch; ++b)
      for (std::int64_t pos = 0; pos < d.seq_lens[b]; ++pos) {
        const std::int64_t page = c.table[b * c.max_pages + pos / c.page_size];
        const std::int64_t slot = pos % c.page_size;
        for (int h = 0; h < d.hkv; ++h)
          for (int x = 0; x < dim; ++x)
            dst.set(page * sp + slot * ss + h * sh + x, src[b][(pos * d.hkv + h) * dim + x]);
      }
  };
  cache(d.k, d.dqk, c.kc, c.ksp, c.kss, c.ksh);
  cache(d.v, d.dv, c.vc, c.vsp, c.vss, c.vsh);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Outputs with poisoning.

constexpr float kLseSentinel = 12345.0f;
constexpr float kDroppedSentinel = -3.0f;
constexpr float kPadSentinel = 4242.0f;
constexpr std::uint8_t kMaskPoison = 0xEE;
constexpr std::size_t kMaskSlack = 4096;

struct OutBuf {
  int nb = 1, nt = 0, heads = 0, dv = 0, pad = 0;
  DType o_dtype = DType::f32;
  std::int64_t osb = 0, ost = 0, osh = 0;  // O strides
  std::int64_t lsb = 0, lst = 0, lsh = 0;  // LSE and dropped strides
  std::int64_t mask_size = 0;
  std::vector<float> o32;
  std::vector<std::uint16_t> o16;
  std::vector<float> lse, dropped;
  std::vector<std::uint8_t> mask;
  blasst::SkipStats stats;
  bool want_lse = true, want_dropped = true, want_mask = true, want_stats = true;

  // nb x nt token rows (prefill: 1 x total_q; decode: batch x q_tokens), heads query heads.
  void init(int nb_, int nt_, int heads_, int dv_, std::int64_t mask_size_, int pad_ = 0,
            DType o_dt = DType::f32) {
    nb = nb_;
    nt = nt_;
    heads = heads_;
    dv = dv_;
    pad = pad_;
    o_dtype = o_dt;
    mask_size = mask_size_;
    osh = dv + pad;
    ost = heads * osh + pad;
    osb = nt * ost + pad;
    lsh = 1 + pad;
    lst = heads * lsh + pad;
    lsb = nt * lst + pad;
  }
  std::size_t o_elems() const { return static_cast<std::size_t>(std::max<std::int64_t>(nb * osb, 1)); }
  std::size_t l_elems() const { return static_cast<std::size_t>(std::max<std::int64_t>(nb * lsb, 1)); }
  std::int64_t o_index(int b, int t, int h, int c) const { return b * osb + t * ost + h * osh + c; }
  std::int64_t l_index(int b, int t, int h) const { return b * lsb + t * lst + h * lsh; }

  void poison() {
    const bool pf32 = o_dtype == DType::f32;
    o32.assign(pf32 ? o_elems() : 0, kPadSentinel);
    o16.assign(pf32 ? 0 : o_elems(), 0x1234);
    lse.assign(l_elems(), kPadSentinel);
    dropped.assign(l_elems(), kPadSentinel);
    for (int b = 0; b < nb; ++b)
      for (int t = 0; t < nt; ++t)
        for (int h = 0; h < heads; ++h) {
          for (int c = 0; c < dv; ++c) {
            if (pf32) o32[o_index(b, t, h, c)] = kNaN;
            else o16[o_index(b, t, h, c)] = nan_bits(o_dtype);
          }
          lse[l_index(b, t, h)] = kLseSentinel;
          dropped[l_index(b, t, h)] = kDroppedSentinel;
        }
    mask.assign(static_cast<std::size_t>(mask_size) + kMaskSlack, kMaskPoison);
    stats = blasst::SkipStats{};
    stats.batch = -7;
    stats.heads = -7;
    stats.visited = {99};
    stats.skipped = {99};
    stats.lambda = {-1.0};
  }

  Outputs outputs() {
    Outputs out;
    out.o = o_dtype == DType::f32 ? static_cast<void*>(o32.data()) : static_cast<void*>(o16.data());
    out.o_dtype = o_dtype;
    out.o_stride_batch = osb;
    out.o_stride_token = ost;
    out.o_stride_head = osh;
    out.lse = want_lse ? lse.data() : nullptr;
    out.lse_stride_batch = lsb;
    out.lse_stride_token = lst;
    out.lse_stride_head = lsh;
    out.stats = want_stats ? &stats : nullptr;
    out.skip_mask = want_mask ? mask.data() : nullptr;
    out.dropped_mass = want_dropped ? dropped.data() : nullptr;
    return out;
  }

  double o_at(int b, int t, int h, int c) const {
    const auto i = o_index(b, t, h, c);
    switch (o_dtype) {
      case DType::f32: return o32[i];
      case DType::f16: return bref::half_to_double(o16[i]);
      case DType::bf16: return bref::bf16_to_double(o16[i]);
    }
    return kNaN;
  }
  double lse_at(int b, int t, int h) const { return lse[l_index(b, t, h)]; }
  double dropped_at(int b, int t, int h) const { return dropped[l_index(b, t, h)]; }
  // Token row r of the reference -> (b, t).
  void split_row(std::int64_t r, int& b, int& t) const {
    b = static_cast<int>(r / nt);
    t = static_cast<int>(r % nt);
  }
  std::vector<std::uint8_t> mask_copy() const {
    return std::vector<std::uint8_t>(mask.begin(), mask.begin() + mask_size);
  }
};

inline OutBuf make_out(const PrefillProblem& p, std::int64_t mask_size, int pad = 0,
                       DType o_dt = DType::f32) {
  OutBuf o;
  o.init(1, static_cast<int>(p.total_q), p.num_heads_q, p.head_dim_v, mask_size, pad, o_dt);
  return o;
}
inline OutBuf make_out(const DecodeProblem& p, std::int64_t mask_size, int pad = 0,
                       DType o_dt = DType::f32) {
  OutBuf o;
  o.init(p.batch, p.q_tokens, p.num_heads_q, p.head_dim_v, mask_size, pad, o_dt);
  return o;
}

// ---------------------------------------------------------------------------------------------
// Engine and reference dispatch.

inline void engine(const PrefillProblem& p, const SkipPolicy& pol, const Outputs& o) {
  blasst::cpu::prefill(p, pol, o);
}
inline void engine(const DecodeProblem& p, const SkipPolicy& pol, const Outputs& o) {
  blasst::cpu::decode(p, pol, o);
}
inline RefResult reference(const PrefillProblem& p, const SkipPolicy& pol) {
  return bref::reference_prefill(p, pol);
}
inline RefResult reference(const DecodeProblem& p, const SkipPolicy& pol) {
  return bref::reference_decode(p, pol);
}

inline SkipPolicy policy(SkipPolicy::Mode mode, double value, int bq, int bk, VisitOrder order,
                         int splits = 1, bool max_seed = false) {
  SkipPolicy p;
  p.mode = mode;
  p.value = value;
  p.block_q = bq;
  p.block_k = bk;
  p.order = order;
  p.splits = splits;
  p.max_seed = max_seed;
  return p;
}
inline SkipPolicy threshold(double lambda, int bq, int bk, VisitOrder order = VisitOrder::reverse,
                            int splits = 1, bool max_seed = false) {
  return policy(SkipPolicy::Mode::threshold, lambda, bq, bk, order, splits, max_seed);
}
inline SkipPolicy dense(int bq, int bk, VisitOrder order = VisitOrder::reverse, int splits = 1) {
  return policy(SkipPolicy::Mode::dense, 0.0, bq, bk, order, splits);
}

// ---------------------------------------------------------------------------------------------
// Checks.

inline std::string where(const RefResult& ref, std::int64_t idx) {
  int b = 0;
  while (b + 1 < static_cast<int>(ref.offsets.size()) && ref.offsets[b + 1] <= idx) ++b;
  const std::int64_t rel = idx - ref.offsets[b];
  std::ostringstream s;
  s << "mask[" << idx << "] (sequence " << b << ", group " << rel / std::max(1, ref.tiles_k[b])
    << ", tile " << rel % std::max(1, ref.tiles_k[b]) << ")";
  return s.str();
}

// Every output element of an existing row was written; nothing outside was touched.
inline void expect_written(const OutBuf& out, const RefResult& ref) {
  int bad = 0;
  auto report = [&](const std::string& msg) {
    if (++bad <= 8) ADD_FAILURE() << msg;
  };
  const bool pf32 = out.o_dtype == DType::f32;
  std::vector<char> inside_o(out.o_elems(), 0), inside_l(out.l_elems(), 0);
  for (int b = 0; b < out.nb; ++b)
    for (int t = 0; t < out.nt; ++t)
      for (int h = 0; h < out.heads; ++h) {
        for (int c = 0; c < out.dv; ++c) {
          const auto i = out.o_index(b, t, h, c);
          inside_o[i] = 1;
          if (!std::isfinite(out.o_at(b, t, h, c)))
            report("O not written or not finite at (" + std::to_string(b) + "," + std::to_string(t) +
                   "," + std::to_string(h) + "," + std::to_string(c) + ")");
        }
        const auto li = out.l_index(b, t, h);
        inside_l[li] = 1;
        if (out.want_lse && out.lse[li] == kLseSentinel)
          report("LSE not written at row (" + std::to_string(b) + "," + std::to_string(t) + "," +
                 std::to_string(h) + ")");
        if (out.want_lse && std::isnan(out.lse[li])) report("LSE is NaN");
        if (out.want_dropped && (out.dropped[li] == kDroppedSentinel || !std::isfinite(out.dropped[li])))
          report("dropped mass not written or not finite at row (" + std::to_string(b) + "," +
                 std::to_string(t) + "," + std::to_string(h) + ")");
      }
  for (std::size_t i = 0; i < out.o_elems(); ++i)
    if (!inside_o[i] && (pf32 ? out.o32[i] != kPadSentinel : out.o16[i] != 0x1234))
      report("O written outside its elements at offset " + std::to_string(i));
  for (std::size_t i = 0; i < out.l_elems(); ++i)
    if (!inside_l[i] && ((out.want_lse && out.lse[i] != kPadSentinel) ||
                         (out.want_dropped && out.dropped[i] != kPadSentinel)))
      report("LSE/dropped written outside its elements at offset " + std::to_string(i));
  if (out.want_mask) {
    if (static_cast<std::int64_t>(ref.mask.size()) != out.mask_size)
      report("mask buffer size mismatch");
    for (std::int64_t i = 0; i < out.mask_size; ++i)
      if (out.mask[i] > 2) report("mask not written at " + where(ref, i));
    for (std::size_t i = out.mask_size; i < out.mask.size(); ++i)
      if (out.mask[i] != kMaskPoison) {
        report("mask written past SkipMaskLayout::size() at " + std::to_string(i));
        break;
      }
  }
  EXPECT_EQ(bad, 0) << "output elements missing or stray writes";
}

inline void expect_stats(const blasst::SkipStats& st, const RefResult& ref) {
  EXPECT_EQ(st.batch, ref.batch);
  EXPECT_EQ(st.heads, ref.stat_heads);
  EXPECT_EQ(st.visited, ref.visited) << "visited counts per (sequence, head) differ";
  EXPECT_EQ(st.skipped, ref.skipped) << "skipped counts per (sequence, head) differ";
  ASSERT_EQ(st.lambda.size(), ref.lambda.size());
  for (std::size_t b = 0; b < ref.lambda.size(); ++b)
    EXPECT_NEAR(st.lambda[b], ref.lambda[b], 1e-12 * ref.lambda[b]) << "lambda of sequence " << b;
}

struct Tol {
  double o = 1e-5;        // relative norm error of O
  double lse = 1e-5;      // |lse - ref| <= lse * max(1, |ref|)
  double dropped = 1e-4;  // |d - ref| <= dropped * ref + 1e-6
};

// O, LSE and dropped mass against the reference (which already carries the same decisions).
inline void expect_values(const OutBuf& out, const RefResult& ref, Tol tol = {}) {
  int bad = 0;
  auto report = [&](const std::string& msg) {
    if (++bad <= 8) ADD_FAILURE() << msg;
  };
  double num = 0.0, den = 0.0, worst = 0.0;
  std::int64_t worst_row = -1;
  for (std::int64_t r = 0; r < ref.token_rows; ++r) {
    int b, t;
    out.split_row(r, b, t);
    for (int h = 0; h < ref.hq; ++h) {
      const std::size_t ri = static_cast<std::size_t>(r) * ref.hq + h;
      const bool empty = ref.lse[ri] == -bref::kInf;
      std::ostringstream row;
      row << "row " << r << " head " << h;
      double rn = 0.0;
      for (int c = 0; c < ref.dv; ++c) {
        const double e = out.o_at(b, t, h, c), x = ref.o[ri * ref.dv + c];
        if (empty && e != 0.0) {
          report("O of a row that sees no key (or keeps none) is not exactly 0: " + row.str());
          break;
        }
        num += (e - x) * (e - x);
        den += x * x;
        rn += (e - x) * (e - x);
      }
      if (rn > worst) {
        worst = rn;
        worst_row = static_cast<std::int64_t>(ri);
      }
      if (out.want_lse) {
        const double e = out.lse_at(b, t, h);
        if (empty) {
          if (!(e == -bref::kInf)) report("LSE of an empty row is not -inf: " + row.str() + " got " + std::to_string(e));
        } else if (!(std::fabs(e - ref.lse[ri]) <= tol.lse * std::max(1.0, std::fabs(ref.lse[ri])))) {
          std::ostringstream m;
          m << "LSE " << row.str() << ": engine " << e << " reference " << ref.lse[ri];
          report(m.str());
        }
      }
      if (out.want_dropped) {
        const double e = out.dropped_at(b, t, h), x = ref.dropped[ri];
        if (!(std::fabs(e - x) <= tol.dropped * x + 1e-6)) {
          std::ostringstream m;
          m << "dropped mass " << row.str() << ": engine " << e << " reference " << x;
          report(m.str());
        }
      }
    }
  }
  const double rel = den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
  EXPECT_LT(rel, tol.o) << "relative error of O; worst (row*Hq+head) " << worst_row;
  EXPECT_EQ(bad, 0);
}

// BLASST.md 2.9 on the engine's dropped mass: share <= skipped tiles the row sees * BK * lambda.
inline void expect_mass_bound(const OutBuf& out, const RefResult& ref) {
  int bad = 0;
  for (std::int64_t r = 0; r < ref.token_rows; ++r) {
    int b, t;
    out.split_row(r, b, t);
    for (int h = 0; h < ref.hq; ++h) {
      const std::size_t ri = static_cast<std::size_t>(r) * ref.hq + h;
      const double bound = ref.skipped_seen[ri] * static_cast<double>(ref.block_k) * ref.row_lambda[ri];
      const double e = out.want_dropped ? out.dropped_at(b, t, h) : ref.dropped[ri];
      if (!(ref.dropped[ri] <= bound) || !(e <= bound * (1.0 + 1e-5) + 1e-7)) {
        if (++bad <= 5)
          ADD_FAILURE() << "mass bound violated at row " << r << " head " << h << ": dropped "
                        << e << " (reference " << ref.dropped[ri] << ") > bound " << bound;
      }
    }
  }
  EXPECT_EQ(bad, 0);
}

struct RunResult {
  RefResult ref;            // the reference with its own decisions
  std::int64_t soft = 0;    // decisions that differ at float32 ties
  bool ok = false;          // the engine returned
};

// Poisons, runs the engine, checks that every element was written, compares decisions with the
// reference (differences allowed only on float32 ties, which cannot change later decisions, and
// then values are compared with the reference replaying the engine's mask), statistics, values
// and the mass bound.
template <class Problem>
RunResult run_and_check(const Problem& p, const SkipPolicy& pol, OutBuf& out, Tol tol = {},
                        bool check_bound = true) {
  RunResult rr;
  out.poison();
  try {
    engine(p, pol, out.outputs());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "engine threw: " << e.what();
    return rr;
  }
  rr.ok = true;
  rr.ref = reference(p, pol);
  const RefResult& ref = rr.ref;
  expect_written(out, ref);
  if (::testing::Test::HasFailure()) {
    // keep going: value checks below give more context
  }
  std::int64_t hard = 0;
  if (out.want_mask && static_cast<std::int64_t>(ref.mask.size()) == out.mask_size) {
    for (std::size_t i = 0; i < ref.mask.size(); ++i) {
      if (out.mask[i] == ref.mask[i]) continue;
      const bool tie = ref.ambiguous[i] && out.mask[i] >= 1 && out.mask[i] <= 2;
      if (tie) {
        ++rr.soft;
      } else if (++hard <= 8) {
        ADD_FAILURE() << "decision differs at " << where(ref, i) << ": engine "
                      << int(out.mask[i]) << " reference " << int(ref.mask[i]);
      }
    }
    EXPECT_EQ(hard, 0) << "skip decisions differ from the reference";
  }
  const RefResult* cmp = &ref;
  RefResult replayed;
  if (rr.soft > 0 && hard == 0) {
    std::cout << "[ note ] " << rr.soft << " decision(s) differ from the reference at float32 ties; "
              << "comparing values against the reference replaying the engine's mask\n";
    SkipPolicy rp = pol;
    rp.replay_mask = out.mask.data();
    replayed = reference(p, rp);
    cmp = &replayed;
  }
  if (out.want_stats) expect_stats(out.stats, *cmp);
  expect_values(out, *cmp, tol);
  if (check_bound && pol.replay_mask == nullptr) expect_mass_bound(out, *cmp);
  return rr;
}

// Mask bytes the engine writes for p under pol's geometry (the reference's layout).
inline std::int64_t mask_size(const PrefillProblem& p, const SkipPolicy& pol) {
  return static_cast<std::int64_t>(reference(p, dense(pol.block_q, pol.block_k)).mask.size());
}
inline std::int64_t mask_size(const DecodeProblem& p, const SkipPolicy& pol) {
  return static_cast<std::int64_t>(reference(p, dense(1, pol.block_k, VisitOrder::forward)).mask.size());
}

// Runs and checks one case (anything with problem(): PrefillCase, DecodeCase) with a mask buffer
// of its layout's size; returns the reference.
template <class Case>
RunResult check(const Case& c, const SkipPolicy& pol, Tol tol = {}, int out_pad = 0, DType o_dt = DType::f32) {
  auto p = c.problem();
  auto out = make_out(p, mask_size(p, pol), out_pad, o_dt);
  return run_and_check(p, pol, out, tol);
}

inline std::int64_t count_state(const std::vector<std::uint8_t>& m, std::uint8_t s) {
  return std::count(m.begin(), m.end(), s);
}

// A modified skip mask for the replay tests: in every group tile 0 kept (every row that sees a
// key sees it; `unflipped` counts the ones that were skipped) and each other kept tile flipped to
// skipped with probability `rate` (`flipped` counts them).
struct MaskFlips {
  std::int64_t flipped = 0, unflipped = 0;
};
inline MaskFlips flip_kept_tiles(std::vector<std::uint8_t>& mask, const RefResult& r, Rng& rng, double rate) {
  MaskFlips f;
  for (int b = 0; b < r.batch; ++b)
    for (int g = 0; g < r.groups[b]; ++g) {
      if (r.tiles_k[b] == 0) continue;
      auto& x0 = mask[r.mask_index(b, g, 0)];
      if (x0 == 2) x0 = 1, ++f.unflipped;
      for (int t = 1; t < r.tiles_k[b]; ++t) {
        auto& x = mask[r.mask_index(b, g, t)];
        if (x == 1 && rng.uniform() < rate) x = 2, ++f.flipped;
      }
    }
  return f;
}

// Engine-only run (no reference), with poisoning and the written check skipped.
template <class Problem>
void run_engine(const Problem& p, const SkipPolicy& pol, OutBuf& out) {
  out.poison();
  engine(p, pol, out.outputs());
}

// Engine-only run of one case, with a mask buffer of its layout's size.
template <class Case>
OutBuf run_only(const Case& c, const SkipPolicy& pol) {
  auto p = c.problem();
  auto out = make_out(p, mask_size(p, pol));
  run_engine(p, pol, out);
  return out;
}

// Bitwise comparison of two runs' O and LSE.
inline bool same_bits(const OutBuf& a, const OutBuf& b) {
  if (a.o_dtype != b.o_dtype) return false;
  const bool f = a.o_dtype == DType::f32;
  const bool o_same = f ? (a.o32.size() == b.o32.size() &&
                           std::memcmp(a.o32.data(), b.o32.data(), a.o32.size() * sizeof(float)) == 0)
                        : a.o16 == b.o16;
  const bool l_same = a.lse.size() == b.lse.size() &&
                      std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0;
  return o_same && l_same;
}

// Max |a - b| over O of two runs on the same shapes (relative to max |b|).
inline double o_max_rel_diff(const OutBuf& a, const OutBuf& b) {
  double md = 0.0, mb = 0.0;
  for (int bb = 0; bb < a.nb; ++bb)
    for (int t = 0; t < a.nt; ++t)
      for (int h = 0; h < a.heads; ++h)
        for (int c = 0; c < a.dv; ++c) {
          const double x = a.o_at(bb, t, h, c), y = b.o_at(bb, t, h, c);
          md = std::max(md, std::fabs(x - y));
          mb = std::max(mb, std::fabs(y));
        }
  return mb > 0 ? md / mb : md;
}

// The per-head sums and the totals of a SkipStats agree with its per-(sequence, head) entries;
// returns the totals (visited, skipped).
inline std::pair<std::int64_t, std::int64_t> expect_stats_sums(const blasst::SkipStats& st) {
  std::int64_t v = 0, s = 0;
  for (int h = 0; h < st.heads; ++h) {
    std::int64_t vh = 0, sh = 0;
    for (int b = 0; b < st.batch; ++b) {
      vh += st.visited[b * st.heads + h];
      sh += st.skipped[b * st.heads + h];
    }
    EXPECT_EQ(st.visited_for_head(h), vh);
    EXPECT_EQ(st.skipped_for_head(h), sh);
    v += vh;
    s += sh;
  }
  EXPECT_EQ(st.tiles_visited(), v);
  EXPECT_EQ(st.tiles_skipped(), s);
  return {v, s};
}

}  // namespace bt
