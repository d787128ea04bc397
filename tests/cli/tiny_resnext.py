"""A user's own backbone for ``--model tests.cli.tiny_resnext:sge_resnext_tiny``: a two-block SGE-augmented ResNeXt
(grouped 3×3 convolutions, SGE after the last BatchNorm of each block, as in the SGE paper), small enough to export
in seconds. The other factories are the mistakes a user makes."""

import torch
from torch import nn

from models.layers.sge import SpatialGroupEnhance


class ResNeXtBlock(nn.Module):
    """1×1 → grouped 3×3 (cardinality 8) → 1×1, SGE on the residual branch, projection shortcut."""

    attn_name = "sge"  # the project's block contract: the fused-SGE export wraps blocks that follow it

    def __init__(self, inplanes: int, planes: int, *, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.sge = SpatialGroupEnhance(planes, groups=8)
        self.downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out)), self.downsample(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, identity = self.branches(x)
        return self.relu(self.sge(out) + identity)


class TinySGEResNeXt(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(ResNeXtBlock(32, 64, stride=2), ResNeXtBlock(64, 64, stride=2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _build() -> TinySGEResNeXt:
    model = TinySGEResNeXt()
    with torch.no_grad():
        for block in model.blocks:
            block.sge.weight.normal_(0, 1)  # γ ≠ 0: the spatial gate varies, so parity tests the SGE path
    return model.eval()


def sge_resnext_tiny() -> nn.Module:
    """Deterministic: the same weights on every call (the torch backend rebuilds the model from this factory)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _build()


def unseeded() -> nn.Module:
    """Other weights on every call: exportable, but the torch backend cannot reproduce them."""
    return _build()


def not_a_module() -> dict:
    return {"conv": "not a model"}


def broken() -> nn.Module:
    raise RuntimeError("weights server unreachable")


def feature_maps() -> nn.Module:
    """Forgets the classifier head: (N, C, H, W) out, not logits."""
    return nn.Conv2d(3, 4, 3)


def four_channel_input() -> nn.Module:
    """Built for RGBA: the forward pass fails on an RGB batch."""
    return nn.Sequential(nn.Conv2d(4, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class _NamedImages(nn.Module):
    """A classifier whose forward argument is not called ``x``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(images))


def images_argument() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _NamedImages().eval()


NOT_CALLABLE = 3


def exits():
    """A factory that ends the process as a training script would: refused in one line, never exit 0."""
    raise SystemExit(0)
