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
// value per group and position ([H·W][groups in the block]); and out = relu(x · gate + identity) with each
// position's gates expanded to lanes by one permute. The gates themselves (mean, std, sigmoid) work on the compact
// map, 1/min(C/G, B) of the data.
#pragma once

#include <cstdint>

#include "sge_shape.h"

#ifndef SGE_ISA
#error "define SGE_ISA: the namespace of this instruction set's build (see build.py)"
#endif

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
  return v < 0.0f ? F<B>{} : v;  // NaN stays NaN, as in torch.relu
}

// exp(x) by Cody-Waite reduction (ln 2 in two parts, the first exact in 9 bits) and a degree-6 polynomial: relative
// error ~2e-7 on |x| ≤ 88; beyond ±88 the argument saturates; NaN propagates.
template <int B>
inline F<B> exp_approx(F<B> x) {
  x = x > 88.0f ? splat<B>(88.0f) : x;
  x = x < -88.0f ? splat<B>(-88.0f) : x;
  I<B> k = __builtin_convertvector(x * 1.44269504088896341f + 128.5f, I<B>) - 128;  // floor(x·log2 e + 0.5)
  k = x == x ? k : I<B>{};  // NaN: keep the exponent defined; r (and so the result) is NaN already
  const F<B> n = __builtin_convertvector(k, F<B>);
  const F<B> r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  F<B> p = splat<B>(1.0f / 720.0f);
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I<B> bits = (k + 127) << 23;
  return p * (F<B>)bits;  // a vector cast keeps the bits
}

// Turns a compact similarity map s ([hw][per] floats, group k of the unit at s[i·per + k]; per divides B) into its
// gates σ(γ·ĉ + β) in place. Statistics per group in float lanes, corrected to the exact mean in a second pass
// (var = (Σd² − (Σd)²/n) / (n − 1) with d = c − rough mean), then folded in double.
template <int B>
void gates_from_similarity(float* s, int64_t hw, int64_t per, const float* gamma, const float* beta, float eps) {
  const int64_t count = hw * per, whole = count - count % B;
  double sums[B] = {}, squares[B] = {};
  F<B> acc0 = {}, acc1 = {};
  int64_t e = 0;
  for (; e + 2 * B <= whole; e += 2 * B) {
    acc0 += load<B>(s + e);
    acc1 += load<B>(s + e + B);
  }
  if (e < whole) acc0 += load<B>(s + e);
  const F<B> acc = acc0 + acc1;
  for (int l = 0; l < B; ++l) sums[l % per] += acc[l];
  for (e = whole; e < count; ++e) sums[e % per] += s[e];
  F<B> rough;  // the rough mean of each lane's group
  for (int l = 0; l < B; ++l) rough[l] = static_cast<float>(sums[l % per] / static_cast<double>(hw));

  F<B> d_sum = {}, d_squares = {};
  for (e = 0; e < whole; e += B) {
    const F<B> d = load<B>(s + e) - rough;
    d_sum += d;
    d_squares += d * d;
  }
  double dev[B] = {};
  for (int l = 0; l < B; ++l) {
    dev[l % per] += d_sum[l];
    squares[l % per] += d_squares[l];
  }
  for (e = whole; e < count; ++e) {
    const double d = s[e] - rough[e % per];
    dev[e % per] += d;
    squares[e % per] += d * d;
  }
  F<B> centre, scale, shift;
  for (int l = 0; l < B; ++l) {
    const int64_t k = l % per;
    const double n = static_cast<double>(hw);
    const double variance = (squares[k] - dev[k] * dev[k] / n) / (n - 1.0);  // unbiased, as torch.std
    const double std_dev = __builtin_sqrt(variance > 0.0 ? variance : 0.0);
    centre[l] = static_cast<float>(rough[l] + dev[k] / n);
    scale[l] = static_cast<float>(gamma[k] / (std_dev + eps));
    shift[l] = beta[k];
  }
  for (e = 0; e < whole; e += B) {
    const F<B> t = (load<B>(s + e) - centre) * scale + shift;
    store<B>(s + e, 1.0f / (1.0f + exp_approx<B>(-t)));
  }
  if (whole < count) {  // the tail starts at a multiple of B, so lane l still holds group l % per
    const F<B> t = (load_part<B>(s + whole, count - whole) - centre) * scale + shift;
    store_part<B>(s + whole, 1.0f / (1.0f + exp_approx<B>(-t)), count - whole);
  }
}

