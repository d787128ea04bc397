"""The builder's timing cache, handled as Polygraphy does (TensorRT 10.x and 11.x).

The file's cache is merged into a fresh one with ``combine(..., ignore_mismatch=True)`` (a cache from another GPU
or TensorRT release then adds nothing instead of failing the build), attached with the builder's verdict checked,
and saved only after the plan is on disk, with a guard for a missing cache.
"""

import logging
from pathlib import Path
from typing import Any

from export.artifacts import atomic_path
from export.trt.errors import TimingCacheError

logger = logging.getLogger(__name__)


def attach_timing_cache(config: Any, path: Path | None) -> dict[str, Any]:
    """A fresh cache with the file's entries merged in (``ignore_mismatch=True``: a cache from another GPU or
    TensorRT adds nothing rather than failing), attached with the builder's verdict checked."""
    outcome: dict[str, Any] = {"file": str(path) if path else None, "loaded": False}
    cache = config.create_timing_cache(b"")
    if path is not None and path.is_file():
        previous = config.create_timing_cache(path.read_bytes())
        outcome["loaded"] = bool(cache.combine(previous, ignore_mismatch=True))
        if not outcome["loaded"]:
            logger.warning("the timing cache %s could not be merged (another TensorRT?); building without it", path)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        logger.warning("TensorRT rejected the timing cache from %s for this GPU; building with an empty one", path)
        outcome["loaded"] = False
        if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
            raise TimingCacheError("TensorRT rejected even an empty timing cache; build without --trt-timing-cache")
    return outcome


def save_timing_cache(config: Any, path: Path | None) -> bool:
    """Write the build's timing cache to ``path`` (after the plan); a missing cache is a warning, not a failure."""
    if path is None:
        return False
    cache = config.get_timing_cache()
    serialized = cache.serialize() if cache is not None else None
    if serialized is None:
        logger.warning("TensorRT returned no timing cache after the build; %s was not updated", path)
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return True
