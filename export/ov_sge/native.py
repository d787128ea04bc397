"""The fused-SGE graph's ``SgeResidual`` nodes as standard ONNX ops that OpenVINO's CPU plugin runs natively.

OpenVINO runs an extension op as a plain-NCHW f32 reference node, with reorders and precision conversions around
it (export/ov_sge/graph.py). This rewrite instead spells each block tail ``relu(x · sigmoid(γ_g·ĉ + β_g) + id)``
(Li, Hu, Yang, arXiv:1905.09646; official numerics: unbiased std, eps added to the std) in ops the plugin keeps in
its own layouts (blocked or channels-last) and in the graph's precision, with no Reshape (a reshape to 5-D forces
plain NCHW):

    x  = y + b                                                y: the block's last convolution without its bias b
    m  = GlobalAveragePool(y) + b                             (N, C, 1, 1)
    t  = Conv((y - mean y) · m, ones)                         (N, G, H, W)  per-group dot product, centred
    tc = t - mean_hw(t)
    ĉ·γ = tc · γ' / (sqrt(mean_hw(tc²)) + eps')              γ' = γ·k, eps' = eps·k, k = sqrt((n-1)/n), n = H·W
    s  = sigmoid(ĉ·γ + β)
    out = relu(x · Conv(s, ones) + id)                        the gate copied back to the group's C/G channels

Why the convolution's bias is taken out: the export folds BatchNorm into that convolution, and with the default
(calibrated) weights its shifts are large beside the spatial deviations SGE normalises. Under the bf16 hint the
plugin stores the convolution's output in bf16, rounded relative to |x| with the shift in it, and the deviations
were lost (sge_resnet18 at 96², worst photograph: cosine 0.9976, relative L2 0.071 against eager FP32, below the
bf16 gate). Without the bias, y is rounded relative to its own size; the centred product (t's mean is then 0 up to
rounding) and the bias come back in the eltwise chains the plugin already runs, so no pass is added. Where the
input is not a Conv with an initializer bias used by this node alone (the INT8 graph's DequantizeLinear), x is
taken as it is. Only under a reduced-precision hint (``bias_apart``, which the runner sets for bf16 and f16):
in f32 the small (N, C, 1, 1) nodes it adds are overhead with nothing to gain.

``k`` turns the biased std into the official unbiased one exactly: tc/(sqrt(n/(n-1))·σ_b + eps) =
(tc/(σ_b + eps·k))·k. The 1×1 "ones" convolutions have constant 0/1 weights, grouped so that each conv group
covers ``pack`` SGE groups (a multiple of the plugin's 16-channel block keeps them in the blocked layout); each
output sums, or copies, only its own group's channels, so the maths is the official one up to summation order.
"""

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from export.external_data import initializer_array, load_external_weights
from export.ort_sge.nchwc import FUSED_DOMAIN, FUSED_OP
from export.ov_sge.fused_nodes import replace_fused_nodes

DEFAULT_PACK = 16  # SGE groups per conv group: the CPU plugin's AVX-512 channel block


class NativeRewriteError(ValueError):
    """A fused-SGE graph whose ``SgeResidual`` nodes cannot be written as standard ops."""


def ones_weights(channels: int, groups: int, pack: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(reduce C→G weights, expand G→C weights, conv groups): block-one-hot 1×1 kernels, ``pack`` SGE groups each.

    Reduce: (G, pack·C/G, 1, 1), output g sums its own C/G channels. Expand: (C, pack, 1, 1), channel c copies its
    group. ``pack`` falls back to 1 when it does not divide G.
    """
    per_group = channels // groups
    pack = pack if pack >= 1 and groups % pack == 0 else 1
    group_of = np.arange(channels) // per_group
    reduce_w = np.zeros((groups, pack * per_group, 1, 1), np.float32)
    reduce_w[group_of, np.arange(channels) % (pack * per_group), 0, 0] = 1.0
    expand_w = np.zeros((channels, pack, 1, 1), np.float32)
    expand_w[np.arange(channels), group_of % pack, 0, 0] = 1.0
    return reduce_w, expand_w, groups // pack


class _Builder:
    """Appends nodes and initializers for one rewritten block; names carry the block's node name."""

    def __init__(self, graph, prefix: str) -> None:
        self.graph, self.prefix, self.nodes = graph, prefix, []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        full = f"{self.prefix}/{name}"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), full))
        return full

    def int64(self, name: str, value: list[int]) -> str:
        from onnx import numpy_helper

        full = f"{self.prefix}/{name}"
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.int64), full))
        return full

    def op(self, op_type: str, inputs: list[str], name: str, output: str | None = None, **attrs) -> str:
        from onnx import helper

        out = output or f"{self.prefix}/{name}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{self.prefix}/{name}", **attrs))
        return out


