// Fused Spatial Group-wise Enhance + residual add + ReLU (Li, Hu, Yang, arXiv:1905.09646), float32.
//
// out = relu(x · sigmoid(γ_g · ĉ + β_g) + identity), with the official numerics (implus/PytorchInsight):
// per group g of C/G channels, m_c = mean over H·W of x_c; c_i = Σ_{c∈g} m_c · x_c,i; ĉ = (c − mean(c)) /
// (std(c) + eps), std unbiased and eps added to the std. One "unit" is the smallest run of whole groups that is
// contiguous in memory: a group in plain NCHW, max(C/G, block) channels in ORT's blocked NCHWc layout
// ([N, C/block, H, W, block]). A unit's map (≤ 100 KB in ResNet-50 with 8-lane blocks) stays in L2 across the passes, so the
// block reads x and identity once from memory and writes out once.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace sge {

struct Shape {
  int64_t n, c, h, w;
  int64_t groups;
  int64_t block;  // 0: plain NCHW; 8 or 16: ORT's NCHWc
  float eps;

  int64_t hw() const { return h * w; }
  int64_t group_channels() const { return c / groups; }
  int64_t unit_channels() const {
    return block == 0 || group_channels() >= block ? group_channels() : block;
  }
  int64_t units_per_image() const { return c / unit_channels(); }
};

// exp(x) by Cody-Waite reduction (with fma, so that -fassociative-math cannot merge the two ln 2 parts) and a
// degree-6 polynomial: relative error ~2e-7 on |x| ≤ 88; GCC vectorises the loops that call it. NaN propagates;
// beyond ±88 the argument saturates.
inline float fast_exp(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -88.0f ? -88.0f : x;
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = std::fma(n, 2.12194440e-4f, std::fma(n, -0.693359375f, x));
  n = n == n ? n : 0.0f;  // NaN: keep the int conversion defined; r (and so the result) is NaN already
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Normalises one group's similarity map c (length hw) in place into its gate σ(γ·ĉ + β).
inline void gate_from_similarity(float* c, int64_t hw, float gamma, float beta, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < hw; ++i) sum += c[i];
  const double mean = sum / static_cast<double>(hw);
  double squares = 0.0;
  for (int64_t i = 0; i < hw; ++i) {
    const double d = c[i] - mean;
    squares += d * d;
  }
  const double std_dev = std::sqrt(squares / static_cast<double>(hw - 1));  // unbiased, as torch.std
  const float centre = static_cast<float>(mean);
  const float scale = static_cast<float>(gamma / (std_dev + eps));
  for (int64_t i = 0; i < hw; ++i) c[i] = 1.0f / (1.0f + fast_exp(-((c[i] - centre) * scale + beta)));
}

// One unit of plain NCHW: a single group, channels [g·cg, (g+1)·cg) of image n. `scratch` holds hw floats.
inline void unit_nchw(const float* x, const float* identity, const float* gamma, const float* beta, float* out,
                      const Shape& s, int64_t n, int64_t g, std::vector<float>& scratch) {
  const int64_t hw = s.hw(), cg = s.group_channels();
  const int64_t offset = (n * s.c + g * cg) * hw;
  x += offset;
  identity += offset;
  out += offset;
  scratch.assign(hw, 0.0f);
  float* similarity = scratch.data();
  for (int64_t c = 0; c < cg; ++c) {
    const float* xc = x + c * hw;
    float sum = 0.0f;
    for (int64_t i = 0; i < hw; ++i) sum += xc[i];
    const float mean = sum / static_cast<float>(hw);
    for (int64_t i = 0; i < hw; ++i) similarity[i] += mean * xc[i];
  }
  gate_from_similarity(similarity, hw, gamma[g], beta[g], s.eps);
  for (int64_t c = 0; c < cg; ++c) {
    const float* xc = x + c * hw;  // out may be x itself (ORT runs the op in place when it can)
    const float* ic = identity + c * hw;
    float* oc = out + c * hw;
    for (int64_t i = 0; i < hw; ++i) {
      const float v = xc[i] * similarity[i] + ic[i];
      oc[i] = v < 0.0f ? 0.0f : v;  // NaN stays NaN, as in torch.relu
    }
  }
}

