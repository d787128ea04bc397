"""TensorRT runner: a serialized plan behind the runner contract, with trtexec-style H2D / compute / D2H timings.

Written against TensorRT 10/11's name-based API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``); NOT run on this project's machines, where TensorRT cannot be installed (README: TensorRT).
Device buffers, the stream and CUDA events come from ``torch.cuda`` (a CUDA build of PyTorch is needed) through
``CudaDevice``, the one seam the tests replace. Everything runs on the runner's own non-default stream (TensorRT
warns about the legacy default stream and synchronises around it). Buffers are allocated once for the profile's
largest batch; host staging buffers are pinned. trtexec's ``--useCudaGraph`` and ``--noDataTransfers`` are the
options ``cuda_graph`` and ``transfers=False``.
"""

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import TensorSpec
from export.trt import PRECISIONS as BUILD_PRECISIONS
from runtime.backends.base import BackendUnavailableError, InputMismatchError, Runner
from runtime.backends.cuda_device import CudaDevice
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


def check_plan_compatible(info: dict[str, Any], *, trt_version: str, gpu: dict[str, str]) -> None:
    """A plan runs only on the TensorRT release and the GPU model it was built for; say so in one error."""
    problems = []
    built = info.get("tensorrt_version", "?")
    if built.split(".")[:3] != trt_version.split(".")[:3]:
        problems.append(f"it was built with TensorRT {built}, this machine has {trt_version}")
    built_gpu = info.get("gpu", {})
    if built_gpu.get("compute_capability") != gpu["compute_capability"]:
        problems.append(
            f"it was built for compute capability {built_gpu.get('compute_capability', '?')}, "
            f"this GPU is {gpu['compute_capability']}"
        )
    elif built_gpu.get("name") != gpu["name"]:  # same architecture, another model: tactics were timed elsewhere
        problems.append(f"it was built on a {built_gpu.get('name', '?')}, this GPU is a {gpu['name']}")
    if problems:
        raise PlanMismatchError(
            f"the TensorRT plan cannot run here: {'; '.join(problems)}; rebuild it on this machine with "
            "`sge-deploy trt-build ARTIFACT --trt PRECISION`"
        )


def check_precision(plan: Path, info: dict[str, Any], precision: str) -> None:
    """PrecisionError unless the plan was built at ``precision`` (its sidecar says): a runner cannot change it."""
    from export.int8.roles import PrecisionError

    built = info.get("precision")
    if built == precision:
        return
    what = f"{plan.name} was built as {built}" if built else f"{plan.name} has no sidecar recording its precision"
    todo = (
        f"for {precision} build an engine with `sge-deploy trt-build ARTIFACT --trt {precision}`"
        if precision in BUILD_PRECISIONS
        else f"engines are built as {', '.join(BUILD_PRECISIONS)} (`sge-deploy trt-build ARTIFACT --trt ...`)"
    )
    raise PrecisionError(
        f"a TensorRT engine's precision is fixed when it is built, and {what}; {todo}, then run it without --precision"
    )


def open_cuda_device() -> CudaDevice:
    return CudaDevice()


def profile_batch_range(profile: dict[str, Any]) -> tuple[int, int]:
    return int(profile["min"][0]), int(profile["max"][0])


