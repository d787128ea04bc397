"""Artifact directories: atomic writes, file hashes, and ``manifest.json``, which says which file to deploy.

Loading an artifact verifies every recorded file's size and sha256 and refuses a tampered or truncated one.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.atomic import atomic_path, file_sha256

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class ArtifactError(ValueError):
    """An artifact directory is missing, incomplete or has been modified since export."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # symbolic dims are names, e.g. ("batch", 3, 224, 224)
    dtype: str = "float32"
    layout: str = "NCHW"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        return cls(name=d["name"], shape=tuple(d["shape"]), dtype=d["dtype"], layout=d.get("layout", ""))


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int
    role: str  # "model", "engine", "report", ...


@dataclass
class Manifest:
    model: str
    deploy: str  # the file (relative to the directory) to deploy
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    files: dict[str, FileEntry] = field(default_factory=dict)
    opset: int | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)  # mean, std, input size, layout
    versions: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        return cls(
            model=d["model"],
            deploy=d["deploy"],
            inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
            outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
            files={k: FileEntry(**v) for k, v in d.get("files", {}).items()},
            opset=d.get("opset"),
            preprocessing=d.get("preprocessing", {}),
            versions=d.get("versions", {}),
            parity=d.get("parity", {}),
            extra=d.get("extra", {}),
            version=d.get("version", MANIFEST_VERSION),
        )

    def record(self, directory: str | Path, relpath: str, *, role: str) -> None:
        path = Path(directory) / relpath
        self.files[relpath] = FileEntry(sha256=file_sha256(path), size=path.stat().st_size, role=role)


def write_json(path: str | Path, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` last, so a directory without one is known to be incomplete."""
    return write_json(Path(directory) / MANIFEST_NAME, manifest.to_dict())


def load_manifest(directory: str | Path, *, verify: bool = True) -> Manifest:
    """Read an artifact directory's manifest; with ``verify``, check every file's size and sha256."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(
            f"{directory} has no {MANIFEST_NAME}: not an artifact directory, or its export did not finish; "
            "run `python scripts/export.py --model NAME --output DIR` to make one"
        )
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"{path} is not a valid manifest ({err}); re-export the model") from err
    if verify:
        verify_files(directory, manifest)
    return manifest


def verify_files(directory: str | Path, manifest: Manifest) -> None:
    problems = []
    for relpath, entry in manifest.files.items():
        path = Path(directory) / relpath
        if not path.is_file():
            problems.append(f"{relpath} is missing")
        elif path.stat().st_size != entry.size:
            problems.append(f"{relpath} has {path.stat().st_size} bytes, the manifest says {entry.size}")
        elif file_sha256(path) != entry.sha256:
            problems.append(f"{relpath} does not match its recorded sha256")
    if manifest.deploy not in manifest.files:
        problems.append(f"the deploy file {manifest.deploy} is not recorded")
    if problems:
        raise ArtifactError(
            f"artifact {directory} failed verification: {'; '.join(problems)}; "
            "the files were modified after export: re-export the model"
        )
