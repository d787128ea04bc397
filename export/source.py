"""Where an export starts: the model (a registry name, a ``package.module:factory`` spec or a module), its weights
and what the manifest records about them, checked by one eager forward before any file is written."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.artifacts import DEFAULT_WEIGHTS_PREFIX, file_sha256
from export.spec import ExportSpec
from models.factory import state_dict_sha256


@dataclass(frozen=True)
class ExportSource:
    """The model to export and where it came from (the manifest's ``source`` record)."""

    name: str
    model: nn.Module
    registry: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    checkpoint: Path | None
    checkpoint_sha256: str
    init: str
    model_kwargs: dict[str, Any]
    factory: str | None = None  # "package.module:factory" when the module came from one


def load_source(
    name_or_module: str | nn.Module,
    *,
    checkpoint: str | Path | None,
    init: str,
    model_name: str | None,
    model_kwargs: dict[str, Any],
) -> ExportSource:
    """The model with its checkpoint loaded (strictly), its preprocessing, and the weights' provenance: a checkpoint's
    SHA-256 (read twice: a file still being written is refused), the registry's default init, or a module's own
    state-dict hash."""
    import models
    from models.factory import STATE_DICT_PREFIX, build_from_factory, factory_model_name, is_factory_spec
    from models.transforms import IMAGENET_MEAN, IMAGENET_STD

    # hashed before and after it is read: the manifest's sha256 must be of the weights the graph holds
    before = file_sha256(checkpoint) if checkpoint is not None and Path(checkpoint).is_file() else None
    factory = name_or_module if isinstance(name_or_module, str) and is_factory_spec(name_or_module) else None
    if factory is not None:
        name_or_module = build_from_factory(factory)
        model_name = model_name or factory_model_name(factory)
    if isinstance(name_or_module, nn.Module):
        if checkpoint is not None:
            models.load_checkpoint(name_or_module, checkpoint)
        name = model_name or type(name_or_module).__name__.lower()
        registry, mean, std, model = False, IMAGENET_MEAN, IMAGENET_STD, name_or_module.eval()
    else:
        config = models.get_config(name_or_module)
        model = models.create_model(name_or_module, checkpoint=checkpoint, init=init, **model_kwargs)
        name, registry, mean, std = config.name, True, config.mean, config.std
    if checkpoint is not None:
        sha = file_sha256(checkpoint)
        if sha != before:
            from models.checkpoints import CheckpointError

            raise CheckpointError(
                f"checkpoint {checkpoint} changed while it was read (is a training job still writing it?); "
                "export again once it is complete"
            )
    elif registry:
        sha = f"{DEFAULT_WEIGHTS_PREFIX}{init}"
    else:
        sha = f"{STATE_DICT_PREFIX}{state_dict_sha256(model)}"
    return ExportSource(
        name=name,
        model=model,
        registry=registry,
        mean=tuple(mean),
        std=tuple(std),
        checkpoint=Path(checkpoint).resolve() if checkpoint is not None else None,
        checkpoint_sha256=sha,
        init="checkpoint" if checkpoint is not None else "factory" if factory else init,
        model_kwargs=model_kwargs,
        factory=factory,
    )


class ModelOutputError(ValueError):
    """The model's eager forward at the example input fails, or gives no finite (N, classes) logits."""


@torch.no_grad()
def probe_num_classes(source: ExportSource, spec: ExportSpec) -> int:
    """One eager forward at the example shape: a size the model cannot take fails here, before any file exists."""
    try:
        out = source.model(torch.zeros(spec.example_shape()))
    except (RuntimeError, TypeError) as err:
        if source.registry:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelOutputError(
            f"{source.name}: the forward pass failed at the example input {spec.example_shape()}: "
            f"{type(err).__name__}: {first}; check the model and --input-size"
        ) from err
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != spec.example_batch:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelOutputError(f"expected (N, classes) logits from the model; got {got}")
    if not torch.isfinite(out).all():
        raise ModelOutputError("the model's eager output has NaN or Inf at the example input; check its weights")
    return int(out.shape[1])
