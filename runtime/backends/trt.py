"""TensorRT runner: a serialized plan behind the runner contract, with trtexec-style H2D / compute / D2H timings.

Written against TensorRT 10/11's name-based API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``); NOT run on this project's machines, where TensorRT cannot be installed (README: TensorRT).
Device buffers, the stream and CUDA events come from ``torch.cuda`` (already a dependency; a CUDA build of
PyTorch is needed), on torch's current stream. Buffers are allocated once for the profile's largest batch; host
staging buffers are pinned.
"""

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import TensorSpec
from runtime.backends.base import BackendUnavailableError, InputMismatchError, Runner
from runtime.source import ModelSource, open_source

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
    """Run ``model.plan`` from an artifact directory (manifest-verified) or a plan file with its sidecar JSON.

    Besides ``infer``, it offers the GPU stages the benchmark times apart (``to_device``, ``compute``, ``to_host``,
    ``synchronize``), all on torch's current CUDA stream so that events recorded there bracket each stage.
    ``threads`` is accepted for the common backend options and ignored (TensorRT runs on the GPU).
    """

    name = "tensorrt"
    device = "cuda"

    def __init__(
        self, source: str | Path | ModelSource, *, threads: int | None = None, check_finite: bool = False
    ) -> None:
        super().__init__(check_finite=check_finite)
        source = source if isinstance(source, ModelSource) or Path(source).suffix == ".plan" else open_source(source)
        if isinstance(source, ModelSource):
            trt_entry = source.manifest.extra.get("tensorrt") if source.manifest is not None else None
            if not trt_entry or source.directory is None:
                raise PlanMismatchError(
                    f"{source.model_path.parent} has no TensorRT engine; build one with `scripts/export.py --trt fp16`"
                )
            self.plan_path = source.directory / trt_entry["plan"]
            sidecar = source.directory / trt_entry["sidecar"]
            self._input, self._output = source.input_spec, source.output_spec
        else:
            self.plan_path = Path(source)
            sidecar = self.plan_path.with_name(self.plan_path.name + ".json")
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
        self._torch = torch
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
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        if self._output is None:
            self._output = TensorSpec(self._out_name, ("batch", *out_max[1:]))  # returned as float32
        logger.info("TensorRT %s: %s loaded, batch %d..%d", trt.__version__, self.plan_path.name, *self.batch_range)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        stream = self._torch.cuda.current_stream()
        start, h2d_done, compute_done, d2h_done = self._events
        start.record(stream)
        device_input = self.to_device(batch)
        h2d_done.record(stream)
        device_output = self.compute(device_input)
        compute_done.record(stream)
        host = self._copy_to_host(device_output)
        d2h_done.record(stream)
        d2h_done.synchronize()
        self.last_timings = DeviceTimings(
            h2d_ms=start.elapsed_time(h2d_done),
            compute_ms=h2d_done.elapsed_time(compute_done),
            d2h_ms=compute_done.elapsed_time(d2h_done),
        )
        return host.numpy().astype(np.float32, copy=True)

    # -- the stages the benchmark times apart ----------------------------------------------------------------
    def to_device(self, batch: np.ndarray) -> Any:
        n = batch.shape[0]
        lo, hi = self.batch_range
        if not lo <= n <= hi:
            raise InputMismatchError(
                f"batch of {n} is outside the engine's profile ({lo}..{hi}); split the batch or rebuild with "
                f"--trt-batch MIN OPT MAX covering {n}"
            )
        self._host_in[:n].copy_(self._torch.from_numpy(batch))
        device_input = self._dev_in[:n]
        device_input.copy_(self._host_in[:n], non_blocking=True)
        return device_input

    def compute(self, device_input: Any) -> Any:
        n = device_input.shape[0]
        self._context.set_input_shape(self._in_name, tuple(device_input.shape))
        out_shape = tuple(self._context.get_tensor_shape(self._out_name))
        device_output = self._dev_out[:n]
        self._context.set_tensor_address(self._in_name, device_input.data_ptr())
        self._context.set_tensor_address(self._out_name, device_output.data_ptr())
        if not self._context.execute_async_v3(self._torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")
        return device_output.view(out_shape)

    def to_host(self, device_output: Any) -> np.ndarray:
        host = self._copy_to_host(device_output)
        self.synchronize()
        return host.numpy().astype(np.float32, copy=True)

    def _copy_to_host(self, device_output: Any) -> Any:
        host = self._host_out[: device_output.shape[0]].view(tuple(device_output.shape))
        host.copy_(device_output, non_blocking=True)  # asynchronous: the caller synchronizes
        return host

    def synchronize(self) -> None:
        self._torch.cuda.current_stream().synchronize()

    def _deactivate_impl(self) -> None:
        for attr in ("_context", "_engine", "_runtime", "_dev_in", "_dev_out", "_host_in", "_host_out"):
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
