// SgeResidualQ: the fused SGE block tail of sge_math.h for ONNX Runtime's INT8 graphs, with quantised inputs and
// output: y = quantize(relu(x · sigmoid(γ_g · ĉ + β_g) + identity)), x = x_scale · (q_x − x_zero) and likewise the
// identity.
//
// ORT runs U8S8 convolutions channels last (uint8 NHWC). The float op reads NCHW float, so the INT8 graph wrapped it
// in a uint8 Transpose, a DequantizeLinear, a QuantizeLinear and a Transpose back: four passes over the map around
// the op's three. This op reads the convolution's uint8 NHWC output as it is and writes uint8 NHWC, a quarter of the
// float op's bytes. The statistics and the gate are the float op's (sge_math.h: the same moments about the known
// group mean, the same Gate and sigmoid, the same lane trees), computed on x less its zero point's constant; the
// output pass works in the output's quantised units.
//
// A unit is the channels of every position that one call works on (sge_q_shape.h); position i of the unit's channel
// vector k is at x[i·C + k·B], B this build's vector width. The channel sums are exact (int32 over the uint8 values).
#pragma once

#include <immintrin.h>  // SSE2 in every x86-64 build; AVX2 and AVX-512 where the build has them

#include "sge_math.h"
#include "sge_q_shape.h"

namespace sge {
namespace SGE_ISA {

// B uint8 values widened to int32 lanes, and back (values already in [0, 255]). Intrinsics: GCC's
// __builtin_convertvector between uint8 and int32 vectors took each byte apart in general registers.
template <int B>
inline I<B> load_u8(const uint8_t* p) {
#if defined(__AVX512F__)
  if constexpr (B == 16)  // the zero-masked form: the unmasked one trips GCC 12's -Wmaybe-uninitialized
    return (I<B>)_mm512_maskz_cvtepu8_epi32(0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#endif
#if defined(__AVX2__)
  if constexpr (B == 8) return (I<B>)_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
#endif
  if constexpr (B == 4) {  // SSE2: unpack with zeros twice
    int32_t word;
    __builtin_memcpy(&word, p, sizeof(word));
    const __m128i zero = _mm_setzero_si128();
    return (I<B>)_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(word), zero), zero);
  }
  static_assert(B == 4 || B == 8 || B == 16, "4, 8 or 16 lanes");
  return I<B>{};
}

template <int B>
inline void store_u8(uint8_t* p, I<B> v) {
#if defined(__AVX512F__)
  if constexpr (B == 16)  // zero-masked, as in load_u8
    return _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_maskz_cvtepi32_epi8(0xFFFF, (__m512i)v));
#endif
#if defined(__AVX2__)
  if constexpr (B == 8) {
    const __m256i w = (__m256i)v;
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    return _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(words, words));
  }
#endif
  if constexpr (B == 4) {  // SSE2: signed packs are exact for values in [0, 255]
    const __m128i words = _mm_packs_epi32((__m128i)v, (__m128i)v);
    const int32_t word = _mm_cvtsi128_si32(_mm_packus_epi16(words, words));
    __builtin_memcpy(p, &word, sizeof(word));
  }
}

// q as a float, exact: the uint8 itself, or less its zero point.
template <int B>
inline F<B> q_float(const uint8_t* p, int32_t zero = 0) {
  return __builtin_convertvector(load_u8<B>(p) - zero, F<B>);
}

// The statistics work on x' = x_scale · q: x less a constant per channel, x_scale · x_zero, so each group's map is
// t' = Σ m_c · x'_c = t + a constant per group, which the standardisation (t − mean t) / (std t + eps) takes away
// exactly; only the map's known mean changes (q_group_centre). One multiply a value instead of three.

// Per channel of `vectors` vectors, from exact integer sums over the unit's rows (K vectors a sweep): coeff =
// x_scale · m (m the channel's mean of x, the gate's weights for raw q) and x'-mean = x_scale · mean(q).
template <int B, int K>
inline void q_channel_means(const QProblem& p, const uint8_t* x, int64_t vectors, float* coeff, float* x_mean) {
  const int64_t size = q_hw(p.shape), stride = p.shape.c;
  for (int64_t first = 0; first < vectors; first += K) {  // K vectors a sweep over the rows (vectors: a multiple of K)
    I<B> sums[K] = {};
    for (int64_t i = 0; i < size; ++i)
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) sums[k] += load_u8<B>(x + i * stride + (first + k) * B);
    for (int k = 0; k < K; ++k) {
      const F<B> q_mean = __builtin_convertvector(sums[k], F<B>) / static_cast<float>(size);
      store<B>(coeff + (first + k) * B, (q_mean - static_cast<float>(p.x_zero)) * (p.x_scale * p.x_scale));
      store<B>(x_mean + (first + k) * B, q_mean * p.x_scale);
    }
  }
}

