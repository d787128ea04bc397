"""One runner interface over PyTorch, ONNX Runtime, OpenVINO and TensorRT; latency reports; serving."""
