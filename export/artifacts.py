"""Artifact directories: atomic writes, file hashes, and ``manifest.json``, which says which file to deploy.

Loading an artifact verifies every recorded file's size and sha256 and refuses a tampered or truncated one. The
artifact is closed: every path the manifest names is a plain relative name inside the directory (no ``..``, no
absolute path, no symlink), so nothing outside it is read. What the hashes protect against: accidents (a truncated
copy, a half-written file, a file from another export) and the tampering of single files. They do not protect
against someone who rewrites a file AND re-hashes the manifest: the manifest is not signed.

Verification also records each file's identity (device, inode, size, mtime, ctime); ``check_unchanged`` compares
it again, so a runner can refuse a file replaced or rewritten between the hash check and the backend's read.
"""

import json
import logging
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.atomic import atomic_path, file_sha256

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few kB; anything this large is not one
DEFAULT_WEIGHTS_PREFIX = "default-weights:"  # checkpoint_sha256 of a model exported without a checkpoint: "...:<init>"

FileIdentity = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


class ArtifactError(ValueError):
    """An artifact directory is missing, incomplete or has been modified since export."""


# The largest input side an export accepts, and so the largest symbolic side a runner or the server takes: an
# ImageNet classifier's eager forward, trace and parity at 1024×1024 already take gigabytes (ResNet-50: ~3 GB).
MAX_INPUT_SIDE = 1024


