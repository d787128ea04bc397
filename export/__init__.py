"""PyTorch → ONNX → simplified graph → parity → (TensorRT) → artifact directory with a manifest.

``export_model``, ``ExportResult`` and ``ExportSpec`` are imported on first use, so that ``export.artifacts`` (which
the runtime reads) does not pull in torch.
"""

from models.lazy import lazy_getattr

_LAZY = {
    "export_model": "export.pipeline",
    "ExportResult": "export.pipeline",
    "prepare_for_export": "export.pipeline",
    "ExportSpec": "export.spec",
    "validate_artifact": "export.validate",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr("export", _LAZY)