// Lane l of the result: the mean of t' for group l % per, Σ_{c∈g} m_c · mean(x'_c) = Σ coeff_c · x'-mean_c / x_scale,
// in double (the unit's channels in order, as group_means).
template <int B, int per>
inline F<B> q_group_centre(const QProblem& p, const float* coeff, const float* x_mean, int64_t unit_channels) {
  double mu[per] = {};
  const int64_t cg = unit_channels / per;
  for (int k = 0; k < per; ++k)
    for (int64_t c = k * cg; c < (k + 1) * cg; ++c) mu[k] += static_cast<double>(coeff[c]) * x_mean[c];
  F<B> lanes;
  for (int l = 0; l < B; ++l) lanes[l] = static_cast<float>(mu[l % per] / p.x_scale);
  return lanes;
}

// out = quantize(relu(x · gate + identity)) over the unit's rows, in the output's units: v = (q_x − x_zero) · gate'
// + q_id · k + c, gate' = gate · x_scale / y_scale (gates_in_place's factor), k = id_scale / y_scale,
// c = y_zero − k · id_zero; the ReLU is v ≥ y_zero (where the float value is 0), then saturation at 255 and rounding
// half to even (1.5·2²³ added and taken away), as QuantizeLinear does. A NaN gate gives 0. `gates(i, k)` points at
// vector k's gates of row i.
template <int B, int L, int K, typename Gates>
inline void q_apply_gates(const QProblem& p, const uint8_t* x, const uint8_t* identity, uint8_t* out, int64_t vectors,
                          const Gates& gates) {
  const int64_t size = q_hw(p.shape), stride = p.shape.c;
  const float k_id = p.identity_scale / p.y_scale, y_zero = static_cast<float>(p.y_zero);
  const float c = y_zero - k_id * static_cast<float>(p.identity_zero);
  for (int64_t i = 0; i < size; ++i)
#pragma GCC unroll 4
    for (int k = 0; k < (K > 1 ? K : vectors); ++k) {
      const int64_t at = i * stride + k * B;
      F<B> v = q_float<B>(x + at, p.x_zero) * expand<B, L>(gates(i, k)) + (q_float<B>(identity + at) * k_id + c);
      v = v < y_zero ? splat<B>(y_zero) : v;
      v = v > 255.0f ? splat<B>(255.0f) : v;
      store_u8<B>(out + at, __builtin_convertvector((v + 12582912.0f) - 12582912.0f, I<B>));
    }
}

// Groups narrower than a vector (S = 2^L < B lanes): K vectors of channels a unit, each with its own map
// ([K][hw][B / S]), all K swept together row by row so that each pass reads a row's bytes once.
template <int B, int L, int K>
void q_unit_narrow(const QProblem& p, const uint8_t* x, const uint8_t* identity, uint8_t* out, int64_t first_group,
                   float* scratch) {
  constexpr int S = 1 << L, per = B / S;
  const QShape& s = p.shape;
  const int64_t size = q_hw(s), stride = s.c;
  float* coeff = scratch;                    // [K][B]
  float* x_mean = scratch + K * B;           // [K][B]
  float* similarity = scratch + 2 * K * B;  // [K][hw][per]: the maps, then the gates
  q_channel_means<B, K>(p, x, K, coeff, x_mean);
  F<B> mu[K], weight[K];
  Moments<B> moments[K];
  for (int k = 0; k < K; ++k) {
    mu[k] = q_group_centre<B, per>(p, coeff + k * B, x_mean + k * B, B);
    weight[k] = load<B>(coeff + k * B);
  }
  const auto trees = [&](int64_t i0, int64_t count) {  // positions i0 .. i0 + count − 1 of every vector
#pragma GCC unroll 4
    for (int k = 0; k < K; ++k) {
      F<B> v[S] = {};
#pragma GCC unroll 16
      for (int j = 0; j < S; ++j)
        if (j < count) v[j] = q_float<B>(x + (i0 + j) * stride + k * B) * weight[k];
      const F<B> c = lane_tree<B, S>(v);
      float* map = similarity + (k * size + i0) * per;
      if (count == S) {
        store<B>(map, c);
        accumulate<B>(moments[k], c, mu[k]);
      } else {
        store_part<B>(map, c, count * per);
        accumulate_part<B>(moments[k], c, mu[k], count * per);
      }
    }
  };
  int64_t i0 = 0;
  for (; i0 + S <= size; i0 += S) trees(i0, S);
  if (i0 < size) trees(i0, size - i0);
  for (int k = 0; k < K; ++k) {
    const int64_t g = first_group + k * per;
    float* map = similarity + k * size * per;
    const Gate<B, per> gate(moments[k], mu[k], size, p.gamma + g, p.beta + g, s.eps, map);
    gates_in_place<B, per>(map, size * per, gate, p.x_scale / p.y_scale);
  }
  q_apply_gates<B, L, K>(p, x, identity, out, K,
                         [&](int64_t i, int k) { return similarity + (k * size + i) * per; });
}

