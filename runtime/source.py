"""What a runner opens: an artifact directory (verified against its manifest) or a bare ``.onnx`` file.

An artifact directory carries the model name, the input/output specs and the preprocessing; a bare ONNX file
carries only its graph, so its specs are read from the graph's inputs and outputs.

What is verified is what runs: opening a directory hashes every recorded file and keeps each file's identity
(device, inode, size, mtime, ctime); ``ModelSource.check_unchanged`` compares them again, and the runners call it
before and after their backend reads the files, so a file swapped or rewritten in between is refused.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export.artifacts import (
    DEFAULT_WEIGHTS_PREFIX,
    MANIFEST_NAME,
    ArtifactError,
    FileIdentity,
    Manifest,
    TensorSpec,
    check_unchanged,
    load_verified,
)

logger = logging.getLogger(__name__)

# ONNX TensorProto element types → numpy dtype names (the ones an image classifier takes or gives).
_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 2: "uint8", 3: "int8", 6: "int32", 7: "int64"}


@dataclass(frozen=True)
class ModelSource:
    """The file a backend reads, its tensor specs, and the manifest when it came from an artifact directory."""

    model_path: Path
    input_spec: TensorSpec
    output_spec: TensorSpec
    manifest: Manifest | None = None
    directory: Path | None = None
    identities: dict[str, FileIdentity] = field(default_factory=dict)  # recorded file → identity when verified
    weights: str | None = None  # the export's checkpoint_sha256: a checkpoint's hash or "default-weights:<init>"
    # a bare ONNX file's node types and opset domains, read once with its specs (empty for an artifact directory)
    graph_ops: frozenset[str] = frozenset()
    graph_domains: frozenset[str] = frozenset()

    def unreadable_graph(self) -> ArtifactError | None:
        """Why a recorded ONNX graph cannot be read (a garbage file with a re-hashed manifest), or None.

        Runners ask after their backend failed to open the model, to turn its traceback into one line.
        """
        graphs = [self.model_path]
        if self.manifest is not None and self.directory is not None:
            graphs += [
                self.directory / rel
                for rel, entry in self.manifest.files.items()
                if rel.endswith(".onnx") and entry.role.startswith("model")
            ]
        for path in dict.fromkeys(graphs):
            try:
                read_model(path)
            except ArtifactError as err:
                return err
        return None

    def check_unchanged(self) -> None:
        """Raise ArtifactError if a file verified when the source was opened has been replaced or rewritten since."""
        if self.directory is not None:
            check_unchanged(self.directory, self.identities)

    @property
    def model_name(self) -> str | None:
        return self.manifest.model if self.manifest is not None else None

    @property
    def fixed_batch(self) -> int | None:
        """The batch the graph fixes (a bare ONNX file may; callers pad to it), or None where it is dynamic."""
        first = self.input_spec.shape[0] if self.input_spec.shape else None
        return first if isinstance(first, int) and first > 0 else None

    @property
    def untrained(self) -> bool:
        """Whether the model was exported with the project's default (NOT trained) weights."""
        return (self.weights or "").startswith(DEFAULT_WEIGHTS_PREFIX)

    def plain_graph(self, precision: str, *, fused: bool) -> Path | None:
        """The unfused file a runner of ``precision`` opens: the model, or an artifact's ``model.int8.onnx`` for
        "int8"; None where only the fused INT8 graph passed its export gate and ``fused`` lets it run alone (a
        PrecisionError where neither can run)."""
        if precision != "int8" or self.manifest is None or self.directory is None:
            return self.model_path  # a bare file runs as given
        from export.int8.roles import plain_int8_file

        plain = plain_int8_file(self.manifest, fused=fused, directory=self.directory)
        return self.directory / plain if plain else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_path": str(self.model_path),
            "model": self.model_name,
            "input": self.input_spec.to_dict(),
            "output": self.output_spec.to_dict(),
        }


