"""PyTorch → ONNX → simplified graph → parity → (TensorRT) → artifact directory with a manifest.

``export_model``, ``ExportResult`` and ``ExportSpec`` are imported on first use, so that ``export.artifacts`` (which
the runtime reads) does not pull in torch.
"""

from typing import Any

_LAZY = {
    "export_model": "export.pipeline",
    "ExportResult": "export.pipeline",
    "prepare_for_export": "export.pipeline",
    "ExportSpec": "export.spec",
    "validate_artifact": "export.validate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
