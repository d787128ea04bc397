"""Global Context block (GCNet ``ContextBlock``).

Cao, Xu, Lin, Wei, Hu: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond", arXiv:1904.11492.
Attention pooling (1×1 conv with bias → softmax over H·W → weighted sum of positions), transform
(1×1 conv → LayerNorm([C/r, 1, 1]) → ReLU → 1×1 conv), added to every position. Key names follow the official
code (``conv_mask``, ``channel_add_conv.{0,1,3}``). The last conv starts at zero, so the block is the identity at
init. ``se_refine`` adds the optional SE-style channel refinement after the fusion that the project's GC source
document describes (X'' = X' ⊗ σ(W2·ReLU(W1·GAP(X')))).
"""

import torch
from torch import nn

from models.layers.se import SqueezeExcite


class ContextBlock(nn.Module):
    child_name = "context_block"

    def __init__(self, channels: int, *, ratio: float = 1 / 16, se_refine: bool = False) -> None:
        super().__init__()
        hidden = int(channels * ratio)
        if hidden < 1:
            raise ValueError(f"GC ratio {ratio} leaves no hidden units for {channels} channels")
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1], eps=1e-5),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        self.se = SqueezeExcite(channels) if se_refine else None
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add_conv[3].weight)
        nn.init.zeros_(self.channel_add_conv[3].bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The (B, 1, H·W) softmax weights of the attention pooling."""
        return torch.softmax(self.conv_mask(x).flatten(2), dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.attention(x)  # (B, 1, H·W)
        context = torch.matmul(x.flatten(2), weights.transpose(1, 2))  # (B, C, 1)
        out = x + self.channel_add_conv(context[..., None])
        return out if self.se is None else self.se(out)
