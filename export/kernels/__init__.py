"""The fused SGE kernel for ONNX Runtime: C++ sources and the on-machine build (build.py)."""
