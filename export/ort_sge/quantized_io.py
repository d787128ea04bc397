"""Keep ONNX Runtime's INT8 CPU graph in uint8 NHWC across the fused SGE op (the INT8 twin of nchwc.py).

ORT's QDQ transformer turns an INT8 SGE-ResNet's convolutions into ``QLinearConv`` on uint8 NHWC
(``channels_last``), but it cannot look inside ``SgeResidual``, so around each block it leaves a float detour:
``Transpose → DequantizeLinear`` on both activations and ``QuantizeLinear → Transpose`` on the output: four to six
extra passes over the map. ``fold_quantized_io`` takes the ORT-optimised graph
(``SessionOptions.optimized_model_filepath``) and replaces each detour with one ``SgeResidualQ``, which reads and
writes the uint8 NHWC tensors and does the (de)quantisation inside the kernel.
"""

import logging

import onnx
from onnx import TensorProto, helper

from export.ort_sge.nchwc import (
    FUSED_DOMAIN,
    FUSED_OP,
    QUANTIZED_OP,
    graph_links,
    is_op,
    node_attribute,
    relist,
    rename_input,
)

logger = logging.getLogger(__name__)

TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]


def _nhwc_info(nchw: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto | None:
    """The uint8 NHWC twin of a float NCHW tensor's type and shape, if it has a 4-D one."""
    dims = [
        d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else None
        for d in nchw.type.tensor_type.shape.dim
    ]
    if len(dims) != 4:
        return None
    return helper.make_tensor_value_info(name, TensorProto.UINT8, [dims[i] for i in TO_NHWC])


def runs_quantized(channels: int, groups: int) -> bool:
    """Whether SgeResidualQ runs a map of ``channels`` in ``groups`` groups in every build (vectors of 4, 8 or 16
    floats; sge_q_shape.h): channels per group a power of two, and channels a multiple of 16."""
    if channels <= 0 or groups <= 0 or channels % groups or channels % 16:
        return False
    per_group = channels // groups
    return per_group & (per_group - 1) == 0


def fold_quantized_io(model: onnx.ModelProto) -> int:
    """Replace, in ORT-optimised INT8 ``model`` in place, each SgeResidual's DQ → SgeResidual → Q with one
    ``SgeResidualQ`` on uint8 NHWC tensors; how many were.

    A node is rewritten when its input 0 is ``DequantizeLinear(Transpose[0,3,1,2](x))``, its identity is one too or
    the output of a node rewritten before it, its output is read by exactly one ``QuantizeLinear``, neither is a graph
    output, every scale and zero point involved is a scalar initializer (float scale, uint8 zero point), and the
    kernel runs its shape (``runs_quantized``, channels read off the weights of the convolution writing x). The
    ``QuantizeLinear``'s ``Transpose[0,2,3,1]`` readers are bypassed; the head's ``QLinearGlobalAveragePool`` reads
    NHWC itself (``channels_last``) where only a ``Flatten`` reads its result ([N, 1, 1, C] flattens as [N, C, 1, 1]
    does); other readers read one new ``Transpose[0,3,1,2]``, the same uint8 NCHW tensor. A node that still wants the
    float output (one left as it was) reads ``DequantizeLinear`` of that: the quantised value, no longer the float
    one. Likewise a chained block's identity is now its predecessor's quantised output, the tensor the convolutions
    already read.
    """
    graph = model.graph
    producer, consumers = graph_links(graph)
    graph_outputs = {o.name for o in graph.output}
    constants = {i.name: i for i in graph.initializer}
    for overridable in graph.input:  # an initializer that is also a graph input is no constant
        constants.pop(overridable.name, None)
    taken = {name for n in graph.node for name in (n.name, *n.input, *n.output)} | set(constants)

    def unique(name: str) -> str:
        candidate, k = name, 0
        while candidate in taken:
            k += 1
            candidate = f"{name}_{k}"
        taken.add(candidate)
        return candidate

    def per_tensor(node: onnx.NodeProto) -> list[str] | None:  # a (De)QuantizeLinear's [scale, zero point]
        if len(node.input) < 3:
            return None
        scale, zero_point = (constants.get(name) for name in node.input[1:3])
        if scale is None or zero_point is None or scale.dims or zero_point.dims:
            return None
        uint8 = (scale.data_type, zero_point.data_type) == (TensorProto.FLOAT, TensorProto.UINT8)
        return list(node.input[1:3]) if uint8 else None

    def from_nhwc(name: str) -> list[str] | None:  # [x, scale, zero point] for DequantizeLinear(Transpose(x))
        dq = producer.get(name)
        if not is_op(dq, "", "DequantizeLinear") or (quantization := per_tensor(dq)) is None:
            return None
        transpose = producer.get(dq.input[0])
        if not is_op(transpose, "", "Transpose") or node_attribute(transpose, "perm") != TO_NCHW:
            return None
        return [transpose.input[0], *quantization]

    def kernel_runs(x: str, groups: int | None) -> bool:  # x's channels, from the weights of the conv writing it
        conv = producer.get(x)
        weights = constants.get(conv.input[3]) if is_op(conv, "com.microsoft", "QLinearConv") else None
        return weights is not None and bool(groups) and runs_quantized(weights.dims[0], groups)

    def pools_into_flatten(node: onnx.NodeProto) -> bool:  # an NCHW QLinearGlobalAveragePool read only by Flatten
        if (
            not is_op(node, "com.microsoft", "QLinearGlobalAveragePool")
            or node_attribute(node, "channels_last", 0) != 0
        ):
            return False
        readers, pooled = consumers[node.output[0]], node.output[0]
        flat = all(is_op(r, "", "Flatten") and node_attribute(r, "axis", 1) == 1 for r in readers)
        return bool(readers) and flat and pooled not in graph_outputs

    fused = [n for n in graph.node if is_op(n, FUSED_DOMAIN, FUSED_OP)]
    folded: dict[str, list[str]] = {}  # a rewritten node's float output → [uint8 NHWC output, scale, zero point]
    rewrites: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []  # (SgeResidual, the QuantizeLinear reading it)
    replaced: dict[int, onnx.NodeProto] = {}  # id of a rewritten SgeResidual → its SgeResidualQ
    for n in fused:  # in topological order, so a chained identity's producer is decided first
        out = n.output[0]
        x, identity = from_nhwc(n.input[0]), from_nhwc(n.input[1]) or folded.get(n.input[1])
        quantizers = [c for c in consumers[out] if is_op(c, "", "QuantizeLinear")]
        if x is None or identity is None or len(quantizers) != 1 or out in graph_outputs:
            continue
        if not kernel_runs(x[0], node_attribute(n, "groups")):
            continue
        q = quantizers[0]
        if (y_quantization := per_tensor(q)) is None or q.output[0] in graph_outputs:
            continue
        y = unique(f"{out}_q_nhwc")
        folded[out] = [y, *y_quantization]
        node = helper.make_node(
            QUANTIZED_OP, [*x, *identity, *n.input[2:4], *y_quantization], [y], name=y, domain=FUSED_DOMAIN
        )
        node.attribute.extend(a for a in n.attribute if a.name != "block")
        for name in node.input:  # so the renames below reach it too
            consumers[name].append(node)
        rewrites.append((n, q))
        replaced[id(n)] = node
    logger.info("INT8: %d of %d fused SGE blocks read uint8 NHWC directly", len(rewrites), len(fused))
    if not rewrites:
        return 0

    candidates: set[int] = set()  # nodes the rewrite may leave unread: removed once they are
    added: list[onnx.NodeProto] = []
    for n, q in rewrites:
        out, (y, y_scale, y_zero_point) = n.output[0], folded[n.output[0]]
        for name in n.input[:2]:  # the input detours, unless it is the chained identity
            if name not in folded:
                dq = producer[name]
                candidates.update((id(dq), id(producer[dq.input[0]])))
        candidates.add(id(q))
        nchw_readers = []
        for c in consumers[q.output[0]]:
            if is_op(c, "", "Transpose") and node_attribute(c, "perm") == TO_NHWC and c.output[0] not in graph_outputs:
                rename_input(consumers[c.output[0]], c.output[0], y)
                candidates.add(id(c))
            elif pools_into_flatten(c):  # the head's pooling reads NHWC itself: [N, 1, 1, C], flattened alike
                rename_input([c], q.output[0], y)
                kept_attributes = [a for a in c.attribute if a.name != "channels_last"]
                c.ClearField("attribute")
                c.attribute.extend([*kept_attributes, helper.make_attribute("channels_last", 1)])
            else:
                nchw_readers.append(c)
        float_readers = [c for c in consumers[out] if c is not q and id(c) not in replaced]
        if nchw_readers or float_readers:
            nchw = unique(f"{out}_q_nchw")
            added.append(helper.make_node("Transpose", [y], [nchw], name=nchw, perm=TO_NCHW))
            rename_input(nchw_readers, q.output[0], nchw)
        if float_readers:
            dequantized = unique(f"{out}_dq")
            added.append(
                helper.make_node("DequantizeLinear", [nchw, y_scale, y_zero_point], [dequantized], name=dequantized)
            )
            rename_input(float_readers, out, dequantized)

    kept = [replaced.get(id(n), n) for n in graph.node]
    while True:  # drop what became unread (a DQ before its Transpose), never anything still read or a graph output
        read = {name for n in kept + added for name in n.input} | graph_outputs
        dead = {id(n) for n in kept if id(n) in candidates and not any(out in read for out in n.output)}
        if not dead:
            break
        kept = [n for n in kept if id(n) not in dead]
    relist(graph, kept, added)
    gone = set(producer) - {out for n in graph.node for out in n.output}
    shapes = {info.name: info for info in graph.value_info}
    kept_info = [info for info in graph.value_info if info.name not in gone]
    for n, _ in rewrites:  # the shape the float output had, in NHWC
        if n.output[0] in shapes and (info := _nhwc_info(shapes[n.output[0]], folded[n.output[0]][0])) is not None:
            kept_info.append(info)
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    if not any(o.domain == FUSED_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(FUSED_DOMAIN, 1))
    return len(rewrites)