// Weighted sums of the lanes of 8 consecutive B-lane rows v[0..7] (stored contiguously): out[j] = Σ_l v[j][l]·w[l].
template <int B>
inline void lane_dots8(const float* v, const float* w, float* out) {
#if defined(__AVX__)
  if constexpr (B == 8) {
    const __m256 weight = _mm256_loadu_ps(w);
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = _mm256_mul_ps(_mm256_loadu_ps(v + j * 8), weight);
    const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(r[0], r[1]), _mm256_hadd_ps(r[2], r[3]));
    const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(r[4], r[5]), _mm256_hadd_ps(r[6], r[7]));
    // a = [s0 s1 s2 s3 | s0' s1' s2' s3'] (low and high halves of each row), b likewise for rows 4..7
    const __m256 lows = _mm256_permute2f128_ps(a, b, 0x20), highs = _mm256_permute2f128_ps(a, b, 0x31);
    _mm256_storeu_ps(out, _mm256_add_ps(lows, highs));
    return;
  }
#endif
  for (int j = 0; j < 8; ++j) {
    float sum = 0.0f;
    for (int l = 0; l < B; ++l) sum += v[j * B + l] * w[l];
    out[j] = sum;
  }
}

// B float lanes as one GCC/Clang vector (AVX: one register for B = 8, two for B = 16; narrower ISAs split it).
template <int B>
struct Lanes {
  typedef float type __attribute__((vector_size(sizeof(float) * B)));
};

template <int B>
inline typename Lanes<B>::type load(const float* p) {
  typename Lanes<B>::type v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <int B>
inline void store(float* p, typename Lanes<B>::type v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// The gate of each lane at position i when groups of cg < B channels share a block: lane l has group l / cg.
template <int B>
inline typename Lanes<B>::type gate_lanes(const float* gates, int64_t hw, int64_t cg, int64_t i) {
  typename Lanes<B>::type v;
#if defined(__AVX__)
  if constexpr (B == 8) {
    if (cg == 4) {
      const __m256 halves = _mm256_set_m128(_mm_set1_ps(gates[hw + i]), _mm_set1_ps(gates[i]));
      __builtin_memcpy(&v, &halves, sizeof(v));
      return v;
    }
  }
#endif
  for (int l = 0; l < B; ++l) v[l] = gates[(l / cg) * hw + i];
  return v;
}

// One unit of NCHWc: `unit_channels()` channels (whole blocks) starting at channel u·unit of image n, holding
// unit/cg groups. Each pass over x works on whole B-lane vectors.
template <int B>
void unit_nchwc(const float* x, const float* identity, const float* gamma, const float* beta, float* out,
                const Shape& s, int64_t n, int64_t u, std::vector<float>& scratch) {
  using V = typename Lanes<B>::type;
  const int64_t hw = s.hw(), cg = s.group_channels(), uc = s.unit_channels();
  const int64_t blocks = uc / B, groups_in_unit = uc / cg, first_group = u * uc / cg;
  const int64_t offset = (n * s.c + u * uc) * hw;  // blocks of one image are consecutive: [C/B][H·W][B]
  x += offset;
  identity += offset;
  out += offset;

  // The similarity map is a weighted lane sum of `rows` ([hw][B]): of x itself, weighted by the channel means, when
  // the unit is one block; else of the per-lane sums over the unit's blocks (scratch), weighted by 1.
  // scratch: lanes [hw][B] (only for several blocks), similarity [groups_in_unit][hw] (then the gates)
  scratch.resize((blocks > 1 ? hw * B : 0) + groups_in_unit * hw);
  float* lanes = scratch.data();
  float* similarity = lanes + (blocks > 1 ? hw * B : 0);
  float weight[B];
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * hw * B;
    V even = {}, odd = {};  // two accumulators: half the add-latency chain
    int64_t i = 0;
    for (; i + 2 <= hw; i += 2) {
      even += load<B>(xb + i * B);
      odd += load<B>(xb + (i + 1) * B);
    }
    if (i < hw) even += load<B>(xb + i * B);
    const V mean = (even + odd) / static_cast<float>(hw);
    if (blocks == 1) {
      store<B>(weight, mean);
      break;
    }
    for (i = 0; i < hw; ++i) {
      const V product = load<B>(xb + i * B) * mean;
      store<B>(lanes + i * B, b == 0 ? product : load<B>(lanes + i * B) + product);
    }
  }
  if (blocks > 1)
    for (int l = 0; l < B; ++l) weight[l] = 1.0f;
  const float* rows = blocks == 1 ? x : lanes;
  if (groups_in_unit == 1) {  // the group spans whole blocks: its similarity is the sum of all B lanes
    int64_t i = 0;
    for (; i + 8 <= hw; i += 8) lane_dots8<B>(rows + i * B, weight, similarity + i);
    for (; i < hw; ++i) {
      float sum = 0.0f;
      for (int l = 0; l < B; ++l) sum += rows[i * B + l] * weight[l];
      similarity[i] = sum;
    }
  } else {
    int64_t i = 0;
#if defined(__AVX__)
    if constexpr (B == 8) {
      if (cg == 4) {  // two groups per block: hadd twice gives both halves' sums for 4 positions
        const __m256 w = _mm256_loadu_ps(weight);
        float* first = similarity;
        float* second = similarity + hw;
        for (; i + 4 <= hw; i += 4) {
          const float* v = rows + i * B;
          const __m256 r0 = _mm256_mul_ps(_mm256_loadu_ps(v), w), r1 = _mm256_mul_ps(_mm256_loadu_ps(v + 8), w);
          const __m256 r2 = _mm256_mul_ps(_mm256_loadu_ps(v + 16), w), r3 = _mm256_mul_ps(_mm256_loadu_ps(v + 24), w);
          const __m256 quads = _mm256_hadd_ps(_mm256_hadd_ps(r0, r1), _mm256_hadd_ps(r2, r3));
          _mm_storeu_ps(first + i, _mm256_castps256_ps128(quads));  // [first: i..i+3 | second: i..i+3]
          _mm_storeu_ps(second + i, _mm256_extractf128_ps(quads, 1));
        }
      }
    }
#endif
    for (; i < hw; ++i)
      for (int64_t k = 0; k < groups_in_unit; ++k) {
        float sum = 0.0f;
        for (int64_t l = k * cg; l < (k + 1) * cg; ++l) sum += rows[i * B + l] * weight[l];
        similarity[k * hw + i] = sum;
      }
  }
  for (int64_t k = 0; k < groups_in_unit; ++k)
    gate_from_similarity(similarity + k * hw, hw, gamma[first_group + k], beta[first_group + k], s.eps);

  const V zero = {};
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * hw * B;
    const float* ib = identity + b * hw * B;
    float* ob = out + b * hw * B;
    for (int64_t i = 0; i < hw; ++i) {
      const V gate = groups_in_unit == 1 ? zero + similarity[i] : gate_lanes<B>(similarity, hw, cg, i);
      const V v = load<B>(xb + i * B) * gate + load<B>(ib + i * B);
      store<B>(ob + i * B, v < zero ? zero : v);  // NaN stays NaN
    }
  }
}

