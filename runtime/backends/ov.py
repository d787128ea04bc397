"""OpenVINO on the CPU, reading the ONNX file directly (no IR conversion step).

Threads go through ``INFERENCE_NUM_THREADS``; ``INFERENCE_PRECISION_HINT`` is pinned to f32 because OpenVINO
otherwise picks bf16 on CPUs with AMX or AVX512-BF16, which would break parity with the FP32 reference.
``precision="int8"`` reads the artifact's ``model.int8.onnx`` (Q/DQ, which OpenVINO runs as INT8) with the same
f32 hint for what stays float.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import BackendUnavailableError
from runtime.backends.source_runner import SourceRunner, import_backend
from runtime.source import ModelSource

logger = logging.getLogger(__name__)


def import_openvino() -> Any:
    return import_backend("openvino", backend="openvino", install="'sge-deploy[openvino]'")


class OpenVINORunner(SourceRunner):
    name = "openvino"

    def __init__(
        self,
        source: str | Path | ModelSource,
        *,
        device: str = "CPU",
        threads: int | None = None,
        precision: str = "f32",
        config: dict[str, Any] | None = None,
        check_finite: bool = False,
    ) -> None:
        super().__init__(source, threads=threads, check_finite=check_finite)
        self.device = device
        self.precision = precision
        self.config = dict(config or {})
        self._compiled: Any = None
        self._request: Any = None

    def model_path(self) -> Path:
        from export.int8.roles import int8_graph_file

        if self.precision != "int8" or self.source.manifest is None or self.source.directory is None:
            return self.source.model_path
        return self.source.directory / int8_graph_file(self.source.manifest)

    def compile_config(self) -> dict[str, Any]:
        hint = {"int8": "f32", "fp32": "f32"}.get(self.precision, self.precision)  # INT8: Q/DQ graph, float rest
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        config.update(self.config)
        return config

    def _activate_impl(self) -> None:
        ov = import_openvino()
        core = ov.Core()
        if self.device not in core.available_devices:
            raise BackendUnavailableError(
                f"OpenVINO device {self.device!r} is not available here (it has {', '.join(core.available_devices)})"
            )
        model = core.read_model(str(self.model_path()))
        self._compiled = core.compile_model(model, self.device, self.compile_config())
        self._request = self._compiled.create_infer_request()
        logger.info("openvino %s on %s: %s", ov.__version__, self.device, self.compile_config())

    def _deactivate_impl(self) -> None:
        self._request = None
        self._compiled = None

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer({0: batch})
        return self._request.get_output_tensor(0).data.copy()

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "device": self.device,
            "config": self.compile_config(),
            "model_path": str(self.model_path()),
        }
