// Fused Spatial Group-wise Enhance + residual add + ReLU (Li, Hu, Yang, arXiv:1905.09646), float32.
//
// out = relu(x · sigmoid(γ_g · ĉ + β_g) + identity), with the official numerics (implus/PytorchInsight):
// per group g of C/G channels, m_c = mean over H·W of x_c; c_i = Σ_{c∈g} m_c · x_c,i; ĉ = (c − mean(c)) /
// (std(c) + eps), std unbiased and eps added to the std.
//
// Written once with GCC vector types and compiled once per instruction set (sge_units.cc), each build in its own
// namespace SGE_ISA: the same source gives SSE2, AVX2/FMA and AVX-512 code. No std templates here (they would be
// merged across the builds by the linker); scratch memory comes from the caller.
//
// NCHWc ([N, C/B, H, W, B], B = 8 or 16 lanes) works on one unit, max(C/G, B) channels, in three passes over x
// that stay in L2: the channel means; the similarity map, as B-lane products reduced by a shuffle tree into one
// value per group and position ([H·W][groups in the block]), with its moments about the group's known mean
// Σ m_c² accumulated on the way (no pass of its own); and out = relu(x · gate + identity) with each position's
// gates expanded to lanes by one permute. The sigmoid works on the compact map, 1/min(C/G, B) of the data.
#pragma once

#include <cstdint>
#if defined(__AVX2__)
#include <immintrin.h>  // always-inline intrinsics: nothing is emitted outside this build's namespace
#endif

#include "sge_shape.h"

#ifndef SGE_ISA
#error "define SGE_ISA: the namespace of this instruction set's build (see build.py)"
#endif

// The passes over a unit's memory, always inlined into the unit: GCC's size heuristics outlined the similarity pass
// once the gate grew its overflow check.
#define SGE_PASS __attribute__((always_inline)) inline

