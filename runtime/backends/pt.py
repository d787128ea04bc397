"""Eager PyTorch, the reference backend: rebuilds the model the artifact was exported from.

The model comes from the manifest's model name with the checkpoint recorded in ``manifest.extra["checkpoint"]``
(a path, relative to the artifact directory or absolute), else the project's default weights
(``manifest.extra["init"]``, "calibrated" unless stated). ``manifest.extra`` may also carry ``num_classes`` and
``block_overrides`` (attention options). Runs on ``cpu`` or ``cuda``; ``precision="fp16"`` only on ``cuda``.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.source_runner import SourceRunner
from runtime.source import ModelSource

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")


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
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        if precision == "fp16" and device != "cuda":
            raise ValueError("precision='fp16' needs device='cuda' (PyTorch's CPU kernels are not timed in FP16 here)")
        self.model_name = model or self.source.model_name
        if self.model_name is None:
            raise ValueError(
                f"{self.source.model_path} is a bare ONNX file with no model name; pass model=NAME (and "
                "checkpoint=PATH) to the torch backend, or open the artifact directory instead"
            )
        self.checkpoint = checkpoint
        self.device = device
        self.precision = precision
        self._model: Any = None
        self._saved_threads: int | None = None

    def build_options(self) -> dict[str, Any]:
        """The ``models.create_model`` arguments that reproduce the exported model."""
        extra = self.source.manifest.extra if self.source.manifest is not None else {}
        checkpoint = self.checkpoint or extra.get("checkpoint")
        if checkpoint is not None and self.source.directory is not None and not Path(checkpoint).is_absolute():
            checkpoint = self.source.directory / checkpoint
        options: dict[str, Any] = {"checkpoint": checkpoint, "init": extra.get("init", "calibrated")}
        if "num_classes" in extra:
            options["num_classes"] = int(extra["num_classes"])
        options.update(extra.get("block_overrides", {}))
        return options

    def _activate_impl(self) -> None:
        import torch

        import models

        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "device='cuda' but this PyTorch build sees no CUDA device; install a CUDA build of torch on a GPU "
                "machine, or use device='cpu'"
            )
        if self.threads is not None:
            # Process-wide (PyTorch has no per-model thread pool): restored on deactivate.
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        options = self.build_options()
        logger.info("torch: building %s with %s", self.model_name, options)
        model = models.create_model(self.model_name, **options).eval().to(self.device)
        self._model = model.half() if self.precision == "fp16" else model

    def _deactivate_impl(self) -> None:
        import torch

        self._model = None
        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
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
