"""FP16 ONNX with FP32 islands around SGE's normalisation, for strongly typed TensorRT builds and ORT's GPU EPs.

SGE (arXiv:1905.09646) standardises its similarity map: ``(c − mean(c)) / (std(c) + eps)``. The standard deviation
squares ``c − mean(c)``; in FP16 (largest finite value 65504) that square overflows as soon as ``|c − mean| > 256``,
and the centring itself loses the small spread of a large-mean map to FP16 rounding. So the policy here is:

* **FP32 island** for every *standardisation* found in the graph — a ``Div`` whose numerator is a centring
  ``Sub(t, ReduceMean(t))`` and whose denominator is computed from that same centred tensor — covering every node
  between the centring and the divide (variance, ``Sqrt``, eps, Bessel factor), plus the nodes that only feed it
  (SGE's similarity ``x · GAP(x)`` summed over the group's channels). This finds SGE's normalisation in both
  TorchScript and dynamo exports, before or after onnxsim, and a LayerNorm decomposed at opset < 17 too.
* **FP32** for ``LayerNormalization`` (GC's transform): its tensor is (B, C/r, 1, 1), so FP32 costs nothing and
  does not depend on each runtime honouring ``stash_type``; and for every op not on the FP16 list below.
* **FP16** for everything else, including GC's ``Softmax`` (max-subtracted, sums to 1) and the other means
  (global pools, SE/ECA/CBAM descriptors): means do not square, and GPU kernels accumulate them in FP32.

Graph inputs and outputs stay FP32 (``Cast`` at the edges), so the FP16 file is a drop-in for the FP32 one.
Casts are inserted only where an FP32 island meets FP16 compute; shape arithmetic (int64) is left untouched.
Beware when checking FP16 numerics on ONNX Runtime's CPU EP: it runs most FP16 nodes through FP32 fallback kernels
(inserting its own casts), so it validates the graph but cannot show an FP16 overflow; ``onnx.reference`` can.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper, numpy_helper

from export.artifacts import atomic_path

logger = logging.getLogger(__name__)

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16

# Ops whose float inputs and outputs all share one type parameter, so they run in FP16 by retyping alone.
FP16_OPS = frozenset(
    {
        "Abs", "Add", "AveragePool", "Clip", "Concat", "Conv", "ConvTranspose", "Div", "Expand", "Flatten",
        "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "HardSigmoid", "HardSwish", "Identity",
        "LeakyRelu", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Pad", "ReduceMax", "ReduceMean",
        "ReduceSum", "Relu", "Reshape", "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub",
        "Tanh", "Tile", "Transpose", "Unsqueeze", "Where",
    }
)  # fmt: skip
# Ops that accept any input type and produce no float: they follow their input and never need a cast.
TYPE_AGNOSTIC_OPS = frozenset({"Shape", "Size"})
# Nodes that only feed a standardisation (SGE's similarity) are pulled into its island if their op is one of these.
FEEDER_OPS = frozenset(
    {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "ReduceSum", "ReduceMean", "GlobalAveragePool", "Mul"}
)
# Reductions that must never compute in FP16 inside a standardisation (checked by ``fp16_reductions_in_islands``).
REDUCTION_OPS = frozenset({"ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Sqrt", "Div", "Pow"})

REASON_NORMALISATION = "standardisation (SGE mean/std/divide): squares overflow FP16 past |x - mean| > 256"
REASON_LAYERNORM = "LayerNormalization: tiny tensor, FP32 regardless of the runtime's stash_type"


def fp16_refusal(*, model: str, compact_sge_layers: int) -> str | None:
    """Why an FP16 ONNX of this export would be unsafe, or None.

    The FP32 islands are found by the standardisation's structure, ``Div(Sub(t, ReduceMean(t)), f(centred))``;
    the compact SGE form folds γ into the divisor (a Mul), so its normalisation would silently run in FP16.
    """
    if compact_sge_layers:
        return (
            f"{model} has SGE in the compact form, whose normalisation the FP16 converter cannot keep in FP32; "
            "export with --sge-form official for --fp16-onnx or --trt fp16/int8"
        )
    return None


class Fp16ConversionError(ValueError):
    """The graph cannot be converted to FP16 (unexpected input, or the converted graph fails the ONNX checker)."""


@dataclass(frozen=True)
class PrecisionPlan:
    """Which float nodes stay FP32, and why. Node names refer to the (named) graph the plan was made from."""

    fp32_nodes: dict[str, str]  # node name -> reason
    islands: list[list[str]] = field(default_factory=list)  # node names of each standardisation island

    def to_dict(self) -> dict[str, Any]:
        reasons: dict[str, int] = defaultdict(int)
        for reason in self.fp32_nodes.values():
            reasons[reason] += 1
        return {"fp32_nodes": len(self.fp32_nodes), "islands": len(self.islands), "reasons": dict(reasons)}


class _Graph:
    """Producer/consumer maps over a graph's nodes (by output and input tensor name)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.nodes = list(graph.node)
        self.producer: dict[str, onnx.NodeProto] = {o: n for n in self.nodes for o in n.output if o}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.consumers[name].append(node)

    def downstream(self, start: onnx.NodeProto) -> set[str]:
        seen, stack = {start.name}, [start]
        while stack:
            for out in stack.pop().output:
                for consumer in self.consumers.get(out, []):
                    if consumer.name not in seen:
                        seen.add(consumer.name)
                        stack.append(consumer)
        return seen

    def upstream(self, start: onnx.NodeProto, *, within: set[str]) -> set[str]:
        seen, stack = {start.name}, [start]
        while stack:
            for name in stack.pop().input:
                node = self.producer.get(name)
                if node is not None and node.name in within and node.name not in seen:
                    seen.add(node.name)
                    stack.append(node)
        return seen


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every unnamed node a unique name (in place), so plans and TensorRT layers can refer to nodes."""
    for node, name in zip(model.graph.node, given_node_names(model), strict=True):
        node.name = name
    return model


def given_node_names(model: onnx.ModelProto) -> list[str]:
    """Each node's name as ``name_nodes`` gives it (its own, or ``<op>_<index>`` made unique), without changing it."""
    taken = {n.name for n in model.graph.node if n.name}
    names = []
    for i, node in enumerate(model.graph.node):
        name = node.name
        if not name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            taken.add(name)
        names.append(name)
    return names