// Pairwise sums of adjacent lanes of a and b: [a0+a1, a2+a3, …, b0+b1, b2+b3, …].
template <int B>
inline F<B> pair_sums(F<B> a, F<B> b) {
  if constexpr (B == 8) {
    return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14) +
           __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
  } else {
    static_assert(B == 16, "8 or 16 lanes");
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

// Reduces S = 2^L vectors of lane products to one: lane j·B/S + k holds the sum of group k (S lanes) of v[j].
template <int B, int S>
inline F<B> lane_tree(const F<B>* v) {
  if constexpr (S == 1) {
    return v[0];
  } else {
    F<B> halves[S / 2];
#pragma GCC unroll 16
    for (int j = 0; j < S / 2; ++j) halves[j] = pair_sums<B>(v[2 * j], v[2 * j + 1]);
    return lane_tree<B, S / 2>(halves);
  }
}

// The similarity map of a unit ([hw][B / 2^L] floats): per position, the lane products x · mean summed over the
// unit's blocks, then over each group's lanes by lane_tree, S positions at a time.
template <int B, int L>
inline void similarity_map(const float* x, const float* identity, int64_t size, int64_t blocks, int64_t stride,
                           const float* means, float* similarity) {
  constexpr int S = 1 << L, per = B / S;
  const F<B> m0 = load<B>(means);
  const auto product = [&](int64_t i) {
    // identity is read only by the last pass: fetched into cache now, while this pass computes
    if ((i * B) % 16 == 0) __builtin_prefetch(identity + i * B, 0, 3);
    F<B> sum = load<B>(x + i * B) * m0;
    for (int64_t b = 1; b < blocks; ++b) {
      if ((i * B) % 16 == 0) __builtin_prefetch(identity + b * stride + i * B, 0, 3);
      sum += load<B>(x + b * stride + i * B) * load<B>(means + b * B);
    }
    return sum;
  };
  int64_t i0 = 0;
  for (; i0 + S <= size; i0 += S) {
    F<B> v[S];
#pragma GCC unroll 16
    for (int j = 0; j < S; ++j) v[j] = product(i0 + j);
    store<B>(similarity + i0 * per, lane_tree<B, S>(v));  // S positions × per groups = B values
  }
  if (i0 < size) {
    const int64_t count = size - i0;
    F<B> v[S] = {};
    for (int64_t j = 0; j < count; ++j) v[j] = product(i0 + j);
    store_part<B>(similarity + i0 * per, lane_tree<B, S>(v), count * per);
  }
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

  if (blocks == 1)
    similarity_map<B, L>(x, identity, size, 1, stride, means, similarity);
  else
    similarity_map<B, L>(x, identity, size, blocks, stride, means, similarity);

  const int64_t first_group = u * uc / group_channels(s);
  gates_from_similarity<B>(similarity, size, per, p.gamma + first_group, p.beta + first_group, s.eps);

  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * stride;
    const float* ib = identity + b * stride;
    float* ob = out + b * stride;
    for (int64_t i = 0; i < size; ++i) {
      const F<B> gate = expand<B, L>(similarity + i * per);
      store<B>(ob + i * B, relu<B>(load<B>(xb + i * B) * gate + load<B>(ib + i * B)));
    }
  }
}

// One unit of plain NCHW: a single group, channels [g·cg, (g+1)·cg) of image n, vectorised along H·W.
inline void unit_nchw(const Problem& p, int64_t n, int64_t g, float* scratch) {
  constexpr int W = 16;
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
  for (int64_t i = 0; i < size; i += W) {
    const int64_t count = size - i < W ? size - i : W;
    F<W> acc = {};
    for (int64_t c = 0; c < cg; ++c)
      acc += (count == W ? load<W>(x + c * size + i) : load_part<W>(x + c * size + i, count)) * means[c];
    store_part<W>(similarity + i, acc, count);
  }
  gates_from_similarity<W>(similarity, size, 1, p.gamma + g, p.beta + g, s.eps);
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

// Runs unit `item` of the flattened (image, unit) range; the shape passed shape_problem().
inline void run_unit_impl(const Problem& p, int64_t item, float* scratch) {
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
