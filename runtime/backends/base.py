"""The runner contract every backend implements (Polygraphy-style: public methods validate, ``_impl`` hooks run).

A runner opens a model (an artifact directory or a model file), describes its input and output, and maps one
NCHW float batch to one output array. ``activate``/``deactivate`` (or ``with runner:``) hold the backend's
session; ``infer`` checks the batch against the model's input spec before calling the backend.
"""

import abc
import contextlib
import logging
import threading
from typing import Any

import numpy as np

from export.artifacts import TensorSpec

logger = logging.getLogger(__name__)


def one_line(err: BaseException) -> str:
    """An error as one line for a warning or a refusal: its cause, not OpenVINO's ``Exception from src/...cpp:N:``
    location lines (a conversion failure's summary where it has one); the type's name when it has no message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    causes = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    if "Summary:" in causes:
        return "; ".join(causes[causes.index("Summary:") + 1 :]) or causes[0]
    if causes:
        return causes[0] if len(causes) == 1 else f"{causes[0]} ... {causes[-1]}"
    return lines[0] if lines else type(err).__name__


class InputMismatchError(ValueError):
    """A batch does not fit the model's input (rank, shape, dtype or layout)."""


class NonFiniteOutputError(FloatingPointError):
    """The model produced NaN or Inf."""


class BackendUnavailableError(ImportError):
    """The backend cannot run here: its package is not installed, or the device asked for is not there (a torch
    without CUDA, an onnxruntime without the CUDA provider); the message says what to install."""


def check_batch(batch: Any, spec: TensorSpec) -> np.ndarray:
    """Validate ``batch`` against ``spec`` and return it as a C-contiguous array; raise one clear error."""
    if not isinstance(batch, np.ndarray):
        raise InputMismatchError(f"input {spec.name!r} must be a numpy array; got {type(batch).__name__}")
    want_dtype = np.dtype(spec.dtype)
    if batch.dtype != want_dtype:
        raise InputMismatchError(
            f"input {spec.name!r} must be {want_dtype}; got {batch.dtype} (convert with batch.astype(np.{want_dtype}))"
        )
    if batch.ndim != len(spec.shape):
        hint = "; add a batch dimension with batch[None]" if batch.ndim == len(spec.shape) - 1 else ""
        raise InputMismatchError(
            f"input {spec.name!r} must have shape {format_shape(spec.shape)}; got {batch.shape}{hint}"
        )
    if (
        spec.layout == "NCHW"
        and batch.ndim == 4
        and batch.shape[1] != spec.shape[1]
        and batch.shape[3] == spec.shape[1]
    ):
        raise InputMismatchError(
            f"input {spec.name!r} must be NCHW {format_shape(spec.shape)}; got {batch.shape}, which looks NHWC: "
            "transpose with batch.transpose(0, 3, 1, 2)"
        )
    for axis, (got, want) in enumerate(zip(batch.shape, spec.shape, strict=True)):
        if isinstance(want, int) and want >= 0 and got != want:
            raise InputMismatchError(
                f"input {spec.name!r} must have shape {format_shape(spec.shape)}; got {batch.shape} (axis {axis})"
            )
    if batch.shape[0] == 0:
        raise InputMismatchError(f"input {spec.name!r} has an empty batch")
    refusal = spec.side_refusal(*batch.shape[2:]) if batch.ndim == 4 else None
    if refusal:
        raise InputMismatchError(refusal)
    return np.ascontiguousarray(batch)


def label_with_precision(label: str, described: dict[str, Any]) -> str:
    """A table's label for a backend, with the precision that ran where it is not the one asked for
    ("openvino:bf16 (runs fp32)" on a CPU without bf16); the JSON's runner description keeps both."""
    ran, asked = described.get("precision"), described.get("precision_requested")
    return label if asked is None or ran == asked else f"{label} (runs {ran})"


def format_shape(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class Runner(abc.ABC):
    """Base class: subclasses set ``name`` and implement the ``_activate_impl``/``_infer_impl`` hooks."""

    name: str = "runner"
    # a backend that turns NaN/Inf input into finite-looking output (OpenVINO) refuses it even without check_finite
    hides_nonfinite_input: bool = False
    # a backend whose one set of call buffers serves every call (OpenVINO's InferRequest, TensorRT's device buffers,
    # ONNX Runtime's IO binding on a GPU) takes calls from several threads one at a time, and closes after the call
    # in flight: unlocked, two threads got each other's outputs
    shares_call_state: bool = False

    def __init__(self, *, check_finite: bool = False) -> None:
        self.check_finite = check_finite
        self.is_active = False
        self._call_lock = threading.Lock()

    def _one_call_at_a_time(self) -> Any:
        return self._call_lock if self.shares_call_state else contextlib.nullcontext()

    # -- the contract ------------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def input_spec(self) -> TensorSpec: ...

    @property
    @abc.abstractmethod
    def output_spec(self) -> TensorSpec: ...

    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        with self._one_call_at_a_time():
            if self.is_active:
                self._deactivate_impl()
                self.is_active = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.is_active:
            raise RuntimeError(f"{self.name} runner is not active; use `with runner:` or call runner.activate()")
        batch = check_batch(batch, self.input_spec)
        if (self.check_finite or self.hides_nonfinite_input) and not np.isfinite(batch).all():
            bad = int((~np.isfinite(batch)).sum())
            raise InputMismatchError(
                f"input {self.input_spec.name!r} holds {bad} NaN/Inf values; fix the preprocessing or the data"
            )
        with self._one_call_at_a_time():
            if not self.is_active:  # closed by another thread while this call waited
                raise RuntimeError(f"{self.name} runner was closed while this call waited")
            out = self._infer_impl(batch)
        if self.check_finite and not np.isfinite(out).all():
            bad = int((~np.isfinite(out)).sum())
            raise NonFiniteOutputError(
                f"{self.name} produced {bad} non-finite values (NaN/Inf) for a batch of {batch.shape[0]}; "
                "check the input for NaN/Inf and the precision (FP16 overflows past 65504)"
            )
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
        }

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- hooks -------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate_impl(self) -> None: ...

    def _deactivate_impl(self) -> None:
        return None

    @abc.abstractmethod
    def _infer_impl(self, batch: np.ndarray) -> np.ndarray: ...