def find_standardisations(model: onnx.ModelProto) -> list[list[str]]:
    """Node names of each ``(t − mean(t)) / f(t − mean(t))`` island, with the nodes that only feed it."""
    g = _Graph(model.graph)
    islands = []
    for div in (n for n in g.nodes if n.op_type == "Div" and len(n.input) == 2):
        centre = g.producer.get(div.input[0])
        if centre is None or not _is_centring(centre, g):
            continue
        below = g.downstream(centre)
        denominator = g.producer.get(div.input[1])
        if denominator is None or denominator.name not in below:
            continue  # a plain division by a constant or by something else
        island = g.upstream(div, within=below) | {centre.name, g.producer[centre.input[1]].name}
        islands.append(sorted(island | _feeders(g, island)))
    return islands


def _is_centring(node: onnx.NodeProto, g: _Graph) -> bool:
    mean = g.producer.get(node.input[1]) if node.op_type == "Sub" and len(node.input) == 2 else None
    return mean is not None and mean.op_type == "ReduceMean" and mean.input[0] == node.input[0]


def _feeders(g: _Graph, island: set[str]) -> set[str]:
    """Nodes upstream of the island whose every output is consumed only inside the island (grown to a fixpoint)."""
    members, changed = set(island), True
    while changed:
        changed = False
        for node in g.nodes:
            if node.name in members or node.op_type not in FEEDER_OPS:
                continue
            outputs_used_inside = all(c.name in members for o in node.output for c in g.consumers.get(o, []))
            feeds_island = any(c.name in members for o in node.output for c in g.consumers.get(o, []))
            if outputs_used_inside and feeds_island:
                members.add(node.name)
                changed = True
    return members - island


def plan_precision(model: onnx.ModelProto) -> PrecisionPlan:
    """Decide, per float node, whether it stays FP32 (see the module docstring for the policy)."""
    model = _constants_to_initializers(name_nodes(_copy(model)))
    types = _elem_types(model)
    islands = find_standardisations(model)
    fp32 = {name: REASON_NORMALISATION for island in islands for name in island}
    for node in model.graph.node:
        if node.name in fp32 or not _is_float_node(node, types) or node.op_type in TYPE_AGNOSTIC_OPS:
            continue
        if node.op_type == "LayerNormalization":
            fp32[node.name] = REASON_LAYERNORM
        elif node.op_type not in FP16_OPS and node.op_type != "Cast":
            fp32[node.name] = f"{node.op_type} is not on the FP16 op list"
    # Only float nodes need a decision; shape arithmetic inside an island (Shape, Gather on int64) is left alone.
    by_name = {n.name: n for n in model.graph.node}
    fp32 = {
        name: why
        for name, why in fp32.items()
        if _is_float_node(by_name[name], types) and by_name[name].op_type not in TYPE_AGNOSTIC_OPS
    }
    return PrecisionPlan(fp32_nodes=fp32, islands=islands)


