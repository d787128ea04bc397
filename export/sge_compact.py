"""A compact, export-friendly Spatial Group-wise Enhance with the official numerics.

Same maths as ``models.layers.sge.SpatialGroupEnhance`` (Li, Hu, Yang, arXiv:1905.09646; official code
implus/PytorchInsight): per group g of C/G channels, c_i = mean(x_g)·x_g,i, normalised over H·W with the
*unbiased* std and eps added to the std, then a_i = γ_g·ĉ_i + β_g and x_g,i·sigmoid(a_i). Only the graph
changes, so that ONNX Runtime's CPU provider keeps every full-size tensor of the block in its blocked NCHWc
layout (only the G-channel similarity map is normalised in plain NCHW):

- no Reshape: the graph stays 4-D NCHW with a dynamic batch, so shape inference keeps the batch symbol;
- the per-group dot product is ``Conv(x · mean(x), ones)`` and the per-group broadcast of the gate is
  ``Conv(gate, ones)``; both are 1×1 convolutions with constant block-one-hot weights, grouped so that each
  conv group covers 8 SGE groups (ORT's NCHWc convolution needs multiples of its 8-channel block). The weights
  are 0/1 and each output sums only its own group's channels, so the result is the official one up to float
  summation order;
- with a static feature size the channel mean is broadcast over H×W by a nearest ``Resize`` with constant
  scales (an exact copy), which ORT also runs in NCHWc; the gated output is then a same-shape ``Mul``, and the
  residual Add+ReLU that follows stays in NCHWc (fused into the downsample convolution where there is one).

``compact_sge(model)`` swaps every SGE layer in place; the state_dict is unchanged (the 0/1 weights are
non-persistent buffers). After ONNX export, ``restore_batch_symbol`` puts the batch symbol back on the Resize
outputs (ONNX shape inference drops it), without which ORT cannot prove the shapes equal and falls back to NCHW.
Measurements: README, Performance (on a 2-core AVX2 CPU: no faster than the official graph in ONNX Runtime at
batch 1, ~10 % faster at batch 8, ~20 % faster in OpenVINO).
"""

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.layers.sge import SpatialGroupEnhance, check_feature_size

logger = logging.getLogger(__name__)

NCHWC_BLOCK = 8  # ORT's NCHWc block on AVX2; AVX-512 machines use 16 (pass block=16 there)


class FeatureSizeMismatchError(ValueError):
    """A compact SGE compiled for a static feature size received another size."""


