"""What a deployed ONNX file says about itself: ``metadata_props`` (strings) and the versions of the tool chain.

Keys: model_name, input_name, input_shape (JSON), input_layout, mean and std (JSON), num_classes,
checkpoint_sha256 ("default-weights:<init>" without a checkpoint), exporter, opset, sge_deploy_version.
"""

import json
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import onnx

PACKAGE = "sge-deploy"


def tensor_dims(value: onnx.ValueInfoProto) -> list[int | str]:
    """A graph input/output's dims: ints where static, dim_param names where symbolic, "?" where unknown."""
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in value.type.tensor_type.shape.dim]


def package_version() -> str:
    """This project's version: the installed distribution's, else pyproject.toml's (a source checkout)."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return match.group(1) if match else "unknown"


def tool_versions(simplifier: str | None = None) -> dict[str, str]:
    """Versions of everything that shaped the artifact, for the manifest."""
    import onnxruntime
    import torch

    versions = {
        PACKAGE: package_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    if simplifier and simplifier != "none":
        try:
            versions[simplifier] = version(simplifier)
        except PackageNotFoundError:
            versions[simplifier] = "unknown"
    return versions


def build_metadata(
    *,
    model_name: str,
    input_name: str,
    input_shape: tuple[int | str, ...],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    num_classes: int,
    checkpoint_sha256: str,
    exporter: str,
    opset: int,
) -> dict[str, str]:
    return {
        "model_name": model_name,
        "input_name": input_name,
        "input_shape": json.dumps(list(input_shape)),
        "input_layout": "NCHW",
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "num_classes": str(num_classes),
        "checkpoint_sha256": checkpoint_sha256,
        "exporter": exporter,
        "opset": str(opset),
        "sge_deploy_version": package_version(),
    }


def set_metadata(model: onnx.ModelProto, props: dict[str, Any]) -> onnx.ModelProto:
    """Replace ``model``'s metadata_props with ``props`` (values as strings); returns ``model``."""
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    return model


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
