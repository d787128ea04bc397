// OpenVINO custom operation sgedeploy::SgeResidual: relu(x · sigmoid(γ_g · ĉ + β_g) + identity).
//
// Spatial Group-wise Enhance (Li, Hu, Yang, arXiv:1905.09646) with the official numerics (implus/PytorchInsight):
// per group g of C/G channels, m_c = mean over H·W of x_c; s_i = Σ_{c∈g} m_c · x_c,i; ĉ = (s − mean(s)) /
// (std(s) + eps), std unbiased, eps added to the std; then the residual add and ReLU of the ResNet block.
// Inputs x and identity (N, C, H, W) in f32 or bf16, γ and β (G) in f32; the statistics are accumulated in f32
// and normalised in f64 whatever the tensors' type. Work is split over (image, group) pairs with OpenVINO's
// parallel_for (the CPU plugin's threads). The hot loops are compiled for AVX-512, AVX2 and plain x86-64 and
// picked at load time (GCC target_clones), so one library runs on any x86-64 CPU.
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/parallel.hpp>
#include <openvino/core/type/bfloat16.hpp>
#include <openvino/frontend/extension/op.hpp>
#include <openvino/op/op.hpp>

#define SGE_ISA ov_op  // this file's own namespace for the ONNX Runtime kernel's maths (see sge_math.h)
#include "../ort_sge/kernels/sge_math.h"  // sge::ov_op::sigmoid

#define SGE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace sgedeploy {
namespace {

// Element access: f32 as is; bf16 (stored as its 16 high bits) widened by a shift and narrowed with
// round-to-nearest-even, quiet NaN kept; integer arithmetic only, so that the loops vectorise.
inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const uint16_t* p, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
  float v;
  __builtin_memcpy(&v, &bits, sizeof(v));
  return v;
}
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(uint16_t* p, int64_t i, float v) {
  uint32_t bits;
  __builtin_memcpy(&bits, &v, sizeof(bits));
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const bool nan = (bits & 0x7FFFFFFFu) > 0x7F800000u;
  p[i] = static_cast<uint16_t>(nan ? ((bits >> 16) | 0x40u) : rounded);
}
inline float relu(float v) { return v > 0.0f ? v : (v == v ? 0.0f : v); }  // NaN stays NaN, as torch.relu

// Normalised similarity → gate: σ(γ·(s − mean)/(std + eps) + β) with f64 statistics (std unbiased).
struct GroupStats {
  float centre, scale;
};
inline GroupStats group_stats(double mean, double squares_about_mean, int64_t count, float gamma, float eps) {
  const double std_dev = std::sqrt(squares_about_mean / static_cast<double>(count - 1));
  return {static_cast<float>(mean), static_cast<float>(gamma / (std_dev + eps))};
}
inline float gate_of(float s, GroupStats st, float beta) {
  return sge::ov_op::sigmoid<4>(sge::ov_op::splat<4>((s - st.centre) * st.scale + beta))[0];
}

// One (image, group) unit is contiguous in NCHW; units run in parallel.
template <typename T>
SGE_CLONES void nchw_accumulate(const T* xc, float* sim, int64_t hw) {
  float sum = 0.0f;
  for (int64_t i = 0; i < hw; ++i) sum += load(xc, i);
  const float mean = sum / static_cast<float>(hw);
  for (int64_t i = 0; i < hw; ++i) sim[i] += mean * load(xc, i);
}

SGE_CLONES void nchw_gate(float* sim, int64_t hw, float gamma, float beta, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < hw; ++i) sum += sim[i];
  const double mean = sum / static_cast<double>(hw);
  double squares = 0.0;  // about the mean: two passes, as the reference
  for (int64_t i = 0; i < hw; ++i) squares += (sim[i] - mean) * (sim[i] - mean);
  const GroupStats st = group_stats(mean, squares, hw, gamma, eps);
  for (int64_t i = 0; i < hw; ++i) sim[i] = gate_of(sim[i], st, beta);
}