// Groups of whole vectors (C/G = count · B): one group a unit, one map ([hw]).
template <int B>
void q_unit_wide(const QProblem& p, const uint8_t* x, const uint8_t* identity, uint8_t* out, int64_t group,
                 float* scratch) {
  constexpr int L = __builtin_ctz(B);
  const QShape& s = p.shape;
  const int64_t size = q_hw(s), count = q_group_channels(s) / B, stride = s.c;
  float* coeff = scratch;                        // [count][B]
  float* x_mean = scratch + count * B;           // [count][B]
  float* similarity = scratch + 2 * count * B;  // [hw]: the map, then the gates
  q_channel_means<B, 1>(p, x, count, coeff, x_mean);
  const F<B> mu = q_group_centre<B, 1>(p, coeff, x_mean, count * B);
  const auto product = [&](int64_t i) {
    F<B> sum = q_float<B>(x + i * stride) * load<B>(coeff);
    for (int64_t b = 1; b < count; ++b) sum += q_float<B>(x + i * stride + b * B) * load<B>(coeff + b * B);
    return sum;
  };
  const Moments<B> moments = map_by_trees<B, L>(size, product, mu, similarity);
  const Gate<B, 1> gate(moments, mu, size, p.gamma + group, p.beta + group, s.eps, similarity);
  gates_in_place<B, 1>(similarity, size, gate, p.x_scale / p.y_scale);
  q_apply_gates<B, L, 1>(p, x, identity, out, count, [&](int64_t i, int) { return similarity + i; });
}

template <int B, int L>
inline void q_unit_of(const QProblem& p, int64_t n, int64_t u, float* scratch) {
  const QShape& s = p.shape;
  const int64_t uc = q_unit_channels(s, B), offset = n * q_hw(s) * s.c + u * uc;
  const int64_t first_group = u * uc / q_group_channels(s);
  const uint8_t *x = p.x + offset, *identity = p.identity + offset;
  uint8_t* out = p.out + offset;
  if constexpr ((1 << L) == B) {
    q_unit_wide<B>(p, x, identity, out, first_group, scratch);
  } else {
    switch (uc / B) {
      case 4: return q_unit_narrow<B, L, 4>(p, x, identity, out, first_group, scratch);
      case 2: return q_unit_narrow<B, L, 2>(p, x, identity, out, first_group, scratch);
      default: return q_unit_narrow<B, L, 1>(p, x, identity, out, first_group, scratch);
    }
  }
}

template <int B>
inline void q_unit_blocked(const QProblem& p, int64_t n, int64_t u, float* scratch) {
  const int64_t cg = q_group_channels(p.shape);
  switch (cg < B ? cg : B) {  // lanes per group within a vector: 1, 2, 4, 8 or 16
    case 1: return q_unit_of<B, 0>(p, n, u, scratch);
    case 2: return q_unit_of<B, 1>(p, n, u, scratch);
    case 4: return q_unit_of<B, 2>(p, n, u, scratch);
    case 8:
      if constexpr (B >= 8) return q_unit_of<B, 3>(p, n, u, scratch);
      return;
    default:
      if constexpr (B == 16) return q_unit_of<B, 4>(p, n, u, scratch);
  }
}

// Runs unit `item` of the flattened (image, unit) range; the shape passed q_shape_problem() for this width.
inline void run_q_unit_impl(const QProblem& p, int64_t item, float* scratch) {
  const int64_t per_image = q_units_per_image(p.shape, kNativeLanes);
  q_unit_blocked<kNativeLanes>(p, item / per_image, item % per_image, scratch);
}

}  // namespace SGE_ISA
}  // namespace sge
