"""Inspect a model on one photograph: a hooked forward pass → statistics → figures, ``stats.json`` and ``index.md``.

``index.md`` is written last (and a stale one removed first, with the old report's figures), so a directory with an
index is one complete report.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.atomic import atomic_path
from models.inspection.figures import ColorScale, Panel, panel_grid, stats_plot
from models.inspection.hooks import SPATIAL_KINDS, BlockCapture, NoSpatialAttentionError, capture
from models.inspection.stats import BlockStats, StageStats, block_stats, stage_stats
from models.registry import create_model, get_config
from models.transforms import PHOTO_NAMES, ImageReadError, eval_transform, load_image, sample_photos

logger = logging.getLogger(__name__)

MAP_NAMES = {"sge": "SGE group gates σ(a)", "cbam": "CBAM spatial gate", "sa": "spatial gate", "gc": "GC softmax"}
# The files every report writes; its figures (<stage>_<suffix>.png) are listed in its stats.json ("files").
FIXED_REPORT_FILES = ("stats.png", "stats.json", "index.md")  # index.md last: it links the others


class NonFiniteActivationError(ValueError):
    """The model computed NaN or Inf activations (broken weights): nothing meaningful to draw."""


@dataclass
class InspectionResult:
    model: str
    image: str
    weights: str
    input_size: tuple[int, int]
    out_dir: Path
    blocks: list[BlockStats]
    stages: list[StageStats]
    figure_blocks: dict[str, str]  # stage → the block its figures show
    files: list[str] = field(default_factory=list)  # relative to out_dir, index.md last

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "image": self.image,
            "weights": self.weights,
            "input_size": list(self.input_size),
            "figure_blocks": self.figure_blocks,
            "stages": [s.to_dict() for s in self.stages],
            "blocks": [b.to_dict() for b in self.blocks],
            "files": self.files,
        }


def resolve_image(image: str | Path) -> tuple[str, np.ndarray]:
    """(name, (H, W, 3) uint8) from an image file or a bundled photograph's name (``astronaut``, ...)."""
    path = Path(image)
    if path.is_dir():
        raise ImageReadError(f"cannot read image {image}: it is a directory; give a JPEG or PNG file")
    if path.is_file():
        return path.stem, load_image(path)
    if str(image) in PHOTO_NAMES:
        return str(image), sample_photos((str(image),))[str(image)]
    raise ImageReadError(
        f"cannot read image {image}: no such file; give a JPEG or PNG file or a bundled photograph "
        f"({', '.join(PHOTO_NAMES)})"
    )