namespace sge {
namespace SGE_ISA {

template <int B>
struct Lanes {
  typedef float f __attribute__((vector_size(sizeof(float) * B)));
  typedef int32_t i __attribute__((vector_size(sizeof(int32_t) * B)));
};
template <int B>
using F = typename Lanes<B>::f;
template <int B>
using I = typename Lanes<B>::i;

template <int B>
inline F<B> load(const float* p) {
  F<B> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <int B>
inline void store(float* p, F<B> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}
// The first `count` (< B) floats of p; the other lanes 0.
template <int B>
inline F<B> load_part(const float* p, int64_t count) {
  F<B> v = {};
  __builtin_memcpy(&v, p, sizeof(float) * count);
  return v;
}
template <int B>
inline void store_part(float* p, F<B> v, int64_t count) {
  __builtin_memcpy(p, &v, sizeof(float) * count);
}
template <int B>
inline F<B> splat(float value) {
  return F<B>{} + value;
}
template <int B>
inline float lane_sum(F<B> v) {
  float sum = 0.0f;
  for (int l = 0; l < B; ++l) sum += v[l];
  return sum;
}
template <int B>
inline F<B> relu(F<B> v) {
#if defined(__AVX512F__)
  if constexpr (B == 16) {  // vmaxps returns its second operand when one is NaN; the masked form, as in sigmoid
    const __m512 zero = _mm512_setzero_ps();
    return (F<B>)_mm512_mask_max_ps(zero, 0xFFFF, zero, (__m512)v);
  }
#endif
#if defined(__AVX2__)
  if constexpr (B == 8) return (F<B>)_mm256_max_ps(_mm256_setzero_ps(), (__m256)v);
#endif
  return v < 0.0f ? F<B>{} : v;  // NaN stays NaN, as in torch.relu
}

// 2^f for |f| ≤ 1/2: a degree-5 polynomial fitted to the relative error (≤ 2.4e-7 in float32).
template <int B>
inline F<B> exp2_reduced(F<B> f) {
  F<B> p = splat<B>(1.32764841e-3f);
  p = p * f + 9.67554189e-3f;
  p = p * f + 5.55071309e-2f;
  p = p * f + 2.40221202e-1f;
  p = p * f + 6.93146944e-1f;
  return p * f + 1.00000012f;
}

constexpr double minus_log2e = -1.4426950408889634;  // σ(a) = 1 / (1 + 2^t) for t = a · minus_log2e

// σ(a) = 1 / (1 + 2^t) for t = −a · log2 e (the gate folds the factor into its affine map): 2^t = 2^n · 2^f, n the
// nearest integer, f = t − n exact. t saturates at ±126; NaN propagates. The AVX-512 build rounds with vrndscaleps,
// scales with vscalefps (no exponent arithmetic) and divides by a 14-bit reciprocal refined by one Newton step
// (~1 ulp): 15 instructions a vector where the form before took 22, the affine map included (the sigmoid was a
// fifth of the kernel's time on AVX-512 CPUs that split 512-bit operations in two).
template <int B>
inline F<B> sigmoid_of_exponent(F<B> t) {
#if defined(__AVX512F__)
  if constexpr (B == 16) {
    // the masked forms with an explicit source: the unmasked ones trip GCC 12's -Wmaybe-uninitialized
    const __mmask16 all = 0xFFFF;
    // vmaxps/vminps return the second operand when one is NaN: t second keeps NaN (vrangeps would not)
    const __m512 low = (__m512)splat<B>(-126.0f), high = (__m512)splat<B>(126.0f);
    const F<B> c = (F<B>)_mm512_mask_min_ps(high, all, high, _mm512_mask_max_ps(low, all, low, (__m512)t));
    const F<B> n = (F<B>)_mm512_mask_roundscale_ps((__m512)c, all, (__m512)c,
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const F<B> e = exp2_reduced<B>(c - n);
    const F<B> d = (F<B>)_mm512_mask_scalef_ps((__m512)e, all, (__m512)e, (__m512)n) + 1.0f;  // 1 + 2^t
    const F<B> y = (F<B>)_mm512_mask_rcp14_ps((__m512)d, all, (__m512)d);
    return y * (2.0f - d * y);
  }
#endif
#if defined(__AVX2__)
  if constexpr (B == 8) {  // the same steps in AVX2: vroundps, 2^n from exponent bits, a reciprocal and one Newton step
    // vmaxps/vminps return the second operand when one is NaN: t second keeps NaN
    const __m256 c = _mm256_min_ps(_mm256_set1_ps(126.0f), _mm256_max_ps(_mm256_set1_ps(-126.0f), (__m256)t));
    const __m256 n = _mm256_round_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const F<B> e = exp2_reduced<B>((F<B>)c - (F<B>)n);
    // 2^n for |n| ≤ 126 (a normal float) from its exponent; a NaN lane's bits are 1.0f, and its e is NaN already
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const F<B> d = e * (F<B>)_mm256_castsi256_ps(bits) + 1.0f;  // 1 + 2^t
    // a reciprocal estimate (14 or 12 bits) and one Newton step instead of vdivps, which made the sigmoid the dearest
    // stage per value in the AVX2 build; the result is about as close to σ as the division's (exp2_reduced's error,
    // 2.4e-7 relative, dominates both)
#if defined(__AVX512VL__)
    const F<B> y = (F<B>)_mm256_rcp14_ps((__m256)d);
#else
    const F<B> y = (F<B>)_mm256_rcp_ps((__m256)d);
#endif
    return y * (2.0f - d * y);
  }
#endif
  t = t > 126.0f ? splat<B>(126.0f) : t;  // comparisons are false for NaN: it passes through
  t = t < -126.0f ? splat<B>(-126.0f) : t;
  // floor(t + 0.5): t + 126.5 > 0 truncates down. A NaN lane converts 0 instead (its conversion would be INT_MIN,
  // and INT_MIN - 126 overflows): f, and so the result, is NaN already.
  const I<B> k = __builtin_convertvector((t == t ? t : F<B>{}) + 126.5f, I<B>) - 126;
  const I<B> bits = (k + 127) << 23;
  return 1.0f / (1.0f + exp2_reduced<B>(t - __builtin_convertvector(k, F<B>)) * (F<B>)bits);
}

// σ(a), for callers that hold a itself (the gate folds minus_log2e into its own affine map instead).
template <int B>
inline F<B> sigmoid(F<B> a) {
  return sigmoid_of_exponent<B>(a * static_cast<float>(minus_log2e));
}

// Running sums of d = c − μ and d² over a similarity map, lane l holding group l % per. μ, the group's exact mean
// Σ_{c∈g} m_c² (the mean of c_i = Σ m_c·x_c,i), is known before the map is computed, so one pass centres it; the
// residual Σd/n corrects the rounding of the computed map.
template <int B>
struct Moments {
  F<B> sum = {}, squares = {};
};
template <int B>
inline void accumulate(Moments<B>& m, F<B> c, F<B> mu) {
  const F<B> d = c - mu;
  m.sum += d;
  m.squares += d * d;
}
// The first `valid` lanes of c only (a tail): the other lanes count as μ, d = 0.
template <int B>
inline void accumulate_part(Moments<B>& m, F<B> c, F<B> mu, int64_t valid) {
  I<B> lane;
  for (int l = 0; l < B; ++l) lane[l] = l;
  accumulate<B>(m, lane < static_cast<int32_t>(valid) ? c : mu, mu);
}

// Lane l of the result: Σ_{c∈group l % per} m_c², in double (per divides B; the means of a unit's channels in order).
template <int B, int per>
inline F<B> group_means(const float* means, int64_t unit_channels) {
  double mu[per] = {};
  const int64_t cg = unit_channels / per;
  for (int k = 0; k < per; ++k)  // no division per channel: this runs once per unit, 64 units a layer
    for (int64_t c = k * cg; c < (k + 1) * cg; ++c) mu[k] += static_cast<double>(means[c]) * means[c];
  F<B> lanes;
  for (int l = 0; l < B; ++l) lanes[l] = static_cast<float>(mu[l % per]);
  return lanes;
}

// Whether every lane is finite (v · 0 is NaN for ±inf and NaN, 0 otherwise).
template <int B>
inline bool all_finite(F<B> v) {
  const I<B> bad = v * 0.0f != 0.0f;
  int32_t any = 0;
  for (int l = 0; l < B; ++l) any |= bad[l];
  return any == 0;
}

// The moments about μ of a similarity map ([count] floats, map[e] in group e % per), in double: the path taken only
// when the float32 running sums overflowed (|c − μ| above ~1.8e19, activations of order 1e10, which eager PyTorch
// still normalises); a NaN in the map gives NaN sums here too, as it does there.
// Out of line and cold: the unit's hot code stays as it was.
template <int B, int per>
__attribute__((noinline, cold)) void exact_moments(const float* map, int64_t count, F<B> mu, double* sums,
                                                   double* squares) {
  for (int k = 0; k < per; ++k) sums[k] = squares[k] = 0.0;
  for (int64_t e = 0; e < count; ++e) {
    const double d = static_cast<double>(map[e]) - static_cast<double>(mu[e % per]);
    sums[e % per] += d;
    squares[e % per] += d * d;
  }
}

// The affine map of each lane's group, a = (c − centre) · scale + shift, from the moments of its n = H·W values:
// var = (Σd² − (Σd)²/n) / (n − 1) (unbiased, as torch.std), ĉ = (c − mean) / (std + eps), a = γ·ĉ + β. Per group
// in double; only `per` divisions and square roots. `map` is the similarity map the moments came from ([n · per]
// floats), read again only when the float32 sums did not stay finite.
template <int B, int per>
struct Gate {
  F<B> centre, scale, shift;
  Gate(const Moments<B>& m, F<B> mu, int64_t n, const float* gamma, const float* beta, float eps, const float* map) {
    double sums[per] = {}, squares[per] = {};
    for (int l = 0; l < B; ++l) {
      sums[l % per] += m.sum[l];
      squares[l % per] += m.squares[l];
    }
    if (!all_finite<B>(m.sum + m.squares)) exact_moments<B, per>(map, n * per, mu, sums, squares);
    float centres[per], scales[per], shifts[per];
    const double count = static_cast<double>(n);
    for (int k = 0; k < per; ++k) {
      const double variance = (squares[k] - sums[k] * sums[k] / count) / (count - 1.0);
      const double std_dev = __builtin_sqrt(variance > 0.0 ? variance : 0.0);
      centres[k] = static_cast<float>(static_cast<double>(mu[k]) + sums[k] / count);
      scales[k] = static_cast<float>(minus_log2e * gamma[k] / (std_dev + eps));
      shifts[k] = static_cast<float>(minus_log2e * beta[k]);
    }
    for (int l = 0; l < B; ++l) {
      centre[l] = centres[l % per];
      scale[l] = scales[l % per];
      shift[l] = shifts[l % per];
    }
  }
  // σ(γ·ĉ + β), with scale and shift holding −log2 e · γ/(std + eps) and −log2 e · β
  F<B> operator()(F<B> c) const { return sigmoid_of_exponent<B>((c - centre) * scale + shift); }
};

// Turns a similarity map s ([count] floats, lane mapping as the gate's: s[e] in group e % per) into gates in place,
// each times `factor` (SgeResidualQ's x_scale / y_scale; the float op's 1 folds away: x · 1 is x).
template <int B, int per>
SGE_PASS void gates_in_place(float* s, int64_t count, const Gate<B, per>& gate, float factor = 1.0f) {
  const int64_t whole = count - count % B;
  for (int64_t e = 0; e < whole; e += B) store<B>(s + e, gate(load<B>(s + e)) * factor);
  if (whole < count) store_part<B>(s + whole, gate(load_part<B>(s + whole, count - whole)) * factor, count - whole);
}

// Pairwise sums of adjacent lanes of a and b: [a0+a1, a2+a3, …, b0+b1, b2+b3, …].
template <int B>
inline F<B> pair_sums(F<B> a, F<B> b) {
  if constexpr (B == 4) {  // the baseline build's vectors (SgeResidualQ only)
    return __builtin_shufflevector(a, b, 0, 2, 4, 6) + __builtin_shufflevector(a, b, 1, 3, 5, 7);
  } else if constexpr (B == 8) {
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14) +
           __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
  } else {
    static_assert(B == 16, "4, 8 or 16 lanes");
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
           __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  }
}

// Lane l of the result: gates[l >> L] (the gate of lane l's group when groups are 2^L lanes wide).
template <int B, int L>
inline F<B> expand(const float* gates) {
  if constexpr (L == 0) {
    return load<B>(gates);
  } else if constexpr ((1 << L) == B) {
    return splat<B>(gates[0]);
  } else {
    I<B> index;
    for (int l = 0; l < B; ++l) index[l] = l >> L;
    return __builtin_shuffle(load<B>(gates), index);
  }
}

#if defined(__AVX512F__)
// In-chunk pair sums (vshufps, no lane crossing): chunk q of the result is [a₄q+a₄q₊₁, a₄q₊₂+a₄q₊₃, b₄q+b₄q₊₁,
// b₄q₊₂+b₄q₊₃]. The masked forms, as in sigmoid_of_exponent.
inline F<16> chunk_pair_sums(F<16> a, F<16> b) {
  const __m512 x = (__m512)a, y = (__m512)b;
  return (F<16>)_mm512_mask_shuffle_ps(x, 0xFFFF, x, y, 0x88) + (F<16>)_mm512_mask_shuffle_ps(x, 0xFFFF, x, y, 0xDD);
}
// Sums of adjacent 128-bit chunks (vshuff32x4): chunks [a0+a1, a2+a3, b0+b1, b2+b3].
inline F<16> half_pair_sums(F<16> a, F<16> b) {
  const __m512 x = (__m512)a, y = (__m512)b;
  return (F<16>)_mm512_mask_shuffle_f32x4(x, 0xFFFF, x, y, 0x88) +
         (F<16>)_mm512_mask_shuffle_f32x4(x, 0xFFFF, x, y, 0xDD);
}
// lane_tree of 16 lanes with S ≥ 4 from those two shuffles (cheaper than two-source permutes): two rounds of
// chunk_pair_sums leave chunk q of v[4j + r] in lane 4q + r of u[j]; chunk sums finish groups of 8 and 16; one
// permute puts the sums in lane_tree's order (none is needed for S = 16).
template <int S>
inline F<16> lane_tree_chunked(const F<16>* v) {
  F<16> t[S / 2], u[S / 4];
#pragma GCC unroll 8
  for (int j = 0; j < S / 2; ++j) t[j] = chunk_pair_sums(v[2 * j], v[2 * j + 1]);
#pragma GCC unroll 4
  for (int j = 0; j < S / 4; ++j) u[j] = chunk_pair_sums(t[2 * j], t[2 * j + 1]);
  I<16> order;
  if constexpr (S == 4) {  // u lane 4k + j: group k of v[j]
    for (int l = 0; l < 16; ++l) order[l] = 4 * (l % 4) + l / 4;
    return __builtin_shuffle(u[0], order);
  } else if constexpr (S == 8) {  // lane 4h + r: group h % 2 of v[r + 4·(h / 2)]
    for (int l = 0; l < 16; ++l) order[l] = 4 * (l % 2) + (l / 2) % 4 + 8 * (l / 8);
    return __builtin_shuffle(half_pair_sums(u[0], u[1]), order);
  } else {
    static_assert(S == 16, "groups of 4, 8 or 16 lanes");
    return half_pair_sums(half_pair_sums(u[0], u[1]), half_pair_sums(u[2], u[3]));  // lane j: v[j], in order
  }
}
#endif

#if defined(__AVX2__)
// The 8-lane trees from in-chunk shuffles (vshufps) and one lane-crossing step at the end: without AVX-512, GCC
// builds each two-source shuffle of pair_sums across AVX2's two 128-bit chunks from 4 vpermd and 2 blends, and the
// similarity pass was bound by them. Chunk q of the result: [a₄q+a₄q₊₁, a₄q₊₂+a₄q₊₃, b₄q+b₄q₊₁, b₄q₊₂+b₄q₊₃].
inline F<8> chunk_pair_sums(F<8> a, F<8> b) {
  const __m256 x = (__m256)a, y = (__m256)b;
  return (F<8>)_mm256_shuffle_ps(x, y, 0x88) + (F<8>)_mm256_shuffle_ps(x, y, 0xDD);
}
// lane_tree of 8 lanes, summing in the same order as pair_sums' tree.
template <int S>
inline F<8> lane_tree_chunked(const F<8>* v) {
  if constexpr (S == 2) {  // 64-bit pieces [v0 groups 0–1, v1 groups 0–1, v0 groups 2–3, v1 groups 2–3]: swap 1, 2
    return (F<8>)_mm256_permute4x64_pd((__m256d)chunk_pair_sums(v[0], v[1]), 0xD8);
  } else if constexpr (S == 4) {  // chunk q holds group q of v[0], v[1], v[2], v[3]: lane 2j + q wants v[j]'s
    const F<8> u = chunk_pair_sums(chunk_pair_sums(v[0], v[1]), chunk_pair_sums(v[2], v[3]));
    return (F<8>)_mm256_permutevar8x32_ps((__m256)u, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  } else {
    static_assert(S == 8, "groups of 2, 4 or 8 lanes");
    const __m256 u0 = (__m256)chunk_pair_sums(chunk_pair_sums(v[0], v[1]), chunk_pair_sums(v[2], v[3]));
    const __m256 u1 = (__m256)chunk_pair_sums(chunk_pair_sums(v[4], v[5]), chunk_pair_sums(v[6], v[7]));
    // chunk q of u0 (u1): half q of v[0..3] (v[4..7]); adding the halves leaves lane j = v[j]'s sum, in order
    return (F<8>)_mm256_permute2f128_ps(u0, u1, 0x20) + (F<8>)_mm256_permute2f128_ps(u0, u1, 0x31);
  }
}
#endif

// Reduces S = 2^L vectors of lane products to one: lane j·B/S + k holds the sum of group k (S lanes) of v[j].
template <int B, int S>
inline F<B> lane_tree(const F<B>* v) {
#if defined(__AVX512F__)
  if constexpr (B == 16 && S >= 4) return lane_tree_chunked<S>(v);
#endif
#if defined(__AVX2__)
  if constexpr (B == 8 && S >= 2) return lane_tree_chunked<S>(v);
#endif
  if constexpr (S == 1) {
    return v[0];
  } else {
    F<B> halves[S / 2];
#pragma GCC unroll 16
    for (int j = 0; j < S / 2; ++j) halves[j] = pair_sums<B>(v[2 * j], v[2 * j + 1]);
    return lane_tree<B, S / 2>(halves);
  }
}

// The mean over H·W of each channel of a unit's `blocks` blocks ([blocks][B] floats), four accumulators a block.
template <int B>
SGE_PASS void channel_means(const float* x, int64_t size, int64_t blocks, int64_t stride, float* means) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * stride;
    F<B> a0 = {}, a1 = {}, a2 = {}, a3 = {};
    int64_t i = 0;
    for (; i + 4 <= size; i += 4) {
      a0 += load<B>(xb + i * B);
      a1 += load<B>(xb + (i + 1) * B);
      a2 += load<B>(xb + (i + 2) * B);
      a3 += load<B>(xb + (i + 3) * B);
    }
    for (; i < size; ++i) a0 += load<B>(xb + i * B);
    store<B>(means + b * B, ((a0 + a1) + (a2 + a3)) / static_cast<float>(size));
  }
}

// A similarity map ([size][B / 2^L] floats) from `product(i)`, the B lane products of position i: S positions at a
// time reduced over each group's lanes by lane_tree; and the map's moments about μ.
template <int B, int L, typename Product>
SGE_PASS Moments<B> map_by_trees(int64_t size, const Product& product, F<B> mu, float* similarity) {
  constexpr int S = 1 << L, per = B / S;
  Moments<B> moments;
  int64_t i0 = 0;
  for (; i0 + S <= size; i0 += S) {
    F<B> v[S];
#pragma GCC unroll 16
    for (int j = 0; j < S; ++j) v[j] = product(i0 + j);
    const F<B> c = lane_tree<B, S>(v);  // S positions × per groups = B values
    store<B>(similarity + i0 * per, c);
    accumulate<B>(moments, c, mu);
  }
  if (i0 < size) {
    const int64_t count = size - i0;
    F<B> v[S] = {};
    for (int64_t j = 0; j < count; ++j) v[j] = product(i0 + j);
    const F<B> c = lane_tree<B, S>(v);
    store_part<B>(similarity + i0 * per, c, count * per);
    accumulate_part<B>(moments, c, mu, count * per);
  }
  return moments;
}

// The similarity map of a unit ([hw][B / 2^L] floats): per position, the lane products x · mean summed over the
// unit's blocks, then over each group's lanes by lane_tree, S positions at a time; and its moments about μ.
template <int B, int L>
SGE_PASS Moments<B> similarity_map(const float* x, const float* identity, int64_t size, int64_t blocks, int64_t stride,
                                   const float* means, F<B> mu, float* similarity) {
  const F<B> m0 = load<B>(means);
  const auto product = [&](int64_t i) {
    // identity is read only by the last pass: fetched into L2 now, while this pass computes (into L1 it evicted the
    // lines this pass reads, and the whole network ran measurably slower on a Zen 4)
    if ((i * B) % 16 == 0) __builtin_prefetch(identity + i * B, 0, 2);
    F<B> sum = load<B>(x + i * B) * m0;
    for (int64_t b = 1; b < blocks; ++b) {
      if ((i * B) % 16 == 0) __builtin_prefetch(identity + b * stride + i * B, 0, 2);
      sum += load<B>(x + b * stride + i * B) * load<B>(means + b * B);
    }
    return sum;
  };
  return map_by_trees<B, L>(size, product, mu, similarity);
}

// out = relu(x · gate + identity) over one block's positions. Groups narrower than the block (1 < S < B): one
// aligned load of S positions' gates, expanded to each position by a permute in registers (a load per position
// would split a cache line three times in four); otherwise a load or broadcast per position.
template <int B, int L>
SGE_PASS void apply_gates(const float* x, const float* identity, float* out, int64_t size, const float* gates) {
  constexpr int S = 1 << L, per = B / S;
  const auto apply = [&](int64_t i, F<B> g) {
    store<B>(out + i * B, relu<B>(load<B>(x + i * B) * g + load<B>(identity + i * B)));
  };
  int64_t i0 = 0;
  if constexpr (L > 0 && S < B) {
    I<B> group_of_lane;
    for (int l = 0; l < B; ++l) group_of_lane[l] = l >> L;
    for (; i0 + S <= size; i0 += S) {
      const F<B> chunk = load<B>(gates + i0 * per);
#pragma GCC unroll 8
      for (int j = 0; j < S; ++j) apply(i0 + j, __builtin_shuffle(chunk, group_of_lane + j * per));
    }
  }
  for (int64_t i = i0; i < size; ++i) apply(i, expand<B, L>(gates + i * per));
}

// One NCHWc unit whose groups are S = 2^L lanes wide (S = C/G when C/G < B, else B: a group of whole blocks).
template <int B, int L>
void unit_nchwc(const Problem& p, int64_t n, int64_t u, float* scratch) {
  constexpr int S = 1 << L, per = B / S;  // positions per tree; groups per block (1 when a group spans blocks)
  const Shape& s = p.shape;
  const int64_t size = hw(s), uc = unit_channels(s), blocks = uc / B, stride = size * B;
  const int64_t offset = (n * s.c + u * uc) * size;  // blocks of one image are consecutive: [C/B][H·W][B]
  const float* x = p.x + offset;
  const float* identity = p.identity + offset;
  float* out = p.out + offset;
  float* means = scratch;             // [blocks][B]
  float* similarity = scratch + uc;   // [hw][per], then the gates

  channel_means<B>(x, size, blocks, stride, means);
  const F<B> mu = group_means<B, per>(means, uc);
  const Moments<B> moments = blocks == 1
                                 ? similarity_map<B, L>(x, identity, size, 1, stride, means, mu, similarity)
                                 : similarity_map<B, L>(x, identity, size, blocks, stride, means, mu, similarity);
  const int64_t first_group = u * uc / group_channels(s);
  const Gate<B, per> gate(moments, mu, size, p.gamma + first_group, p.beta + first_group, s.eps, similarity);
  gates_in_place<B, per>(similarity, size * per, gate);
  for (int64_t b = 0; b < blocks; ++b)
    apply_gates<B, L>(x + b * stride, identity + b * stride, out + b * stride, size, similarity);
}

// The widest vector of this build, which the plain-NCHW loops use: a wider GCC vector type is split into several
// registers and its selects may be scalarised (AVX2 with 16 lanes ran 4.6× slower than AVX-512, and slower than SSE2).
#if defined(__AVX512F__)
constexpr int kNativeLanes = 16;
#elif defined(__AVX2__)
constexpr int kNativeLanes = 8;
#else
constexpr int kNativeLanes = 4;
#endif

// One unit of plain NCHW: a single group, channels [g·cg, (g+1)·cg) of image n, vectorised along H·W.
inline void unit_nchw(const Problem& p, int64_t n, int64_t g, float* scratch) {
  constexpr int W = kNativeLanes;
  const Shape& s = p.shape;
  const int64_t size = hw(s), cg = group_channels(s), whole = size - size % W;
  const int64_t offset = (n * s.c + g * cg) * size;
  const float* x = p.x + offset;
  const float* identity = p.identity + offset;
  float* out = p.out + offset;
  float* means = scratch;
  float* similarity = scratch + cg;

  for (int64_t c = 0; c < cg; ++c) {
    const float* xc = x + c * size;
    F<W> acc = {};
    for (int64_t i = 0; i < whole; i += W) acc += load<W>(xc + i);
    float sum = lane_sum<W>(acc);
    for (int64_t i = whole; i < size; ++i) sum += xc[i];
    means[c] = sum / static_cast<float>(size);
  }
  const F<W> mu = group_means<W, 1>(means, cg);
  Moments<W> moments;
  for (int64_t i = 0; i < size; i += W) {
    const int64_t count = size - i < W ? size - i : W;
    F<W> acc = {};
    for (int64_t c = 0; c < cg; ++c)
      acc += (count == W ? load<W>(x + c * size + i) : load_part<W>(x + c * size + i, count)) * means[c];
    store_part<W>(similarity + i, acc, count);
    accumulate_part<W>(moments, acc, mu, count);
  }
  const Gate<W, 1> gate(moments, mu, size, p.gamma + g, p.beta + g, s.eps, similarity);
  gates_in_place<W, 1>(similarity, size, gate);
  for (int64_t c = 0; c < cg; ++c) {
    const float* xc = x + c * size;
    const float* ic = identity + c * size;
    float* oc = out + c * size;
    for (int64_t i = 0; i < whole; i += W)
      store<W>(oc + i, relu<W>(load<W>(xc + i) * load<W>(similarity + i) + load<W>(ic + i)));
    if (whole < size) {
      const int64_t rest = size - whole;
      const F<W> v = load_part<W>(xc + whole, rest) * load_part<W>(similarity + whole, rest) +
                     load_part<W>(ic + whole, rest);
      store_part<W>(oc + whole, relu<W>(v), rest);
    }
  }
}

template <int B>
inline void unit_blocked(const Problem& p, int64_t n, int64_t u, float* scratch) {
  const int64_t cg = group_channels(p.shape);
  const int64_t width = cg < B ? cg : B;  // lanes per group within a block: 1, 2, 4, 8 or 16
  switch (width) {
    case 1: return unit_nchwc<B, 0>(p, n, u, scratch);
    case 2: return unit_nchwc<B, 1>(p, n, u, scratch);
    case 4: return unit_nchwc<B, 2>(p, n, u, scratch);
    case 8: return unit_nchwc<B, 3>(p, n, u, scratch);
    default:
      if constexpr (B == 16) return unit_nchwc<B, 4>(p, n, u, scratch);
  }
}

#if defined(SGE_FLOOR)
// Diagnostic builds (build.py FLOORS, never installed), each one pass over the unit's memory (one contiguous run in
// either layout): 1, out = relu(x · ½ + identity); 3 and 4, the same pass with identity or x not read (taken as 0):
// relu(x · ½), relu(identity); 2, nothing. With SGE_FLOOR_SIZE, only blocks of that H·W take the floor.
inline void floor_unit(const Problem& p, int64_t item) {
  if (SGE_FLOOR == 2) return;
  const int64_t count = unit_channels(p.shape) * hw(p.shape), first = item * count;
  const float* x = p.x + first;
  const float* identity = p.identity + first;
  float* out = p.out + first;
  constexpr int W = kNativeLanes;  // wider GCC vectors are split and their ReLU select scalarised (AVX2: 16 lanes)
  constexpr bool reads_x = SGE_FLOOR != 4, reads_identity = SGE_FLOOR != 3;
  int64_t i = 0;
  for (; i + W <= count; i += W) {
    const F<W> a = reads_x ? load<W>(x + i) : F<W>{}, b = reads_identity ? load<W>(identity + i) : F<W>{};
    store<W>(out + i, relu<W>(a * 0.5f + b));
  }
  if (i < count) {
    const int64_t rest = count - i;
    const F<W> a = reads_x ? load_part<W>(x + i, rest) : F<W>{};
    const F<W> b = reads_identity ? load_part<W>(identity + i, rest) : F<W>{};
    store_part<W>(out + i, relu<W>(a * 0.5f + b), rest);
  }
}
#endif

// Runs unit `item` of the flattened (image, unit) range; the shape passed shape_problem().
inline void run_unit_impl(const Problem& p, int64_t item, float* scratch) {
#if defined(SGE_FLOOR) && defined(SGE_FLOOR_SIZE)
  if (hw(p.shape) == SGE_FLOOR_SIZE) return floor_unit(p, item);  // one ResNet stage's blocks; the others in full
#elif defined(SGE_FLOOR)
  return floor_unit(p, item);
#endif
  const int64_t per_image = units_per_image(p.shape);
  const int64_t n = item / per_image, u = item % per_image;
  if (p.shape.block == 0)
    unit_nchw(p, n, u, scratch);
  else if (p.shape.block == 8)
    unit_blocked<8>(p, n, u, scratch);
  else
    unit_blocked<16>(p, n, u, scratch);
}

}  // namespace SGE_ISA
}  // namespace sge