def open_source(path: str | Path | ModelSource) -> ModelSource:
    """Resolve ``path`` (an artifact directory, its ``manifest.json``, or an ``.onnx`` file) to a ``ModelSource``."""
    if isinstance(path, ModelSource):
        return path
    path = artifact_path(path)
    if path.is_dir():
        return _from_directory(path)
    if path.suffix == ".onnx" and path.is_file():
        return _from_onnx(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give an artifact directory or an .onnx file")
    raise ArtifactError(f"{path} is neither an artifact directory nor an .onnx file; give one of those")


def artifact_path(path: str | Path) -> Path:
    """``path``, or the artifact directory where it names the artifact's manifest.json."""
    path = Path(path)
    return path.parent if path.name == MANIFEST_NAME else path


def recorded_source(manifest: Manifest | None) -> dict[str, Any]:
    """What the export recorded about the model's origin: ``manifest.extra["source"]`` (flat ``extra`` in a
    hand-written manifest); {} without a manifest."""
    extra = manifest.extra if manifest is not None else {}
    return extra.get("source", extra)


def _from_directory(directory: Path) -> ModelSource:
    manifest, identities = load_verified(directory)
    if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
        raise ArtifactError(
            f"{directory}: the runners take one input and give one output; the manifest lists "
            f"{len(manifest.inputs)} inputs and {len(manifest.outputs)} outputs"
        )
    onnx_file = _onnx_file(directory, manifest)
    return ModelSource(
        model_path=onnx_file,
        input_spec=manifest.inputs[0],
        output_spec=manifest.outputs[0],
        manifest=manifest,
        directory=directory,
        identities=identities,
        weights=str(recorded_source(manifest).get("checkpoint_sha256") or "") or None,
    )


def _onnx_file(directory: Path, manifest: Manifest) -> Path:
    """The ONNX file ONNX Runtime and OpenVINO read: the deploy file if it is ONNX, else the recorded one."""
    if manifest.deploy.endswith(".onnx"):
        return directory / manifest.deploy
    onnx_files = sorted(rel for rel, entry in manifest.files.items() if rel.endswith(".onnx") and entry.role == "model")
    if not onnx_files:
        raise ArtifactError(f"{directory} records no ONNX model file; re-export the model")
    return directory / onnx_files[0]


def read_model(path: Path) -> Any:
    """The ONNX model in ``path`` (external weights not loaded), or ArtifactError in one line."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, DecodeError, RuntimeError) as err:
        raise ArtifactError(f"{path} is not a readable ONNX model ({err}); re-export it") from err
    if not model.graph.node:
        raise ArtifactError(f"{path} is not a readable ONNX model (its graph is empty); re-export it")
    return model


def _from_onnx(path: Path) -> ModelSource:
    from export.external_data import check_external_data

    model = read_model(path)
    problem = check_external_data(model, path)
    if problem:
        raise ArtifactError(problem)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ArtifactError(
            f"{path}: the runners take one input and give one output; the graph has {len(inputs)} inputs and "
            f"{len(graph.output)} outputs"
        )
    logger.info("%s is a bare ONNX file: verified nothing, specs read from the graph", path)
    weights = next((p.value for p in model.metadata_props if p.key == "checkpoint_sha256"), None)
    return ModelSource(
        model_path=path,
        input_spec=_spec(inputs[0]),
        output_spec=_spec(graph.output[0]),
        weights=weights,
        graph_ops=frozenset(node.op_type for node in graph.node),
        graph_domains=frozenset(opset.domain for opset in model.opset_import),
    )


def _spec(value: Any) -> TensorSpec:
    from export.metadata import tensor_dims

    tensor_type = value.type.tensor_type
    shape = tuple(tensor_dims(value))
    dtype = _ONNX_DTYPES.get(tensor_type.elem_type, f"onnx-type-{tensor_type.elem_type}")
    layout = "NCHW" if len(shape) == 4 and shape[1] in (1, 3) else ""
    return TensorSpec(name=value.name, shape=shape, dtype=dtype, layout=layout)
