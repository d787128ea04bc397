"""Host memory in place of ``runtime.backends.cuda_device.CudaDevice``, to run the TensorRT runner against the fake.

Buffers are CPU torch tensors (their ``data_ptr()`` is a host address the fake reads and writes), the stream has a
non-zero handle like any stream other than the legacy default one, events count instead of timing, and a "CUDA
graph" re-runs what was captured, on the addresses it was captured with. A graph refuses what CUDA and TensorRT
forbid without an error of their own: a replay on another stream than its capture's (the copies around it would not
be ordered with it), and a replay after the context was set up for another input shape (TensorRT's CUDA-graph
guidance: capture again after a shape change). Nothing here measures or stands for GPU behaviour.
"""

import contextlib
import itertools
import weakref
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

    def __init__(self, machine: FakeMachine) -> None:
        self.tick, self.machine = 0, machine

    def record(self, stream: HostStream) -> None:
        self.machine.record("event.record")  # where the timed windows open and close among the calls
        self.tick = next(self.ticks)

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: "HostEvent") -> float:
        return float(other.tick - self.tick)  # an order, not a time


class HostGraph:
    def __init__(self, run: Any, cuda: "HostCuda", stream: HostStream) -> None:
        self.run, self.cuda, self.machine, self.stream = run, cuda, cuda.machine, stream
        self.context = self.machine.contexts[-1]
        self.shape = self.context._state["enqueued"]
        self.addresses = dict(self.context._state["addresses"])  # a graph keeps the pointers it was captured with

    def replay(self) -> None:
        self.machine.record("graph.replay")
        if self.cuda.current is not self.stream:
            raise RuntimeError("CUDA graph replayed on another stream than its capture's")
        if self.context._state["enqueued"] != self.shape:
            raise RuntimeError(f"CUDA graph captured at {self.shape} replayed on a context set up for another shape")
        now = self.context._state["addresses"]
        self.context._state["addresses"] = dict(self.addresses)  # not the addresses set since: a real replay
        try:  # reads and writes the buffers it was captured on
            self.run()
        finally:
            self.context._state["addresses"] = now


class HostCuda:
    torch = torch

    def __init__(self, machine: FakeMachine, compute_capability: str = "9.0") -> None:
        self.machine, self.compute_capability = machine, compute_capability
        self.current: HostStream | None = None  # the stream made current by use_stream (None: the default one)

    def identity(self) -> dict[str, str]:
        return {"name": self.machine.gpu, "compute_capability": self.compute_capability}

    def stream(self) -> HostStream:
        return HostStream(self.machine)

    def empty(self, shape: tuple[int, ...], dtype: Any, *, pinned: bool = False) -> Any:
        tensor = torch.empty(shape, dtype=dtype)
        if not pinned:  # "device" memory: the only addresses the double lets TensorRT read or write
            self.machine.device_memory.append(weakref.ref(tensor))
        return tensor

    def event(self) -> HostEvent:
        return HostEvent(self.machine)

    @contextlib.contextmanager
    def use_stream(self, stream: HostStream) -> Any:
        before, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = before

    def capture(self, stream: HostStream, run: Any) -> HostGraph:
        self.machine.record("graph.capture")
        with self.use_stream(stream):  # torch.cuda.graph makes the capture stream current while it records
            run()  # a real capture records without running; the fake's "kernels" are host code
        return HostGraph(run, self, stream)


def host_upload(batch: Any, machine: FakeMachine) -> tuple[Any, int]:
    """The calibrator's upload: a copy registered as "device" memory, as torch.cuda's copy would be."""
    tensor = torch.from_numpy(batch).clone()
    machine.device_memory.append(weakref.ref(tensor))
    return tensor, tensor.data_ptr()