// Runs unit `item` of the flattened (image, unit) range.
inline void run_unit(const float* x, const float* identity, const float* gamma, const float* beta, float* out,
                     const Shape& s, int64_t item, std::vector<float>& scratch) {
  const int64_t per_image = s.units_per_image();
  const int64_t n = item / per_image, u = item % per_image;
  if (s.block == 0)
    unit_nchw(x, identity, gamma, beta, out, s, n, u, scratch);
  else if (s.block == 8)
    unit_nchwc<8>(x, identity, gamma, beta, out, s, n, u, scratch);
  else
    unit_nchwc<16>(x, identity, gamma, beta, out, s, n, u, scratch);
}

// Why a shape cannot run, or nullptr.
inline const char* shape_problem(const Shape& s) {
  if (s.groups <= 0 || s.c % s.groups) return "channels must be divisible by the groups attribute";
  if (s.hw() < 2) return "H*W must be at least 2: the unbiased std of one value is undefined";
  if (s.block != 0 && s.block != 8 && s.block != 16) return "block must be 0 (NCHW), 8 or 16 (NCHWc)";
  if (s.block && s.c % s.block) return "NCHWc channels must be a multiple of the block";
  if (s.block && (s.group_channels() < s.block ? s.block % s.group_channels() : s.group_channels() % s.block))
    return "NCHWc needs a group size that divides the block or is a multiple of it";
  return nullptr;
}

}  // namespace sge
