"""TensorRT runner: a serialized plan behind the runner contract, with trtexec-style H2D / compute / D2H timings.

Written against TensorRT 10/11's name-based API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``); NOT run on this project's machines, where TensorRT cannot be installed (notes/tensorrt.md).
Device buffers, the stream and CUDA events come from ``torch.cuda`` (already a dependency; a CUDA build of
PyTorch is needed). Buffers are allocated once for the profile's largest batch; host staging buffers are pinned.
"""

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import TensorSpec, load_manifest
from runtime.backends.base import BackendUnavailableError, InputMismatchError, Runner

logger = logging.getLogger(__name__)

TENSORRT_HINT = "pip install tensorrt-cu12 (CUDA 12) or tensorrt-cu13 (CUDA 13)"


class PlanMismatchError(ValueError):
    """The plan was built for another TensorRT version or GPU architecture than this machine's."""


@dataclass(frozen=True)
class DeviceTimings:
    """One ``infer`` call timed with CUDA events on the runner's stream, in milliseconds (as trtexec reports)."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float

    @property
    def total_ms(self) -> float:
        return self.h2d_ms + self.compute_ms + self.d2h_ms

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "total_ms": self.total_ms}


def check_plan_compatible(info: dict[str, Any], *, trt_version: str, compute_capability: str) -> None:
    """A plan runs only on the TensorRT release and the GPU architecture it was built with; say so in one error."""
    problems = []
    built = info.get("tensorrt_version", "?")
    if built.split(".")[:3] != trt_version.split(".")[:3]:
        problems.append(f"it was built with TensorRT {built}, this machine has {trt_version}")
    built_cc = info.get("gpu", {}).get("compute_capability", "?")
    if built_cc != compute_capability:
        problems.append(f"it was built for compute capability {built_cc}, this GPU is {compute_capability}")
    if problems:
        raise PlanMismatchError(
            f"the TensorRT plan cannot run here: {'; '.join(problems)}; rebuild it on this machine with "
            "`python scripts/export.py ... --trt PRECISION`"
        )


def profile_batch_range(profile: dict[str, Any]) -> tuple[int, int]:
    return int(profile["min"][0]), int(profile["max"][0])


class TrtRunner(Runner):
    """Run ``model.plan`` from an artifact directory (manifest-verified) or a plan file with its sidecar JSON."""

    name = "tensorrt"

    def __init__(self, source: str | Path, *, check_finite: bool = False) -> None:
        super().__init__(check_finite=check_finite)
        source = Path(source)
        if source.is_dir():
            manifest = load_manifest(source, verify=True)
            trt_entry = manifest.extra.get("tensorrt")
            if not trt_entry:
                raise PlanMismatchError(
                    f"artifact {source} has no TensorRT engine; build one with `scripts/export.py ... --trt fp16`"
                )
            self.plan_path = source / trt_entry["plan"]
            sidecar = source / trt_entry["sidecar"]
            self._input, self._output = manifest.inputs[0], manifest.outputs[0]
        else:
            self.plan_path, sidecar = source, source.with_name(source.name + ".json")
            self._input = self._output = None
        if not self.plan_path.is_file() or not sidecar.is_file():
            raise FileNotFoundError(f"need {self.plan_path} and its sidecar {sidecar}; re-run the TensorRT build")
        self.info = json.loads(sidecar.read_text())
        self.batch_range = profile_batch_range(self.info["profile"])
        self.last_timings: DeviceTimings | None = None

    @property
    def input_spec(self) -> TensorSpec:
        if self._input is None:
            p = self.info["profile"]
            return TensorSpec(name=p["input"], shape=("batch", *p["opt"][1:]))
        return self._input

    @property
    def output_spec(self) -> TensorSpec:
        if self._output is None:
            raise RuntimeError("a bare plan file's output is known once the runner is active; use `with runner:`")
        return self._output

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "plan": self.info}

    # -- hooks -----------------------------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        trt, torch = _import_trt(), _import_torch_cuda()
        major, minor = torch.cuda.get_device_capability(0)
        check_plan_compatible(self.info, trt_version=trt.__version__, compute_capability=f"{major}.{minor}")
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise PlanMismatchError(f"TensorRT could not deserialize {self.plan_path} (see its log); rebuild the plan")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise PlanMismatchError(f"expected one input and one output; the plan has {inputs} and {outputs}")
        self._in_name, self._out_name = inputs[0], outputs[0]
        max_shape = tuple(self._engine.get_tensor_profile_shape(self._in_name, 0)[2])
        self._context.set_input_shape(self._in_name, max_shape)
        out_max = tuple(self._context.get_tensor_shape(self._out_name))
        in_dtype = _torch_dtype(torch, trt, self._engine.get_tensor_dtype(self._in_name))
        out_dtype = _torch_dtype(torch, trt, self._engine.get_tensor_dtype(self._out_name))
        self._dev_in = torch.empty(max_shape, dtype=in_dtype, device="cuda")
        self._dev_out = torch.empty(out_max, dtype=out_dtype, device="cuda")
        self._host_in = torch.empty(max_shape, dtype=in_dtype).pin_memory()
        self._host_out = torch.empty(out_max, dtype=out_dtype).pin_memory()
        self._stream = torch.cuda.Stream()
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        if self._output is None:
            self._output = TensorSpec(self._out_name, ("batch", *out_max[1:]))  # returned as float32
        logger.info("TensorRT %s: %s loaded, batch %d..%d", trt.__version__, self.plan_path.name, *self.batch_range)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        import torch

        n = batch.shape[0]
        lo, hi = self.batch_range
        if not lo <= n <= hi:
            raise InputMismatchError(
                f"batch of {n} is outside the engine's profile ({lo}..{hi}); split the batch or rebuild with "
                f"--trt-batch MIN OPT MAX covering {n}"
            )
        self._context.set_input_shape(self._in_name, tuple(batch.shape))
        out_shape = tuple(self._context.get_tensor_shape(self._out_name))
        dev_in, dev_out = self._dev_in[:n], self._dev_out[:n]
        host_in, host_out = self._host_in[:n], self._host_out[:n]
        host_in.copy_(torch.from_numpy(batch))
        self._context.set_tensor_address(self._in_name, dev_in.data_ptr())
        self._context.set_tensor_address(self._out_name, dev_out.data_ptr())
        start, h2d_done, compute_done, d2h_done = self._events
        with torch.cuda.stream(self._stream):
            start.record(self._stream)
            dev_in.copy_(host_in, non_blocking=True)
            h2d_done.record(self._stream)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")
            compute_done.record(self._stream)
            host_out.copy_(dev_out, non_blocking=True)
            d2h_done.record(self._stream)
        self._stream.synchronize()
        self.last_timings = DeviceTimings(
            h2d_ms=start.elapsed_time(h2d_done),
            compute_ms=h2d_done.elapsed_time(compute_done),
            d2h_ms=compute_done.elapsed_time(d2h_done),
        )
        return host_out.numpy().reshape(out_shape).astype(np.float32, copy=True)

    def _deactivate_impl(self) -> None:
        for attr in ("_context", "_engine", "_runtime", "_dev_in", "_dev_out", "_host_in", "_host_out", "_stream"):
            setattr(self, attr, None)


def _import_trt() -> Any:
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailableError(
            f"the TensorRT runner needs tensorrt ({err}); install it with `{TENSORRT_HINT}`"
        ) from err
    return tensorrt


def _import_torch_cuda() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "the TensorRT runner keeps its buffers on the GPU with torch.cuda, and this PyTorch sees no CUDA device: "
            "install a CUDA build of torch on a machine with an NVIDIA GPU"
        )
    return torch


def _torch_dtype(torch: Any, trt: Any, dtype: Any) -> Any:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if dtype not in table:
        raise PlanMismatchError(f"unsupported I/O dtype {dtype} in the plan; export with FP32 inputs and outputs")
    return table[dtype]