def _fixed(dim: int | str) -> bool:
    return isinstance(dim, int) and dim > 0


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # symbolic dims are names, e.g. ("batch", 3, 224, 224)
    dtype: str = "float32"
    layout: str = "NCHW"
    # the smallest height and width a symbolic-size (--dynamic-hw) NCHW input takes: below it the model's last
    # feature map is too small (SGE's std over one position is undefined), and each backend failed its own way
    min_side: int | None = None

    def side_refusal(self, height: int, width: int) -> str | None:
        """Why an input of ``height``×``width`` cannot run this model, in one line; else None. A symbolic side
        (``--dynamic-hw``) lies in ``min_side``..MAX_INPUT_SIDE: below, the model's last feature map is too small;
        above, the largest side an export takes, which no parity check has seen (a 2048² gRPC request ran)."""
        free = [side for side, dim in zip((height, width), self.shape[2:4], strict=False) if not _fixed(dim)]
        if any(side > MAX_INPUT_SIDE for side in free):
            return f"input {self.name!r} has a side above {MAX_INPUT_SIDE} ({height}×{width}): resize the images"
        if self.min_side is None or min(height, width) >= self.min_side:
            return None
        return (
            f"input {self.name!r} must be at least {self.min_side}×{self.min_side} pixels for this model, the smallest "
            f"square its export verified (below it the last feature map can be too small); got {height}×{width}: "
            "resize the images"
        )

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}
        return d | ({"min_side": self.min_side} if self.min_side is not None else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        _expect(d, dict, "a tensor spec")
        shape = _expect(d["shape"], list, "a tensor's shape")
        if not all(isinstance(dim, str) or (type(dim) is int and dim >= -1) for dim in shape):
            raise TypeError(f"a tensor's shape holds names or sizes ≥ -1; got {shape}")
        return cls(
            name=_expect(d["name"], str, "a tensor's name"),
            shape=tuple(shape),
            dtype=_dtype(d["dtype"]),
            layout=_expect(d.get("layout", ""), str, "a tensor's layout"),
            min_side=_min_side(d.get("min_side")),
        )


TENSOR_DTYPES = ("float32", "float16", "bfloat16", "float64", "uint8", "int8", "int32", "int64", "bool")


def _min_side(value: Any) -> int | None:
    if value is not None and (type(value) is not int or value < 1):
        raise TypeError(f"a tensor's min_side must be a positive integer; got {str(value)[:20]!r}")
    return value


def _dtype(value: Any) -> str:
    if value not in TENSOR_DTYPES:
        raise TypeError(f"a tensor's dtype must be one of {', '.join(TENSOR_DTYPES)}; got {str(value)[:20]!r}")
    return value


def _expect(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{what} must be a JSON {kind.__name__}; got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _file_entry(name: str, d: Any) -> "FileEntry":
    _expect(d, dict, f"files[{name!r}]")
    size = d.get("size")
    if type(size) is not int or size < 0:
        raise TypeError(f"files[{name!r}].size must be a non-negative integer; got {size!r}")
    digest = d.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise TypeError(f"files[{name!r}].sha256 must be 64 hex digits; got {str(digest)[:70]!r}")
    return FileEntry(sha256=digest, size=size, role=_expect(d.get("role"), str, f"files[{name!r}].role"))


def _numbers(value: Any, count: int, what: str) -> list:
    ok = isinstance(value, list) and len(value) == count
    if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise TypeError(f"{what} must be a JSON list of {count} numbers; got {str(value)[:40]!r}")
    return value


def _preprocessing(value: Any) -> dict[str, Any]:
    """The fields every runner reads; others pass through."""
    _expect(value, dict, "preprocessing")
    for key, count in (("mean", 3), ("std", 3), ("input_size", 2)):
        if key in value:
            _numbers(value[key], count, f"preprocessing.{key}")
    if "std" in value and not all(0 < v < float("inf") for v in value["std"]):  # the inputs are divided by it
        raise TypeError(f"preprocessing.std must be 3 positive numbers; got {value['std']}")
    if "mean" in value and not all(abs(v) < float("inf") for v in value["mean"]):
        raise TypeError(f"preprocessing.mean must be 3 finite numbers; got {value['mean']}")
    for key, does in _preprocessing_done(value).items():  # descriptions of what the runtime does: they must be true
        if key in value and value[key] != does and not (key == "scale" and _close(value[key], does)):
            raise TypeError(f"preprocessing.{key} is {value[key]!r}, but the runtime's preprocessing does {does!r}")
    return value


def _preprocessing_done(value: dict[str, Any]) -> dict[str, Any]:
    """What models.transforms.eval_transform does, which the export records beside the sizes and statistics."""
    from models.transforms import EVAL_PREPROCESSING, eval_preprocessing

    sides = [int(v) for v in value.get("input_size", ())]
    if len(sides) == 2 and all(1 <= side <= MAX_INPUT_SIDE for side in sides):  # out of range: the runners refuse it
        return {k: v for k, v in eval_preprocessing((sides[0], sides[1])).items() if k != "input_size"}
    return dict(EVAL_PREPROCESSING)


def _close(a: Any, b: float) -> bool:
    return isinstance(a, int | float) and abs(a - b) <= 1e-9


def _extra(value: Any) -> dict[str, Any]:
    """``extra.source`` and ``extra.spec`` (what validate and the torch runner rebuild from) must be objects."""
    _expect(value, dict, "extra")
    for key in ("source", "spec"):
        if key in value:
            _expect(value[key], dict, f"extra.{key}")
    source = value.get("source", {})
    if "num_classes" in source and (type(source["num_classes"]) is not int or source["num_classes"] < 1):
        raise TypeError(f"extra.source.num_classes must be a positive integer; got {source['num_classes']!r}")
    if "block_overrides" in source:
        _expect(source["block_overrides"], dict, "extra.source.block_overrides")
    return value


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
        """A manifest from its JSON form; a missing or mistyped field raises KeyError or TypeError naming it."""
        _expect(d, dict, "the manifest")
        files = _expect(d.get("files", {}), dict, "files")
        return cls(
            model=_expect(d["model"], str, "model"),
            deploy=_expect(d["deploy"], str, "deploy"),
            inputs=[TensorSpec.from_dict(t) for t in _expect(d["inputs"], list, "inputs")],
            outputs=[TensorSpec.from_dict(t) for t in _expect(d["outputs"], list, "outputs")],
            files={k: _file_entry(k, v) for k, v in files.items()},
            opset=d.get("opset"),
            preprocessing=_preprocessing(d.get("preprocessing", {})),
            versions=_expect(d.get("versions", {}), dict, "versions"),
            parity=_expect(d.get("parity", {}), dict, "parity"),
            extra=_extra(d.get("extra", {})),
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
    """Read an artifact directory's manifest; with ``verify``, check every file's size and sha256.

    Every path the manifest names is checked to be a plain relative name inside ``directory`` either way.
    """
    return _read_manifest(directory, verify=verify)[0]


def load_verified(directory: str | Path) -> tuple[Manifest, dict[str, FileIdentity]]:
    """The verified manifest and each recorded file's identity at the moment its hash was checked."""
    return _read_manifest(directory, verify=True)


def _read_manifest(directory: str | Path, *, verify: bool) -> tuple[Manifest, dict[str, FileIdentity]]:
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(
            f"{directory} has no {MANIFEST_NAME}: not an artifact directory, or its export did not finish; "
            "run `sge-deploy export --model NAME --output DIR` to make one"
        )
    if path.is_symlink():
        raise ArtifactError(f"{path} is a symlink; an artifact holds its own files: {COPY_FOLLOWING_LINKS}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ArtifactError(f"{path} is over {MAX_MANIFEST_BYTES} bytes, no manifest of ours; re-export the model")
    try:
        manifest = Manifest.from_dict(json.loads(path.read_bytes()))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        what = f"it lacks the field {err}" if isinstance(err, KeyError) else str(err)
        raise ArtifactError(f"{path} is not a valid manifest: {what}; re-export the model") from err
    check_paths(directory, manifest)
    identities = verify_files(directory, manifest) if verify else {}
    return manifest, identities


# symlinked artifacts come from DVC, git-annex or `cp -s`: a copy that follows the links is the artifact itself
COPY_FOLLOWING_LINKS = "copy the directory with its links followed (cp -rL ART NEW) and use the copy"


def check_relpath(relpath: str) -> str:
    """``relpath`` if it is a plain relative path (no absolute path, no ``..``, no empty part); else ArtifactError."""
    parts = relpath.split("/")
    if (
        not relpath
        or relpath.startswith("/")
        or "\\" in relpath
        or "\x00" in relpath
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ArtifactError(
            f"the manifest names {relpath!r}, which is not a plain relative path inside the artifact directory; "
            "refusing to read outside it: re-export the model"
        )
    return relpath


def check_paths(directory: str | Path, manifest: Manifest) -> None:
    """Every path the manifest names stays inside ``directory``: plain relative names, no symlink on the way."""
    root = Path(directory).resolve()
    for relpath in [manifest.deploy, *manifest.files]:
        check_relpath(relpath)
        path = root
        for part in relpath.split("/"):
            path = path / part
            if path.is_symlink():
                raise ArtifactError(
                    f"{Path(directory) / relpath} is (or passes through) a symlink; an artifact holds its own files: "
                    f"{COPY_FOLLOWING_LINKS}"
                )


def _hash_held(path: Path) -> tuple[str, int, FileIdentity]:
    """sha256 and size of ``path``, read through one open descriptor, and the file's identity; the identity is
    taken before and after reading, and a file that changed while being hashed is refused."""
    import hashlib

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise ArtifactError(f"{path} is not a regular file; re-export the model")
        digest = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _identity(before) != _identity(after):
        raise ArtifactError(f"{path} changed while its hash was being checked; retry once the writer has finished")
    return digest.hexdigest(), after.st_size, _identity(after)


def _identity(st: os.stat_result) -> FileIdentity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def verify_files(directory: str | Path, manifest: Manifest) -> dict[str, FileIdentity]:
    """Check every recorded file's size and sha256 (all failures at once); returns each file's identity.

    Files in the directory that the manifest does not record are reported (logged as a warning), not refused.
    """
    directory = Path(directory)
    check_paths(directory, manifest)
    problems, identities = [], {}
    for relpath, entry in manifest.files.items():
        path = directory / relpath
        if not path.is_file():
            problems.append(f"{relpath} is missing")
            continue
        if path.stat().st_size != entry.size:
            problems.append(f"{relpath} has {path.stat().st_size} bytes, the manifest says {entry.size}")
            continue
        digest, _, identity = _hash_held(path)
        if digest != entry.sha256:
            problems.append(f"{relpath} does not match its recorded sha256")
        identities[relpath] = identity
    if manifest.deploy not in manifest.files:
        problems.append(f"the deploy file {manifest.deploy} is not recorded")
    elif manifest.files[manifest.deploy].role != "model":  # an edited "deploy": a report or a weights file
        role = manifest.files[manifest.deploy].role
        problems.append(f"the deploy file {manifest.deploy} is recorded as {role!r}, not as the model")
    if problems:
        raise ArtifactError(
            f"artifact {directory} failed verification: {'; '.join(problems)}; "
            "the files were modified after export: re-export the model"
        )
    extra = unrecorded_files(directory, manifest)
    if extra:
        logger.warning("%s holds files its manifest does not record (not verified, not used): %s", directory, extra)
    return identities


def unrecorded_files(directory: str | Path, manifest: Manifest) -> list[str]:
    """Files under ``directory`` that the manifest does not record (the manifest itself excepted)."""
    directory = Path(directory)
    known = {*manifest.files, MANIFEST_NAME}
    found = (p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() or p.is_symlink())
    return sorted(rel for rel in found if rel not in known)


def check_unchanged(directory: str | Path, identities: dict[str, FileIdentity]) -> None:
    """Refuse (ArtifactError) when a file verified earlier has been replaced or rewritten since."""
    changed = []
    for relpath, identity in identities.items():
        try:
            now = _identity(os.stat(Path(directory) / relpath, follow_symlinks=False))
        except FileNotFoundError:
            now = None
        if now != identity:
            changed.append(relpath)
    if changed:
        raise ArtifactError(
            f"{', '.join(changed)} in {directory} changed after its hash was checked; refusing to run a file that "
            "was not verified: load the artifact again once nothing is writing to it"
        )
