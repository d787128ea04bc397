"""Look at what the attention layers do on a photograph: captured maps, statistics and figures.

``capture`` runs one forward pass with hooks; ``inspect_model`` writes the figures, ``stats.json`` and ``index.md``.
"""

from models.inspection.hooks import (
    SPATIAL_KINDS,
    AttentionRecorder,
    BlockCapture,
    HookPointError,
    NoSpatialAttentionError,
    attention_layers,
    capture,
)
from models.inspection.report import (
    InspectionResult,
    NonFiniteActivationError,
    inspect_model,
    resolve_image,
    write_report,
)
from models.inspection.stats import BlockStats, StageStats, block_stats, stage_stats

__all__ = [
    "SPATIAL_KINDS",
    "AttentionRecorder",
    "BlockCapture",
    "BlockStats",
    "HookPointError",
    "InspectionResult",
    "NoSpatialAttentionError",
    "NonFiniteActivationError",
    "StageStats",
    "attention_layers",
    "block_stats",
    "capture",
    "inspect_model",
    "resolve_image",
    "stage_stats",
    "write_report",
]
