"""Checkpoint files → state dicts in this project's key layout → strict loading with a key-difference report.

Reads ``.pth``/``.pt``/``.pth.tar`` with ``torch.load(weights_only=True)`` (no code execution) and ``.safetensors``.
Accepts ``{'state_dict': ...}``/``{'model': ...}`` wrappers and DataParallel's ``module.`` prefix (the official SGE
checkpoints), and maps the official CBAM layout; timm's SE (``se.fc1/fc2``), the official GC
(``context_block.conv_mask``, ``channel_add_conv.{0,1,3}``), ECA (``eca.conv``) and SGE layouts are this
project's own.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")

# Official CBAM (Jongchan/attention-module) → this project's names.
_KEY_RENAMES = [
    (re.compile(r"\.cbam\.ChannelGate\.mlp\.1\."), ".cbam.channel_gate.fc1."),
    (re.compile(r"\.cbam\.ChannelGate\.mlp\.3\."), ".cbam.channel_gate.fc2."),
    (re.compile(r"\.cbam\.SpatialGate\.spatial\.conv\."), ".cbam.spatial_gate.conv."),
    (re.compile(r"\.cbam\.SpatialGate\.spatial\.bn\."), ".cbam.spatial_gate.bn."),
]


class CheckpointError(ValueError):
    """A checkpoint could not be read, or its keys do not fit the model."""


@dataclass(frozen=True)
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (a, b) vs model (c, d)"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 5) -> str:
        parts = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:limit]) + (f", … (+{len(keys) - limit})" if len(keys) > limit else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        return "; ".join(parts) or "all keys match"

    def to_dict(self) -> dict[str, list[str]]:
        return {"missing": self.missing, "unexpected": self.unexpected, "mismatched": self.mismatched}


def first_line(err: BaseException) -> str:
    """The first line of an error's message (some have none, e.g. torch.load on an empty file)."""
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else "(no message)"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict (wrappers removed, keys as saved)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give the path to a .pth, .pt or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # each reader raises its own types for a corrupt file
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {first_line(err)}; "
            "expected a torch.save'd state dict (.pth/.pt/.pth.tar) or a .safetensors file"
        ) from err
    return unwrap_state_dict(obj, source=str(path))


def unwrap_state_dict(obj: object, *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    for _ in range(3):  # {'state_dict': {...}} and the like, possibly nested
        if isinstance(obj, dict):
            wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if wrapper is None:
                break
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{source} holds no state dict of tensors (found {type(obj).__name__}); "
            f"save model.state_dict(), optionally inside one of {list(WRAPPER_KEYS)}"
        )
    return obj


def remap_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pure: strip ``module.`` prefixes and rename other official layouts to this project's keys."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        dotted = "." + key  # the patterns match whole dotted names
        for pattern, replacement in _KEY_RENAMES:
            dotted = pattern.sub(replacement, dotted)
        out[dotted[1:]] = value
    return out


def compare_keys(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> LoadReport:
    """Pure: which keys are missing, unexpected or of another shape, model against state dict."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in state_dict
        if k in expected and state_dict[k].shape != expected[k].shape
    )
    return LoadReport(missing=missing, unexpected=unexpected, mismatched=mismatched)


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadReport:
    """Load a checkpoint into ``model``; strictly by default, raising one error listing every key difference."""
    state_dict = remap_keys(read_state_dict(path))
    report = compare_keys(model, state_dict)
    if report.mismatched or (strict and not report.ok):
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(model).__name__}: {report.summary()}; "
            "check the model name (and options such as groups) or pass strict=False to load what matches"
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in report.unexpected}, strict=False)
    return report
