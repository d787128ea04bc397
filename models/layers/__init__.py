"""Attention layers, one per file, all ``Layer(channels, *, ...)`` and shape-preserving."""

from difflib import get_close_matches

from torch import nn

from models.layers.cbam import CBAM
from models.layers.eca import EfficientChannelAttention
from models.layers.gc import ContextBlock
from models.layers.se import SqueezeExcite
from models.layers.sge import FeatureTooSmallError, SpatialGroupEnhance
from models.layers.spatial import SpatialAttention

ATTENTION_LAYERS: dict[str, type[nn.Module]] = {}


def register_attention(name: str, layer: type[nn.Module]) -> None:
    if name in ATTENTION_LAYERS:
        raise ValueError(f"attention layer {name!r} is registered twice")
    ATTENTION_LAYERS[name] = layer


for _name, _layer in [
    ("sge", SpatialGroupEnhance),
    ("se", SqueezeExcite),
    ("gc", ContextBlock),
    ("sa", SpatialAttention),
    ("cbam", CBAM),
    ("eca", EfficientChannelAttention),
]:
    register_attention(_name, _layer)


def get_attention(name: str) -> type[nn.Module]:
    try:
        return ATTENTION_LAYERS[name]
    except KeyError:
        close = get_close_matches(name, ATTENTION_LAYERS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown attention layer {name!r}{hint} (choices: {', '.join(sorted(ATTENTION_LAYERS))})"
        ) from None


__all__ = [
    "ATTENTION_LAYERS",
    "CBAM",
    "ContextBlock",
    "EfficientChannelAttention",
    "FeatureTooSmallError",
    "SpatialAttention",
    "SpatialGroupEnhance",
    "SqueezeExcite",
    "get_attention",
    "register_attention",
]
