"""Latency measurement the way trtexec does it; the only module in the project that reads a clock.

Method (trtexec's ``--warmUp``, ``--iterations``, ``--duration``): run for ``warmup_ms`` of wall time and discard
those runs, then keep running until at least ``iterations`` runs AND at least ``duration_s`` seconds have passed.
Each run's host latency is ``time.perf_counter()`` around one ``runner.infer(batch)`` call (the batch check
included). On GPU runners the host→device copy, the compute and the device→host copy are also timed apart with CUDA
events. Statistics follow trtexec's definitions (see ``trtexec_percentile`` and ``trtexec_median``).

Several backends measured in one call run either in blocks (one backend's warm-up and timing loop after the
other's; the default) or interleaved (one run of each backend per round, so a slow drift in the machine's load hits
all backends alike).
"""

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.backends.base import Runner, check_batch

logger = logging.getLogger(__name__)

CV_WARNING_THRESHOLD = 0.025  # warn when the latency's coefficient of variation exceeds 2.5 %
MODES = ("block", "interleave")
GPU_DEVICES = ("cuda", "tensorrt")


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


# -- statistics (pure) -----------------------------------------------------------------------------------------
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


# -- measuring ---------------------------------------------------------------------------------------------------
def is_gpu_runner(runner: Runner) -> bool:
    return getattr(runner, "device", "cpu") in GPU_DEVICES and hasattr(runner, "compute")


class _Trace:
    """One runner's timings during a measurement."""

    def __init__(self, runner: Runner, batch: np.ndarray) -> None:
        self.runner = runner
        self.batch = batch
        self.gpu = is_gpu_runner(runner)
        self.times_ms: list[float] = []
        self.device_ms: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": []} if self.gpu else {}
        self.warmup_queries = 0

    def run_once(self, *, record: bool) -> None:
        if self.gpu:
            host_ms, stages = _timed_gpu_query(self.runner, self.batch)
        else:
            start = time.perf_counter()
            self.runner.infer(self.batch)
            host_ms, stages = (time.perf_counter() - start) * 1e3, {}
        if record:
            self.times_ms.append(host_ms)
            for key, value in stages.items():
                self.device_ms[key].append(value)
        else:
            self.warmup_queries += 1

    def warm_up(self, warmup_ms: float) -> None:
        start = time.perf_counter()
        while self.warmup_queries == 0 or (time.perf_counter() - start) * 1e3 < warmup_ms:
            self.run_once(record=False)

    def report(self, name: str, *, walltime_s: float, config: BenchmarkConfig) -> LatencyReport:
        return make_report(
            name,
            batch=int(self.batch.shape[0]),
            times_ms=self.times_ms,
            walltime_s=walltime_s,
            percentiles=config.percentiles,
            warmup_queries=self.warmup_queries,
            warmup_ms=config.warmup_ms,
            device_times_ms=self.device_ms or None,
            description=self.runner.describe(),
            mode=config.mode,
        )


def _timed_gpu_query(runner: Any, batch: np.ndarray) -> tuple[float, dict[str, float]]:
    """One query on a GPU runner: host latency, and H2D / compute / D2H from CUDA events between the stages.

    The events are torch's, recorded on torch's current stream. Torch runners run on that stream; ONNX Runtime's
    ``run_with_iobinding`` and its copies return only when the device work is done, so events recorded between
    those calls bracket each stage as well. (Written for GPU machines; not run on this project's CPU machines.)
    """
    import torch

    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    start = time.perf_counter()
    events[0].record()
    device_input = runner.to_device(batch)
    events[1].record()
    device_output = runner.compute(device_input)
    events[2].record()
    runner.to_host(device_output)
    events[3].record()
    events[3].synchronize()
    host_ms = (time.perf_counter() - start) * 1e3
    h2d, compute, d2h = (events[i].elapsed_time(events[i + 1]) for i in range(3))
    return host_ms, {"h2d": h2d, "compute": compute, "d2h": d2h}


def measure(runner: Runner, batch: np.ndarray, config: BenchmarkConfig | None = None) -> LatencyReport:
    """Time one active runner on ``batch``: warm-up by time, then ≥ ``iterations`` runs and ≥ ``duration_s``."""
    return measure_all({runner.name: runner}, batch, config)[0]


def measure_all(
    runners: Mapping[str, Runner], batch: np.ndarray, config: BenchmarkConfig | None = None
) -> list[LatencyReport]:
    """Time several active runners on the same ``batch`` in one run, in blocks or interleaved (``config.mode``)."""
    config = config or BenchmarkConfig()
    traces = {}
    for name, runner in runners.items():
        if not runner.is_active:
            raise RuntimeError(f"{name} runner is not active; use `with runner:` before measuring")
        check_batch(batch, runner.input_spec)  # fail before any timing, not in the middle of a loop
        traces[name] = _Trace(runner, np.ascontiguousarray(batch))
    if config.mode == "block":
        return [_measure_block(name, trace, config) for name, trace in traces.items()]
    return _measure_interleaved(traces, config)


def _measure_block(name: str, trace: _Trace, config: BenchmarkConfig) -> LatencyReport:
    logger.info(
        "%s: warm-up %g ms, then ≥ %d queries and ≥ %g s", name, config.warmup_ms, config.iterations, config.duration_s
    )
    trace.warm_up(config.warmup_ms)
    start = time.perf_counter()
    while len(trace.times_ms) < config.iterations or time.perf_counter() - start < config.duration_s:
        trace.run_once(record=True)
    walltime = time.perf_counter() - start
    return trace.report(name, walltime_s=walltime, config=config)


def _measure_interleaved(traces: dict[str, _Trace], config: BenchmarkConfig) -> list[LatencyReport]:
    """One query of each backend per round; each backend's walltime is the sum of its own queries' latencies."""
    for trace in traces.values():
        trace.warm_up(config.warmup_ms)

    def done(trace: _Trace) -> bool:
        return len(trace.times_ms) >= config.iterations and sum(trace.times_ms) >= config.duration_s * 1e3

    while not all(done(trace) for trace in traces.values()):
        for trace in traces.values():
            trace.run_once(record=True)
    return [trace.report(name, walltime_s=sum(trace.times_ms) / 1e3, config=config) for name, trace in traces.items()]
