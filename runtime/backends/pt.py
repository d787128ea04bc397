"""Eager PyTorch, the reference backend: rebuilds the model the artifact was exported from.

The model comes from the manifest's model name with what the export recorded in ``manifest.extra["source"]``:
the checkpoint (a path, absolute or relative to the artifact directory; its sha256 is checked), else the project's
default weights with the recorded ``init`` ("calibrated" unless stated), ``num_classes`` and ``block_overrides``
(attention options). A model exported with ``--model package.module:factory`` is rebuilt by that factory
(models/factory.py). Runs on ``cpu`` or ``cuda``; ``precision="fp16"`` only on ``cuda``.
"""

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import DEFAULT_WEIGHTS_PREFIX
from runtime.backends.base import BackendUnavailableError
from runtime.backends.source_runner import SourceRunner, import_backend
from runtime.source import ModelSource, recorded_source

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")


class SharedSetting:
    """A process-wide torch setting that open runners ask for: the most recently opened open runner's value holds,
    and the value from before the first one comes back when the last one closes, in whatever order they close.
    Runners open and close on any thread: a lock keeps the list of holders whole."""

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None]) -> None:
        self._read, self._write = read, write
        self._before: Any = None
        self._holders: list[tuple[object, Any]] = []
        self._lock = threading.Lock()

    def hold(self, owner: object, value: Any) -> None:
        with self._lock:
            if not self._holders:
                self._before = self._read()
            self._holders.append((owner, value))
            self._write(value)

    def release(self, owner: object) -> None:
        with self._lock:
            kept = [(o, v) for o, v in self._holders if o is not owner]
            if len(kept) == len(self._holders):
                return  # it held nothing
            self._holders = kept
            self._write(kept[-1][1] if kept else self._before)


def _torch() -> Any:
    import torch

    return torch


def _set_tf32(allowed: tuple[bool, bool]) -> None:
    torch = _torch()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = allowed


THREADS = SharedSetting(lambda: _torch().get_num_threads(), lambda n: _torch().set_num_threads(n))
TF32 = SharedSetting(lambda: (_torch().backends.cudnn.allow_tf32, _torch().backends.cuda.matmul.allow_tf32), _set_tf32)


