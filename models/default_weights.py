"""The project's default weights: deterministic, every attention path active, realistic activation scales.

These are NOT trained weights. They exist so that export, parity and benchmarks run and mean something without a
download: a seeded init (torchvision's ResNet init, then non-trivial values for the attention parameters that the
official code starts at zero or one), followed by re-estimating the BatchNorm running statistics on real
photographs bundled with scikit-image so that every layer sees activations of a realistic scale.
"""

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from models.layers import ContextBlock, SpatialGroupEnhance
from models.resnet import BasicBlock, Bottleneck
from models.transforms import IMAGENET_MEAN, IMAGENET_STD, photo_batch

logger = logging.getLogger(__name__)

RESIDUAL_BN_SCALE = 0.5


def warn_untrained(name: str, *, init: str) -> None:
    """The notice every model built without a checkpoint gets: a warning, shown without -v."""
    logger.warning(
        "%s has the project's default weights (init %r), NOT trained weights: predictions are meaningless; "
        "pass a checkpoint for real ones",
        name,
        init,
    )


def _is_attention(module: nn.Module) -> bool:
    return hasattr(type(module), "child_name")


def _init_parameters(model: nn.Module) -> None:
    # Pass 1, layer by layer: torchvision's fan-out init for the backbone convs; fan-in inside attention layers
    # (as the official GC code does for conv_mask: fan-out on a 1-output conv gives std √2 and logits of ±100).
    attention_parts = {id(m) for a in model.modules() if _is_attention(a) for m in a.modules()}
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            mode = "fan_in" if id(module) in attention_parts else "fan_out"
            nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
            if module.bias is not None:
                nn.init.normal_(module.bias, std=0.1)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=1 / module.in_features**0.5)
            nn.init.normal_(module.bias, std=0.1)
    # Pass 2, block by block (after pass 1, which would otherwise overwrite these children).
    for module in model.modules():
        if isinstance(module, SpatialGroupEnhance):
            # The official init (γ=0, β=1) makes SGE a constant gate; spread γ so the similarity map matters.
            nn.init.normal_(module.weight, mean=0.0, std=1.0)
            nn.init.normal_(module.bias, mean=0.0, std=0.5)
        elif isinstance(module, ContextBlock):
            # The official init zeroes the last transform conv (identity block); give it a real contribution. A
            # gentle mask keeps the attention softmax smooth: a sharp one amplifies float32 rounding block by block.
            nn.init.normal_(module.conv_mask.weight, std=0.5 / module.conv_mask.in_channels**0.5)
            last = module.channel_add_conv[3]
            nn.init.normal_(last.weight, std=0.5 / last.in_channels**0.5)
            nn.init.normal_(last.bias, std=0.1)
        elif isinstance(module, (Bottleneck, BasicBlock)):
            # A smaller scale on the residual branch's last BatchNorm, as trained ResNets have: with γ = 1 every block
            # adds a unit-variance branch and float32 rounding grows ~10× through ResNet-50 (measured vs float64).
            # 0.5, not less: at 0.25 the FP16 export's error grew 20× (folded weights near FP16's subnormals).
            last_bn = module.bn3 if isinstance(module, Bottleneck) else module.bn2
            nn.init.constant_(last_bn.weight, RESIDUAL_BN_SCALE)


def seeded_model(build: Callable[[], nn.Module], *, seed: int = 0) -> nn.Module:
    """Build and initialise a model from ``seed`` without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        _init_parameters(model)
    return model


def calibration_batch(
    size: tuple[int, int] = (224, 224),
    *,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> np.ndarray:
    """The bundled photographs and their mirror images, eval-transformed: what BatchNorm is calibrated on."""
    photos = photo_batch(size, mean=mean, std=std)
    return np.concatenate([photos, photos[..., ::-1]])


@torch.no_grad()
def calibrate_batchnorm(
    model: nn.Module,
    *,
    size: tuple[int, int] = (224, 224),
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on the bundled photographs (and their mirror images).

    One training-mode pass over the whole batch with a cumulative average makes the running statistics equal
    the batch statistics, so evaluation mode then normalises these photographs exactly as training mode would.
    """
    batch = torch.from_numpy(calibration_batch(size, mean=mean, std=std))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved_momentum = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    model(batch)
    for m, momentum in zip(norms, saved_momentum, strict=True):
        m.momentum = momentum
    model.eval()
    logger.info(
        "default weights: seeded init with BatchNorm statistics from %d bundled photographs; NOT trained weights",
        len(batch),
    )
    return model
