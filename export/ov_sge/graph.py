"""The fused-SGE ONNX graph (``model.sge_fused.onnx``, nodes ``ai.sgedeploy::SgeResidual``) as OpenVINO reads it.

OpenVINO's ONNX reader maps a custom op only in the default ONNX domain (the C++ mapping API takes no domain), so
the nodes move to it in memory; the file on disk, and its hash in the manifest, are unchanged. The op's ``block``
attribute must be 0 (plain NCHW).

OpenVINO's CPU plugin runs an extension op in plain NCHW only (its "Reference" node), while its convolutions keep
tensors blocked (f32) or channels-last (bf16), so a reorder surrounds each op (README, OpenVINO precisions, has the
measured cost; wrapping the op in Transposes to NHWC measured slower still). ``storage="bf16"`` adds Casts to
bfloat16 around the op, so that in a bf16 graph it reads and writes bf16 instead of the plugin converting its
tensors to f32 and back.
"""

import io
from pathlib import Path
from typing import Any

from export.external_data import load_external_weights
from export.ort_sge.nchwc import FUSED_DOMAIN, FUSED_OP
from export.ov_sge.fused_nodes import replace_fused_nodes

STORAGES = ("f32", "bf16")


class FusedGraphError(ValueError):
    """A fused-SGE graph OpenVINO cannot run with the extension."""


def openvino_onnx_bytes(path: str | Path, *, storage: str = "f32") -> tuple[bytes, int]:
    """The graph at ``path`` rewritten for OpenVINO (default domain, ``storage``) and its number of fused ops."""
    import onnx
    from onnx import TensorProto, helper

    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}; got {storage!r}")
    model = onnx.load(str(path), load_external_data=False)
    load_external_weights(model, path)  # hard-linked data files too (export.external_data)

    def for_openvino(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        block = next((a.i for a in node.attribute if a.name == "block"), 0)
        if block != 0:
            raise FusedGraphError(f"{path}: node {node.name} is in ORT's NCHWc layout (block={block}); re-export it")
        node.domain = ""
        if storage != "bf16":
            return [node]
        casts = []
        for i in (0, 1):  # x and identity
            cast = f"{node.name}/bf16_in{i}"
            casts.append(helper.make_node("Cast", [node.input[i]], [cast], to=TensorProto.BFLOAT16))
            node.input[i] = cast
        output, node.output[0] = node.output[0], f"{node.name}/bf16_out"
        return [*casts, node, helper.make_node("Cast", [node.output[0]], [output], to=TensorProto.FLOAT)]

    count = replace_fused_nodes(model, for_openvino)
    return model.SerializeToString(), count


def read_fused_model(core: Any, path: str | Path, library: str | Path, *, storage: str = "f32") -> tuple[Any, int]:
    """(ov.Model, number of fused blocks) of the fused graph, after adding the extension ``library`` to ``core``."""
    data, count = openvino_onnx_bytes(path, storage=storage)
    if count == 0:
        raise FusedGraphError(f"{path} holds no {FUSED_DOMAIN}::{FUSED_OP} node")
    core.add_extension(str(library))
    return core.read_model(io.BytesIO(data)), count
