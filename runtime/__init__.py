"""One runner interface over PyTorch, ONNX Runtime, OpenVINO and TensorRT; latency reports; serving.

>>> import runtime
>>> with runtime.load("artifacts/sge_resnet50", backend="openvino", threads=2) as runner:
...     logits = runner.infer(batch)
"""

import importlib
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from runtime.backends.base import Runner
from runtime.source import ModelSource, open_source

# Backend name → "module:Class", imported only when that backend is asked for (each wraps an optional package).
BACKENDS: dict[str, str] = {
    "torch": "runtime.backends.pt:TorchRunner",
    "onnxruntime": "runtime.backends.ort:OnnxRuntimeRunner",
    "openvino": "runtime.backends.ov:OpenVINORunner",
    "tensorrt": "runtime.backends.trt:TrtRunner",  # needs tensorrt + CUDA torch; never run here (README: TensorRT)
}

ALIASES = {"pytorch": "torch", "pt": "torch", "ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}


class UnknownBackendError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def list_backends() -> list[str]:
    return list(BACKENDS)


def canonical_name(name: str) -> str:
    """A backend's own name for ``name`` or one of its aliases (``ort`` → ``onnxruntime``)."""
    return ALIASES.get(name, name)


def backend_class(name: str) -> type[Runner]:
    """The runner class for ``name`` (or an alias such as "ort"); a miss lists the choices."""
    key = canonical_name(name)
    if key not in BACKENDS:
        known = [*BACKENDS, *(alias for alias, target in ALIASES.items() if target in BACKENDS)]
        close = get_close_matches(name, known, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UnknownBackendError(f"unknown backend {name!r}; {hint}choose from {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[key].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load(path: str | Path | ModelSource, backend: str = "onnxruntime", **options: Any) -> Runner:
    """A runner (not yet active) for an artifact directory or a bare ``.onnx`` file.

    An artifact directory is verified against its manifest (sizes and sha256) before anything is read. ``options``
    go to the backend's runner: ``threads``, ``device``, ``check_finite``, and the backend's own ones.
    """
    return backend_class(backend)(path, **options)  # each runner opens (and verifies) its own source


__all__ = [
    "BACKENDS",
    "ModelSource",
    "Runner",
    "UnknownBackendError",
    "backend_class",
    "list_backends",
    "load",
    "open_source",
]
