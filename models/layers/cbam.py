"""Convolutional Block Attention Module (CBAM).

Woo, Park, Lee, Kweon: "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv:1807.06521.
Channel gate (average- and max-pooled vectors through one shared MLP with bias, C→C/r→C, summed, sigmoid), then
the spatial gate (see ``spatial.py``, with BatchNorm as in the official code).
"""

import torch
from torch import nn

from models.layers.spatial import SpatialAttention


class ChannelGate(nn.Module):
    def __init__(self, channels: int, *, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"CBAM reduction {reduction} leaves no hidden units for {channels} channels")
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def mlp(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(v)))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, C, 1, 1) channel weights, sigmoid applied."""
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return torch.sigmoid(logits)[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CBAM(nn.Module):
    child_name = "cbam"

    def __init__(self, channels: int, *, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction=reduction)
        self.spatial_gate = SpatialAttention(channels, kernel_size=kernel_size, batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_gate(self.channel_gate(x))
