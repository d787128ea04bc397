"""Statistics of captured attention blocks, per block and per stage (pure functions, float64).

Li, Hu, Yang, arXiv:1905.09646, show that SGE raises the variance of the activations within a group; here that is
measured on one model, before vs after its SGE layer:

- within-group variance: the population variance of each group's activations over its channels and positions,
  averaged over groups and images (SGE's own group count; the whole tensor, one group, for CBAM, SA and GC).
  A gate below 1 scales the activations down, so this variance usually falls even where the gate sharpens them;
- within-group spread: the scale-free std / mean |x| of the same values, which rises when the gate keeps the
  strong positions and suppresses the weak ones (the sharpening the paper describes);
- the normalised similarity map ĉ (SGE only): its mean and population variance over groups and positions;
- the attention map: mean, population variance, and the share of positions enhanced — a sigmoid gate above 0.5,
  or for GC's softmax a weight above the uniform 1/(H·W).
"""

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from models.inspection.hooks import BlockCapture


def moments(t: torch.Tensor) -> tuple[float, float]:
    """Mean and population variance of every element."""
    t = t.double()
    return t.mean().item(), t.var(unbiased=False).item()


def group_variance(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) → (B, G): population variance of each group's C/G channels over all positions."""
    b, c = x.shape[:2]
    if c % groups:
        raise ValueError(f"{c} channels do not split into {groups} groups")
    return x.double().reshape(b, groups, -1).var(dim=2, unbiased=False)


def group_spread(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) → (B, G): population std / mean |x| of each group's values (scale-free; 0 where all are 0)."""
    values = x.double().reshape(x.shape[0], groups, -1)
    std, mean_abs = values.std(dim=2, unbiased=False), values.abs().mean(dim=2)
    return torch.where(mean_abs > 0, std / mean_abs, 0.0)


def enhanced_threshold(kind: str, *, height: int, width: int) -> float:
    """Above this value a position counts as enhanced: 0.5 for a sigmoid gate, 1/(H·W) for GC's softmax."""
    return 1.0 / (height * width) if kind == "gc" else 0.5


def enhanced_share(attention: torch.Tensor, threshold: float) -> float:
    """Share of attention values strictly above ``threshold``."""
    return (attention > threshold).double().mean().item()


@dataclass(frozen=True)
class BlockStats:
    block: str
    stage: str
    kind: str
    groups: int
    height: int
    width: int
    var_before: float  # within-group variance of the layer's input
    var_after: float  # ... of its output
    spread_before: float  # within-group std / mean |x| of the layer's input
    spread_after: float
    attention_mean: float
    attention_var: float
    enhanced_share: float
    enhanced_threshold: float
    similarity_mean: float | None = None  # SGE: ĉ
    similarity_var: float | None = None
    group_var_before: list[float] = field(default_factory=list)  # per group, averaged over images
    group_var_after: list[float] = field(default_factory=list)

    @property
    def var_ratio(self) -> float:
        return self.var_after / self.var_before if self.var_before > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "var_ratio": self.var_ratio}


def block_stats(cap: BlockCapture) -> BlockStats:
    _, _, h, w = cap.input.shape
    before = group_variance(cap.input, cap.groups)
    after = group_variance(cap.output, cap.groups)
    att_mean, att_var = moments(cap.attention)
    threshold = enhanced_threshold(cap.kind, height=h, width=w)
    sim_mean, sim_var = moments(cap.normalized) if cap.normalized is not None else (None, None)
    return BlockStats(
        block=cap.name,
        stage=cap.stage,
        kind=cap.kind,
        groups=cap.groups,
        height=h,
        width=w,
        var_before=before.mean().item(),
        var_after=after.mean().item(),
        spread_before=group_spread(cap.input, cap.groups).mean().item(),
        spread_after=group_spread(cap.output, cap.groups).mean().item(),
        attention_mean=att_mean,
        attention_var=att_var,
        enhanced_share=enhanced_share(cap.attention, threshold),
        enhanced_threshold=threshold,
        similarity_mean=sim_mean,
        similarity_var=sim_var,
        group_var_before=before.mean(dim=0).tolist(),
        group_var_after=after.mean(dim=0).tolist(),
    )


# Fields averaged over a stage's blocks.
STAGE_FIELDS = (
    "var_before",
    "var_after",
    "spread_before",
    "spread_after",
    "attention_mean",
    "attention_var",
    "enhanced_share",
    "similarity_mean",
    "similarity_var",
)


@dataclass(frozen=True)
class StageStats:
    stage: str
    kind: str
    blocks: int
    height: int
    width: int
    var_before: float
    var_after: float
    spread_before: float
    spread_after: float
    attention_mean: float
    attention_var: float
    enhanced_share: float
    similarity_mean: float | None = None
    similarity_var: float | None = None

    @property
    def var_ratio(self) -> float:
        return self.var_after / self.var_before if self.var_before > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "var_ratio": self.var_ratio}


def _mean(values: list[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)


def stage_stats(blocks: list[BlockStats]) -> list[StageStats]:
    """Block statistics averaged per stage (each block weighs the same), in network order."""
    stages: dict[str, list[BlockStats]] = {}
    for b in blocks:
        stages.setdefault(b.stage, []).append(b)
    out = []
    for stage, members in stages.items():
        last = members[-1]
        averaged = {f: _mean([getattr(m, f) for m in members]) for f in STAGE_FIELDS}
        out.append(
            StageStats(
                stage=stage, kind=last.kind, blocks=len(members), height=last.height, width=last.width, **averaged
            )
        )
    return out
