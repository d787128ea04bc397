"""ResNet v1.5 (torchvision's layout: stride on the 3×3 conv) with an optional attention layer per stage.

He, Zhang, Ren, Sun: "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385.
The attention layer sits after the last BatchNorm of the residual branch and before the residual add, as in
the official SGE, SE, CBAM, ECA and GCNet code. The block receives a factory ``attn_layer(channels)`` and does
not know which kind it builds; the child is named by the layer's ``child_name`` so that official checkpoints'
keys (``sge``, ``se``, ``cbam``, ``eca``, ``context_block``) line up.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn

AttentionFactory = Callable[[int], nn.Module]


def _attach_attention(block: nn.Module, attn_layer: AttentionFactory | None, channels: int) -> None:
    block.attn_name = None
    if attn_layer is None:
        return
    layer = attn_layer(channels)
    block.attn_name = type(layer).child_name
    block.add_module(block.attn_name, layer)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn_layer: AttentionFactory | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        _attach_attention(self, attn_layer, planes)
        self.downsample = downsample

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual branch before attention, identity branch); export's fused SGE form starts from these."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return out, identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, identity = self.branches(x)
        if self.attn_name is not None:
            out = getattr(self, self.attn_name)(out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        attn_layer: AttentionFactory | None = None,
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # Stride on the 3×3 (ResNet v1.5, torchvision), not on the first 1×1 as in the 2015 paper.
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        _attach_attention(self, attn_layer, planes * self.expansion)
        self.downsample = downsample

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual branch before attention, identity branch); export's fused SGE form starts from these."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out, identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, identity = self.branches(x)
        if self.attn_name is not None:
            out = getattr(self, self.attn_name)(out)
        return self.relu(out + identity)


class InputShapeError(ValueError):
    """The model received a tensor of the wrong rank, channel count or dtype."""


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        stage_attn: Sequence[AttentionFactory | None] = (None, None, None, None),
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(stage_attn) != 4:
            raise ValueError(f"ResNet needs 4 stages; got layers={list(layers)}, {len(stage_attn)} attention slots")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive; got {num_classes}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(block, 64, layers[0], stride=1, attn_layer=stage_attn[0])
        self.layer2 = self._make_stage(block, 128, layers[1], stride=2, attn_layer=stage_attn[1])
        self.layer3 = self._make_stage(block, 256, layers[2], stride=2, attn_layer=stage_attn[2])
        self.layer4 = self._make_stage(block, 512, layers[3], stride=2, attn_layer=stage_attn[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._tell_attention_where_it_is()

    def _tell_attention_where_it_is(self) -> None:
        """Give each attention layer its name and the deepest attention block's input stride, for its error messages
        (the smallest input that works is set by the deepest block, not by the one that happens to fail first)."""
        stages = (("layer1", 4), ("layer2", 8), ("layer3", 16), ("layer4", 32))
        deepest = max((s for name, s in stages if any(b.attn_name for b in getattr(self, name))), default=None)
        for stage, _ in stages:
            for i, block in enumerate(getattr(self, stage)):
                if block.attn_name is not None:
                    layer = getattr(block, block.attn_name)
                    layer.location = f"{stage}.{i}.{block.attn_name}"
                    layer.input_stride = deepest

    def _make_stage(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        *,
        stride: int,
        attn_layer: AttentionFactory | None,
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride=stride, downsample=downsample, attn_layer=attn_layer)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, attn_layer=attn_layer) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputShapeError(
                f"expected an image batch of shape (N, 3, H, W); got {tuple(x.shape)}"
                + ("; add a batch dimension with x[None]" if x.dim() == 3 else "")
            )
        weights = self.conv1.weight.dtype
        if x.dtype != weights:
            fix = "scale it to floats first (x.float() / 255, then normalise)" if not x.is_floating_point() else ""
            raise InputShapeError(
                f"expected a {weights} image batch (the model's weights); got {x.dtype}: "
                + (fix or f"convert it with x.to({weights}) or the model with model.to({x.dtype})")
            )
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


ARCHITECTURES: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
