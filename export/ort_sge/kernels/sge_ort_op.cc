// ONNX Runtime custom-op library: ai.sgedeploy::SgeResidual and its quantised-IO form SgeResidualQ. The ORT side
// (typed ABI in sge_ort_abi.h), the checks of every input, and the run-time choice of the maths build (sge_units.cc,
// one per instruction set) that this CPU supports. Compiled for baseline x86-64: nothing here may use an instruction
// the oldest CPU lacks.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sge_ort_abi.h"
#include "sge_q_shape.h"
#include "sge_shape.h"
#include "sge_unit_trace.h"

namespace {

const ort::Api* g_api = nullptr;

using RunUnit = void (*)(const sge::Problem&, int64_t, float*);
using RunQUnit = void (*)(const sge::QProblem&, int64_t, float*);

struct Build {
  RunUnit run_unit;
  RunQUnit run_q_unit;
  int64_t q_lanes;   // the vector width of the quantised-IO maths: its units depend on it
  const char* name;  // build.py's name for it: what SgeKernelBuild() reports
};

#define SGE_BUILD(isa, name) {sge::isa::run_unit, sge::isa::run_q_unit, sge::isa::q_lanes, name}

#define SGE_NAME_OF(isa) #isa
#define SGE_NAME(isa) SGE_NAME_OF(isa)

// The build this process runs: AVX-512 (F, VL, BW, DQ: x86-64-v4) or AVX2 with FMA where the CPU and the OS's
// saved register state have them, else baseline x86-64 (SSE2). A library of one build (-march=native for speed
// comparisons, or one ISA for tests: SGE_ONLY_ISA) calls that build.
Build choose_build() {
#if defined(SGE_ONLY_ISA)
  return SGE_BUILD(SGE_ONLY_ISA, SGE_NAME(SGE_ONLY_ISA));
#else
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return SGE_BUILD(avx512, "avx512");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SGE_BUILD(avx2, "avx2");
  return SGE_BUILD(baseline, "baseline");
#endif
}

const Build g_build = choose_build();

ort::Status* error(const std::string& message) {
  return g_api->CreateStatus(ort::kInvalidArgument, ("fused SGE kernel: " + message).c_str());
}

#define SGE_TRY(call)                         \
  do {                                        \
    if (ort::Status* status_ = (call)) return status_; \
  } while (0)

struct TensorInfo {
  ort::ElementType type = ort::kFloat;
  std::vector<int64_t> dims;
  int64_t elements = 0;
};

ort::Status* describe(const ort::Value* value, TensorInfo& info) {
  ort::TensorTypeAndShapeInfo* shape = nullptr;
  SGE_TRY(g_api->GetTensorTypeAndShape(value, &shape));
  size_t rank = 0, elements = 0;
  ort::Status* status = g_api->GetTensorElementType(shape, &info.type);
  if (!status) status = g_api->GetDimensionsCount(shape, &rank);
  if (!status) {
    info.dims.resize(rank);
    status = g_api->GetDimensions(shape, info.dims.data(), rank);
  }
  if (!status) status = g_api->GetTensorShapeElementCount(shape, &elements);
  info.elements = static_cast<int64_t>(elements);
  g_api->ReleaseTensorTypeAndShapeInfo(shape);
  return status;
}

struct Kernel {
  int64_t groups = 0;
  int64_t block = 0;
  float eps = 0.0f;
};

// Each ORT thread's scratch memory, kept for the next call: malloc, so that running out of memory is an error status
// for this call, not std::bad_alloc escaping into ORT's thread pool (std::terminate).
struct Scratch {
  float* data = nullptr;
  size_t floats = 0;
  ~Scratch() { std::free(data); }
};

// This thread's scratch of at least `needed` floats, or nullptr when there is no memory for it.
float* thread_scratch(size_t needed) {
  thread_local Scratch scratch;
  if (scratch.floats < needed) {
    std::free(scratch.data);
    scratch.data = static_cast<float*>(std::malloc(needed * sizeof(float)));
    scratch.floats = scratch.data ? needed : 0;
  }
  return scratch.data;
}

template <typename P>
struct Work {
  P problem;
  size_t scratch_floats;
  std::atomic<bool> out_of_memory{false};
  sge_trace::Call trace;  // empty unless the library is a trace build (sge_unit_trace.h)
  size_t items = 0;
};

// The unit ORT's item `item` of `items` runs: the item itself, except in a swapped-halves build (diagnostic, never
// installed: build.py's swap_halves=True), where it is the unit half the call away, so that the calling thread's
// shard of ORT's parallel-for (its first half) runs the upper half of the units (at batch 1, of the channels) and the
// pool's thread the lower.
inline int64_t unit_of(size_t item, size_t items) {
#if defined(SGE_SWAP_HALVES)
  return static_cast<int64_t>((item + items / 2) % items);
#else
  (void)items;
  return static_cast<int64_t>(item);
#endif
}

void run_item(void* data, size_t item) {
  auto& work = *static_cast<Work<sge::Problem>*>(data);
  float* scratch = thread_scratch(work.scratch_floats);
  if (!scratch) return work.out_of_memory.store(true, std::memory_order_relaxed);
  const int64_t unit = unit_of(item, work.items);
  const uint64_t start = sge_trace::now();
  g_build.run_unit(work.problem, unit, scratch);
  sge_trace::unit(work.trace, static_cast<size_t>(unit), work.problem.shape.c,
                  work.problem.shape.h * work.problem.shape.w, start);
}

void run_q_item(void* data, size_t item) {
  auto& work = *static_cast<Work<sge::QProblem>*>(data);
  float* scratch = thread_scratch(work.scratch_floats);
  if (!scratch) return work.out_of_memory.store(true, std::memory_order_relaxed);
  g_build.run_q_unit(work.problem, static_cast<int64_t>(item), scratch);
}

ort::Status* no_scratch_error(size_t floats) {
  return error("out of memory for the kernel's scratch (" + std::to_string(floats) + " floats per thread)");
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

const char* type_name(ort::ElementType type) { return type == ort::kUint8 ? "uint8" : "float32"; }

// The op's `count` inputs, each checked against `type_of` its index: shape and element count into `info`, the data
// (read only) into `data`. `inputs` names them for the error of a wrong count.
ort::Status* read_inputs(ort::KernelContext* context, size_t count, ort::ElementType (*type_of)(size_t),
                         const char* inputs, TensorInfo* info, void** data) {
  size_t given = 0;
  SGE_TRY(g_api->KernelContext_GetInputCount(context, &given));
  if (given != count) return error("expects " + std::to_string(count) + " inputs (" + inputs + ")");
  for (size_t i = 0; i < count; ++i) {
    const ort::Value* value = nullptr;
    SGE_TRY(g_api->KernelContext_GetInput(context, i, &value));
    SGE_TRY(describe(value, info[i]));
    if (info[i].type != type_of(i))
      return error("input " + std::to_string(i) + " must be " + type_name(type_of(i)));
    SGE_TRY(g_api->GetTensorMutableData(const_cast<ort::Value*>(value), &data[i]));
  }
  return nullptr;
}

// The output, of x's shape (and element type): its data.
ort::Status* output_like_x(ort::KernelContext* context, const std::vector<int64_t>& dims, void** out) {
  ort::Value* output = nullptr;
  SGE_TRY(g_api->KernelContext_GetOutput(context, 0, dims.data(), dims.size(), &output));
  return g_api->GetTensorMutableData(output, out);
}

// `work`'s `items` units on ORT's intra-op threads, each thread with its scratch.
template <typename P>
ort::Status* run_work(ort::KernelContext* context, void (*run)(void*, size_t), size_t items, Work<P>& work) {
  if (items == 0) return nullptr;
  SGE_TRY(g_api->KernelContext_ParallelFor(context, run, items, 0, &work));
  return work.out_of_memory.load() ? no_scratch_error(work.scratch_floats) : nullptr;
}

ort::ElementType float_input(size_t) { return ort::kFloat; }

ort::Status* compute(void* kernel_ptr, ort::KernelContext* context) {
  const Kernel& kernel = *static_cast<const Kernel*>(kernel_ptr);
  TensorInfo info[4];
  void* raw[4];
  SGE_TRY(read_inputs(context, 4, float_input, "x, identity, gamma, beta", info, raw));
  const auto data = [&](size_t i) { return static_cast<const float*>(raw[i]); };
  const std::vector<int64_t>& dims = info[0].dims;
  if (dims.size() != 4) return error("x must be 4-D (N, C, H, W); got " + dims_text(dims));
  if (info[1].dims != dims) return error("identity " + dims_text(info[1].dims) + " differs from x " + dims_text(dims));
  if (info[2].elements != kernel.groups || info[3].elements != kernel.groups)
    return error("gamma and beta must hold one value per group (" + std::to_string(kernel.groups) + ")");
  const sge::Shape shape{dims[0], dims[1], dims[2], dims[3], kernel.groups, kernel.block, kernel.eps};
  if (const char* problem = sge::shape_problem(shape))
    return error(std::string(problem) + "; x " + dims_text(dims) + ", groups " + std::to_string(kernel.groups));

  void* out = nullptr;
  SGE_TRY(output_like_x(context, dims, &out));
  Work<sge::Problem> work{{data(0), data(1), data(2), data(3), static_cast<float*>(out), shape},
                          static_cast<size_t>(sge::scratch_floats(shape))};
  work.trace = sge_trace::begin_call();
  work.items = static_cast<size_t>(shape.n * sge::units_per_image(shape));
  return run_work(context, run_item, work.items, work);
}

// The attributes: groups, eps, and for the float op its layout (block).
ort::Status* read_kernel(const ort::KernelInfo* info, bool has_block, void** kernel_out) {
  auto* kernel = new Kernel;
  ort::Status* status = g_api->KernelInfoGetAttribute_int64(info, "groups", &kernel->groups);
  if (!status && has_block) status = g_api->KernelInfoGetAttribute_int64(info, "block", &kernel->block);
  if (!status) status = g_api->KernelInfoGetAttribute_float(info, "eps", &kernel->eps);
  if (status) {
    delete kernel;
    return status;
  }
  *kernel_out = kernel;
  return nullptr;
}

ort::Status* create_kernel(const ort::CustomOp*, const ort::Api*, const ort::KernelInfo* info, void** kernel_out) {
  return read_kernel(info, true, kernel_out);
}

// SgeResidualQ (sge_q_math.h): uint8 NHWC x and identity, each with a scale and a zero point; γ, β; the output's
// scale and zero point. Inputs in that order, as export/ort_sge/quantized_io.py wires them.
enum QInput : size_t { kX, kXScale, kXZero, kId, kIdScale, kIdZero, kGamma, kBeta, kYScale, kYZero, kQInputs };

ort::ElementType q_input_type(size_t index) {
  switch (index) {
    case kX: case kXZero: case kId: case kIdZero: case kYZero: return ort::kUint8;
    default: return ort::kFloat;
  }
}

ort::Status* compute_q(void* kernel_ptr, ort::KernelContext* context) {
  const Kernel& kernel = *static_cast<const Kernel*>(kernel_ptr);
  TensorInfo info[kQInputs];
  void* data[kQInputs];
  SGE_TRY(read_inputs(context, kQInputs, q_input_type,
                      "x, x_scale, x_zero_point, identity, its scale and zero point, gamma, beta, y_scale, y_zero_point",
                      info, data));
  const std::vector<int64_t>& dims = info[kX].dims;
  if (dims.size() != 4) return error("x must be 4-D (N, H, W, C); got " + dims_text(dims));
  if (info[kId].dims != dims)
    return error("identity " + dims_text(info[kId].dims) + " differs from x " + dims_text(dims));
  for (size_t i : {kXScale, kXZero, kIdScale, kIdZero, kYScale, kYZero})
    if (info[i].elements != 1) return error("scales and zero points must be single values (per-tensor)");
  if (info[kGamma].elements != kernel.groups || info[kBeta].elements != kernel.groups)
    return error("gamma and beta must hold one value per group (" + std::to_string(kernel.groups) + ")");
  const auto scale = [&](size_t i) { return *static_cast<const float*>(data[i]); };
  const auto zero = [&](size_t i) { return static_cast<int32_t>(*static_cast<const uint8_t*>(data[i])); };
  for (size_t i : {kXScale, kIdScale, kYScale})
    if (!(scale(i) > 0.0f && scale(i) < 3.4e38f)) return error("scales must be positive and finite");
  const sge::QShape shape{dims[0], dims[1], dims[2], dims[3], kernel.groups, kernel.eps};
  if (const char* problem = sge::q_shape_problem(shape, g_build.q_lanes))
    return error(std::string(problem) + "; x " + dims_text(dims) + " (NHWC), groups " + std::to_string(kernel.groups));

  void* out = nullptr;
  SGE_TRY(output_like_x(context, dims, &out));
  const auto bytes = [&](size_t i) { return static_cast<const uint8_t*>(data[i]); };
  const auto floats = [&](size_t i) { return static_cast<const float*>(data[i]); };
  Work<sge::QProblem> work{{bytes(kX), bytes(kId), scale(kXScale), scale(kIdScale), scale(kYScale), zero(kXZero),
                            zero(kIdZero), zero(kYZero), floats(kGamma), floats(kBeta), static_cast<uint8_t*>(out),
                            shape},
                           static_cast<size_t>(sge::q_scratch_floats(shape, g_build.q_lanes))};
  return run_work(context, run_q_item, static_cast<size_t>(shape.n * sge::q_units_per_image(shape, g_build.q_lanes)),
                  work);
}

ort::Status* create_q_kernel(const ort::CustomOp*, const ort::Api*, const ort::KernelInfo* info, void** kernel_out) {
  return read_kernel(info, false, kernel_out);
}

// What both ops share: the CPU provider, required inputs and outputs, any opset version, and the output allowed to
// take x's buffer (each position of x is read before it is written): the block then writes into cache lines it has
// just read instead of allocating a fresh map, which saves a read-for-ownership pass.
ort::CustomOp common_op() {
  ort::CustomOp op;
  std::memset(&op, 0, sizeof(op));  // unused entries (V1 kernel, shape inference, alias map) stay NULL
  op.version = ort::kVersion;
  op.GetExecutionProviderType = [](const ort::CustomOp*) { return "CPUExecutionProvider"; };
  op.GetOutputTypeCount = [](const ort::CustomOp*) -> size_t { return 1; };
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  op.GetInputCharacteristic = [](const ort::CustomOp*, size_t) { return ort::kRequired; };
  op.GetOutputCharacteristic = [](const ort::CustomOp*, size_t) { return ort::kRequired; };
  op.GetInputMemoryType = [](const ort::CustomOp*, size_t) { return ort::kMemDefault; };
  op.GetVariadicInputMinArity = [](const ort::CustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const ort::CustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const ort::CustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const ort::CustomOp*) { return 1; };
  op.GetStartVersion = [](const ort::CustomOp*) { return 1; };
  op.GetEndVersion = [](const ort::CustomOp*) { return 1 << 30; };
  op.GetMayInplace = [](int** input_index, int** output_index) -> size_t {
    *input_index = new int[1]{0};
    *output_index = new int[1]{0};
    return 1;
  };
  op.ReleaseMayInplace = [](int* input_index, int* output_index) {
    delete[] input_index;
    delete[] output_index;
  };
  return op;
}

ort::CustomOp make_op() {
  ort::CustomOp op = common_op();
  op.GetName = [](const ort::CustomOp*) { return "SgeResidual"; };
  op.GetInputType = [](const ort::CustomOp*, size_t) { return ort::kFloat; };
  op.GetInputTypeCount = [](const ort::CustomOp*) -> size_t { return 4; };
  op.GetOutputType = [](const ort::CustomOp*, size_t) { return ort::kFloat; };
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  return op;
}

ort::CustomOp make_q_op() {
  ort::CustomOp op = common_op();
  op.GetName = [](const ort::CustomOp*) { return "SgeResidualQ"; };
  op.GetInputType = [](const ort::CustomOp*, size_t index) { return q_input_type(index); };
  op.GetInputTypeCount = [](const ort::CustomOp*) -> size_t { return kQInputs; };
  op.GetOutputType = [](const ort::CustomOp*, size_t) { return ort::kUint8; };
  op.CreateKernelV2 = create_q_kernel;
  op.KernelComputeV2 = compute_q;
  return op;
}

const ort::CustomOp g_op = make_op();
const ort::CustomOp g_q_op = make_q_op();

}  // namespace

extern "C" __attribute__((visibility("default"))) ort::Status* RegisterCustomOps(ort::SessionOptions* options,
                                                                                const ort::ApiBase* api_base) {
  const ort::Api* api = api_base->GetApi(ort::kVersion);
  if (!api) return nullptr;  // ORT older than 1.18 cannot report why: it then fails on the unknown op, by name
  g_api = api;
  // One domain for the process: ORT keeps a pointer to it in every session it is added to.
  static ort::CustomOpDomain* domain = nullptr;
  if (!domain) {
    ort::CustomOpDomain* created = nullptr;
    SGE_TRY(g_api->CreateCustomOpDomain("ai.sgedeploy", &created));
    SGE_TRY(g_api->CustomOpDomain_Add(created, &g_op));
    SGE_TRY(g_api->CustomOpDomain_Add(created, &g_q_op));
    domain = created;
  }
  return g_api->AddCustomOpDomain(options, domain);
}

// The build of the maths this process runs ("avx512", "avx2" or "baseline"; a one-build library: its build), as
// chosen above: export/ort_sge/kernels/library.py reads it for the runner's description and the dispatch tests.
extern "C" __attribute__((visibility("default"))) const char* SgeKernelBuild() { return g_build.name; }