class TrtRunner(Runner):
    """Run ``model.plan`` from an artifact directory (manifest-verified) or a plan file, with or without its sidecar.

    A plan without a sidecar (trtexec ``--saveEngine``) is read from the engine itself: its input, profile and
    output become known on ``activate``; its TensorRT release is checked by TensorRT at deserialisation only.
    ``infer`` times its stages with CUDA events on the runner's own stream (``last_timings``: what the benchmark
    reports); ``to_device`` and ``compute`` queue theirs on that stream.
    ``cuda_graph``: replay ``execute_async_v3`` from a CUDA graph (trtexec ``--useCudaGraph``), captured after an
    uncaptured run at the batch's shape and captured again whenever the batch size changes: a graph holds the
    context's state of its capture, which a new input shape changes (TensorRT's CUDA-graph guidance).
    ``transfers=False``: after the first call for a batch size, ``infer`` neither copies the input in nor the output
    out, and returns that first call's output (trtexec ``--noDataTransfers``; for timing).
    ``threads`` is accepted for the common backend options and ignored (TensorRT runs on the GPU). ``precision``
    is not a choice here: an engine's precision is fixed when it is built (``trt-build --trt``); given, it must be
    the one the sidecar records, else a PrecisionError says which engine to build.
    """

    name = "tensorrt"
    shares_call_state = True  # one set of device buffers and events
    device = "cuda"

    def __init__(
        self,
        source: str | Path | ModelSource,
        *,
        threads: int | None = None,
        check_finite: bool = False,
        cuda_graph: bool = False,
        transfers: bool = True,
        precision: str | None = None,
    ) -> None:
        from export.int8.roles import normalise_precision

        super().__init__(check_finite=check_finite)
        precision = normalise_precision(precision) if precision is not None else None
        source = source if isinstance(source, ModelSource) or Path(source).suffix == ".plan" else open_source(source)
        if isinstance(source, ModelSource):
            trt_entry = source.manifest.extra.get("tensorrt") if source.manifest is not None else None
            if not trt_entry or source.directory is None:
                fixed = "; a TensorRT engine's precision is fixed when it is built" if precision else ""
                build = precision if precision in BUILD_PRECISIONS else "fp16"
                raise PlanMismatchError(
                    f"{source.model_path.parent} has no TensorRT engine{fixed}: build one with "
                    f"`sge-deploy trt-build ARTIFACT --trt {build}`"
                )
            self.plan_path = source.directory / trt_entry["plan"]
            sidecar: Path | None = source.directory / trt_entry["sidecar"]
            self._input, self._output = source.input_spec, source.output_spec
        else:
            self.plan_path = Path(source)
            sidecar = self.plan_path.with_name(self.plan_path.name + ".json")
            self._input = self._output = None
            if not sidecar.is_file():
                sidecar = None  # e.g. trtexec --saveEngine: read what is needed from the engine on activate
        if not self.plan_path.is_file():
            raise FileNotFoundError(f"no TensorRT plan at {self.plan_path}; build one with sge-deploy trt-build")
        if sidecar is not None and not sidecar.is_file():
            raise FileNotFoundError(f"the artifact's sidecar {sidecar} is missing; re-run the TensorRT build")
        self.info: dict[str, Any] = json.loads(sidecar.read_text()) if sidecar is not None else {}
        if precision is not None:
            check_precision(self.plan_path, self.info, precision)
        self.batch_range = profile_batch_range(self.info["profile"]) if self.info else None
        self.cuda_graph, self.transfers = cuda_graph, transfers
        self.last_timings: DeviceTimings | None = None

    @property
    def input_spec(self) -> TensorSpec:
        if self._input is None:
            if not self.info:
                raise RuntimeError("a plan without a sidecar is described once active; use `with runner:`")
            p = self.info["profile"]
            return TensorSpec(name=p["input"], shape=("batch", *p["opt"][1:]))
        return self._input

    @property
    def output_spec(self) -> TensorSpec:
        if self._output is None:
            raise RuntimeError("a bare plan file's output is known once the runner is active; use `with runner:`")
        return self._output

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "plan": self.info, "cuda_graph": self.cuda_graph, "transfers": self.transfers}

    # -- hooks -----------------------------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        trt = _import_trt()
        cuda = open_cuda_device()
        if self.info:
            check_plan_compatible(self.info, trt_version=trt.__version__, gpu=cuda.identity())
        else:
            logger.warning("%s has no sidecar: TensorRT alone checks that it fits this machine", self.plan_path.name)
        self._cuda, self._torch = cuda, cuda.torch
        from export.trt.log import process_logger

        self._runtime = trt.Runtime(process_logger(trt))  # TensorRT keeps one logger a process: ours, as builds use
        self._engine = self._runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise PlanMismatchError(
                f"TensorRT {trt.__version__} could not deserialize {self.plan_path} (see its log: another TensorRT "
                "release or GPU?); rebuild the plan on this machine"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:  # TensorRT returns null where it cannot allocate the context's device memory
            raise PlanMismatchError(
                f"TensorRT could not create an execution context for {self.plan_path.name} (see its log: out of GPU "
                "memory?); free GPU memory or rebuild with a smaller --trt-batch MAX"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise PlanMismatchError(f"expected one input and one output; the plan has {inputs} and {outputs}")
        self._in_name, self._out_name = inputs[0], outputs[0]
        lo, opt, hi = input_shape_range(self._engine, self._in_name)
        if not self.info:
            self.batch_range = (lo[0], hi[0])
            self._input = TensorSpec(name=self._in_name, shape=("batch", *opt[1:]))
        self._set_shape(hi)
        out_max = tuple(self._context.get_tensor_shape(self._out_name))
        in_dtype = _torch_dtype(self._torch, trt, self._engine.get_tensor_dtype(self._in_name))
        out_dtype = _torch_dtype(self._torch, trt, self._engine.get_tensor_dtype(self._out_name))
        self._stream = cuda.stream()
        self._dev_in = cuda.empty(hi, in_dtype)
        self._dev_out = cuda.empty(out_max, out_dtype)
        self._host_in = cuda.empty(hi, in_dtype, pinned=True)
        self._host_out = cuda.empty(out_max, out_dtype, pinned=True)
        self._events = [cuda.event() for _ in range(4)]
        self._graph: tuple[int, Any] | None = None  # (batch size, CUDA graph captured at it)
        self._first_output: dict[int, np.ndarray] = {}
        if self._output is None:
            self._output = TensorSpec(self._out_name, ("batch", *out_max[1:]))  # returned as float32
        logger.info("TensorRT %s: %s loaded, batch %d..%d", trt.__version__, self.plan_path.name, *self.batch_range)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        # Host work first (the pinned staging copy, shapes, addresses, a CUDA graph's capture), so that the events
        # time device work only, as trtexec's "H2D Latency" and "GPU Compute Time" do: an event recorded on an idle
        # stream completes at once, and the host work after it counted as H2D or compute time.
        n = batch.shape[0]
        start, h2d_done, compute_done, d2h_done = self._events
        if not self.transfers and n in self._first_output:
            self._prepare(self._dev_in[:n])  # the input as the first call left it: no copy
            with self._cuda.use_stream(self._stream):
                start.record(self._stream)
                self._launch(n)
                compute_done.record(self._stream)
            compute_done.synchronize()
            self.last_timings = DeviceTimings(h2d_ms=0.0, compute_ms=start.elapsed_time(compute_done), d2h_ms=0.0)
            return self._first_output[n]
        self._stage(batch)
        device_output = self._prepare(self._dev_in[:n])
        with self._cuda.use_stream(self._stream):
            start.record(self._stream)
            self._upload(n)
            h2d_done.record(self._stream)
            self._launch(n)
            compute_done.record(self._stream)
            host = self._copy_to_host(device_output)
            d2h_done.record(self._stream)
        d2h_done.synchronize()
        self.last_timings = DeviceTimings(
            h2d_ms=start.elapsed_time(h2d_done),
            compute_ms=h2d_done.elapsed_time(compute_done),
            d2h_ms=compute_done.elapsed_time(d2h_done),
        )
        result = host.numpy().astype(np.float32, copy=True)
        if not self.transfers:
            self._first_output[n] = result
        return result

    # -- the stages, each queued on the runner's stream (infer times them itself: the benchmark reads last_timings) --
    def _stage(self, batch: np.ndarray) -> None:
        """The batch into the pinned host buffer (host work: before any timed event)."""
        n = batch.shape[0]
        lo, hi = self.batch_range
        if not lo <= n <= hi:
            raise InputMismatchError(
                f"batch of {n} is outside the engine's profile ({lo}..{hi}); split the batch or rebuild with "
                f"--trt-batch MIN OPT MAX covering {n}"
            )
        self._host_in[:n].copy_(self._torch.from_numpy(batch))

    def _upload(self, n: int) -> Any:
        device_input = self._dev_in[:n]
        with self._cuda.use_stream(self._stream):
            device_input.copy_(self._host_in[:n], non_blocking=True)
        return device_input

    def _prepare(self, device_input: Any) -> Any:
        """Shapes and addresses for this batch, and its CUDA graph captured where asked (host work, and a capture
        synchronises): the output tensor, viewed at the engine's output shape."""
        n = device_input.shape[0]
        self._set_shape(tuple(device_input.shape))
        out_shape = tuple(self._context.get_tensor_shape(self._out_name))
        device_output = self._dev_out[:n]
        for name, tensor in ((self._in_name, device_input), (self._out_name, device_output)):
            if not self._context.set_tensor_address(name, tensor.data_ptr()):
                raise RuntimeError(f"TensorRT refused the address of {name!r} (see its log)")
        if self.cuda_graph and (self._graph is None or self._graph[0] != n):
            self._graph = None  # captured at another shape: the context has changed since
            with self._cuda.use_stream(self._stream):
                self._execute()  # TensorRT's shape-dependent set-up happens on a first, uncaptured run
                self._graph = (n, self._cuda.capture(self._stream, self._execute))
        return device_output.view(out_shape)

    def _launch(self, n: int) -> None:
        """The work on the device: the batch's CUDA graph replayed, or execute_async_v3. The runner's stream is made
        current: a CUDA graph replays on the current stream, which must be the one the copies are queued on."""
        with self._cuda.use_stream(self._stream):
            if self.cuda_graph:
                self._graph[1].replay()
            else:
                self._execute()

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see its log)")

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if not self._context.set_input_shape(self._in_name, shape):
            raise InputMismatchError(f"TensorRT refused the input shape {shape} (outside the profile?)")

    def _copy_to_host(self, device_output: Any) -> Any:
        host = self._host_out[: device_output.shape[0]].view(tuple(device_output.shape))
        host.copy_(device_output, non_blocking=True)  # asynchronous: the caller synchronizes
        return host

    def _deactivate_impl(self) -> None:
        for attr in ("_graph", "_context", "_engine", "_runtime", "_dev_in", "_dev_out", "_host_in", "_host_out"):
            setattr(self, attr, None)


def _import_trt() -> Any:
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailableError(
            f"the TensorRT runner needs tensorrt ({err}); install it with `{TENSORRT_HINT}`"
        ) from err
    if not hasattr(tensorrt, "__version__"):  # a namespace package, e.g. tensorrt-stubs alone
        raise BackendUnavailableError(f"the importable `tensorrt` is not TensorRT; install it with `{TENSORRT_HINT}`")
    return tensorrt


def input_shape_range(engine: Any, name: str) -> tuple[tuple[int, ...], ...]:
    """The input's (MIN, OPT, MAX): its fixed shape three times where the plan's input is static (built from an ONNX
    with a static batch, where profile 0's shapes are not documented), else profile 0's."""
    fixed = tuple(engine.get_tensor_shape(name))
    if fixed and all(d >= 0 for d in fixed):
        return fixed, fixed, fixed
    return tuple(tuple(s) for s in engine.get_tensor_profile_shape(name, 0))


def _torch_dtype(torch: Any, trt: Any, dtype: Any) -> Any:
    """Float I/O only: integer I/O (trtexec's --inputIOFormats=int8:chw) holds quantised values whose scales the
    plan does not expose, so feeding it images or reading its logits would be silently wrong."""
    table = {trt.float32: torch.float32, trt.float16: torch.float16}
    if dtype not in table:
        raise PlanMismatchError(
            f"the plan's input or output is {getattr(dtype, 'name', dtype)}, not FP32 or FP16: this runner feeds "
            "images and returns logits as floats; build the plan with float I/O (sge-deploy's builds always are)"
        )
    return table[dtype]
