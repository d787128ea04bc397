"""Spatial Group-wise Enhance (SGE).

Li, Hu, Yang: "Spatial Group-wise Enhance: Improving Semantic Feature Learning in Convolutional Networks",
arXiv:1905.09646. Numerics follow the official ``SpatialGroupEnhance`` (implus/PytorchInsight): the global
descriptor is the spatial mean of each group, the similarity map is normalised with the *unbiased* standard
deviation, and eps is added to the std (not inside the square root).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class FeatureTooSmallError(ValueError):
    """An SGE block saw a 1×1 feature map, where the unbiased std is undefined."""


def check_feature_size(h: int, w: int, *, channels: int, location: str, input_stride: int | None) -> None:
    """Refuse a 1×1 map, where the unbiased std is undefined (the official code returns NaN). ``input_stride``: how
    far the network downsamples before its deepest SGE block (an input of stride + 1 gives every block ≥ 2×2)."""
    if h * w != 1:
        return
    fix = (
        f"the network downsamples by {input_stride} before its deepest SGE blocks, so use an input of at least "
        f"{input_stride + 1}×{input_stride + 1}"
        if input_stride
        else "give it a feature map of at least 1×2"
    )
    raise FeatureTooSmallError(
        f"SGE block {location} ({channels} channels) received a 1×1 feature map, where the unbiased std "
        f"is undefined (NaN in the official code); {fix}"
    )


def spatial_group_enhance(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    *,
    groups: int,
    eps: float,
    normalized: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    gate: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid,
) -> torch.Tensor:
    """SGE's maths on (B, C, H, W) with γ = ``weight`` and β = ``bias`` of shape (1, G, 1, 1); ``normalized`` and
    ``gate`` see ĉ and produce σ(a) (the layer passes its inspection hooks)."""
    _, c, h, w = x.shape
    x = x.reshape(-1, c // groups, h, w)  # (B·G, C/G, H, W)
    similarity = (x * F.adaptive_avg_pool2d(x, 1)).sum(dim=1, keepdim=True)  # c_i = g·x_i
    t = similarity.reshape(-1, h * w)
    t = t - t.mean(dim=1, keepdim=True)
    t = normalized(t / (t.std(dim=1, keepdim=True) + eps))  # unbiased std, eps outside the root
    t = t.reshape(-1, groups, h, w) * weight + bias  # a_i = γ_g·ĉ_i + β_g
    x = x * gate(t.reshape(-1, 1, h, w))
    return x.reshape(-1, c, h, w)


class SpatialGroupEnhance(nn.Module):
    child_name = "sge"

    def __init__(self, channels: int, *, groups: int = 64, eps: float = 1e-5) -> None:
        super().__init__()
        if groups < 1 or channels % groups:
            raise ValueError(
                f"SGE needs a positive groups that divides channels; got channels={channels}, groups={groups}"
            )
        self.channels = channels
        self.groups = groups
        self.eps = eps
        # γ starts at 0 and β at 1, as in the official code: the block starts as x·sigmoid(1).
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))
        # Set by the network that holds the block, for error messages: where it sits and how far the input
        # has been downsampled by the time it reaches the network's deepest SGE block.
        self.location = "sge"
        self.input_stride: int | None = None
        # Hook points for inspection (no parameters: state_dict keys and numerics unchanged).
        self.normalized = nn.Identity()  # ĉ, (B·G, H·W)
        self.gate = nn.Sigmoid()  # σ(a), (B·G, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        if not torch.onnx.is_in_onnx_export():
            check_feature_size(h, w, channels=c, location=self.location, input_stride=self.input_stride)
        return spatial_group_enhance(
            x, self.weight, self.bias, groups=self.groups, eps=self.eps, normalized=self.normalized, gate=self.gate
        )

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, eps={self.eps}"
