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

#include "../kernels/sge_math.h"  // sge::fast_exp (read-only: the ONNX Runtime kernel's maths)

#define SGE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

namespace sgedeploy {
namespace {

inline float to_f32(float v) { return v; }
inline float to_f32(ov::bfloat16 v) { return static_cast<float>(v); }
inline void from_f32(float v, float* out) { *out = v; }
inline void from_f32(float v, ov::bfloat16* out) { *out = ov::bfloat16::round_to_nearest(v); }

// sim[i] += mean(x_c) · x_c[i] for one channel of length hw.
template <typename T>
SGE_CLONES void accumulate_channel(const T* xc, float* sim, int64_t hw) {
  float sum = 0.0f;
  for (int64_t i = 0; i < hw; ++i) sum += to_f32(xc[i]);
  const float mean = sum / static_cast<float>(hw);
  for (int64_t i = 0; i < hw; ++i) sim[i] += mean * to_f32(xc[i]);
}

// sim ← sigmoid(γ · (sim − mean) / (std + eps) + β), statistics in f64.
SGE_CLONES void gate(float* sim, int64_t hw, float gamma, float beta, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < hw; ++i) sum += sim[i];
  const double mean = sum / static_cast<double>(hw);
  double squares = 0.0;
  for (int64_t i = 0; i < hw; ++i) squares += (sim[i] - mean) * (sim[i] - mean);
  const double std_dev = std::sqrt(squares / static_cast<double>(hw - 1));
  const float centre = static_cast<float>(mean), scale = static_cast<float>(gamma / (std_dev + eps));
  for (int64_t i = 0; i < hw; ++i) sim[i] = 1.0f / (1.0f + sge::fast_exp(-((sim[i] - centre) * scale + beta)));
}

// out_c = relu(x_c · gate + identity_c) for one channel.
template <typename T>
SGE_CLONES void apply_channel(const T* xc, const T* ic, const float* g, T* oc, int64_t hw) {
  for (int64_t i = 0; i < hw; ++i) {
    const float v = to_f32(xc[i]) * g[i] + to_f32(ic[i]);
    from_f32(v > 0.0f ? v : (v == v ? 0.0f : v), oc + i);  // NaN stays NaN, as torch.relu
  }
}

template <typename T>
void run(const T* x, const T* identity, const float* gamma, const float* beta, T* out, int64_t n, int64_t c,
         int64_t hw, int64_t groups, float eps) {
  const int64_t cg = c / groups;
  ov::parallel_for(n * groups, [&](int64_t unit) {
    const int64_t g = unit % groups;
    const int64_t offset = unit * cg * hw;  // (image, group) pairs are contiguous in NCHW
    thread_local std::vector<float> sim;
    sim.assign(hw, 0.0f);
    for (int64_t k = 0; k < cg; ++k) accumulate_channel(x + offset + k * hw, sim.data(), hw);
    gate(sim.data(), hw, gamma[g], beta[g], eps);
    for (int64_t k = 0; k < cg; ++k) {
      const int64_t at = offset + k * hw;
      apply_channel(x + at, identity + at, sim.data(), out + at, hw);
    }
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
    if (shape.size() != 4 || shape[1] % groups_ != 0 || shape[2] * shape[3] < 2) return false;
    if (inputs[2].get_element_type() != ov::element::f32 || inputs[3].get_element_type() != ov::element::f32)
      return false;
    outputs[0].set_shape(shape);
    const int64_t n = shape[0], c = shape[1], hw = shape[2] * shape[3];
    const float* gamma = inputs[2].data<const float>();
    const float* beta = inputs[3].data<const float>();
    if (x.get_element_type() == ov::element::f32) {
      run(x.data<const float>(), inputs[1].data<const float>(), gamma, beta, outputs[0].data<float>(), n, c, hw,
          groups_, eps_);
    } else if (x.get_element_type() == ov::element::bf16) {
      run(x.data<const ov::bfloat16>(), inputs[1].data<const ov::bfloat16>(), gamma, beta,
          outputs[0].data<ov::bfloat16>(), n, c, hw, groups_, eps_);
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
         "SgeResidual", std::map<std::string, std::string>{{"groups", "groups"}, {"eps", "eps"}})}));
