"""Checkpoint files → state dicts in this project's key layout → strict loading with a key-difference report.

Reads ``.pth``/``.pt``/``.pth.tar`` with ``torch.load(weights_only=True)`` (no code execution) and ``.safetensors``.
Accepts ``{'state_dict': ...}``/``{'model': ...}`` wrappers, DataParallel's ``module.`` prefix (the official SGE
checkpoints) and numpy scalars beside the weights (a training script's ``best_prec1``), and maps the official CBAM
layout and the ``nn.Linear`` SE layout (``se.fc.0/fc.2``, as in implus/PytorchInsight; bias-free ones get zero
biases); timm's SE (``se.fc1/fc2``; its hidden widths, C/16 rounded up to a multiple of 8, are read from the
checkpoint), the official GC (``context_block.conv_mask``, ``channel_add_conv.{0,1,3}``), ECA (``eca.conv``) and SGE
layouts are this project's own. Not loadable: the SENet authors' Caffe SE-ResNets and their PyTorch port
(``layer0``/``se_module``/``last_linear``): that network puts the stride on the 1×1 convolution and pools the stem
without padding in ceil mode, so its weights would compute another function here.
"""

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")

# Official CBAM (Jongchan/attention-module) → this project's names.
_KEY_RENAMES = [
    (re.compile(r"\.cbam\.ChannelGate\.mlp\.1\."), ".cbam.channel_gate.fc1."),
    (re.compile(r"\.cbam\.ChannelGate\.mlp\.3\."), ".cbam.channel_gate.fc2."),
    (re.compile(r"\.cbam\.SpatialGate\.spatial\.conv\."), ".cbam.spatial_gate.conv."),
    (re.compile(r"\.cbam\.SpatialGate\.spatial\.bn\."), ".cbam.spatial_gate.bn."),
    # SE as nn.Sequential(Linear, ReLU, Linear, Sigmoid) → this project's 1×1 convolutions (reshaped in remap_keys)
    (re.compile(r"\.se\.fc\.0\."), ".se.fc1."),
    (re.compile(r"\.se\.fc\.2\."), ".se.fc2."),
]
_SE_LINEAR_WEIGHT = re.compile(r"\.se\.fc[12]\.weight$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# torch < 2.6 / ≥ 2.6 wording of a global the weights-only unpickler will not rebuild
_REFUSED_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
# torch's preamble and footer around the cause of a weights-only failure: the preamble suggests weights_only=False
_BOILERPLATE = ("Weights only load failed", "Check the documentation of torch.load", "Please file an issue")

logger = logging.getLogger(__name__)


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


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (torch's and the exporters' messages carry them)."""
    return _ANSI.sub("", text)


def first_line(err: BaseException) -> str:
    """The first line of an error's message (some have none, e.g. torch.load on an empty file), without terminal
    escape codes."""
    lines = strip_ansi(str(err)).strip().splitlines()
    return clip(lines[0]) if lines else "(no message)"


def clip(text: str, limit: int = 200) -> str:
    """``text`` up to ``limit`` characters, cut at a word with "…" where it is longer (never mid-word)."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


def _numpy_scalar_globals() -> list:
    """numpy scalars and dtypes, which training scripts save beside the weights (``'best_prec1': np.float64``): data
    that a weights-only load may rebuild, never code. Both module spellings (numpy 1 and 2 write different ones)."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar  # numpy ≥ 2 (1.26 has the module too)
    except ImportError:
        from numpy.core.multiarray import scalar
    dtype_classes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"} - {np.dtype}  # numpy ≥ 1.25
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        *sorted(dtype_classes, key=lambda c: c.__name__),
    ]


def _unreadable(path: Path, err: Exception) -> "CheckpointError":
    refused = _REFUSED_GLOBAL.search(strip_ansi(str(err)))
    if refused:
        return CheckpointError(
            f"checkpoint {path} holds a Python object ({refused.group(1)}) that a safe (weights-only) load refuses to "
            "rebuild; re-save only the weights, torch.save(model.state_dict(), path), or convert them to .safetensors"
        )
    causes = [line.strip() for line in strip_ansi(str(err)).splitlines() if line.strip()]
    cause = next((line for line in causes if not line.startswith(_BOILERPLATE)), None)
    said = f"{type(err).__name__}: {clip(cause)}" if cause else type(err).__name__
    return CheckpointError(
        f"cannot read checkpoint {path} ({said}); expected a torch.save'd state dict (.pth/.pt/.pth.tar) or a "
        ".safetensors file"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict (wrappers removed, keys as saved)."""
    path = Path(path)
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {problem}; give the path to a .pth, .pt or .safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            # a plain pickle of another protocol draws a two-line UserWarning before its own error, said in one line
            with torch.serialization.safe_globals(_numpy_scalar_globals()), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # each reader raises its own types for a corrupt file
        raise _unreadable(path, err) from err
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
    out, linear_se = {}, []
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        dotted = "." + key  # the patterns match whole dotted names
        for pattern, replacement in _KEY_RENAMES:
            dotted = pattern.sub(replacement, dotted)
        if _SE_LINEAR_WEIGHT.search(dotted) and value.ndim == 2:  # nn.Linear (out, in) → 1×1 conv (out, in, 1, 1)
            value = value.reshape(*value.shape, 1, 1)
            linear_se.append(dotted[1:])
        out[dotted[1:]] = value
    for weight in linear_se:  # a bias-free Linear (moskomule/senet.pytorch) is this layer with bias 0
        out.setdefault(weight[: -len("weight")] + "bias", torch.zeros(out[weight].shape[0], dtype=out[weight].dtype))
    return out


def options_from_state_dict(state_dict: dict[str, torch.Tensor], *, attention: str | None) -> dict[str, Any]:
    """What a (remapped) state dict says of the architecture beyond its name: ``num_classes`` (the classifier's
    rows); for ECA each stage's ``kernel_size`` (the official ImageNet models use per-stage sizes such as 3, 5, 5, 7
    where the channel-count rule gives 5, 5, 5, 7); for SE each stage's ``hidden`` width where it is not C/16; for
    GC the stages that have a block (``attn_stages``) and the ``ratio``; for SGE the ``groups`` where not 64."""
    options: dict[str, Any] = {}
    fc = state_dict.get("fc.weight")
    if fc is not None and fc.ndim == 2:
        options["num_classes"] = int(fc.shape[0])
    if attention == "eca":
        convs = [state_dict.get(f"layer{stage}.0.eca.conv.weight") for stage in range(1, 5)]
        if all(c is not None and c.ndim == 3 for c in convs):
            options["kernel_size"] = tuple(int(c.shape[-1]) for c in convs)
    if attention == "se":  # the hidden width per stage, where it is not C/16 (timm's rounding to multiples of 8)
        fc1s = [state_dict.get(f"layer{stage}.0.se.fc1.weight") for stage in range(1, 5)]
        if all(w is not None and w.ndim == 4 for w in fc1s) and any(w.shape[0] != w.shape[1] // 16 for w in fc1s):
            options["hidden"] = tuple(int(w.shape[0]) for w in fc1s)
    if attention == "gc":
        options.update(_gc_options(state_dict))
    if attention == "sge":  # γ is (1, G, 1, 1): the groups of each stage, where they are not the official 64
        gammas = [state_dict.get(f"layer{stage}.0.sge.weight") for stage in range(1, 5)]
        if all(g is not None and g.ndim == 4 for g in gammas):
            groups = tuple(int(g.shape[1]) for g in gammas)
            if set(groups) != {64}:
                options["groups"] = groups[0] if len(set(groups)) == 1 else groups
    return options


def _gc_options(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """GC's stages and ratio, as the checkpoint has them: GCNet's classification networks put a block in every stage
    (its detection backbones, this project's default, in c3-c5 only), and its configs use r16 and r4."""
    blocks = [f"layer{stage}.0.context_block" for stage in range(1, 5)]
    stages = tuple(f"{block}.conv_mask.weight" in state_dict for block in blocks)
    if not any(stages):
        return {}
    ratios = []
    for block, on in zip(blocks, stages, strict=True):
        squeeze = state_dict.get(f"{block}.channel_add_conv.0.weight")
        ok = on and squeeze is not None and squeeze.ndim == 4
        ratios.append(squeeze.shape[0] / squeeze.shape[1] if ok else 1 / 16)  # channels are powers of two: exact
    return {"attn_stages": stages, "ratio": ratios[0] if len(set(ratios)) == 1 else tuple(ratios)}


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
    return load_remapped(model, remap_keys(read_state_dict(path)), source=str(path), strict=strict)


def load_remapped(
    model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str, strict: bool = True
) -> LoadReport:
    """Load a remapped state dict; shapes must always match, keys too when ``strict`` (else a warning names what
    was left out)."""
    report = compare_keys(model, state_dict)
    if report.mismatched or (strict and not report.ok):
        hint = "check that the checkpoint is of this model (--model)"
        fc, wanted = state_dict.get("fc.weight"), model.state_dict().get("fc.weight")
        if fc is not None and wanted is not None and fc.ndim == wanted.ndim == 2 and fc.shape[0] != wanted.shape[0]:
            hint = f"the checkpoint has {fc.shape[0]} classes: pass num_classes={fc.shape[0]} or omit it; " + hint
        if not report.mismatched:
            hint += " (from Python, strict=False loads what matches)"
        raise CheckpointError(f"checkpoint {source} does not fit {type(model).__name__}: {report.summary()}; {hint}")
    own = model.state_dict()
    not_float = [
        k for k, v in state_dict.items() if k in own and own[k].is_floating_point() and not v.is_floating_point()
    ]
    if not_float:  # load_state_dict would cast them: integer weights (all zeros, or truncated) exported and passed
        key = not_float[0]
        raise CheckpointError(
            f"checkpoint {source} holds {len(not_float)} weights that are not floating point ({key}: "
            f"{str(state_dict[key].dtype).removeprefix('torch.')}); give the float checkpoint, not a quantised or "
            "converted one"
        )
    if not report.ok:
        logger.warning("checkpoint %s loaded partly (strict=False): %s", source, report.summary())
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in report.unexpected}, strict=False)
    return report
