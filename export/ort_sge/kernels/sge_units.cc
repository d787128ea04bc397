// The SGE maths of one instruction set, for the float op and the quantised-IO op: build.py compiles this file once
// per ISA (-DSGE_ISA=avx512 -mavx512f …), and sge_ort_op.cc picks the build that the CPU supports at run time.
#include "sge_math.h"
#include "sge_q_math.h"

namespace sge {
namespace SGE_ISA {

void run_unit(const Problem& problem, int64_t item, float* scratch) { run_unit_impl(problem, item, scratch); }

const int64_t q_lanes = kNativeLanes;
void run_q_unit(const QProblem& problem, int64_t item, float* scratch) { run_q_unit_impl(problem, item, scratch); }

}  // namespace SGE_ISA
}  // namespace sge
