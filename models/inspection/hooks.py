"""Capture what each attention block computes in the real forward pass: its input, output and attention map.

Nothing is recomputed. The block's input and output come from a forward hook on the attention layer; the map comes
from the tensor the layer itself multiplies by (or pools with):

- SGE: forward hooks on the layer's ``normalized`` (ĉ) and ``gate`` (σ(a)) children, which the forward applies;
- CBAM and spatial attention: the return value of ``SpatialAttention.gate`` as the forward calls it;
- GC: the return value of ``ContextBlock.attention`` (the attention-pooling softmax) as the forward calls it.

A method is tapped by shadowing it on the instance for as long as the recorder is active; the class is untouched.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from models.layers import CBAM, ContextBlock, SpatialAttention, SpatialGroupEnhance

logger = logging.getLogger(__name__)

# Attention kinds that compute a spatial map, by layer class.
SPATIAL_KINDS: dict[type[nn.Module], str] = {
    SpatialGroupEnhance: "sge",
    CBAM: "cbam",
    SpatialAttention: "sa",
    ContextBlock: "gc",
}


class NoSpatialAttentionError(ValueError):
    """The model has no attention layer that computes a spatial map (plain ResNet, SE, ECA)."""


class HookPointError(RuntimeError):
    """An attention layer does not expose the hook point the recorder needs, or a hook did not fire."""


@dataclass
class BlockCapture:
    """One attention block's tensors from one forward pass (batch first, detached copies)."""

    name: str  # the residual block, e.g. "layer3.5"
    kind: str  # "sge", "cbam", "sa" or "gc"
    groups: int  # SGE's group count; 1 for the others
    input: torch.Tensor | None = None  # (B, C, H, W), what the attention layer received
    output: torch.Tensor | None = None  # (B, C, H, W), what it returned
    attention: torch.Tensor | None = None  # (B, G, H, W) SGE gate σ(a); (B, 1, H, W) spatial gate or GC softmax
    normalized: torch.Tensor | None = None  # SGE only: (B, G, H, W) normalised similarity map ĉ

    @property
    def stage(self) -> str:
        return self.name.split(".")[0]


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(block name, attention layer) for every residual block whose attention layer computes a spatial map."""
    found = []
    for name, module in model.named_modules():
        attn_name = getattr(module, "attn_name", None)
        if attn_name is None:
            continue
        layer = getattr(module, attn_name)
        if type(layer) in SPATIAL_KINDS:
            found.append((name, layer))
    return found


def _keep(t: torch.Tensor) -> torch.Tensor:
    # A copy, so that a later in-place op in the network cannot change what was captured.
    return t.detach().clone()


def _tap_method(obj: nn.Module, method: str, record: Callable[[torch.Tensor], None]) -> Callable[[], None]:
    """Shadow ``obj.method`` with a wrapper that records its return value; returns the undo function."""
    original = getattr(obj, method)

    def tapped(*args: Any, **kwargs: Any) -> torch.Tensor:
        result = original(*args, **kwargs)
        record(result)
        return result

    setattr(obj, method, tapped)
    return lambda: delattr(obj, method)


class AttentionRecorder:
    """Context manager: while active, every forward pass of ``model`` fills ``captures`` (the last pass wins)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = attention_layers(model)
        if not self.layers:
            kinds = ", ".join(sorted(set(SPATIAL_KINDS.values())))
            raise NoSpatialAttentionError(
                f"{type(model).__name__} has no attention layer with a spatial map to inspect; "
                f"choose a model with one of: {kinds} (e.g. sge_resnet50)"
            )
        self.captures: dict[str, BlockCapture] = {}
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> "AttentionRecorder":
        try:
            for name, layer in self.layers:
                self._attach(name, layer)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _hook(self, module: nn.Module, fn: Callable[..., None]) -> None:
        handle: RemovableHandle = module.register_forward_hook(fn)
        self._undo.append(handle.remove)

    def _attach(self, name: str, layer: nn.Module) -> None:
        kind = SPATIAL_KINDS[type(layer)]
        cap = BlockCapture(name=name, kind=kind, groups=layer.groups if kind == "sge" else 1)
        self.captures[name] = cap

        def io_hook(_m: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            cap.input, cap.output = _keep(args[0]), _keep(out)

        self._hook(layer, io_hook)
        if kind == "sge":
            self._attach_sge(name, layer, cap)
        elif kind == "gc":
            self._undo.append(_tap_method(layer, "attention", lambda t: setattr(cap, "attention", _keep(t))))
        else:
            gate_owner = layer.spatial_gate if kind == "cbam" else layer
            self._undo.append(_tap_method(gate_owner, "gate", lambda t: setattr(cap, "attention", _keep(t))))

    def _attach_sge(self, name: str, layer: SpatialGroupEnhance, cap: BlockCapture) -> None:
        for point in ("normalized", "gate"):
            if not isinstance(getattr(layer, point, None), nn.Module):
                raise HookPointError(
                    f"the SGE layer in {name} has no `{point}` child module to hook; this inspection needs the "
                    "hook points `normalized` (nn.Identity on ĉ) and `gate` (nn.Sigmoid) in models/layers/sge.py"
                )
        self._hook(layer.normalized, lambda _m, _a, out: setattr(cap, "normalized", _keep(out)))
        self._hook(layer.gate, lambda _m, _a, out: setattr(cap, "attention", _keep(out)))

    def results(self) -> list[BlockCapture]:
        """The captures in network order, each map reshaped (a view, no arithmetic) to (B, G or 1, H, W)."""
        out = []
        for name, _layer in self.layers:
            cap = self.captures[name]
            missing = [f for f in ("input", "output", "attention") if getattr(cap, f) is None]
            if cap.kind == "sge" and cap.normalized is None:
                missing.append("normalized")
            if missing:
                raise HookPointError(f"no {', '.join(missing)} captured for {name}; run a forward pass first")
            b, _, h, w = cap.input.shape
            shaped = BlockCapture(
                name=name,
                kind=cap.kind,
                groups=cap.groups,
                input=cap.input,
                output=cap.output,
                attention=cap.attention.reshape(b, cap.groups, h, w),
                normalized=None if cap.normalized is None else cap.normalized.reshape(b, cap.groups, h, w),
            )
            out.append(shaped)
        return out


@torch.no_grad()
def capture(model: nn.Module, batch: torch.Tensor) -> tuple[list[BlockCapture], torch.Tensor]:
    """One forward pass of ``model`` on ``batch`` with the recorder on: (captures in network order, logits)."""
    with AttentionRecorder(model) as recorder:
        logits = model(batch)
    captures = recorder.results()
    logger.info("captured %d attention blocks from one forward pass", len(captures))
    return captures, logits
