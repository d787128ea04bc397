"""Host memory in place of ``runtime.backends.trt.CudaDevice``, for running the TensorRT runner against the fake.

Buffers are CPU torch tensors (their ``data_ptr()`` is a host address the fake reads and writes), the stream has a
non-zero handle like any stream other than the legacy default one, events count instead of timing, and a "CUDA
graph" re-runs what was captured. Nothing here measures or stands for GPU behaviour.
"""

import contextlib
import itertools
from typing import Any

import torch

from tests.tensorrt.fake_machine import FakeMachine


class HostStream:
    cuda_stream = 0x51  # a handle that is not 0, the legacy default stream

    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine

    def synchronize(self) -> None:
        self.machine.record("stream.synchronize")


class HostEvent:
    ticks = itertools.count(1)

    def __init__(self) -> None:
        self.tick = 0

    def record(self, stream: HostStream) -> None:
        self.tick = next(self.ticks)

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: "HostEvent") -> float:
        return float(other.tick - self.tick)  # an order, not a time


class HostGraph:
    def __init__(self, run: Any, machine: FakeMachine) -> None:
        self.run, self.machine = run, machine

    def replay(self) -> None:
        self.machine.record("graph.replay")
        self.run()


class HostCuda:
    torch = torch

    def __init__(self, machine: FakeMachine, compute_capability: str = "9.0") -> None:
        self.machine, self.compute_capability = machine, compute_capability

    def identity(self) -> dict[str, str]:
        return {"name": self.machine.gpu, "compute_capability": self.compute_capability}

    def stream(self) -> HostStream:
        return HostStream(self.machine)

    def empty(self, shape: tuple[int, ...], dtype: Any, *, pinned: bool = False) -> Any:
        return torch.empty(shape, dtype=dtype)

    def event(self) -> HostEvent:
        return HostEvent()

    def use_stream(self, stream: HostStream) -> Any:
        return contextlib.nullcontext()

    def capture(self, stream: HostStream, run: Any) -> HostGraph:
        self.machine.record("graph.capture")
        run()  # a real capture records without running; the fake's "kernels" are host code
        return HostGraph(run, self.machine)


def host_upload(batch: Any) -> tuple[Any, int]:
    tensor = torch.from_numpy(batch).clone()
    return tensor, tensor.data_ptr()
