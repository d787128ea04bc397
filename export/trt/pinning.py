"""Weak typing (TensorRT 10.x): which network layers to pin to FP32 so SGE's normalisation islands stay FP32.

The islands are ``export.fp16``'s policy; the matching of network layers to ONNX nodes follows how the onnx-tensorrt
parser names layers (the node's name, ``<node>_<n>`` for a node's further layers, unnamed helpers, and the
``[ONNX Layer: node]`` metadata). Matching is pure (``fp32_layer_names``); ``pin_fp32_layers`` applies it.
"""

import logging
import re
from dataclasses import dataclass
from typing import Any

import onnx

from export.trt.errors import TrtBuildError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerView:
    """What the pinning decision reads of one network layer: its name, metadata and tensor names."""

    name: str
    metadata: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")  # the parser's layer metadata names the ONNX node


def parser_node_name(node: onnx.NodeProto) -> str:
    """The name onnx-tensorrt gives a node's layers: its own, or ``node_of_<first output>`` when it has none."""
    return node.name or f"node_of_{node.output[0]}"


def parser_aliases(model: onnx.ModelProto) -> dict[str, str]:
    """onnx-tensorrt's name of each unnamed node → the name ``export.fp16`` gives it (the plan's)."""
    from export.fp16 import given_node_names

    names = given_node_names(model)
    return {parser_node_name(n): given for n, given in zip(model.graph.node, names, strict=True) if not n.name}


PARSER_SUFFIX = re.compile(r"_\d+$")  # further layers of one node: "<node>_<counter>" (onnx-tensorrt)


def fp32_layer_names(layers: list[LayerView], fp32_nodes: set[str], fp32_tensors: set[str]) -> list[str]:
    """TensorRT layers to pin to FP32: every layer the parser made for an FP32 ONNX node, and helpers inside an island.

    A layer belongs to an FP32 node when it is named after it, carries it in its metadata (``[ONNX Layer: node]``),
    is named ``<node>_<n>`` (the parser's suffix for a node's further layers), or writes one of the node's output
    tensors. An unnamed helper layer (``(Unnamed Layer* 7) [Shuffle]``) between pinned layers, reading only what
    pinned layers write and read only by pinned layers, is pinned too, so no FP16 step sits inside an island.
    """

    def owned(layer: LayerView) -> bool:
        return bool(
            layer.name in fp32_nodes
            or fp32_nodes.intersection(ONNX_LAYER.findall(layer.metadata))
            or PARSER_SUFFIX.sub("", layer.name) in fp32_nodes
            or fp32_tensors.intersection(layer.outputs)
        )

    chosen = {layer.name for layer in layers if owned(layer)}
    producer = {t: layer.name for layer in layers for t in layer.outputs}
    readers: dict[str, set[str]] = {}
    for layer in layers:
        for t in layer.inputs:
            readers.setdefault(t, set()).add(layer.name)
    changed = True
    while changed:
        changed = False
        for layer in layers:
            if layer.name in chosen or not layer.inputs or not layer.outputs:
                continue
            fed = all(producer.get(t) in chosen or t in fp32_tensors for t in layer.inputs)
            read = [readers.get(t, set()) for t in layer.outputs]
            if fed and all(r and r <= chosen for r in read):
                chosen.add(layer.name)
                changed = True
    return [layer.name for layer in layers if layer.name in chosen]


def pin_fp32_layers(trt: Any, network: Any, model: onnx.ModelProto) -> int:
    """Weak typing: force the layers of SGE's normalisation (``export.fp16`` policy) to compute and output FP32."""
    from export.fp16 import given_node_names, plan_precision

    planned = set(plan_precision(model).fp32_nodes)  # names as export.fp16 gives unnamed nodes
    nodes = zip(model.graph.node, given_node_names(model), strict=True)
    fp32_tensors = {o for node, given in nodes if given in planned for o in node.output}
    fp32_nodes = planned | {parser for parser, given in parser_aliases(model).items() if given in planned}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    views = [_layer_view(layer) for layer in layers]
    chosen = set(fp32_layer_names(views, fp32_nodes, fp32_tensors))
    pinned = 0
    for layer in layers:
        if layer.name not in chosen or layer.type in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
            continue
        float_outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in (trt.float32, trt.float16)]
        if not float_outputs:
            continue  # shape arithmetic
        layer.precision = trt.float32
        for j in float_outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    if fp32_nodes and not pinned:
        raise TrtBuildError(
            f"none of the {len(fp32_nodes)} FP32 ONNX nodes (SGE normalisation) matched a TensorRT layer, so an FP16 "
            "build would compute them in FP16; build strongly typed from the FP16-islands ONNX (--fp16-onnx) instead"
        )
    logger.info("pinned %d TensorRT layers to FP32 (%d FP32 ONNX nodes)", pinned, len(fp32_nodes))
    return pinned


def _layer_view(layer: Any) -> LayerView:
    inputs = (layer.get_input(i) for i in range(layer.num_inputs))
    return LayerView(
        name=layer.name,
        metadata=getattr(layer, "metadata", "") or "",  # set by the parser in recent 10.x releases
        inputs=tuple(t.name for t in inputs if t is not None),  # optional inputs are None
        outputs=tuple(layer.get_output(j).name for j in range(layer.num_outputs)),
    )