def _group_sum_weights(channels: int, groups: int, *, block: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Block-one-hot 1×1 weights: reduce C→G (sum within a group) and expand G→C (copy the group's value).

    Each conv group covers ``block`` SGE groups (1 when G is not a multiple), so its channel counts are multiples
    of ORT's NCHWc block; the price is block multiply-adds of zeros per element (2·block·C·H·W MACs per layer).
    """
    per_group = channels // groups
    pack = block if groups % block == 0 else 1  # SGE groups handled by one conv group
    conv_groups = groups // pack
    group_of_channel = torch.arange(channels) // per_group  # SGE group of each channel
    reduce_w = torch.zeros(groups, pack * per_group, 1, 1)
    reduce_w[group_of_channel, torch.arange(channels) % (pack * per_group), 0, 0] = 1.0
    expand_w = torch.zeros(channels, pack, 1, 1)
    expand_w[torch.arange(channels), group_of_channel % pack, 0, 0] = 1.0
    return reduce_w, expand_w, conv_groups


class CompactSGE(nn.Module):
    """Drop-in for ``SpatialGroupEnhance``: same parameters, same numerics, a graph ORT runs in NCHWc.

    ``feature_size=(h, w)`` makes the mean's broadcast a constant-scale Resize (fastest; the block then only
    accepts that size); ``None`` keeps any H×W (the broadcast is then an ordinary NCHW Mul).
    """

    child_name = "sge"

    def __init__(
        self,
        channels: int,
        *,
        groups: int = 64,
        eps: float = 1e-5,
        feature_size: Sequence[int] | None = None,
        block: int = NCHWC_BLOCK,
    ) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"SGE needs channels divisible by groups; got channels={channels}, groups={groups}")
        if feature_size is not None and (len(feature_size) != 2 or min(feature_size) < 1):
            raise ValueError(f"feature_size must be (h, w) with h, w ≥ 1; got {feature_size!r}")
        self.channels = channels
        self.groups = groups
        self.eps = eps
        self.feature_size = None if feature_size is None else (int(feature_size[0]), int(feature_size[1]))
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))
        self.location, self.input_stride = "sge", None  # as SpatialGroupEnhance; from_official copies the real ones
        if block < 1:
            raise ValueError(f"block must be ≥ 1; got {block}")
        reduce_w, expand_w, self.conv_groups = _group_sum_weights(channels, groups, block=block)
        self.register_buffer("reduce_weight", reduce_w, persistent=False)
        self.register_buffer("expand_weight", expand_w, persistent=False)

    @classmethod
    def from_official(
        cls, layer: SpatialGroupEnhance, *, feature_size: Sequence[int] | None = None, block: int = NCHWC_BLOCK
    ) -> "CompactSGE":
        """A compact layer sharing ``layer``'s parameters (the same tensors, not copies)."""
        compact = cls(layer.channels, groups=layer.groups, eps=layer.eps, feature_size=feature_size, block=block)
        compact.weight, compact.bias = layer.weight, layer.bias
        compact.location, compact.input_stride = layer.location, layer.input_stride
        return compact.to(device=layer.weight.device, dtype=layer.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            self._check_size(x.shape[2], x.shape[3])
        mean = F.adaptive_avg_pool2d(x, 1)  # (B, C, 1, 1): GlobalAveragePool
        if self.feature_size is not None:
            # Nearest upsampling of a 1×1 map copies the value: exact, and ORT keeps it (and the Mul) in NCHWc.
            mean = F.interpolate(mean, scale_factor=tuple(map(float, self.feature_size)), mode="nearest")
        # Per-group dot product g·x_i as a 1×1 conv with 0/1 weights: (B, G, H, W).
        similarity = F.conv2d(x * mean, self.reduce_weight, groups=self.conv_groups)
        centred = similarity - similarity.mean(dim=(2, 3), keepdim=True)
        # Unbiased std with eps added to the std (official); a constant n when the size is static (no Shape ops).
        if self.feature_size is not None:
            n = self.feature_size[0] * self.feature_size[1]
            std = torch.linalg.vector_norm(centred, dim=(2, 3), keepdim=True) * (1.0 / math.sqrt(n - 1))
        else:
            n = similarity.shape[2] * similarity.shape[3]
            std = torch.sqrt((centred * centred).sum(dim=(2, 3), keepdim=True) / (n - 1))
        gate = torch.sigmoid(centred * (self.weight / (std + self.eps)) + self.bias)
        return x * F.conv2d(gate, self.expand_weight, groups=self.conv_groups)

    def _check_size(self, h: int, w: int) -> None:
        check_feature_size(h, w, channels=self.channels, location=self.location, input_stride=self.input_stride)
        if self.feature_size is not None and (h, w) != self.feature_size:
            raise FeatureSizeMismatchError(
                f"compact SGE block was built for {self.feature_size[0]}×{self.feature_size[1]} feature maps "
                f"but received {h}×{w}; call compact_sge(model, input_size=...) with the new input size, or "
                "input_size=None for any size"
            )

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, eps={self.eps}, feature_size={self.feature_size}"


def _sge_feature_sizes(model: nn.Module, input_size: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Feature-map size seen by each SGE layer (keyed by id) for one ``input_size`` image, by a dry run."""
    sizes: dict[int, tuple[int, int]] = {}

    def record(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        sizes[id(layer)] = (int(args[0].shape[2]), int(args[0].shape[3]))

    layers = [m for m in model.modules() if isinstance(m, SpatialGroupEnhance)]
    handles = [layer.register_forward_pre_hook(record) for layer in layers]
    param = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, dtype=param.dtype, device=param.device))
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def compact_sge(model: nn.Module, *, input_size: Sequence[int] | None = None, block: int = NCHWC_BLOCK) -> nn.Module:
    """Replace every ``SpatialGroupEnhance`` in ``model`` (in place) by a ``CompactSGE``; returns ``model``.

        ``input_size=(h, w)``: the image size the deployed model will take; each block is built for its feature
        size (fastest on ORT's CPU provider; other sizes then raise ``FeatureSizeMismatchError`` in PyTorch and fail
        in ONNX Runtime). ``None``: any size (for exports with a dynamic H×W). ``block``: ORT's NCHWc block of the
    deployment CPU (8 with AVX2, 16 with AVX-512). A model without SGE is returned as is.
    """
    sizes = _sge_feature_sizes(model, input_size) if input_size is not None else {}
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SpatialGroupEnhance):
                setattr(parent, name, CompactSGE.from_official(child, feature_size=sizes.get(id(child)), block=block))
                replaced += 1
    logger.info("compact_sge: replaced %d SGE layers (feature sizes %s)", replaced, "static" if sizes else "dynamic")
    return model


def restore_batch_symbol(model_proto: "onnx.ModelProto") -> "onnx.ModelProto":  # noqa: F821
    """Give each Resize output the graph input's batch symbol, and re-run shape inference; returns a new proto.

    ONNX shape inference computes a Resize output dim as floor(dim·scale), which loses a symbolic batch; ORT
    then cannot prove that ``x`` and the broadcast mean have the same shape and runs the block in NCHW.
    Only Resize nodes with a unit batch and channel scale are touched (those keep the batch by definition).
    Spatial means written as ReduceMean over (H, W) (the dynamo exporter's form) become GlobalAveragePool,
    which ORT runs in NCHWc.
    """
    import onnx
    from onnx import shape_inference

    batch = model_proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not batch:
        return model_proto  # a static batch: nothing to restore
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model_proto)
    constants = _constants(fixed.graph)
    _spatial_means_as_global_pool(fixed.graph, constants, shape_inference.infer_shapes(fixed).graph)
    inferred = shape_inference.infer_shapes(fixed)
    resize_outputs = set()
    for node in inferred.graph.node:
        if node.op_type != "Resize" or len(node.input) < 3 or node.input[2] not in constants:
            continue
        scales = constants[node.input[2]]
        if scales.shape == (4,) and scales[0] == 1 and scales[1] == 1:
            resize_outputs.add(node.output[0])
    del fixed.graph.value_info[:]
    for info in inferred.graph.value_info:
        if info.name in resize_outputs:
            dim = info.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_param = batch
            fixed.graph.value_info.append(info)
    logger.info("restore_batch_symbol: %d Resize outputs annotated with %r", len(resize_outputs), batch)
    return shape_inference.infer_shapes(fixed)


def _constants(graph: "onnx.GraphProto") -> dict[str, "np.ndarray"]:  # noqa: F821
    """Initializers and Constant-node tensors by name."""
    from onnx import helper, numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))
    return constants


def _spatial_means_as_global_pool(graph: "onnx.GraphProto", constants: dict, inferred: "onnx.GraphProto") -> int:  # noqa: F821
    """ReduceMean over (H, W) feeding a Resize (CompactSGE's channel mean) → GlobalAveragePool, in place; a count.

    Only those: the small similarity map's mean is better left in NCHW beside the rest of the normalisation.
    """
    from onnx import helper

    resized = {n.input[0] for n in graph.node if n.op_type == "Resize"}
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in [*inferred.input, *inferred.value_info]
        if v.type.tensor_type.HasField("shape")
    }
    count = 0
    for i, node in [(i, n) for i, n in enumerate(graph.node) if n.op_type == "ReduceMean"]:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in constants:
            axes = constants[node.input[1]].tolist()
        if node.output[0] not in resized or attrs.get("keepdims", 1) != 1 or axes is None:
            continue
        if ranks.get(node.input[0]) != 4:
            continue
        if sorted(a % 4 for a in axes) != [2, 3]:
            continue
        graph.node[i].CopyFrom(
            helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        )
        count += 1
    return count