def _shapes(model) -> dict[str, list]:
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    out = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if info.type.tensor_type.HasField("shape"):
            out[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
    return out


def _rewrite_block(
    graph, node, *, channels: int, spatial: tuple | None, pack: int, constants: dict, opset: int, bias=None
) -> list:
    """Standard-op nodes for one ``SgeResidual`` node (appends their initializers to ``graph``)."""
    attrs = {a.name: a for a in node.attribute}
    groups, eps = attrs["groups"].i, attrs["eps"].f
    if attrs.get("block") is not None and attrs["block"].i != 0:
        raise NativeRewriteError(f"{node.name} is in ONNX Runtime's NCHWc layout (block={attrs['block'].i})")
    if channels % groups:
        raise NativeRewriteError(f"{node.name}: {channels} channels do not split into {groups} groups")
    if node.input[2] not in constants or node.input[3] not in constants:
        raise NativeRewriteError(f"{node.name}: gamma and beta must be initializers")
    gamma = constants[node.input[2]].astype(np.float64).reshape(1, groups, 1, 1)
    beta = constants[node.input[3]].astype(np.float32).reshape(1, groups, 1, 1)
    x, identity = node.input[0], node.input[1]
    b = _Builder(graph, node.name or f"sge_{id(node)}")
    reduce_w, expand_w, conv_groups = ones_weights(channels, groups, pack)

    if bias is None:
        mean = b.op("GlobalAveragePool", [x], "mean")
        weighted = b.op("Mul", [x, mean], "weighted")
    else:  # x = y + bias, y the bias-free convolution output
        y = x
        y_mean = b.op("GlobalAveragePool", [y], "y_mean")
        bias_c = b.const("bias", bias.reshape(1, -1, 1, 1))
        mean = b.op("Add", [y_mean, bias_c], "mean")
        weighted = b.op("Mul", [b.op("Sub", [y, y_mean], "y_centred"), mean], "weighted")
        x = b.op("Add", [y, bias_c], "x")
    t = b.op("Conv", [weighted, b.const("reduce_w", reduce_w)], "similarity", group=conv_groups)
    if opset >= 18:  # ReduceMean takes its axes as an input from opset 18
        hw_axes = b.int64("hw_axes", [2, 3])
        t_mean = b.op("ReduceMean", [t, hw_axes], "t_mean", keepdims=1)
        tc = b.op("Sub", [t, t_mean], "centred")
        var = b.op("ReduceMean", [b.op("Mul", [tc, tc], "squared"), hw_axes], "variance", keepdims=1)
    else:
        t_mean = b.op("ReduceMean", [t], "t_mean", axes=[2, 3], keepdims=1)
        tc = b.op("Sub", [t, t_mean], "centred")
        var = b.op("ReduceMean", [b.op("Mul", [tc, tc], "squared")], "variance", axes=[2, 3], keepdims=1)
    std = b.op("Sqrt", [var], "std")
    if spatial is not None:  # static H·W: k folded into the constants (the plugin then fuses the lot into its MVN)
        n = spatial[0] * spatial[1]
        k = math.sqrt((n - 1) / n)
        eps_k, gamma_k = b.const("eps", np.float32(eps * k)), b.const("gamma", (gamma * k).astype(np.float32))
    else:  # dynamic H·W: k from the shape at run time
        hw = b.op("Slice", [b.op("Shape", [t], "shape"), b.int64("hw_start", [2]), b.int64("hw_end", [4])], "hw")
        n = b.op("Cast", [b.op("ReduceProd", [hw], "n_int", keepdims=1)], "n", to=1)  # 1: FLOAT
        ratio = b.op("Div", [b.op("Sub", [n, b.const("one", np.float32(1))], "n_minus_1"), n], "ratio")
        k_tensor = b.op("Sqrt", [ratio], "k")
        eps_k = b.op("Mul", [b.const("eps", np.float32(eps)), k_tensor], "eps_k")
        gamma_k = b.op("Mul", [b.const("gamma", gamma.astype(np.float32)), k_tensor], "gamma_k")
    normalised = b.op("Div", [tc, b.op("Add", [std, eps_k], "std_eps")], "normalised")
    affine = b.op("Mul", [normalised, gamma_k], "gamma_mul")
    gate = b.op("Sigmoid", [b.op("Add", [affine, b.const("beta", beta)], "beta_add")], "gate")
    gate_c = b.op("Conv", [gate, b.const("expand_w", expand_w)], "gate_channels", group=conv_groups)
    gated = b.op("Mul", [x, gate_c], "gated")
    summed = b.op("Add", [gated, identity], "residual")
    b.op("Relu", [summed], "relu", output=node.output[0])
    return b.nodes


def _owns_bias(conv, x: str, users: dict, initializers: dict) -> bool:
    """Whether ``x`` is the output of a Conv with an initializer bias, read by the SgeResidual node alone."""
    return (
        conv is not None
        and conv.op_type == "Conv"
        and len(conv.input) == 3
        and conv.input[2] in initializers
        and users.get(x) == 1
    )


def native_onnx_model(model, *, pack: int = DEFAULT_PACK, graph_path: str | Path = "", bias_apart: bool = False):
    """Rewrite the fused-SGE ``model`` (onnx.ModelProto) in place with every ``SgeResidual`` as standard ops; returns
    it and the count. ``graph_path``: the file a model loaded without its external data was read from (γ and β of 256
    groups or more are large enough to be stored beside it)."""
    graph = model.graph
    shapes = _shapes(model)
    initializers = {t.name: t for t in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    users: dict = {}
    for n in graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 17)

    def standard_ops(node) -> list:
        dims = shapes.get(node.input[0])
        if not dims or len(dims) != 4 or not dims[1]:
            raise NativeRewriteError(f"{node.name}: needs a 4-D input with a known channel count; got shape {dims}")
        spatial = (dims[2], dims[3]) if dims[2] and dims[3] else None
        gamma_beta = {n: initializer_array(initializers[n], graph_path) for n in node.input[2:4] if n in initializers}
        conv, bias = producers.get(node.input[0]), None
        if bias_apart and _owns_bias(conv, node.input[0], users, initializers):  # x = y + b: the module docstring
            bias = initializer_array(initializers[conv.input[2]], graph_path).astype(np.float32)
            del conv.input[2]
        return _rewrite_block(
            graph, node, channels=dims[1], spatial=spatial, pack=pack, constants=gamma_beta, opset=opset, bias=bias
        )

    return model, replace_fused_nodes(model, standard_ops)


def read_native_model(core, path: str | Path, *, pack: int = DEFAULT_PACK, bias_apart: bool = False) -> tuple[Any, int]:
    """(ov.Model, number of rewritten blocks) of the fused-SGE graph at ``path``, rewritten in memory (the file on
    disk, and its hash in the manifest, are unchanged); no extension library is needed."""
    import onnx

    # rewritten without its weights (shape inference then copies kilobytes, not the weights), which come in after
    model, count = native_onnx_model(
        onnx.load(str(path), load_external_data=False), pack=pack, graph_path=path, bias_apart=bias_apart
    )
    load_external_weights(model, path)  # hard-linked data files too (export.external_data)
    if count == 0:
        raise NativeRewriteError(f"{path} holds no {FUSED_DOMAIN}::{FUSED_OP} node")
    return core.read_model(io.BytesIO(model.SerializeToString())), count
