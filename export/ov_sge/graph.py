"""The fused-SGE ONNX graph (``model.sge_fused.onnx``, nodes ``ai.sgedeploy::SgeResidual``) as OpenVINO reads it.

OpenVINO's ONNX reader maps a custom op only in the default ONNX domain (the C++ mapping API takes no domain), so
the nodes move to it in memory; the file on disk, and its hash in the manifest, are unchanged. The op's ``block``
attribute must be 0 (plain NCHW): OpenVINO picks its own layouts.
"""

import io
from pathlib import Path
from typing import Any

FUSED_OP = "SgeResidual"
FUSED_DOMAIN = "ai.sgedeploy"


class FusedGraphError(ValueError):
    """A fused-SGE graph OpenVINO cannot run with the extension."""


def openvino_onnx_bytes(path: str | Path) -> tuple[bytes, int]:
    """The graph at ``path`` with its SgeResidual nodes in the default domain, and how many there are."""
    import onnx

    model = onnx.load(str(path))
    fused = [node for node in model.graph.node if node.op_type == FUSED_OP and node.domain == FUSED_DOMAIN]
    for node in fused:
        block = next((a.i for a in node.attribute if a.name == "block"), 0)
        if block != 0:
            raise FusedGraphError(f"{path}: node {node.name} is in ORT's NCHWc layout (block={block}); re-export it")
        node.domain = ""
    kept = [entry for entry in model.opset_import if entry.domain != FUSED_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model.SerializeToString(), len(fused)


def read_fused_model(core: Any, path: str | Path, library: str | Path) -> tuple[Any, int]:
    """(ov.Model, number of fused blocks) of the fused graph, after adding the extension ``library`` to ``core``."""
    data, count = openvino_onnx_bytes(path)
    if count == 0:
        raise FusedGraphError(f"{path} holds no {FUSED_DOMAIN}::{FUSED_OP} node")
    core.add_extension(str(library))
    return core.read_model(io.BytesIO(data)), count
