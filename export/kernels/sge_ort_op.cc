// ONNX Runtime custom-op library: ai.sgedeploy::SgeResidual (the maths is in sge_math.h).
//
// The onnxruntime wheel ships no C headers, so this file declares the part of ORT's stable C ABI it uses:
// OrtApi is a table of function pointers that only ever grows, and each entry below is named by its index in
// that table (ORT's own onnxruntime_c_api.cc checks these offsets with static_asserts). API version 17
// (ORT 1.17) is the first with KernelContext_ParallelFor, which runs the units on ORT's intra-op threads.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "sge_math.h"

namespace {

using Status = void*;  // OrtStatus*, NULL on success
using Api = void* const*;

constexpr uint32_t kApiVersion = 17;  // GetApi(17): the functions below exist from ORT 1.17
constexpr uint32_t kOpVersion = 18;   // OrtCustomOp fields up to ReleaseMayInplace are read from ORT 1.18

// Indices into OrtApi.
enum Entry : int {
  kCreateStatus = 0,
  kCreateCustomOpDomain = 26,
  kCustomOpDomainAdd = 27,
  kAddCustomOpDomain = 28,
  kGetTensorMutableData = 51,
  kGetTensorElementType = 60,
  kGetDimensionsCount = 61,
  kGetDimensions = 62,
  kGetTensorShapeElementCount = 64,
  kGetTensorTypeAndShape = 65,
  kKernelInfoGetAttributeFloat = 85,
  kKernelInfoGetAttributeInt64 = 86,
  kKernelContextGetInputCount = 88,
  kKernelContextGetInput = 90,
  kKernelContextGetOutput = 91,
  kReleaseTensorTypeAndShapeInfo = 99,
  kKernelContextParallelFor = 274,
};

constexpr int kElementFloat = 1;      // ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
constexpr int kInvalidArgument = 2;   // ORT_INVALID_ARGUMENT
constexpr int kRequired = 0;          // INPUT_OUTPUT_REQUIRED
constexpr int kMemDefault = 0;        // OrtMemTypeDefault

const void* const* g_api = nullptr;

template <typename Fn>
Fn entry(Entry index) {
  return reinterpret_cast<Fn>(g_api[index]);
}

Status error(const std::string& message) {
  return entry<Status (*)(int, const char*)>(kCreateStatus)(kInvalidArgument, ("SgeResidual: " + message).c_str());
}

#define SGE_TRY(call)              \
  do {                             \
    if (Status s_ = (call)) return s_; \
  } while (0)

struct TensorInfo {
  int type = 0;
  std::vector<int64_t> dims;
  int64_t elements = 0;
};

Status describe(const void* value, TensorInfo& info) {
  void* shape = nullptr;
  SGE_TRY(entry<Status (*)(const void*, void**)>(kGetTensorTypeAndShape)(value, &shape));
  size_t rank = 0;
  size_t elements = 0;
  Status s = entry<Status (*)(const void*, int*)>(kGetTensorElementType)(shape, &info.type);
  if (!s) s = entry<Status (*)(const void*, size_t*)>(kGetDimensionsCount)(shape, &rank);
  if (!s) {
    info.dims.resize(rank);
    s = entry<Status (*)(const void*, int64_t*, size_t)>(kGetDimensions)(shape, info.dims.data(), rank);
  }
  if (!s) s = entry<Status (*)(const void*, size_t*)>(kGetTensorShapeElementCount)(shape, &elements);
  info.elements = static_cast<int64_t>(elements);
  entry<void (*)(void*)>(kReleaseTensorTypeAndShapeInfo)(shape);
  return s;
}

struct Kernel {
  int64_t groups = 0;
  int64_t block = 0;
  float eps = 0.0f;
};

struct Work {
  const float *x, *identity, *gamma, *beta;
  float* out;
  sge::Shape shape;
};

void run_item(void* data, size_t item) {
  thread_local std::vector<float> scratch;
  const Work& w = *static_cast<const Work*>(data);
  sge::run_unit(w.x, w.identity, w.gamma, w.beta, w.out, w.shape, static_cast<int64_t>(item), scratch);
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text = "[";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  return text + "]";
}

Status compute(void* kernel_ptr, void* context) {
  const Kernel& kernel = *static_cast<const Kernel*>(kernel_ptr);
  size_t inputs = 0;
  SGE_TRY(entry<Status (*)(const void*, size_t*)>(kKernelContextGetInputCount)(context, &inputs));
  if (inputs != 4) return error("expects 4 inputs (x, identity, gamma, beta)");
  const void* values[4];
  TensorInfo info[4];
  float* data[4];
  for (size_t i = 0; i < 4; ++i) {
    SGE_TRY(entry<Status (*)(const void*, size_t, const void**)>(kKernelContextGetInput)(context, i, &values[i]));
    SGE_TRY(describe(values[i], info[i]));
    if (info[i].type != kElementFloat) return error("every input must be float32");
    void* raw = nullptr;
    SGE_TRY(entry<Status (*)(const void*, void**)>(kGetTensorMutableData)(values[i], &raw));
    data[i] = static_cast<float*>(raw);
  }
  const std::vector<int64_t>& dims = info[0].dims;
  if (dims.size() != 4) return error("x must be 4-D (N, C, H, W); got " + dims_text(dims));
  if (info[1].dims != dims) return error("identity " + dims_text(info[1].dims) + " differs from x " + dims_text(dims));
  if (info[2].elements != kernel.groups || info[3].elements != kernel.groups)
    return error("gamma and beta must hold one value per group (" + std::to_string(kernel.groups) + ")");
  const sge::Shape shape{dims[0], dims[1], dims[2], dims[3], kernel.groups, kernel.block, kernel.eps};
  if (const char* problem = sge::shape_problem(shape)) return error(std::string(problem) + "; x " + dims_text(dims));

  void* output = nullptr;
  SGE_TRY(entry<Status (*)(void*, size_t, const int64_t*, size_t, void**)>(kKernelContextGetOutput)(
      context, 0, dims.data(), dims.size(), &output));
  void* out = nullptr;
  SGE_TRY(entry<Status (*)(void*, void**)>(kGetTensorMutableData)(output, &out));
  Work work{data[0], data[1], data[2], data[3], static_cast<float*>(out), shape};
  const size_t items = static_cast<size_t>(shape.n * shape.units_per_image());
  if (items == 0) return nullptr;
  return entry<Status (*)(const void*, void (*)(void*, size_t), size_t, size_t, void*)>(kKernelContextParallelFor)(
      context, run_item, items, 0, &work);
}

Status create_kernel(const void*, const void*, const void* info, void** kernel_out) {
  auto* kernel = new Kernel;
  const auto get_int = entry<Status (*)(const void*, const char*, int64_t*)>(kKernelInfoGetAttributeInt64);
  const auto get_float = entry<Status (*)(const void*, const char*, float*)>(kKernelInfoGetAttributeFloat);
  Status s = get_int(info, "groups", &kernel->groups);
  if (!s) s = get_int(info, "block", &kernel->block);
  if (!s) s = get_float(info, "eps", &kernel->eps);
  if (s) {
    delete kernel;
    return s;
  }
  *kernel_out = kernel;
  return nullptr;
}

// OrtCustomOp, version 18: its fields in ORT's order.
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const void*, const void*, const void*);
  const char* (*GetName)(const void*);
  const char* (*GetExecutionProviderType)(const void*);
  int (*GetInputType)(const void*, size_t);
  size_t (*GetInputTypeCount)(const void*);
  int (*GetOutputType)(const void*, size_t);
  size_t (*GetOutputTypeCount)(const void*);
  void (*KernelCompute)(void*, void*);
  void (*KernelDestroy)(void*);
  int (*GetInputCharacteristic)(const void*, size_t);
  int (*GetOutputCharacteristic)(const void*, size_t);
  int (*GetInputMemoryType)(const void*, size_t);
  int (*GetVariadicInputMinArity)(const void*);
  int (*GetVariadicInputHomogeneity)(const void*);
  int (*GetVariadicOutputMinArity)(const void*);
  int (*GetVariadicOutputHomogeneity)(const void*);
  Status (*CreateKernelV2)(const void*, const void*, const void*, void**);
  Status (*KernelComputeV2)(void*, void*);
  Status (*InferOutputShapeFn)(const void*, void*);
  int (*GetStartVersion)(const void*);
  int (*GetEndVersion)(const void*);
  size_t (*GetMayInplace)(int** input_index, int** output_index);
  void (*ReleaseMayInplace)(int* input_index, int* output_index);
  void* alias_map[2];  // GetAliasMap, ReleaseAliasMap: unused (NULL)
};