template <typename T>
SGE_CLONES void nchw_apply(const T* xc, const T* ic, const float* g, T* oc, int64_t hw) {
  for (int64_t i = 0; i < hw; ++i) store(oc, i, relu(load(xc, i) * g[i] + load(ic, i)));
}

template <typename T>
void run(const T* x, const T* identity, const float* gamma, const float* beta, T* out, int64_t n, int64_t c,
              int64_t hw, int64_t groups, float eps) {
  const int64_t cg = c / groups;
  ov::parallel_for(n * groups, [&](int64_t unit) {
    const int64_t g = unit % groups;
    const int64_t offset = unit * cg * hw;
    thread_local std::vector<float> sim;
    sim.assign(hw, 0.0f);
    for (int64_t k = 0; k < cg; ++k) nchw_accumulate(x + offset + k * hw, sim.data(), hw);
    nchw_gate(sim.data(), hw, gamma[g], beta[g], eps);
    for (int64_t k = 0; k < cg; ++k) nchw_apply(x + offset + k * hw, identity + offset + k * hw, sim.data(),
                                                 out + offset + k * hw, hw);
  });
}

}  // namespace

class SgeResidual : public ov::op::Op {
 public:
  OPENVINO_OP("SgeResidual", "sgedeploy");

  SgeResidual() = default;
  SgeResidual(const ov::OutputVector& args, int64_t groups, float eps) : Op(args), groups_(groups), eps_(eps) {
    constructor_validate_and_infer_types();
  }

  void validate_and_infer_types() override {
    const auto& shape = get_input_partial_shape(0);
    NODE_VALIDATION_CHECK(this, shape.rank().is_dynamic() || shape.rank().get_length() == 4,
                          "SgeResidual takes (N, C, H, W); got rank ", shape.rank());
    NODE_VALIDATION_CHECK(this, groups_ > 0, "SgeResidual needs groups > 0; got ", groups_);
    set_output_type(0, get_input_element_type(0), shape);
  }

  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
    return std::make_shared<SgeResidual>(args, groups_, eps_);
  }

  bool visit_attributes(ov::AttributeVisitor& visitor) override {
    visitor.on_attribute("groups", groups_);
    visitor.on_attribute("eps", eps_);
    return true;
  }

  bool has_evaluate() const override {
    const auto type = get_input_element_type(0);
    return type == ov::element::f32 || type == ov::element::bf16;
  }

  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    const auto& x = inputs[0];
    const ov::Shape shape = x.get_shape();
    if (shape.size() != 4) return false;
    const int64_t n = shape[0], c = shape[1], hw = shape[2] * shape[3];
    if (c % groups_ != 0 || hw < 2) return false;
    if (inputs[2].get_element_type() != ov::element::f32 || inputs[3].get_element_type() != ov::element::f32)
      return false;
    outputs[0].set_shape(shape);
    const float* gamma = inputs[2].data<const float>();
    const float* beta = inputs[3].data<const float>();
    const auto type = x.get_element_type();
    if (type == ov::element::f32) {
      run(x.data<const float>(), inputs[1].data<const float>(), gamma, beta, outputs[0].data<float>(), n, c, hw,
          groups_, eps_);
    } else if (type == ov::element::bf16) {
      auto bits = [](const ov::Tensor& t) { return static_cast<const uint16_t*>(t.data()); };
      run(bits(x), bits(inputs[1]), gamma, beta, static_cast<uint16_t*>(outputs[0].data()), n, c, hw, groups_, eps_);
    } else {
      return false;
    }
    return true;
  }

 private:
  int64_t groups_ = 1;
  float eps_ = 1e-5f;
};

}  // namespace sgedeploy

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>(
    {std::make_shared<ov::OpExtension<sgedeploy::SgeResidual>>(),
     std::make_shared<ov::frontend::OpExtension<sgedeploy::SgeResidual>>(
         "SgeResidual",
         std::map<std::string, std::string>{{"groups", "groups"}, {"eps", "eps"}})}));
