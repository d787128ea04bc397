// The problem one SgeResidual call solves, shared by the dispatcher (baseline x86-64) and every ISA build of the
// maths. Plain data only; the helpers are `static` so that each translation unit keeps its own copy: an inline
// function compiled with -mavx512f in one unit must never be merged with the copy the baseline unit calls.
#pragma once

#include <cstdint>

namespace sge {

struct Shape {
  int64_t n, c, h, w;
  int64_t groups;
  int64_t block;  // 0: plain NCHW; 8 or 16: ORT's NCHWc ([N, C/block, H, W, block])
  float eps;
};

struct Problem {
  const float *x, *identity, *gamma, *beta;
  float* out;  // may be x itself (ORT runs the op in place when it can)
  Shape shape;
};

static inline int64_t hw(const Shape& s) { return s.h * s.w; }
static inline int64_t group_channels(const Shape& s) { return s.c / s.groups; }

// One "unit" is the smallest run of whole groups that is contiguous in memory: a group in plain NCHW,
// max(C/G, block) channels in NCHWc.
static inline int64_t unit_channels(const Shape& s) {
  const int64_t cg = group_channels(s);
  return s.block == 0 || cg >= s.block ? cg : s.block;
}
static inline int64_t units_per_image(const Shape& s) { return s.c / unit_channels(s); }

// Floats of scratch one unit needs: the channel means of its blocks, then its similarity map (one value per group
// and position), then one vector of padding (the last position's gate is read as a whole vector).
static inline int64_t scratch_floats(const Shape& s) {
  const int64_t uc = unit_channels(s), cg = group_channels(s);
  return uc + hw(s) * (uc / cg) + 16;
}

// Why a map of these dimensions and attributes cannot run in either op's layout, or nullptr: the checks both ops
// make (sge_q_shape.h too) before any division by a dimension.
static inline const char* map_problem(int64_t n, int64_t c, int64_t h, int64_t w, int64_t groups, float eps) {
  if (n < 0 || c <= 0 || h <= 0 || w <= 0) return "x needs at least one channel and a non-empty H*W";
  if (groups <= 0) return "the groups attribute must be positive";
  if (c % groups) return "channels must be divisible by the groups attribute";
  if (h * w < 2) return "H*W must be at least 2: the unbiased std of one value is undefined";
  if (!(eps >= 0.0f)) return "eps must be a non-negative number";
  return nullptr;
}

// Why a shape cannot run, or nullptr. Checked before any division by a dimension.
static inline const char* shape_problem(const Shape& s) {
  if (const char* problem = map_problem(s.n, s.c, s.h, s.w, s.groups, s.eps)) return problem;
  if (s.block != 0 && s.block != 8 && s.block != 16) return "block must be 0 (NCHW), 8 or 16 (NCHWc)";
  const int64_t cg = group_channels(s);
  if (s.block && s.c % s.block) return "NCHWc channels must be a multiple of the block";
  if (s.block && (cg < s.block ? s.block % cg : cg % s.block))
    return "NCHWc needs a group size that divides the block or is a multiple of it";
  return nullptr;
}

// The entry point of each ISA build (sge_units.cc compiled once per instruction set, each in its own namespace).
#define SGE_DECLARE_ISA(isa)                                                \
  namespace isa {                                                           \
  void run_unit(const Problem& problem, int64_t item, float* scratch);      \
  }
SGE_DECLARE_ISA(baseline)
SGE_DECLARE_ISA(avx2)
SGE_DECLARE_ISA(avx512)
SGE_DECLARE_ISA(native)
#undef SGE_DECLARE_ISA

}  // namespace sge
