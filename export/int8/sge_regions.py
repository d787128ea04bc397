"""Where SGE's normalisation is in an ONNX graph, and whether quantisation left it in float.

SGE (Li, Hu, Yang, arXiv:1905.09646) gates ``x`` with ``sigmoid(γ · (c − mean c) / (std c + eps) + β)`` where ``c``
is the similarity of ``x`` to its group's mean. Quantising any of that (the centring, the std, the divide, the
sigmoid) would round a standardised map whose range the calibration cannot bound well, so the INT8 graphs keep it
in float. ``sge_regions`` finds each SGE in the portable graph from its structure: a standardisation (the FP16
converter's finder, ``export.fp16.find_standardisations``) followed by a ``Sigmoid`` whose output multiplies ``x``;
the region is every node on a path from ``x`` to that gate's product, plus the ``Reshape`` nodes at either end.
In the fused-SGE graph the region is one ``ai.sgedeploy::SgeResidual`` node. ``qdq_inside_sge`` lists the
Quantize/DequantizeLinear nodes that sit inside a region (must be none).
"""

from collections import defaultdict, deque
from dataclasses import dataclass

import onnx

from export.fp16 import find_standardisations, name_nodes
from export.ort_sge.nchwc import FUSED_DOMAIN, FUSED_OP

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
SHAPE_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


@dataclass(frozen=True)
class SgeRegion:
    """One SGE: the tensor it gates (``entry``), its gated output (``exit``) and the nodes in between."""

    entry: str
    exit: str
    nodes: frozenset[str]


class _Links:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = {n.name: n for n in graph.node}
        self.producer = {o: n for n in graph.node for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                if name:
                    self.consumers[name].append(node)

    def below(self, tensor: str) -> set[str]:
        """Names of every node downstream of ``tensor``."""
        seen: set[str] = set()
        stack = list(self.consumers.get(tensor, []))
        while stack:
            node = stack.pop()
            if node.name not in seen:
                seen.add(node.name)
                stack += [c for o in node.output for c in self.consumers.get(o, [])]
        return seen

    def above(self, node: onnx.NodeProto) -> set[str]:
        seen, stack = {node.name}, [node]
        while stack:
            for name in stack.pop().input:
                up = self.producer.get(name)
                if up is not None and up.name not in seen:
                    seen.add(up.name)
                    stack.append(up)
        return seen


def sge_regions(model: onnx.ModelProto) -> list[SgeRegion]:
    """Every SGE region of ``model`` (a portable graph; node names are filled in place where missing)."""
    name_nodes(model)
    links = _Links(model.graph)
    regions = []
    for island in find_standardisations(model):
        found = _gate_product(links, set(island))
        if found is None:
            continue
        gate, sigmoid = found
        entry = next(i for i in gate.input if i != sigmoid.output[0])
        nodes = (links.below(entry) & links.above(gate)) | {gate.name}
        start = links.producer.get(entry)
        if start is not None and start.op_type in SHAPE_OPS:  # the group view of x: move the entry before it
            nodes.add(start.name)
            entry = start.input[0]
        exit_ = gate.output[0]
        after = links.consumers.get(exit_, [])
        if len(after) == 1 and after[0].op_type in SHAPE_OPS:  # back to (N, C, H, W)
            nodes.add(after[0].name)
            exit_ = after[0].output[0]
        regions.append(SgeRegion(entry=entry, exit=exit_, nodes=frozenset(nodes)))
    return regions


def _gate_product(links: _Links, island: set[str]) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """The ``Mul`` that multiplies x by the sigmoid of the island's standardised map, and that ``Sigmoid``: the
    nearest ``Sigmoid`` below the island (breadth first, so a later block's gate is never taken)."""
    queue = deque(c for name in island for o in links.nodes[name].output for c in links.consumers.get(o, []))
    seen = set(island)
    while queue:
        node = queue.popleft()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Sigmoid":
            gate = next((c for c in links.consumers.get(node.output[0], []) if c.op_type == "Mul"), None)
            return (gate, node) if gate is not None else None
        queue.extend(c for o in node.output for c in links.consumers.get(o, []))
    return None


def fused_sge_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == FUSED_DOMAIN and n.op_type == FUSED_OP]


def qdq_inside_sge(model: onnx.ModelProto) -> list[str]:
    """Names of Q/DQ nodes inside an SGE region of ``model`` (a quantised graph): [] when SGE stayed float.

    The regions are found on the graph with every Q→DQ pair bypassed (quantisation inside SGE would otherwise hide
    the very structure that finds it). A Q/DQ node is inside when a QuantizeLinear reads a tensor a region node
    produced (other than the region's exit), or a DequantizeLinear feeds a region node anything but the region's
    entry. Fused-SGE nodes are checked to read and write float.
    """
    name_nodes(model)
    alias = _dequantised_aliases(model)
    regions = sge_regions(_without_qdq(model, alias))
    links = _Links(model.graph)
    inside = []
    for region in regions:
        for node in model.graph.node:
            if node.op_type == "QuantizeLinear":
                source = links.producer.get(node.input[0])
                if source is not None and source.name in region.nodes and node.input[0] != region.exit:
                    inside.append(node.name)
            elif node.op_type == "DequantizeLinear":
                readers = [c for c in links.consumers.get(node.output[0], []) if c.name in region.nodes]
                if readers and alias.get(node.output[0]) != region.entry:
                    inside.append(node.name)
    for node in fused_sge_nodes(model):
        for name in (*node.input[:2], *node.output):
            producer = links.producer.get(name)
            if producer is not None and producer.op_type == "QuantizeLinear":
                inside.append(node.name)  # the op would read quantised integers
    return sorted(set(inside))


def _dequantised_aliases(model: onnx.ModelProto) -> dict[str, str]:
    """DequantizeLinear output → the float tensor its QuantizeLinear read (for Q→DQ pairs)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    alias = {}
    for node in model.graph.node:
        q = producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            alias[node.output[0]] = q.input[0]
    return alias


def _without_qdq(model: onnx.ModelProto, alias: dict[str, str]) -> onnx.ModelProto:
    """A copy of ``model`` whose nodes read through every Q→DQ pair (node names kept)."""
    view = onnx.ModelProto()
    view.CopyFrom(model)
    kept = [
        n
        for n in view.graph.node
        if n.op_type != "QuantizeLinear" and not (n.op_type == "DequantizeLinear" and n.output[0] in alias)
    ]
    for node in kept:
        node.input[:] = [alias.get(name, name) for name in node.input]
    del view.graph.node[:]
    view.graph.node.extend(kept)
    return view
