"""The manifest against the graph's own metadata: the export writes the model name, input shape, mean and std into
the graph (export/metadata.py), where the manifest's hash covers them; manifest.json itself is not signed, so an
edit of it alone (mean 0, std 1) passed every hash and changed every prediction. Pure: no ONNX, no torch."""

import json
from pathlib import Path

from export.artifacts import ArtifactError, Manifest


def check_graph_metadata(manifest: Manifest, props: dict[str, str], *, directory: str | Path, graph: str) -> None:
    """ArtifactError where the manifest's model name, input size, mean or std differ from the metadata the export
    wrote into ``graph`` itself (``props``)."""
    problem = manifest_disagreement(manifest, props)
    if problem is not None:
        raise ArtifactError(
            f"{directory}/manifest.json disagrees with {graph} ({problem}); the manifest was edited: restore it or "
            "re-export the artifact"
        )


def manifest_disagreement(manifest: Manifest, props: dict[str, str]) -> str | None:
    """Where the manifest's model name, input size, mean or std differ from the graph's metadata, in words; None where
    they agree or the graph records none."""
    pre = manifest.preprocessing
    if "model_name" in props and props["model_name"] != manifest.model:
        return f"model {manifest.model!r}, the graph {props['model_name']!r}"
    if "input_shape" in props and "input_size" in pre:
        try:
            recorded_shape = json.loads(props["input_shape"])
        except ValueError:
            return f"the graph's input_shape is unreadable ({props['input_shape'][:40]!r})"
        sides = recorded_shape[2:] if isinstance(recorded_shape, list) else []
        if len(sides) == 2 and all(isinstance(side, int) for side in sides) and sides != list(pre["input_size"]):
            return f"preprocessing.input_size {list(pre['input_size'])}, the graph {sides}"
    for key in ("mean", "std"):
        if key not in props or key not in pre:
            continue
        try:
            recorded = [float(v) for v in json.loads(props[key])]
        except (ValueError, TypeError):
            return f"the graph's {key} is unreadable ({props[key][:40]!r})"
        if len(recorded) != len(pre[key]) or any(abs(a - b) > 1e-6 for a, b in zip(recorded, pre[key], strict=False)):
            return f"preprocessing.{key} {list(pre[key])}, the graph {recorded}"
    return None
