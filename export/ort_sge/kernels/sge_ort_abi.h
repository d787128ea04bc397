// The part of ONNX Runtime's C ABI (onnxruntime_c_api.h) this library uses, declared here because the onnxruntime
// wheel ships no headers. Both structs only ever grow: OrtApi is a table of function pointers where a version's
// entries keep their index forever, and OrtCustomOp gains fields at its end, read by ORT only when the op's
// `version` says they are there. Every offset below is checked against the index ORT's header gives it.
//
// Version 18 (ORT 1.18, the oldest onnxruntime pyproject allows): OrtCustomOp's GetMayInplace/ReleaseMayInplace
// and GetAliasMap/ReleaseAliasMap exist from 18, KernelContext_ParallelFor from 17. ORT hands CreateKernelV2 the
// API of the op's version, so the library asks GetApi for the same one.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ort {

constexpr uint32_t kVersion = 18;

struct Status;  // opaque ORT objects
struct Value;
struct KernelContext;
struct KernelInfo;
struct TensorTypeAndShapeInfo;
struct CustomOpDomain;
struct SessionOptions;
struct ShapeInferContext;
struct CustomOp;

enum ErrorCode : int { kOk = 0, kFail = 1, kInvalidArgument = 2 };  // OrtErrorCode
enum ElementType : int { kFloat = 1, kUint8 = 2 };                   // ONNXTensorElementDataType
enum Characteristic : int { kRequired = 0 };                         // OrtCustomOpInputOutputCharacteristic
enum MemType : int { kMemDefault = 0 };                              // OrtMemType

template <size_t N>
struct Unused {  // N table entries this library does not call
  void* entries[N];
};

// OrtApi: the entries called here at their index in the table, Unused<> between them.
struct Api {
  Status* (*CreateStatus)(ErrorCode code, const char* message);  // 0
  Unused<25> unused_1;
  Status* (*CreateCustomOpDomain)(const char* domain, CustomOpDomain** out);         // 26
  Status* (*CustomOpDomain_Add)(CustomOpDomain* domain, const CustomOp* op);         // 27
  Status* (*AddCustomOpDomain)(SessionOptions* options, CustomOpDomain* domain);     // 28
  Unused<22> unused_29;
  Status* (*GetTensorMutableData)(Value* value, void** out);  // 51
  Unused<8> unused_52;
  Status* (*GetTensorElementType)(const TensorTypeAndShapeInfo* info, ElementType* out);        // 60
  Status* (*GetDimensionsCount)(const TensorTypeAndShapeInfo* info, size_t* out);               // 61
  Status* (*GetDimensions)(const TensorTypeAndShapeInfo* info, int64_t* values, size_t count);  // 62
  Unused<1> unused_63;
  Status* (*GetTensorShapeElementCount)(const TensorTypeAndShapeInfo* info, size_t* out);  // 64
  Status* (*GetTensorTypeAndShape)(const Value* value, TensorTypeAndShapeInfo** out);      // 65
  Unused<19> unused_66;
  Status* (*KernelInfoGetAttribute_float)(const KernelInfo* info, const char* name, float* out);    // 85
  Status* (*KernelInfoGetAttribute_int64)(const KernelInfo* info, const char* name, int64_t* out);  // 86
  Unused<1> unused_87;
  Status* (*KernelContext_GetInputCount)(const KernelContext* context, size_t* out);  // 88
  Unused<1> unused_89;
  Status* (*KernelContext_GetInput)(const KernelContext* context, size_t index, const Value** out);  // 90
  Status* (*KernelContext_GetOutput)(KernelContext* context, size_t index, const int64_t* dims, size_t count,
                                     Value** out);  // 91
  Unused<7> unused_92;
  void (*ReleaseTensorTypeAndShapeInfo)(TensorTypeAndShapeInfo* info);  // 99
  Unused<174> unused_100;
  Status* (*KernelContext_ParallelFor)(const KernelContext* context, void (*fn)(void* data, size_t item),
                                       size_t total, size_t batch, void* data);  // 274
};

