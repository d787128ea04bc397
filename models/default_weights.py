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
from models.transforms import IMAGENET_MEAN, IMAGENET_STD, photo_batch

logger = logging.getLogger(__name__)


def _init_parameters(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.normal_(module.bias, std=0.1)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=1 / module.in_features**0.5)
            nn.init.normal_(module.bias, std=0.1)
        elif isinstance(module, SpatialGroupEnhance):
            # The official init (γ=0, β=1) makes SGE a constant gate; spread γ so the similarity map matters.
            nn.init.normal_(module.weight, mean=0.0, std=1.0)
            nn.init.normal_(module.bias, mean=0.0, std=0.5)
        elif isinstance(module, ContextBlock):
            # The official init zeroes the last transform conv (identity block); give it a real contribution.
            last = module.channel_add_conv[3]
            nn.init.normal_(last.weight, std=0.5 / last.in_channels**0.5)
            nn.init.normal_(last.bias, std=0.1)


def seeded_model(build: Callable[[], nn.Module], *, seed: int = 0) -> nn.Module:
    """Build and initialise a model from ``seed`` without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        _init_parameters(model)
    return model


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
    photos = photo_batch(size, mean=mean, std=std)
    batch = torch.from_numpy(np.concatenate([photos, photos[..., ::-1]]).copy())
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
