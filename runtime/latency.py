"""Latency statistics with trtexec's definitions, and the report of one backend's timing trace (pure: no clock).

The definitions follow trtexec's ``samples/common/sampleReporting.cpp`` (NVIDIA/TensorRT): median, percentile,
throughput over the Total Host Walltime; the spread is the coefficient of variation, with a warning above 2.5 %.
``runtime.bench`` measures the traces these summarise.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CV_WARNING_THRESHOLD = 0.025  # warn when the latency's coefficient of variation exceeds 2.5 %
MODES = ("block", "interleave")


@dataclass(frozen=True)
class BenchmarkConfig:
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    iterations: int = 10
    percentiles: tuple[float, ...] = (90.0, 95.0, 99.0)
    mode: str = "block"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.iterations < 1 or self.duration_s < 0 or self.warmup_ms < 0:
            raise ValueError("iterations must be ≥ 1, duration and warm-up ≥ 0")
        if not (math.isfinite(self.duration_s) and math.isfinite(self.warmup_ms)):  # NaN passes the test above
            raise ValueError(
                f"duration and warm-up must be finite numbers; got {self.duration_s} s and {self.warmup_ms} ms"
            )
        for p in self.percentiles:
            if not 0 <= p <= 100:
                raise ValueError(f"percentiles must lie in [0, 100]; got {p}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "warmup_ms": self.warmup_ms,
            "duration_s": self.duration_s,
            "iterations": self.iterations,
            "percentiles": list(self.percentiles),
            "mode": self.mode,
        }


def trtexec_percentile(sorted_times: Sequence[float], percentile: float) -> float:
    """The ``percentile`` of an ascending sequence as trtexec computes it.

    trtexec (NVIDIA/TensorRT, samples/common/sampleReporting.cpp, ``findPercentile``) sorts the timings, computes
    ``exclude = static_cast<int>((1 - percentile / 100) * n)`` in single precision (``percentile`` is a float)
    and returns the element at index ``max(n - 1 - exclude, 0)``: no interpolation, always an observed value.
    The float32 arithmetic matters: for n = 10, p90 gives exclude = int(1.0000002) = 1 → index 8 (the 9th
    value), and for n = 100, p99 gives exclude = int(0.999999) = 0 → the maximum. numpy's default percentile
    would interpolate instead.
    """
    n = len(sorted_times)
    if n == 0:
        return math.inf  # trtexec returns +infinity for an empty trace
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must lie in [0, 100]; got {percentile}")
    one, hundred = np.float32(1), np.float32(100)
    exclude = int((one - np.float32(percentile) / hundred) * np.float32(n))
    return float(sorted_times[max(n - 1 - exclude, 0)])


def trtexec_median(sorted_times: Sequence[float]) -> float:
    """trtexec's ``findMedian``: the middle element, or the mean of the two middle ones for an even count."""
    n = len(sorted_times)
    if n == 0:
        return math.inf
    m = n // 2
    return float(sorted_times[m]) if n % 2 else (float(sorted_times[m - 1]) + float(sorted_times[m])) / 2


def coefficient_of_variation(times: Sequence[float]) -> float:
    """Population standard deviation over the mean (trtexec's "coefficient of variance")."""
    arr = np.asarray(times, dtype=np.float64)
    mean = arr.mean()
    return float(np.sqrt(((arr - mean) ** 2).mean()) / mean) if mean > 0 else math.nan


@dataclass(frozen=True)
class LatencyStats:
    """Summary of a trace in milliseconds (trtexec's ``PerformanceResult`` plus the spread)."""

    min: float
    max: float
    mean: float
    median: float
    percentiles: dict[str, float]  # "90" → ms
    std: float
    cv: float

    @classmethod
    def from_times(cls, times_ms: Sequence[float], percentiles: Sequence[float]) -> "LatencyStats":
        if len(times_ms) == 0:
            raise ValueError("no timings to summarise")
        ordered = sorted(float(t) for t in times_ms)
        arr = np.asarray(ordered, dtype=np.float64)
        return cls(
            min=ordered[0],
            max=ordered[-1],
            mean=float(arr.mean()),
            median=trtexec_median(ordered),
            percentiles={_pkey(p): trtexec_percentile(ordered, p) for p in percentiles},
            std=float(arr.std()),
            cv=coefficient_of_variation(ordered),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_ms": self.min,
            "max_ms": self.max,
            "mean_ms": self.mean,
            "median_ms": self.median,
            "percentiles_ms": dict(self.percentiles),
            "std_ms": self.std,
            "cv": self.cv,
        }

    def line(self) -> str:
        parts = [f"min = {self.min:.4g} ms", f"max = {self.max:.4g} ms", f"mean = {self.mean:.4g} ms"]
        parts.append(f"median = {self.median:.4g} ms")
        parts += [f"percentile({p}%) = {v:.4g} ms" for p, v in self.percentiles.items()]
        return ", ".join(parts)