class TorchRunner(SourceRunner):
    name = "torch"

    def __init__(
        self,
        source: str | Path | ModelSource,
        *,
        model: str | None = None,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        check_finite: bool = False,
    ) -> None:
        super().__init__(source, threads=threads, check_finite=check_finite)
        if device not in DEVICES:
            raise ValueError(f"torch device must be one of {', '.join(DEVICES)}; got {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(
                f"the torch backend runs precision {' or '.join(PRECISIONS)}; got {precision!r} (int8 runs on "
                "onnxruntime and openvino, bf16 on openvino)"
            )
        if precision == "fp16" and device != "cuda":
            raise ValueError(
                "the torch backend runs fp16 on a CUDA GPU only (device='cuda'; benchmark --device cuda); PyTorch's "
                "CPU kernels are not timed in FP16 here"
            )
        self.model_name = model or self.source.model_name
        if self.model_name is None:
            raise ValueError(
                f"{self.source.model_path} is a bare ONNX file with no model name: give the torch backend its "
                "artifact directory instead (from Python, runtime.load(..., model=NAME, checkpoint=PATH) also works)"
            )
        self.checkpoint = checkpoint
        self.device = device
        self.precision = precision
        self._model: Any = None

    def build_options(self) -> dict[str, Any]:
        """The ``models.create_model`` arguments that reproduce the exported model (from ``manifest.extra``)."""
        recorded = recorded_source(self.source.manifest)
        if recorded.get("registry") is False and self.model_name == self.source.model_name:
            raise ValueError(
                f"{self.model_name} was exported from a custom module, which the torch backend cannot rebuild; "
                "export it with --model package.module:factory, pass model=NAME for a registry model, or compare "
                "with the onnxruntime backend"
            )
        return {**self._weights(recorded), **self._architecture(recorded)}

    def factory(self) -> str | None:
        """The ``package.module:factory`` the artifact was exported from, when the torch runner rebuilds that model."""
        spec = recorded_source(self.source.manifest).get("factory")
        return spec if spec and self.model_name == self.source.model_name else None

    def _weights(self, recorded: dict[str, Any]) -> dict[str, Any]:
        checkpoint = self.checkpoint or recorded.get("checkpoint")
        if checkpoint is not None and self.source.directory is not None and not Path(checkpoint).is_absolute():
            checkpoint = self.source.directory / checkpoint
        init = recorded.get("init")
        if self.source.manifest is None and checkpoint is None:
            # a bare file records its weights in its metadata: the default weights' init, or a checkpoint's sha256
            weights = self.source.weights
            if weights and not self.source.untrained:
                raise ValueError(
                    f"{self.source.model_path} was exported from a checkpoint (sha256 {weights[:12]}…); pass "
                    "checkpoint=PATH to the torch backend, or open the artifact directory"
                )
            init = (weights or "").removeprefix(DEFAULT_WEIGHTS_PREFIX)
        return {"checkpoint": checkpoint, "init": init if init in ("calibrated", "random") else "calibrated"}

    @staticmethod
    def _architecture(recorded: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if recorded.get("num_classes") is not None:
            options["num_classes"] = int(recorded["num_classes"])
        options.update(recorded.get("block_overrides") or {})
        return options

    def _check_checkpoint(self, checkpoint: Path | None) -> None:
        """The checkpoint must still be the file the artifact was exported from."""
        recorded = self.source.weights
        if checkpoint is None or self.checkpoint is not None or not recorded or self.source.untrained:
            return
        from models import CheckpointError
        from models.atomic import file_sha256

        where = (
            "give the checkpoint (runtime.load(..., checkpoint=PATH), validate --checkpoint PATH), or use the exported "
            "graph, which needs none (--backend onnxruntime; evaluate --reference onnxruntime)"
        )
        if not Path(checkpoint).is_file():
            raise CheckpointError(f"the artifact was exported from {checkpoint}, which is gone; {where}")
        if file_sha256(checkpoint) != recorded:
            raise CheckpointError(f"{checkpoint} changed since the export (sha256 differs); re-export, or {where}")

    def _activate_impl(self) -> None:
        torch = import_backend("torch", backend="torch", install="'sge-deploy[export]' (PyTorch and the models)")
        import models

        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                "device='cuda' but this PyTorch build sees no CUDA device; install a CUDA build of torch on a GPU "
                "machine, or use device='cpu'"
            )
        factory = self.factory()
        if factory is not None:
            from models.factory import rebuild

            checkpoint = self._weights(recorded_source(self.source.manifest))["checkpoint"]
            self._check_checkpoint(checkpoint)
            logger.info("torch: building %s with %s (checkpoint %s)", self.model_name, factory, checkpoint)
            model = rebuild(factory, checkpoint=checkpoint, weights_sha256=self.source.weights or "").to(self.device)
        else:
            options = self.build_options()
            self._check_checkpoint(options["checkpoint"])
            logger.info("torch: building %s with %s", self.model_name, options)
            model = models.create_model(self.model_name, **options).eval().to(self.device)
        self._model = model.half() if self.precision == "fp16" else model
        # Process-wide settings (PyTorch has no per-model ones), set last so that a failed activation leaves them
        # untouched. FP32 means FP32: cuDNN's convolutions default to TF32 (10-bit mantissa) on Ampere and later,
        # which errs ~1e-3 against the CPU.
        if self.device == "cuda" and self.precision == "fp32":
            TF32.hold(self, (False, False))
        if self.threads is not None:
            THREADS.hold(self, self.threads)

    def _deactivate_impl(self) -> None:
        import torch

        self._model = None
        TF32.release(self)
        THREADS.release(self)
        if self.device == "cuda":
            torch.cuda.empty_cache()

    # The three stages the benchmark times apart on a GPU (host→device, compute, device→host).
    def to_device(self, batch: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(batch).to(self.device, non_blocking=False)
        return tensor.half() if self.precision == "fp16" else tensor

    def compute(self, tensor: Any) -> Any:
        import torch

        with torch.inference_mode():
            return self._model(tensor)

    def to_host(self, tensor: Any) -> np.ndarray:
        return tensor.float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self.to_host(self.compute(self.to_device(batch)))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "model": self.model_name,
            "device": self.device,
            "precision": self.precision,
        }
