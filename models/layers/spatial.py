"""Spatial attention: where to look.

Woo, Park, Lee, Kweon: "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv:1807.06521 (the spatial
gate). Channel-wise max and mean maps, in the official order [max, mean] → 7×7 conv without bias (→ BatchNorm in
CBAM) → sigmoid → multiply every channel.
"""

import torch
from torch import nn


class SpatialAttention(nn.Module):
    child_name = "sa"

    def __init__(self, channels: int, *, kernel_size: int = 7, batch_norm: bool = False) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"spatial attention needs an odd kernel size; got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01) if batch_norm else None

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 1, H, W) attention map, sigmoid applied."""
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        logits = self.conv(pooled)
        if self.bn is not None:
            logits = self.bn(logits)
        return torch.sigmoid(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