def convert_to_fp16(model: onnx.ModelProto, plan: PrecisionPlan | None = None) -> onnx.ModelProto:
    """Return an FP16 copy of ``model`` with FP32 islands from ``plan`` and FP32 graph inputs/outputs."""
    model = _constants_to_initializers(name_nodes(_copy(model)))
    plan = plan if plan is not None else plan_precision(model)
    types = _elem_types(model)
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    new_type = {name: FLOAT for name, t in types.items() if t == FLOAT}  # tensor -> type after conversion
    nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    fp16_inits: dict[str, str] = {}

    def as_type(name: str, want: int) -> str:
        if new_type.get(name) == want:
            return name
        if name in initializers and want == FLOAT16:
            if name not in fp16_inits:
                fp16_inits[name] = f"{name}__fp16"
                arr = numpy_helper.to_array(initializers[name]).astype("float16")
                graph.initializer.append(numpy_helper.from_array(arr, fp16_inits[name]))
            return fp16_inits[name]
        key = (name, want)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if want == FLOAT16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [casts[key]], name=casts[key], to=want))
        return casts[key]

    for node in graph.node:
        if not _is_float_node(node, types) or node.op_type in TYPE_AGNOSTIC_OPS:
            nodes.append(node)
            continue
        want = FLOAT if node.name in plan.fp32_nodes else FLOAT16
        for i, name in enumerate(node.input):
            if name and types.get(name) == FLOAT:
                node.input[i] = as_type(name, want)
        if node.op_type == "Cast":
            _retarget_cast(node, want)
        for out in node.output:
            if types.get(out) == FLOAT:
                new_type[out] = want
        nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    _keep_io_fp32(graph, new_type)
    unused = {t.name for t in graph.initializer} - {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name not in unused]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    graph.ClearField("value_info")
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise Fp16ConversionError(f"the FP16 graph is not valid ONNX ({err}); report the model name") from err
    logger.info(
        "FP16 graph: %d FP32 nodes in %d islands, %d casts", len(plan.fp32_nodes), len(plan.islands), len(casts)
    )
    return model


def write_fp16_onnx(src: str | Path, dst: str | Path) -> tuple[Path, PrecisionPlan]:
    """Convert the FP32 ONNX file ``src`` into the FP16-islands ONNX ``dst`` (written atomically)."""
    model = name_nodes(onnx.load(str(src)))
    plan = plan_precision(model)
    converted = convert_to_fp16(model, plan)
    with atomic_path(dst) as tmp:
        onnx.save(converted, str(tmp))
    return Path(dst), plan


def fp16_reductions_in_islands(fp16_model: onnx.ModelProto, islands: list[list[str]]) -> list[str]:
    """Names of reductions/divides/roots inside ``islands`` that compute in FP16 in ``fp16_model`` (should be [])."""
    types = _elem_types(fp16_model)
    island_nodes = {name for island in islands for name in island}
    return [
        node.name
        for node in fp16_model.graph.node
        if node.name in island_nodes
        and node.op_type in REDUCTION_OPS
        and any(types.get(t) == FLOAT16 for t in [*node.input, *node.output] if t)
    ]


# -- helpers -----------------------------------------------------------------------------------------------------
def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError as err:
        raise Fp16ConversionError(f"ONNX shape inference failed ({err}); simplify the model first") from err
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def _is_float_node(node: onnx.NodeProto, types: dict[str, int]) -> bool:
    return any(types.get(t) == FLOAT for t in [*node.input, *node.output] if t)


def _retarget_cast(node: onnx.NodeProto, want: int) -> None:
    for attr in node.attribute:
        if attr.name == "to" and attr.i in (FLOAT, FLOAT16):
            attr.i = want


def _constants_to_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn ``Constant`` nodes holding a tensor into initializers, so FP16 copies can be made of them."""
    graph, keep = model.graph, []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    graph.ClearField("node")
    graph.node.extend(keep)
    return model


def _keep_io_fp32(graph: onnx.GraphProto, new_type: dict[str, int]) -> None:
    """Graph outputs produced in FP16 get a final ``Cast`` back to FP32 under their original names."""
    for out in graph.output:
        if new_type.get(out.name) != FLOAT16:
            continue
        inner = f"{out.name}__fp16"
        for node in graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        graph.node.append(helper.make_node("Cast", [inner], [out.name], name=f"{out.name}__to_fp32", to=FLOAT))
