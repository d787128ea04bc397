"""PNG figures of captured attention maps and their statistics (matplotlib's Agg canvas, imported lazily).

Figures have a fixed pixel size computed from their layout (no tight bounding box), so callers and tests know it in
advance: ``grid_size_px`` for panel grids, ``STATS_SIZE_PX`` for the statistics plot. Each file is written under a
temporary name and renamed, so an interrupted run leaves no complete-looking PNG behind.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.atomic import atomic_path
from models.inspection.stats import BlockStats

DPI = 100
HEADER_PX = 40  # figure title
FOOTER_PX = 50  # colour bar strip
TITLE_PX = 14  # panel title, inside the panel's square
STATS_SIZE_PX = (1200, 1200)


@dataclass(frozen=True)
class Panel:
    """One square of a grid: the photo alone, a map over the (grey) photo, or a map alone."""

    mode: str  # "photo", "overlay" or "map"
    image: np.ndarray | None = None  # (h, w) map; None for "photo"
    title: str = ""
    cmap: str = "viridis"
    vmin: float | None = None
    vmax: float | None = None


@dataclass(frozen=True)
class ColorScale:
    cmap: str
    vmin: float
    vmax: float
    label: str


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("figures need matplotlib: pip install matplotlib (the project's `plot` extra)") from err
    return Figure


def grid_size_px(rows: int, cols: int, *, panel_px: int, colorbar: bool) -> tuple[int, int]:
    """(width, height) in pixels of a ``panel_grid`` figure."""
    return cols * panel_px, HEADER_PX + rows * panel_px + (FOOTER_PX if colorbar else 0)


def save_png(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary name in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


def _draw_panel(ax: Any, panel: Panel, photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    ax.set_axis_off()
    if panel.mode in ("photo", "overlay"):
        grey = photo.mean(axis=2) if panel.mode == "overlay" else photo
        ax.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0, interpolation="antialiased")
    if panel.mode == "overlay":
        # The map is upsampled for display only (bilinear over the photo's extent).
        ax.imshow(
            panel.image,
            cmap=panel.cmap,
            vmin=panel.vmin,
            vmax=panel.vmax,
            alpha=0.6,
            extent=(-0.5, w - 0.5, h - 0.5, -0.5),
            interpolation="bilinear",
        )
    elif panel.mode == "map":
        ax.imshow(panel.image, cmap=panel.cmap, vmin=panel.vmin, vmax=panel.vmax, interpolation="nearest")
    if panel.title:
        ax.set_title(panel.title, fontsize=7, pad=2)


def panel_grid(
    rows: Sequence[Sequence[Panel | None]],
    *,
    photo: np.ndarray,
    path: str | Path,
    title: str,
    panel_px: int = 128,
    colorbar: ColorScale | None = None,
) -> Path:
    """A grid of square panels over ``photo`` ((H, W, 3) floats in [0, 1]), written as a PNG to ``path``."""
    figure_cls = _figure_class()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    width, height = grid_size_px(n_rows, n_cols, panel_px=panel_px, colorbar=colorbar is not None)
    fig = figure_cls(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.text(0.5, 1 - HEADER_PX / 2 / height, title, ha="center", va="center", fontsize=10)
    pad = 3
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            if panel is None:
                continue
            top = HEADER_PX + r * panel_px + (TITLE_PX if panel.title else pad)
            side = panel_px - 2 * pad
            box_h = panel_px - pad - (TITLE_PX if panel.title else pad)
            ax = fig.add_axes(((c * panel_px + pad) / width, 1 - (top + box_h) / height, side / width, box_h / height))
            _draw_panel(ax, panel, photo)
    if colorbar is not None:
        from matplotlib import cm, colors

        cax = fig.add_axes((0.2, 22 / height, 0.6, 12 / height))
        mappable = cm.ScalarMappable(norm=colors.Normalize(colorbar.vmin, colorbar.vmax), cmap=colorbar.cmap)
        bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
        bar.ax.tick_params(labelsize=7)
        fig.text(0.5, 42 / height, colorbar.label, ha="center", va="center", fontsize=8)
    return save_png(fig, path)


def _stage_bounds(blocks: Sequence[BlockStats]) -> list[int]:
    return [i for i in range(1, len(blocks)) if blocks[i].stage != blocks[i - 1].stage]


def stats_plot(blocks: Sequence[BlockStats], *, path: str | Path, title: str) -> Path:
    """Six panels over the attention blocks: variance and spread before/after, share enhanced, ĉ, map, per group."""
    figure_cls = _figure_class()
    width, height = STATS_SIZE_PX
    fig = figure_cls(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.94, bottom=0.05, hspace=0.5, wspace=0.22)
    x = np.arange(len(blocks))
    names = [b.block for b in blocks]
    axes = [fig.add_subplot(3, 2, i + 1) for i in range(6)]

    def lines(ax: Any, title: str, series: dict[str, str]) -> None:
        """One line per (label → BlockStats field), markers in a fixed order."""
        for (label, key), marker in zip(series.items(), ("o-", "s-"), strict=False):
            ax.plot(x, [getattr(b, key) for b in blocks], marker, label=label)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)

    lines(
        axes[0],
        "within-group variance of activations (mean over groups)",
        {"before": "var_before", "after": "var_after"},
    )
    axes[0].set_yscale("log")
    lines(
        axes[1],
        "within-group spread, std / mean |x| (scale-free)",
        {"before": "spread_before", "after": "spread_after"},
    )

    ax = axes[2]
    ax.bar(x, [b.enhanced_share for b in blocks], color="tab:green")
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_title("share of positions enhanced (gate > 0.5; GC: softmax > 1/HW)", fontsize=9)

    lines(axes[3], "attention map (gate; GC: softmax weight)", {"mean": "attention_mean", "variance": "attention_var"})
    if any(b.similarity_mean is not None for b in blocks):
        lines(axes[4], "SGE normalised similarity map ĉ", {"mean": "similarity_mean", "variance": "similarity_var"})
    else:
        axes[4].text(0.5, 0.5, "no similarity map (SGE only)", ha="center", va="center", transform=axes[4].transAxes)

    for ax in axes[:5]:
        ax.set_xticks(x, names, rotation=90, fontsize=6)
        for bound in _stage_bounds(blocks):
            ax.axvline(bound - 0.5, color="grey", lw=0.6)

    ax = axes[5]
    for stage in dict.fromkeys(b.stage for b in blocks):
        before = [v for b in blocks if b.stage == stage for v in b.group_var_before]
        after = [v for b in blocks if b.stage == stage for v in b.group_var_after]
        ax.scatter(before, after, s=5, alpha=0.6, label=stage)
    positive = [v for b in blocks for v in b.group_var_before + b.group_var_after if v > 0]
    if positive:
        ax.plot([min(positive), max(positive)], [min(positive), max(positive)], color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("variance before", fontsize=8)
    ax.set_ylabel("variance after", fontsize=8)
    ax.set_title("per group: variance after vs before (above the line: raised)", fontsize=9)
    ax.legend(fontsize=7, markerscale=3)
    return save_png(fig, path)
