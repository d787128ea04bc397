"""ONNX graphs whose weights live in a side file (ONNX external data), so a runtime can map them instead of parsing
them out of the protobuf.

A self-contained 100 MB graph is held several times while ONNX Runtime opens it (the protobuf, the initializer
tensors, the NCHWc copies); with the weights beside it, ORT reads the small graph and maps the data file.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import numpy_helper

SIZE_THRESHOLD = 1024  # tensors of at least this many bytes go to the data file; small ones stay in the graph


def data_file_for(graph_name: str) -> str:
    """The data file's name beside graph ``graph_name``: ``model.sge_fused.onnx`` → ``model.sge_fused.onnx.data``."""
    return f"{graph_name}.data"


def save_with_external_weights(model: onnx.ModelProto, path: str | Path, *, data_name: str) -> Path:
    """Write ``model`` to ``path`` and its weights to ``data_name`` beside it (replacing any old data file, which
    onnx would otherwise append to); returns the data file's path. ``model`` is left holding external references."""
    path = Path(path)
    data = path.parent / data_name
    data.unlink(missing_ok=True)
    onnx.save(model, str(path), save_as_external_data=True, location=data_name, size_threshold=SIZE_THRESHOLD)
    return data


def share_mode(data: Path, graph: Path) -> None:
    """Give the data file the graph's permissions (onnx creates it owner-only)."""
    data.chmod(graph.stat().st_mode & 0o777)


def external_data_files(model: onnx.ModelProto) -> set[str]:
    """The side files a graph's initializers name (read with ``load_external_data=False``)."""
    return set(external_data_extent(model)) - {""}


def external_data_extent(model: onnx.ModelProto) -> dict[str, int]:
    """Per side file the graph names, the bytes its initializers need: the largest offset + length (a tensor without
    a length needs at least its offset)."""
    return _extent(model.graph.initializer)


def _extent(tensors: Iterable[onnx.TensorProto]) -> dict[str, int]:
    extent: dict[str, int] = {}
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        end = int(entries.get("offset") or 0) + int(entries.get("length") or 0)
        location = entries.get("location", "")
        extent[location] = max(extent.get(location, 0), end)
    return extent


def check_external_data(model: onnx.ModelProto, path: Path) -> str | None:
    """Why the side files of the graph at ``path`` cannot hold its weights (missing, outside its folder, or short), or
    None: what a runtime would otherwise report deep inside its loader."""
    return _extent_problem(external_data_extent(model), path)


def _extent_problem(extent: dict[str, int], path: Path) -> str | None:
    folder = path.parent.resolve()
    for location, needed in sorted(extent.items()):
        data = (path.parent / location).resolve()
        if not location or not data.is_relative_to(folder):
            return f"{path.name} names its weights file {location!r}, which is not a file beside it; re-export it"
        if not data.is_file():
            return (
                f"{path.name}'s weights live in {location} beside it, which is missing; copy it together with "
                f"{path.name}, or give the artifact's directory"
            )
        size = data.stat().st_size
        if size < needed:
            return (
                f"{location} holds {size} bytes, short of the {needed} that {path.name}'s weights need (a cut copy?); "
                f"copy it again together with {path.name}, or give the artifact's directory"
            )
    return None


def load_external_weights(model: onnx.ModelProto, path: str | Path) -> None:
    """Read into ``model`` (the graph at ``path``, read with ``load_external_data=False``) every initializer's bytes
    from its side files, each opened once; a side file outside the graph's folder, missing or short is one ValueError
    (check_external_data's words).

    Not onnx's load_external_data_for_model: since onnx 1.20 it refuses a data file with more than one hard link (a
    guard against a planted link to another file), and hard-linked copies are ordinary (``cp -al``, ``rsync
    --link-dest``, uv's cache). A hard link can be any file of the same file system: an artifact's data file is
    checked against its manifest's SHA-256 before any runner reads it, and a bare graph's is trusted as the user's
    own file, as ONNX Runtime and OpenVINO trust it."""
    path = Path(path)
    problem = check_external_data(model, path)
    if problem:
        raise ValueError(problem)
    by_file: dict[str, list[onnx.TensorProto]] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            by_file.setdefault(_entries(tensor)["location"], []).append(tensor)
    for location, tensors in by_file.items():
        with open(path.parent / location, "rb") as data:
            for tensor in tensors:
                _inline(tensor, data)


def initializer_array(tensor: onnx.TensorProto, path: str | Path) -> np.ndarray:
    """One initializer of the graph at ``path`` as an array, read from its side file where it has one (as
    load_external_weights reads it; ``tensor`` itself is left as it is)."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    path = Path(path)
    problem = _extent_problem(_extent([tensor]), path)
    if problem:
        raise ValueError(problem)
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    with open(path.parent / _entries(tensor)["location"], "rb") as data:
        _inline(copy, data)
    return numpy_helper.to_array(copy)


def _entries(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _inline(tensor: onnx.TensorProto, data: BinaryIO) -> None:
    """Move ``tensor``'s bytes from the open side file into the tensor; short data is a ValueError."""
    entries = _entries(tensor)
    offset = int(entries.get("offset") or 0)
    if offset < 0 or int(entries.get("length") or 0) < 0:
        raise ValueError(f"{tensor.name}'s weights have a negative offset or length; re-export the graph")
    data.seek(offset)
    raw = data.read(int(entries["length"])) if "length" in entries else data.read()
    if "length" in entries and len(raw) != int(entries["length"]):
        raise ValueError(f"{tensor.name}'s weights end past the end of {entries.get('location')} (a cut copy?)")
    tensor.raw_data = raw
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]
