"""Model configurations by name (``sge_resnet50``, ``resnet18``, ...) and ``create_model``.

Each config carries what a deployment needs besides the weights: the input size and the normalisation.
"""

import functools
import logging
from dataclasses import asdict, dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from torch import nn

from models.layers import get_attention
from models.resnet import ARCHITECTURES, ResNet
from models.transforms import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    depth: int
    attention: str | None = None
    attn_stages: tuple[bool, bool, bool, bool] = (True, True, True, True)
    attn_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


MODEL_CONFIGS: dict[str, ModelConfig] = {}


def register_model(config: ModelConfig) -> None:
    if config.name in MODEL_CONFIGS:
        raise ValueError(f"model {config.name!r} is registered twice")
    MODEL_CONFIGS[config.name] = config


# Stages 2-4 (c3-c5) for GC, as in the GCNet paper's ResNet-50 setting; every stage for the others.
_ATTENTION_STAGES = {
    "sge": (True, True, True, True),
    "se": (True, True, True, True),
    "gc": (False, True, True, True),
    "sa": (True, True, True, True),
    "cbam": (True, True, True, True),
    "eca": (True, True, True, True),
}

for _depth in ARCHITECTURES:
    register_model(ModelConfig(name=f"resnet{_depth}", depth=_depth))
    for _attn, _stages in _ATTENTION_STAGES.items():
        register_model(ModelConfig(name=f"{_attn}_resnet{_depth}", depth=_depth, attention=_attn, attn_stages=_stages))


def list_models() -> list[str]:
    return sorted(MODEL_CONFIGS, key=lambda n: (n.rsplit("resnet", 1)[0], int(n.rsplit("resnet", 1)[1])))


def get_config(name: str) -> ModelConfig:
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        close = get_close_matches(name.lower(), MODEL_CONFIGS, n=3, cutoff=0.5)  # SGE_ResNet50 → sge_resnet50
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}; {hint}run `sge-deploy export --list-models` for all {len(MODEL_CONFIGS)} names"
        ) from None


def _stage_factories(config: ModelConfig, overrides: dict[str, Any]) -> list:
    """One attention factory per stage; an override given as a 4-sequence is read per stage."""
    if config.attention is None:
        if overrides:
            raise TypeError(f"{config.name} has no attention layer to take {sorted(overrides)}")
        return [None] * 4
    layer = get_attention(config.attention)
    kwargs = {**config.attn_kwargs, **overrides}
    stages = kwargs.pop("attn_stages", config.attn_stages)
    for key, value in {"attn_stages": stages, **kwargs}.items():
        if isinstance(value, (list, tuple)) and len(value) != 4:
            raise ValueError(f"{key} per stage needs 4 values (layer1..layer4); got {len(value)}: {list(value)}")
    factories = []
    for i, enabled in enumerate(stages):
        stage_kwargs = {k: (v[i] if isinstance(v, (list, tuple)) else v) for k, v in kwargs.items()}
        factories.append(functools.partial(layer, **stage_kwargs) if enabled else None)
    return factories


def build_model(name: str, *, num_classes: int = 1000, **block_overrides: Any) -> ResNet:
    """The architecture alone, with PyTorch's default initialisation."""
    config = get_config(name)
    block, layers = ARCHITECTURES[config.depth]
    return ResNet(block, layers, num_classes=num_classes, stage_attn=_stage_factories(config, block_overrides))


def create_model(
    name: str,
    num_classes: int | None = None,
    checkpoint: str | Path | None = None,
    *,
    init: str = "calibrated",
    strict: bool = True,
    **block_overrides: Any,
) -> nn.Module:
    """A model in eval mode: the checkpoint's weights if given, else the project's default weights.

    ``init`` (without a checkpoint): ``"calibrated"`` is a seeded init with every attention path active and
    BatchNorm statistics re-estimated on real photographs (NOT trained weights); ``"random"`` skips the
    photographs. Attention options go to every stage's layer (``groups=32``), or per stage as a 4-sequence.
    ``num_classes`` (default 1000), ECA's per-stage ``kernel_size``, SE's per-stage ``hidden`` width and GC's stages
    and ratio, when not given, are read from the checkpoint's shapes (a fine-tuned classifier; the official ECA
    models' 3, 5, 5, 7; timm's SE widths, C/16 rounded up to a multiple of 8; GCNet's classification networks with a
    block in every stage, and its r4 configs; SGE groups other than 64).
    """
    from models import default_weights
    from models.checkpoints import load_remapped, options_from_state_dict, read_state_dict, remap_keys

    if init not in ("calibrated", "random"):
        raise ValueError(f"init must be 'calibrated' or 'random'; got {init!r}")
    config = get_config(name)
    state_dict = None
    if checkpoint is not None:
        state_dict = remap_keys(read_state_dict(checkpoint))
        found = options_from_state_dict(state_dict, attention=config.attention)
        if num_classes is None:
            num_classes = found.get("num_classes", config.num_classes)
            if num_classes != config.num_classes:
                logger.info("%s: %d classes, as the checkpoint's classifier", name, num_classes)
        if "kernel_size" in found and "kernel_size" not in block_overrides:
            block_overrides["kernel_size"] = found["kernel_size"]
            logger.info("%s: ECA kernel sizes %s per stage, as in the checkpoint", name, found["kernel_size"])
        if "hidden" in found and not {"hidden", "reduction"} & block_overrides.keys():
            block_overrides["hidden"] = found["hidden"]
            logger.info("%s: SE hidden widths %s per stage, as in the checkpoint", name, found["hidden"])
        for key in ("attn_stages", "ratio", "groups"):  # GC's stages and ratio, SGE's groups
            if key in found and key not in block_overrides:
                block_overrides[key] = found[key]
                logger.info("%s: %s %s, as in the checkpoint", name, key, found[key])
    if num_classes is None:  # no checkpoint and none given
        num_classes = config.num_classes
    model = default_weights.seeded_model(lambda: build_model(name, num_classes=num_classes, **block_overrides), seed=0)
    if state_dict is not None:
        load_remapped(model, state_dict, source=str(checkpoint), strict=strict)
    else:
        default_weights.warn_untrained(name, init=init)
        if init == "calibrated":
            default_weights.calibrate_batchnorm(model, size=config.input_size, mean=config.mean, std=config.std)
    return model.eval()
