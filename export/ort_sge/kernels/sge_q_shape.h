// The problem one SgeResidualQ call solves (the quantised-IO form of SgeResidual, for ONNX Runtime's INT8 graphs),
// shared by the dispatcher and every ISA build, as sge_shape.h is for the float op. Plain data; `static` helpers.
#pragma once

#include <cstdint>

#include "sge_shape.h"  // map_problem

namespace sge {

// uint8 maps in NHWC ([N, H, W, C], channels last: ORT's layout for QLinearConv on x86), each with its scale and
// zero point: value = scale · (q − zero_point).
struct QShape {
  int64_t n, h, w, c;
  int64_t groups;
  float eps;
};

struct QProblem {
  const uint8_t *x, *identity;
  float x_scale, identity_scale, y_scale;
  int32_t x_zero, identity_zero, y_zero;
  const float *gamma, *beta;
  uint8_t* out;  // may be x itself
  QShape shape;
};

static inline int64_t q_hw(const QShape& s) { return s.h * s.w; }
static inline int64_t q_group_channels(const QShape& s) { return s.c / s.groups; }

// A unit, the channels of every position that one call works on: one group when groups are a vector wide or wider;
// else up to four vectors of channels (several whole groups; 64 bytes, a cache line of each row, with 16 lanes).
// `lanes` is the build's vector width (16, 8 or 4 floats).
static inline int64_t q_unit_channels(const QShape& s, int64_t lanes) {
  const int64_t cg = q_group_channels(s);
  if (cg >= lanes) return cg;
  const int64_t vectors = s.c / lanes;
  return lanes * (vectors % 4 == 0 ? 4 : vectors % 2 == 0 ? 2 : 1);
}
static inline int64_t q_units_per_image(const QShape& s, int64_t lanes) { return s.c / q_unit_channels(s, lanes); }

// Floats of scratch one unit needs: two values per channel (its weight in the map and its mean), its similarity map
// (one value per group and position), and one vector of padding.
static inline int64_t q_scratch_floats(const QShape& s, int64_t lanes) {
  const int64_t uc = q_unit_channels(s, lanes);
  return 2 * uc + q_hw(s) * (uc / q_group_channels(s)) + 16;
}

// Why a shape cannot run with vectors of `lanes` floats, or nullptr. Checked before any division by a dimension.
static inline const char* q_shape_problem(const QShape& s, int64_t lanes) {
  if (const char* problem = map_problem(s.n, s.c, s.h, s.w, s.groups, s.eps)) return problem;
  const int64_t cg = q_group_channels(s);
  if (cg < lanes ? lanes % cg || s.c % lanes : cg % lanes)
    return "channels per group must divide the vector width or be a multiple of it (and channels a multiple of it)";
  return nullptr;
}

#define SGE_DECLARE_Q_ISA(isa)                                              \
  namespace isa {                                                           \
  extern const int64_t q_lanes;                                             \
  void run_q_unit(const QProblem& problem, int64_t item, float* scratch);   \
  }
SGE_DECLARE_Q_ISA(baseline)
SGE_DECLARE_Q_ISA(avx2)
SGE_DECLARE_Q_ISA(avx512)
SGE_DECLARE_Q_ISA(native)
#undef SGE_DECLARE_Q_ISA

}  // namespace sge
