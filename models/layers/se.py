"""Squeeze-and-Excitation (SE).

Hu, Shen, Sun: "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507.
Global average → 1×1 conv C→C/r (bias) → ReLU → 1×1 conv C/r→C (bias) → sigmoid → scale the channels.
The 1×1 convolutions with bias give timm's ``se.fc1`` / ``se.fc2`` key layout directly.
"""

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    child_name = "se"

    def __init__(self, channels: int, *, reduction: int = 16, hidden: int | None = None) -> None:
        super().__init__()
        # C/r as in the paper; ``hidden`` where a checkpoint says otherwise (timm rounds C/16 up to a multiple of 8:
        # 8 for the 64 channels of ResNet-18/34's first stage, where C/16 is 4)
        hidden = channels // reduction if hidden is None else hidden
        if hidden < 1:
            raise ValueError(f"SE reduction {reduction} leaves no hidden units for {channels} channels")
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = self.fc2(torch.relu(self.fc1(scale)))
        return x * torch.sigmoid(scale)
