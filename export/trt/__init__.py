"""TensorRT engines from an artifact's ONNX: what a request becomes on this TensorRT (``route``), build
(``build``), INT8 calibration (``calibrate``), FP32 pins under weak typing (``pinning``), timing cache, TensorRT's
log, validation and inspection (``inspect``), and the steps that record all of it in an artifact (``artifact``).
Named ``trt`` so that it never shadows the ``tensorrt`` package; nothing here imports TensorRT until a function
needs it."""

# what an engine is built as (`trt-build --trt`): here, importing nothing, so the runtime reads it too
PRECISIONS = ("fp32", "fp16", "int8")
