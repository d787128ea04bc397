"""The few ``torch.cuda`` calls the TensorRT runner (runtime/backends/trt.py) makes: device identity, buffers, a
stream, events and CUDA graphs; torch is imported only when a device is opened."""

from typing import Any

from runtime.backends.base import BackendUnavailableError


class CudaDevice:
    """One CUDA device through ``torch.cuda`` (torch imported when it is made)."""

    def __init__(self) -> None:
        self.torch = import_torch_cuda()

    def identity(self) -> dict[str, str]:
        major, minor = self.torch.cuda.get_device_capability(0)
        return {"name": self.torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}

    def stream(self) -> Any:
        return self.torch.cuda.Stream()  # not the legacy default stream

    def empty(self, shape: tuple[int, ...], dtype: Any, *, pinned: bool = False) -> Any:
        if pinned:
            return self.torch.empty(shape, dtype=dtype).pin_memory()
        return self.torch.empty(shape, dtype=dtype, device="cuda")

    def event(self) -> Any:
        return self.torch.cuda.Event(enable_timing=True)

    def use_stream(self, stream: Any) -> Any:
        return self.torch.cuda.stream(stream)

    def capture(self, stream: Any, run: Any) -> Any:
        """Record ``run()`` on ``stream`` into a CUDA graph and return it (``graph.replay()`` re-runs it)."""
        graph = self.torch.cuda.CUDAGraph()
        with self.torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):  # others may use CUDA
            run()
        return graph


def import_torch_cuda() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "the TensorRT runner keeps its buffers on the GPU with torch.cuda, and this PyTorch sees no CUDA device: "
            "install a CUDA build of torch on a machine with an NVIDIA GPU"
        )
    return torch