def _pkey(p: float) -> str:
    return f"{p:g}"


@dataclass
class LatencyReport:
    """One backend's timing trace and its trtexec-shaped summary."""

    backend: str
    batch: int
    warmup_queries: int
    warmup_ms: float
    walltime_s: float  # Total Host Walltime: first timed query enqueued → last one completed
    latency: LatencyStats
    times_ms: list[float] = field(repr=False)
    device_times_ms: dict[str, list[float]] = field(default_factory=dict, repr=False)  # "h2d", "compute", "d2h"
    device_stats: dict[str, LatencyStats] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)
    mode: str = "block"

    @property
    def queries(self) -> int:
        return len(self.times_ms)

    @property
    def throughput_qps(self) -> float:
        """trtexec: number of queries over the Total Host Walltime."""
        return self.queries / self.walltime_s if self.walltime_s > 0 else math.nan

    @property
    def throughput_ips(self) -> float:
        return self.throughput_qps * self.batch

    @property
    def cv_warning(self) -> bool:
        return self.latency.cv > CV_WARNING_THRESHOLD

    def summary_lines(self) -> list[str]:
        """The report as trtexec prints its "Performance summary"."""
        lines = [
            f"Warmup completed {self.warmup_queries} queries over {self.warmup_ms:g} ms",
            f"Timing trace has {self.queries} queries over {self.walltime_s:.4g} s ({self.mode})",
            f"Throughput: {self.throughput_qps:.4g} qps ({self.throughput_ips:.4g} images/s at batch {self.batch})",
            f"Latency: {self.latency.line()}",
        ]
        names = {"h2d": "H2D Latency", "compute": "GPU Compute Time", "d2h": "D2H Latency"}
        lines += [f"{names[k]}: {stats.line()}" for k, stats in self.device_stats.items()]
        lines.append(f"Total Host Walltime: {self.walltime_s:.4g} s")
        if "compute" in self.device_times_ms:
            lines.append(f"Total GPU Compute Time: {sum(self.device_times_ms['compute']) / 1000:.4g} s")
        lines.append(f"Coefficient of variation of the latency: {self.latency.cv * 100:.2f} %")
        if self.cv_warning:
            lines.append(
                f"* The latency's coefficient of variation is {self.latency.cv * 100:.2f} %, above "
                f"{CV_WARNING_THRESHOLD * 100:g} %: the machine is noisy (other load, frequency scaling); "
                "these figures are unstable, re-run on a quiet machine"
            )
        return lines

    def to_dict(self, *, include_times: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "backend": self.backend,
            "batch": self.batch,
            "mode": self.mode,
            "warmup_queries": self.warmup_queries,
            "warmup_ms": self.warmup_ms,
            "queries": self.queries,
            "total_host_walltime_s": self.walltime_s,
            "throughput_qps": self.throughput_qps,
            "throughput_images_per_s": self.throughput_ips,
            "latency": self.latency.to_dict(),
            "device": {k: v.to_dict() for k, v in self.device_stats.items()},
            "cv_warning": self.cv_warning,
            "runner": self.description,
        }
        if include_times:
            d["times_ms"] = list(self.times_ms)
            d["device_times_ms"] = {k: list(v) for k, v in self.device_times_ms.items()}
        return d


def make_report(
    backend: str,
    *,
    batch: int,
    times_ms: Sequence[float],
    walltime_s: float,
    percentiles: Sequence[float],
    warmup_queries: int = 0,
    warmup_ms: float = 0.0,
    device_times_ms: Mapping[str, Sequence[float]] | None = None,
    description: dict[str, Any] | None = None,
    mode: str = "block",
) -> LatencyReport:
    """Summarise a trace (pure: no clock); the measuring functions below feed it."""
    device_times = {k: list(v) for k, v in (device_times_ms or {}).items()}
    return LatencyReport(
        backend=backend,
        batch=batch,
        warmup_queries=warmup_queries,
        warmup_ms=warmup_ms,
        walltime_s=walltime_s,
        latency=LatencyStats.from_times(times_ms, percentiles),
        times_ms=list(times_ms),
        device_times_ms=device_times,
        device_stats={k: LatencyStats.from_times(v, percentiles) for k, v in device_times.items()},
        description=description or {},
        mode=mode,
    )
