"""Replace each fused SGE node (``ai.sgedeploy::SgeResidual``) of an ONNX graph, in place: the one loop both OpenVINO
forms share (graph.py, the extension op; native.py, standard ops)."""

from collections.abc import Callable

import onnx

from export.ort_sge.nchwc import FUSED_DOMAIN, FUSED_OP


def replace_fused_nodes(model: onnx.ModelProto, replace: Callable[[onnx.NodeProto], list[onnx.NodeProto]]) -> int:
    """Put ``replace(node)`` where each fused node stands (topological order kept), drop the fused op's domain from
    the graph's opsets and the stale shape annotations; returns how many nodes were replaced."""
    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type == FUSED_OP and node.domain == FUSED_DOMAIN:
            nodes.extend(replace(node))
            count += 1
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.value_info[:]  # shapes of the rewritten tensors are inferred again
    kept = [entry for entry in model.opset_import if entry.domain != FUSED_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return count
