"""Efficient Channel Attention (ECA).

Wang, Wu, Zhu, Li, Zuo, Hu: "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
CVPR 2020, arXiv:1910.03151. Global average → 1-D conv across channels (no bias) → sigmoid → scale.
The kernel size comes from the channel count, k = |log2(C)/γ + b/γ| rounded to the nearest odd (γ=2, b=1),
unless given (the official ImageNet models pass one per stage).
"""

import math

import torch
from torch import nn


def eca_kernel_size(channels: int, *, gamma: int = 2, b: int = 1) -> int:
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class EfficientChannelAttention(nn.Module):
    child_name = "eca"

    def __init__(self, channels: int, *, kernel_size: int | None = None) -> None:
        super().__init__()
        k = eca_kernel_size(channels) if kernel_size is None else kernel_size
        if k % 2 == 0 or k < 1:
            raise ValueError(f"ECA needs an odd positive kernel size; got {k}")
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=(2, 3))[:, None, :]  # (B, 1, C): channels become the 1-D sequence
        y = self.conv(y)[:, 0, :, None, None]
        return x * torch.sigmoid(y)
