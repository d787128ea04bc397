"""The node order of a planned fused-SGE graph: each block's x is the last map written before its SgeResidual.

SgeResidual reads x three times (channel means, similarity map, output) and the identity once, so x is the map to
keep in cache. ORT's own order is not fixed: its optimised graph lists independent branches in an order that changes
from one plan to the next, and its default execution order runs them in reverse. So a block's downsampling
convolution ran between the block's last convolution and its SgeResidual in some plans and not in others, and the
profiler timed that block's SgeResidual slower when it did. In wall time the difference is small (on a Zen 4, the
worst order against this one: 1.000 and 1.001 per round, scripts/reports/kernel_speed_history.md); fixing the order
takes it out of the run-to-run spread. ``schedule_blocks`` puts every identity branch first, and a session that runs
the graph in its listed order (``session_options(optimize=False)``: ORT's priority-based order, which breaks ties by
node index) keeps it. ``identity_last=True`` gives the worst order instead, for ``kernel_speed.py --orders``."""

import onnx

from export.ort_sge.nchwc import FUSED_DOMAIN, FUSED_OP


def _inputs_in_visit_order(node: onnx.NodeProto, identity_last: bool) -> list[str]:
    """A node's inputs in the order their producers are scheduled: a fused block's identity (input 1) before x,
    or after it with ``identity_last``."""
    if node.domain == FUSED_DOMAIN and node.op_type == FUSED_OP and len(node.input) >= 2 and not identity_last:
        return [node.input[1], node.input[0], *node.input[2:]]
    return list(node.input)


def _has_subgraph(graph: onnx.GraphProto) -> bool:
    graph_kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    return any(a.type in graph_kinds for node in graph.node for a in node.attribute)


def schedule_blocks(graph: onnx.GraphProto, *, identity_last: bool = False) -> bool:
    """Reorder ``graph``'s nodes in place into a topological order (depth first from the outputs, each node right
    after the last of its inputs' producers) in which every SgeResidual directly follows the producer of its x
    (``identity_last``: each block's identity branch runs after its x branch, the diagnostic worst case). Nodes no
    output depends on keep their place after the others; the result does not depend on the listed order of
    independent branches. A graph with control flow (a subgraph may read outer values that no input names) is left
    as it is. Returns whether the graph was reordered."""
    if _has_subgraph(graph):
        return False
    producer = {name: k for k, node in enumerate(graph.node) for name in node.output if name}
    order: list[int] = []
    state = [0] * len(graph.node)  # 0 unvisited, 1 on the stack, 2 placed

    # iterative post-order: deep graphs (ResNet-152: 500 nodes) would exceed Python's recursion limit
    def visit(root: int) -> None:
        stack = [(root, iter(_inputs_in_visit_order(graph.node[root], identity_last)))]
        state[root] = 1
        while stack:
            k, pending = stack[-1]
            for name in pending:
                source = producer.get(name)
                if source is not None and state[source] == 0:
                    state[source] = 1
                    stack.append((source, iter(_inputs_in_visit_order(graph.node[source], identity_last))))
                    break
                if source is not None and state[source] == 1:
                    raise ValueError(f"the graph has a cycle through {graph.node[source].name or name!r}")
            else:
                stack.pop()
                state[k] = 2
                order.append(k)

    for output in graph.output:
        if output.name in producer and state[producer[output.name]] == 0:
            visit(producer[output.name])
    for k in range(len(graph.node)):
        if state[k] == 0:
            visit(k)
    nodes = [graph.node[k] for k in order]
    copies = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    return True