def display_photo(x: np.ndarray, *, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """The model's (3, H, W) normalised input back as an (H, W, 3) picture in [0, 1]: the pixels it saw."""
    rgb = x.transpose(1, 2, 0) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(rgb, 0.0, 1.0)


def pick_groups(attention: torch.Tensor, k: int) -> list[int]:
    """The ``k`` groups of a (G, H, W) gate whose maps vary most over positions (the most selective)."""
    spread = attention.double().flatten(1).var(dim=1, unbiased=False)
    return spread.argsort(descending=True, stable=True)[:k].tolist()


def group_map(x: torch.Tensor, *, groups: int, group: int) -> np.ndarray:
    """(C, H, W) → (H, W): the mean over one group's channels, for display."""
    c, h, w = x.shape
    return x.reshape(groups, c // groups, h, w)[group].mean(dim=0).numpy()


def _before_after(before: np.ndarray, after: np.ndarray, *, prefix: str = "") -> list[Panel]:
    lo, hi = float(min(before.min(), after.min())), float(max(before.max(), after.max()))
    return [
        Panel("map", before, f"{prefix}before · map var {before.var():.3g}", "magma", lo, hi),
        Panel("map", after, f"{prefix}after · map var {after.var():.3g}", "magma", lo, hi),
    ]


def sge_figures(cap: BlockCapture, *, photo: np.ndarray, out_dir: Path, groups_shown: int) -> list[Path]:
    """All group gates over the photo; the most selective groups' gate and activation maps before and after."""
    gates = cap.attention[0]
    g = cap.groups
    cols = int(np.ceil(np.sqrt(g)))
    panels = [Panel("overlay", gates[i].numpy(), f"g{i}", "viridis", 0.0, 1.0) for i in range(g)]
    grid = [panels[r : r + cols] for r in range(0, g, cols)]
    h, w = gates.shape[1:]
    label = "gate σ(a): the factor the group's activations are multiplied by (> 0.5 counted as enhanced)"
    scale = ColorScale("viridis", 0.0, 1.0, label)
    title = f"{cap.name}: SGE gate per group ({g} groups, {h}×{w} map over the {photo.shape[0]}px input)"
    gates_png = panel_grid(
        grid, photo=photo, path=out_dir / f"{cap.stage}_sge_gates.png", title=title, panel_px=96, colorbar=scale
    )
    columns = []
    for i in pick_groups(gates, groups_shown):
        before = group_map(cap.input[0], groups=g, group=i)
        after = group_map(cap.output[0], groups=g, group=i)
        columns.append([Panel("overlay", gates[i].numpy(), f"g{i} gate", "viridis", 0.0, 1.0)])
        columns[-1] += _before_after(before, after, prefix=f"g{i} ")
    rows = [list(r) for r in zip(*columns, strict=True)]
    title = f"{cap.name}: most selective groups — gate, group activation (channel mean) before and after SGE"
    gate_key = ColorScale("viridis", 0.0, 1.0, "gate σ(a) (top row); activation rows: one colour scale per group")
    act_png = panel_grid(
        rows,
        photo=photo,
        path=out_dir / f"{cap.stage}_sge_activations.png",
        title=title,
        panel_px=180,
        colorbar=gate_key,
    )
    return [gates_png, act_png]


def map_figure(cap: BlockCapture, *, photo: np.ndarray, out_dir: Path) -> list[Path]:
    """CBAM / spatial attention gate or GC softmax: photo, map over it, map alone, activations before and after."""
    att = cap.attention[0, 0].numpy()
    vmin, vmax = (0.0, 1.0) if cap.kind != "gc" else (0.0, float(att.max()))
    name = MAP_NAMES[cap.kind]
    row = [
        Panel("photo", title="input"),
        Panel("overlay", att, name, "viridis", vmin, vmax),
        Panel(
            "map", att, f"own scale: {att.min():.3g} to {att.max():.3g}", "viridis", float(att.min()), float(att.max())
        ),
        *_before_after(cap.input[0].mean(dim=0).numpy(), cap.output[0].mean(dim=0).numpy()),
    ]
    suffix = "gc_softmax" if cap.kind == "gc" else f"{cap.kind}_spatial_gate"
    title = f"{cap.name}: {name} ({att.shape[0]}×{att.shape[1]}); activations (channel mean) before and after"
    return [panel_grid([row], photo=photo, path=out_dir / f"{cap.stage}_{suffix}.png", title=title, panel_px=200)]


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def index_markdown(result: InspectionResult, figures: dict[str, list[str]]) -> str:
    h, w = result.input_size
    lines = [
        f"# Attention inspection: {result.model} on {result.image}",
        "",
        f"Weights: {result.weights}. Input {h}×{w}; one forward pass, maps captured with forward hooks.",
        "",
        "| stage | kind | blocks | map | var before | var after | spread before | spread after | ĉ mean | ĉ var "
        "| map mean | enhanced |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result.stages:
        lines.append(
            f"| {s.stage} | {s.kind} | {s.blocks} | {s.height}×{s.width} | {_fmt(s.var_before)} | {_fmt(s.var_after)} "
            f"| {_fmt(s.spread_before)} | {_fmt(s.spread_after)} | {_fmt(s.similarity_mean)} "
            f"| {_fmt(s.similarity_var)} | {_fmt(s.attention_mean)} | {s.enhanced_share:.1%} |"
        )
    lines += [
        "",
        "Stage values are means over the stage's blocks. *var*: within-group variance of the activations entering "
        "and leaving the attention layer (a gate below 1 scales them down, so it usually falls); *spread*: the "
        "scale-free std / mean |x| of the same values, which rises when the gate sharpens them; *ĉ*: SGE's "
        "normalised similarity map; *enhanced*: share of positions with gate > 0.5 (GC: softmax weight > 1/(H·W)). "
        "All numbers per block are in `stats.json`.",
        "",
        "![statistics per block](stats.png)",
    ]
    for stage, files in figures.items():
        lines += ["", f"## {stage} (block {result.figure_blocks[stage]})", ""]
        lines += [f"![{f}]({f})" for f in files]
    return "\n".join(lines) + "\n"


def check_finite(captures: list[BlockCapture]) -> None:
    """Raise NonFiniteActivationError when a block's input, output or map holds NaN or Inf."""
    for cap in captures:
        tensors = (cap.input, cap.output, cap.attention, cap.normalized)
        if not all(bool(torch.isfinite(t).all()) for t in tensors if t is not None):
            raise NonFiniteActivationError(
                f"the model's activations are not finite (NaN/Inf; first seen at {cap.name}): check the checkpoint"
            )


def remove_report(out_dir: Path) -> None:
    """Remove an earlier report's files from ``out_dir``: index.md first (the folder stops looking complete), then
    exactly the files its stats.json lists; a user's own files stay, whatever their names."""
    (out_dir / "index.md").unlink(missing_ok=True)
    try:
        listed = json.loads((out_dir / "stats.json").read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        listed = []  # no readable record: only the fixed names are known to be a report's
    names = {*FIXED_REPORT_FILES, *(f for f in listed if isinstance(f, str) and Path(f).name == f)}
    for name in sorted(names):
        if (out_dir / name).is_file():
            (out_dir / name).unlink()


def write_report(
    captures: list[BlockCapture],
    *,
    photo: np.ndarray,
    out_dir: str | Path,
    model: str,
    image: str,
    weights: str,
    block: int = -1,
    groups_shown: int = 4,
) -> InspectionResult:
    """Statistics of every captured block; figures of one block per stage (``block``: index within the stage)."""
    if groups_shown < 1:
        raise ValueError(f"groups_shown must be at least 1; got {groups_shown}")
    check_finite(captures)  # before any file: NaN maps would break the plots
    by_stage: dict[str, list[BlockCapture]] = {}
    for cap in captures:
        by_stage.setdefault(cap.stage, []).append(cap)
    chosen = {}
    for stage, caps in by_stage.items():  # before any file too: a bad --block keeps the earlier report
        if not -len(caps) <= block < len(caps):
            raise IndexError(f"block {block} is out of range for {stage}, which has {len(caps)} attention blocks")
        chosen[stage] = caps[block]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_report(out_dir)
    blocks = [block_stats(c) for c in captures]
    result = InspectionResult(
        model=model,
        image=image,
        weights=weights,
        input_size=tuple(photo.shape[:2]),
        out_dir=out_dir,
        blocks=blocks,
        stages=stage_stats(blocks),
        figure_blocks={s: c.name for s, c in chosen.items()},
    )
    figures: dict[str, list[str]] = {}
    for stage, cap in chosen.items():
        if cap.kind == "sge":
            paths = sge_figures(cap, photo=photo, out_dir=out_dir, groups_shown=groups_shown)
        else:
            paths = map_figure(cap, photo=photo, out_dir=out_dir)
        figures[stage] = [p.name for p in paths]
    stats_plot(blocks, path=out_dir / "stats.png", title=f"{model} on {image}: attention statistics per block")
    result.files = [*(f for files in figures.values() for f in files), *FIXED_REPORT_FILES]
    _write_text(out_dir / "stats.json", json.dumps(result.to_dict(), indent=2) + "\n")
    _write_text(out_dir / "index.md", index_markdown(result, figures))
    logger.info("inspection of %s on %s written to %s", model, image, out_dir)
    return result


def inspect_model(
    name: str,
    *,
    image: str | Path,
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    size: tuple[int, int] | None = None,
    init: str = "calibrated",
    block: int = -1,
    groups_shown: int = 4,
    **block_overrides: Any,
) -> InspectionResult:
    """Build ``name`` (checkpoint or default weights), run it once on ``image`` with hooks, write the report."""
    config = get_config(name)
    if config.attention not in SPATIAL_KINDS.values():
        kinds = ", ".join(sorted(SPATIAL_KINDS.values()))
        raise NoSpatialAttentionError(
            f"{name} has {config.attention or 'no'} attention, which computes no spatial map to inspect; "
            f"choose a model with one of: {kinds} (e.g. sge_resnet50)"
        )
    image_name, pixels = resolve_image(image)
    model = create_model(name, checkpoint=checkpoint, init=init, **block_overrides)
    size = tuple(size or config.input_size)
    x = eval_transform(pixels, size=size, mean=config.mean, std=config.std)
    captures, _ = capture(model, torch.from_numpy(x)[None])
    if checkpoint is not None:
        weights = f"checkpoint {Path(checkpoint).name}"
    elif init == "calibrated":
        weights = "default weights (seeded init, BatchNorm calibrated on bundled photographs; NOT trained)"
    else:
        weights = "random init (NOT trained)"
    return write_report(
        captures,
        photo=display_photo(x, mean=config.mean, std=config.std),
        out_dir=out_dir,
        model=name,
        image=image_name,
        weights=weights,
        block=block,
        groups_shown=groups_shown,
    )
