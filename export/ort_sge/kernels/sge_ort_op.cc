// ONNX Runtime custom-op library: ai.sgedeploy::SgeResidual. The ORT side (typed ABI in sge_ort_abi.h), the
// checks of every input, and the run-time choice of the maths build (sge_units.cc, one per instruction set) that
// this CPU supports. Compiled for baseline x86-64: nothing here may use an instruction the oldest CPU lacks.
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "sge_ort_abi.h"
#include "sge_shape.h"

namespace {

const ort::Api* g_api = nullptr;

using RunUnit = void (*)(const sge::Problem&, int64_t, float*);

struct Build {
  RunUnit run_unit;
  const char* name;  // build.py's name for it: what SgeKernelBuild() reports
};

#define SGE_NAME_OF(isa) #isa
#define SGE_NAME(isa) SGE_NAME_OF(isa)

// The build this process runs: AVX-512 (F, VL, BW, DQ: x86-64-v4) or AVX2 with FMA where the CPU and the OS's
// saved register state have them, else baseline x86-64 (SSE2). A library of one build (-march=native for speed
// comparisons, or one ISA for tests: SGE_ONLY_ISA) calls that build.
Build choose_build() {
#if defined(SGE_ONLY_ISA)
  return {sge::SGE_ONLY_ISA::run_unit, SGE_NAME(SGE_ONLY_ISA)};
#else
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return {sge::avx512::run_unit, "avx512"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {sge::avx2::run_unit, "avx2"};
  return {sge::baseline::run_unit, "baseline"};
#endif
}

const Build g_build = choose_build();

ort::Status* error(const std::string& message) {
  return g_api->CreateStatus(ort::kInvalidArgument, ("SgeResidual: " + message).c_str());
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

struct Work {
  sge::Problem problem;
  std::atomic<bool> out_of_memory{false};
};

void run_item(void* data, size_t item) {
  thread_local Scratch scratch;
  Work& work = *static_cast<Work*>(data);
  const size_t needed = static_cast<size_t>(sge::scratch_floats(work.problem.shape));
  if (scratch.floats < needed) {
    std::free(scratch.data);
    scratch.data = static_cast<float*>(std::malloc(needed * sizeof(float)));
    scratch.floats = scratch.data ? needed : 0;
    if (!scratch.data) {
      work.out_of_memory.store(true, std::memory_order_relaxed);
      return;
    }
  }
  g_build.run_unit(work.problem, static_cast<int64_t>(item), scratch.data);
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

ort::Status* compute(void* kernel_ptr, ort::KernelContext* context) {
  const Kernel& kernel = *static_cast<const Kernel*>(kernel_ptr);
  size_t inputs = 0;
  SGE_TRY(g_api->KernelContext_GetInputCount(context, &inputs));
  if (inputs != 4) return error("expects 4 inputs (x, identity, gamma, beta)");
  TensorInfo info[4];
  float* data[4];
  for (size_t i = 0; i < 4; ++i) {
    const ort::Value* value = nullptr;
    SGE_TRY(g_api->KernelContext_GetInput(context, i, &value));
    SGE_TRY(describe(value, info[i]));
    if (info[i].type != ort::kFloat) return error("every input must be float32");
    void* raw = nullptr;
    SGE_TRY(g_api->GetTensorMutableData(const_cast<ort::Value*>(value), &raw));  // read only
    data[i] = static_cast<float*>(raw);
  }
  const std::vector<int64_t>& dims = info[0].dims;
  if (dims.size() != 4) return error("x must be 4-D (N, C, H, W); got " + dims_text(dims));
  if (info[1].dims != dims) return error("identity " + dims_text(info[1].dims) + " differs from x " + dims_text(dims));
  if (info[2].elements != kernel.groups || info[3].elements != kernel.groups)
    return error("gamma and beta must hold one value per group (" + std::to_string(kernel.groups) + ")");
  const sge::Shape shape{dims[0], dims[1], dims[2], dims[3], kernel.groups, kernel.block, kernel.eps};
  if (const char* problem = sge::shape_problem(shape))
    return error(std::string(problem) + "; x " + dims_text(dims) + ", groups " + std::to_string(kernel.groups));

  ort::Value* output = nullptr;
  SGE_TRY(g_api->KernelContext_GetOutput(context, 0, dims.data(), dims.size(), &output));
  void* out = nullptr;
  SGE_TRY(g_api->GetTensorMutableData(output, &out));
  Work work{{data[0], data[1], data[2], data[3], static_cast<float*>(out), shape}};
  const size_t items = static_cast<size_t>(shape.n * sge::units_per_image(shape));
  if (items == 0) return nullptr;
  SGE_TRY(g_api->KernelContext_ParallelFor(context, run_item, items, 0, &work));
  if (work.out_of_memory.load()) {
    return error("out of memory for the kernel's scratch (" + std::to_string(sge::scratch_floats(shape)) +
                 " floats per thread)");
  }
  return nullptr;
}

ort::Status* create_kernel(const ort::CustomOp*, const ort::Api*, const ort::KernelInfo* info, void** kernel_out) {
  auto* kernel = new Kernel;
  ort::Status* status = g_api->KernelInfoGetAttribute_int64(info, "groups", &kernel->groups);
  if (!status) status = g_api->KernelInfoGetAttribute_int64(info, "block", &kernel->block);
  if (!status) status = g_api->KernelInfoGetAttribute_float(info, "eps", &kernel->eps);
  if (status) {
    delete kernel;
    return status;
  }
  *kernel_out = kernel;
  return nullptr;
}

ort::CustomOp make_op() {
  ort::CustomOp op;
  std::memset(&op, 0, sizeof(op));  // unused entries (V1 kernel, shape inference, alias map) stay NULL
  op.version = ort::kVersion;
  op.GetName = [](const ort::CustomOp*) { return "SgeResidual"; };
  op.GetExecutionProviderType = [](const ort::CustomOp*) { return "CPUExecutionProvider"; };
  op.GetInputType = [](const ort::CustomOp*, size_t) { return ort::kFloat; };
  op.GetInputTypeCount = [](const ort::CustomOp*) -> size_t { return 4; };
  op.GetOutputType = [](const ort::CustomOp*, size_t) { return ort::kFloat; };
  op.GetOutputTypeCount = [](const ort::CustomOp*) -> size_t { return 1; };
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  op.GetInputCharacteristic = [](const ort::CustomOp*, size_t) { return ort::kRequired; };
  op.GetOutputCharacteristic = [](const ort::CustomOp*, size_t) { return ort::kRequired; };
  op.GetInputMemoryType = [](const ort::CustomOp*, size_t) { return ort::kMemDefault; };
  op.GetVariadicInputMinArity = [](const ort::CustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const ort::CustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const ort::CustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const ort::CustomOp*) { return 1; };
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  op.GetStartVersion = [](const ort::CustomOp*) { return 1; };
  op.GetEndVersion = [](const ort::CustomOp*) { return 1 << 30; };
  // The output may take x's buffer (each position of x is read before it is written): the block then writes into
  // cache lines it has just read instead of allocating a fresh map, which saves a read-for-ownership pass.
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

const ort::CustomOp g_op = make_op();

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
    domain = created;
  }
  return g_api->AddCustomOpDomain(options, domain);
}

// The build of the maths this process runs ("avx512", "avx2" or "baseline"; a one-build library: its build), as
// chosen above: export/ort_sge/kernels/library.py reads it for the runner's description and the dispatch tests.
extern "C" __attribute__((visibility("default"))) const char* SgeKernelBuild() { return g_build.name; }