#define ORT_ABI_AT(member, index) \
  static_assert(offsetof(Api, member) == (index) * sizeof(void*), "OrtApi::" #member " is entry " #index)
ORT_ABI_AT(CreateStatus, 0);
ORT_ABI_AT(CreateCustomOpDomain, 26);
ORT_ABI_AT(CustomOpDomain_Add, 27);
ORT_ABI_AT(AddCustomOpDomain, 28);
ORT_ABI_AT(GetTensorMutableData, 51);
ORT_ABI_AT(GetTensorElementType, 60);
ORT_ABI_AT(GetDimensionsCount, 61);
ORT_ABI_AT(GetDimensions, 62);
ORT_ABI_AT(GetTensorShapeElementCount, 64);
ORT_ABI_AT(GetTensorTypeAndShape, 65);
ORT_ABI_AT(KernelInfoGetAttribute_float, 85);
ORT_ABI_AT(KernelInfoGetAttribute_int64, 86);
ORT_ABI_AT(KernelContext_GetInputCount, 88);
ORT_ABI_AT(KernelContext_GetInput, 90);
ORT_ABI_AT(KernelContext_GetOutput, 91);
ORT_ABI_AT(ReleaseTensorTypeAndShapeInfo, 99);
ORT_ABI_AT(KernelContext_ParallelFor, 274);
#undef ORT_ABI_AT
static_assert(sizeof(Api) == 275 * sizeof(void*), "the table is read up to KernelContext_ParallelFor, no further");

struct ApiBase {  // OrtApiBase
  const Api* (*GetApi)(uint32_t version);  // NULL when ORT is older than `version`
  const char* (*GetVersionString)();
};
static_assert(offsetof(ApiBase, GetVersionString) == sizeof(void*) && sizeof(ApiBase) == 2 * sizeof(void*),
              "OrtApiBase is two pointers");

// OrtCustomOp as of version 18, field by field in ORT's order.
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const CustomOp* op, const Api* api, const KernelInfo* info);
  const char* (*GetName)(const CustomOp* op);
  const char* (*GetExecutionProviderType)(const CustomOp* op);
  ElementType (*GetInputType)(const CustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const CustomOp* op);
  ElementType (*GetOutputType)(const CustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const CustomOp* op);
  void (*KernelCompute)(void* kernel, KernelContext* context);
  void (*KernelDestroy)(void* kernel);
  Characteristic (*GetInputCharacteristic)(const CustomOp* op, size_t index);
  Characteristic (*GetOutputCharacteristic)(const CustomOp* op, size_t index);
  MemType (*GetInputMemoryType)(const CustomOp* op, size_t index);
  int (*GetVariadicInputMinArity)(const CustomOp* op);
  int (*GetVariadicInputHomogeneity)(const CustomOp* op);
  int (*GetVariadicOutputMinArity)(const CustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const CustomOp* op);
  Status* (*CreateKernelV2)(const CustomOp* op, const Api* api, const KernelInfo* info, void** kernel);
  Status* (*KernelComputeV2)(void* kernel, KernelContext* context);
  Status* (*InferOutputShapeFn)(const CustomOp* op, ShapeInferContext* context);
  int (*GetStartVersion)(const CustomOp* op);
  int (*GetEndVersion)(const CustomOp* op);
  size_t (*GetMayInplace)(int** input_index, int** output_index);
  void (*ReleaseMayInplace)(int* input_index, int* output_index);
  size_t (*GetAliasMap)(int** input_index, int** output_index);
  void (*ReleaseAliasMap)(int* input_index, int* output_index);
};

#define ORT_OP_AT(member, index) \
  static_assert(offsetof(CustomOp, member) == (index) * sizeof(void*), "OrtCustomOp::" #member " is field " #index)
ORT_OP_AT(CreateKernel, 1);  // `version` is padded to a pointer
ORT_OP_AT(GetName, 2);
ORT_OP_AT(GetExecutionProviderType, 3);
ORT_OP_AT(GetInputType, 4);
ORT_OP_AT(GetInputTypeCount, 5);
ORT_OP_AT(GetOutputType, 6);
ORT_OP_AT(GetOutputTypeCount, 7);
ORT_OP_AT(KernelCompute, 8);
ORT_OP_AT(KernelDestroy, 9);
ORT_OP_AT(GetInputCharacteristic, 10);
ORT_OP_AT(GetOutputCharacteristic, 11);
ORT_OP_AT(GetInputMemoryType, 12);
ORT_OP_AT(GetVariadicInputMinArity, 13);
ORT_OP_AT(GetVariadicInputHomogeneity, 14);
ORT_OP_AT(GetVariadicOutputMinArity, 15);
ORT_OP_AT(GetVariadicOutputHomogeneity, 16);
ORT_OP_AT(CreateKernelV2, 17);
ORT_OP_AT(KernelComputeV2, 18);
ORT_OP_AT(InferOutputShapeFn, 19);
ORT_OP_AT(GetStartVersion, 20);
ORT_OP_AT(GetEndVersion, 21);
ORT_OP_AT(GetMayInplace, 22);
ORT_OP_AT(ReleaseMayInplace, 23);
ORT_OP_AT(GetAliasMap, 24);
ORT_OP_AT(ReleaseAliasMap, 25);
#undef ORT_OP_AT
static_assert(sizeof(CustomOp) == 26 * sizeof(void*), "OrtCustomOp version 18 has 26 pointer-sized fields");
static_assert(sizeof(ElementType) == sizeof(int) && sizeof(Characteristic) == sizeof(int) &&
                  sizeof(MemType) == sizeof(int) && sizeof(ErrorCode) == sizeof(int),
              "ORT's enums are C enums: int-sized");

}  // namespace ort
