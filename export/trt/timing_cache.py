"""The builder's timing cache (TensorRT 10.x and 11.x).

The file's cache is attached as TensorRT documents it: ``create_timing_cache(file bytes)``, then
``set_timing_cache(cache, ignore_mismatch=False)``, whose verdict reports a cache made on another device (or by
another TensorRT), which is then replaced by an empty cache with a warning. It is never merged into this GPU's cache:
``ITimingCache::combine`` warns that "combining caches generated from devices with different device properties may
lead to functional/performance bugs". The cache is saved only after the plan is on disk, with a guard for a missing
cache.
"""

import logging
from pathlib import Path
from typing import Any

from export.artifacts import atomic_path
from export.trt.errors import TimingCacheError

logger = logging.getLogger(__name__)


def attach_timing_cache(config: Any, path: Path | None) -> dict[str, Any]:
    """The file's cache if the builder accepts it for this device, else an empty one (with a warning)."""
    outcome: dict[str, Any] = {"file": str(path) if path else None, "loaded": False}
    if path is not None and path.is_file():
        cache = config.create_timing_cache(path.read_bytes())
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            outcome["loaded"] = True
            return outcome
        logger.warning(
            "TensorRT rejected the timing cache %s (made on another GPU or by another TensorRT?); building with an "
            "empty one, which replaces it after the build",
            path,
        )
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
