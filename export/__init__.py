"""PyTorch → ONNX → simplified graph → parity → (TensorRT) → artifact directory with a manifest."""