CustomOp make_op() {
  CustomOp op;
  std::memset(&op, 0, sizeof(op));
  op.version = kOpVersion;
  op.GetName = [](const void*) { return "SgeResidual"; };
  op.GetExecutionProviderType = [](const void*) -> const char* { return "CPUExecutionProvider"; };
  op.GetInputType = [](const void*, size_t) { return kElementFloat; };
  op.GetInputTypeCount = [](const void*) -> size_t { return 4; };
  op.GetOutputType = [](const void*, size_t) { return kElementFloat; };
  op.GetOutputTypeCount = [](const void*) -> size_t { return 1; };
  op.KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
  op.GetInputCharacteristic = [](const void*, size_t) { return kRequired; };
  op.GetOutputCharacteristic = [](const void*, size_t) { return kRequired; };
  op.GetInputMemoryType = [](const void*, size_t) { return kMemDefault; };
  op.GetVariadicInputMinArity = [](const void*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const void*) { return 1; };
  op.GetVariadicOutputMinArity = [](const void*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const void*) { return 1; };
  op.CreateKernelV2 = create_kernel;
  op.KernelComputeV2 = compute;
  op.GetStartVersion = [](const void*) { return 1; };
  op.GetEndVersion = [](const void*) { return 1 << 30; };
  // The output may take x's buffer (x is read before each element is written): the block then writes into
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

CustomOp g_op = make_op();

}  // namespace

extern "C" __attribute__((visibility("default"))) Status RegisterCustomOps(void* session_options,
                                                                           const void* api_base) {
  using GetApi = const void* (*)(uint32_t);
  const void* api = (*static_cast<const GetApi*>(api_base))(kApiVersion);
  if (!api) return nullptr;  // no way to report: ORT older than 1.17 then fails on the unknown op, by name
  g_api = static_cast<const void* const*>(api);
  // One domain for the process: ORT keeps a pointer to it in every session it is added to.
  static void* domain = nullptr;
  if (!domain) {
    void* created = nullptr;
    SGE_TRY(entry<Status (*)(const char*, void**)>(kCreateCustomOpDomain)("ai.sgedeploy", &created));
    SGE_TRY(entry<Status (*)(void*, const void*)>(kCustomOpDomainAdd)(created, &g_op));
    domain = created;
  }
  return entry<Status (*)(void*, void*)>(kAddCustomOpDomain)(session_options, domain);
}
