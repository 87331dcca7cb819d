// CPU inner loops: element conversion, a register-blocked float32 GEMM micro-kernel and a vector
// exp. Written with GCC/Clang vector extensions so the compiler emits AVX-512 or AVX2 as available.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "blasst/convert.hpp"
#include "blasst/types.hpp"

namespace blasst::cpu {

#if defined(__AVX512F__)
constexpr int kW = 16;  // floats per vector register
#else
constexpr int kW = 8;
#endif
typedef float vf __attribute__((vector_size(kW * 4)));
typedef std::int32_t vi __attribute__((vector_size(kW * 4)));
// Buffers are padded to multiples of kPad floats so every row is a whole number of vectors.
constexpr int kPad = 16;

inline int round_up(int n, int m) { return (n + m - 1) / m * m; }

inline vf vload(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void vstore(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf vbroadcast(float x) {  // not vf{} + x: 0 + x is not x for x = -0, so that costs an add
#if defined(__AVX512F__)
  return (vf)_mm512_set1_ps(x);
#elif defined(__AVX__)
  return (vf)_mm256_set1_ps(x);
#else
  vf v;
  for (int i = 0; i < kW; ++i) v[i] = x;
  return v;
#endif
}

// ---- element conversion: blasst/convert.hpp (bf16_to_float, float_to_bf16, convert_row,
// store_row), found from this namespace ----------------------------------------------------------

// ---- GEMM: C[M x N] (+)= A[M x K] * B[K x N], N a multiple of kPad ------------------------------
// A(r, k) = A[r * ars + k * acs] (any layout: it is read one broadcast scalar at a time);
// B and C are row-major.

template <int MR, int NV>
inline void gemm_block(int K, const float* A, std::int64_t ars, std::int64_t acs, const float* B, std::int64_t ldb,
                       float* C, std::int64_t ldc, bool accumulate) {
  vf c[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = accumulate ? vload(C + r * ldc + v * kW) : vf{};
  for (int k = 0; k < K; ++k) {
    // Broadcasts first, then each B vector once against every row: one load per B vector.
    vf a[MR];
    for (int r = 0; r < MR; ++r) a[r] = vbroadcast(A[r * ars + k * acs]);
    for (int v = 0; v < NV; ++v) {
      vf b = vload(B + k * ldb + v * kW);
#if defined(__x86_64__)
      asm("" : "+v"(b));  // keep b in a register: folded into each FMA it would be loaded MR times
#endif
      for (int r = 0; r < MR; ++r) c[r][v] += a[r] * b;
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * kW, c[r][v]);
}

template <int NV>
inline void gemm_rows(int M, int K, const float* A, std::int64_t ars, std::int64_t acs, const float* B,
                      std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  int m = 0;
  for (; m + 4 <= M; m += 4) gemm_block<4, NV>(K, A + m * ars, ars, acs, B, ldb, C + m * ldc, ldc, accumulate);
  switch (M - m) {
    case 3: gemm_block<3, NV>(K, A + m * ars, ars, acs, B, ldb, C + m * ldc, ldc, accumulate); break;
    case 2: gemm_block<2, NV>(K, A + m * ars, ars, acs, B, ldb, C + m * ldc, ldc, accumulate); break;
    case 1: gemm_block<1, NV>(K, A + m * ars, ars, acs, B, ldb, C + m * ldc, ldc, accumulate); break;
    default: break;
  }
}

// Column panels outermost so a K x 64 panel of B stays in L1 while all rows of A pass over it.
inline void gemm(int M, int N, int K, const float* A, std::int64_t ars, std::int64_t acs, const float* B,
                 std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  constexpr int kPanel = 4 * kW;
  int n = 0;
  for (; n + kPanel <= N; n += kPanel) gemm_rows<4>(M, K, A, ars, acs, B + n, ldb, C + n, ldc, accumulate);
  for (; n + kW <= N; n += kW) gemm_rows<1>(M, K, A, ars, acs, B + n, ldb, C + n, ldc, accumulate);
}

// ---- exp -------------------------------------------------------------------------------------

// Vector casts between same-size vector types reinterpret bits (GCC vector extensions).
// exp(x) for x <= 0 (arguments here are logit minus running max); exp(-inf) == 0, never NaN.
// Cephes-style range reduction and polynomial, about 1 ulp; results below 2^-126 flush to 0.
inline vf vexp_nonpos(vf x) {
  const vf lo = vbroadcast(-87.0f);
  const vi underflow = x < lo;
  x = x < lo ? lo : x;
  const vf magic = vbroadcast(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const vf t = x * 1.44269504088896341f + magic;
  const vf n = t - magic;
  const vi ni = (vi)t - (vi)magic;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const vf z = r * r;
  vf y = vbroadcast(1.9875691500e-4f);
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r + 1.0f;
  const vi scale_bits = (ni + 127) << 23;
  const vf result = y * (vf)scale_bits;
  return (vf)((vi)result & ~underflow);
}

inline float hsum(vf v) {
  float s = 0;
  for (int i = 0; i < kW; ++i) s += v[i];
  return s;
}

// st[j * rp + r] = <K row j, q row r> for j < nk and r < R (R small: decode's few rows), 0 for
// R <= r < rp. Dot products read each key row once, where a GEMM over 16-row panels would waste
// most of its lanes.
inline void key_query_dots(int nk, int R, int rp, int d, const float* K, std::int64_t ldk, const float* q, float* st) {
  const int dv = d / kW * kW;
  for (int j = 0; j < nk; ++j) {
    const float* kr = K + j * ldk;
    float* out = st + static_cast<std::ptrdiff_t>(j) * rp;
    for (int r = 0; r < R; ++r) {
      const float* qr = q + static_cast<std::ptrdiff_t>(r) * d;
      vf acc{};
      for (int c = 0; c < dv; c += kW) acc += vload(kr + c) * vload(qr + c);
      float sum = hsum(acc);
      for (int c = dv; c < d; ++c) sum += kr[c] * qr[c];
      out[r] = sum;
    }
    for (int r = R; r < rp; ++r) out[r] = 0.0f;
  }
}

// Key-major logits st[j * rp + r] (rp a multiple of kW) for keys j < nk: scale them, mask key j
// for row r unless j <= lim[r] (lim relative to the tile; -1: the row sees none of it), and
// write each row's maximum (-inf if it sees none) to tile_max[r].
inline void scale_mask_max_keys(float* st, int rp, int nk, float scale, const std::int32_t* lim, float* tile_max) {
  const vf sc = vbroadcast(scale), ninf = vbroadcast(-INFINITY);
  for (int r = 0; r < rp; r += kW) {
    vi limv;
    std::memcpy(&limv, lim + r, sizeof limv);
    vf mx = ninf;
    for (int j = 0; j < nk; ++j) {
      float* row = st + static_cast<std::ptrdiff_t>(j) * rp + r;
      const vi jv = vi{} + j;
      const vf v = jv <= limv ? vload(row) * sc : ninf;
      vstore(row, v);
      mx = v > mx ? v : mx;
    }
    vstore(tile_max + r, mx);
  }
}

// st[j * rp + r] = exp(st[j * rp + r] - off[r]) for keys j < nk, adding each row's sum to l[r].
// Arguments are <= 0 or -inf (masked), never NaN: off is the row's finite running max, or 0.
inline void exp_sub_keys(float* st, int rp, int nk, const float* off, float* l) {
  for (int r = 0; r < rp; r += kW) {
    const vf o = vload(off + r);
    vf sum{};
    for (int j = 0; j < nk; ++j) {
      float* row = st + static_cast<std::ptrdiff_t>(j) * rp + r;
      const vf e = vexp_nonpos(vload(row) - o);
      vstore(row, e);
      sum += e;
    }
    vstore(l + r, vload(l + r) + sum);
  }
}

inline void scale_row(float* a, float f, int n) {
  const vf fv = vbroadcast(f);
  for (int j = 0; j < n; j += kW) vstore(a + j, vload(a + j) * fv);
}

}  // namespace blasst::cpu
