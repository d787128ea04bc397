"""Latency measurement the way trtexec does it; the only module in the project that reads a clock.

Method (trtexec's ``--warmUp``, ``--iterations``, ``--duration``): run for ``warmup_ms`` of wall time and discard
those runs, then keep running until at least ``iterations`` runs AND at least ``duration_s`` seconds have passed.
Each run's host latency is ``time.perf_counter()`` around one ``runner.infer(batch)`` call (the batch check
included, and on OpenVINO the runner's NaN/Inf scan of the input, one pass over it, which it needs because
OpenVINO turns NaN input into finite-looking output). On GPU runners the host→device copy, the compute and the
device→host copy are also timed apart with CUDA events: by the benchmark between the runner's stages, or, for a
runner that times its own ``infer`` on its own stream (TensorRT's ``last_timings``), by the runner, so that its
options (``transfers=False``, CUDA graphs) hold in the timed call. Statistics follow trtexec's definitions
(``runtime.latency``).

Several backends measured in one call run either in blocks (one backend's warm-up and timing loop after the
other's; the default) or interleaved (one run of each backend per round, so a slow drift in the machine's load hits
all backends alike).
"""

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from runtime.backends.base import Runner, check_batch
from runtime.latency import BenchmarkConfig, LatencyReport, make_report

logger = logging.getLogger(__name__)

GPU_DEVICES = ("cuda", "tensorrt")


def is_gpu_runner(runner: Runner) -> bool:
    """A GPU runner whose stages can be timed: by itself (``last_timings``) or between its stage calls."""
    stages = hasattr(runner, "last_timings") or hasattr(runner, "compute")
    return getattr(runner, "device", "cpu") in GPU_DEVICES and stages


class _Trace:
    """One runner's timings during a measurement."""

    def __init__(self, runner: Runner, batch: np.ndarray) -> None:
        self.runner = runner
        self.batch = batch
        self.gpu = is_gpu_runner(runner)
        self.self_timed = self.gpu and hasattr(runner, "last_timings")  # events on its own stream, in infer
        self.cuda_events = self.gpu and _torch_sees_cuda()
        self.times_ms: list[float] = []
        self.device_ms: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": []} if self.gpu else {}
        self.warmup_queries = 0

    def run_once(self, *, record: bool) -> None:
        if self.self_timed:
            host_ms, stages = _self_timed_query(self.runner, self.batch)
        elif self.gpu:
            timer = _timed_gpu_query if self.cuda_events else _host_timed_stages
            host_ms, stages = timer(self.runner, self.batch)
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

    def _stage_timing(self) -> dict[str, str]:
        if not self.gpu:
            return {}
        if self.self_timed:
            return {"stage_timing": "cuda events on the runner's stream"}
        return {"stage_timing": "cuda events" if self.cuda_events else "host clock after device sync"}

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
            description={**self.runner.describe(), **self._stage_timing()},
            mode=config.mode,
        )


def _self_timed_query(runner: Any, batch: np.ndarray) -> tuple[float, dict[str, float]]:
    """One ``infer`` on a runner that times its stages itself (``last_timings``, CUDA events on its stream)."""
    start = time.perf_counter()
    runner.infer(batch)
    host_ms = (time.perf_counter() - start) * 1e3
    timings = runner.last_timings
    return host_ms, {"h2d": timings.h2d_ms, "compute": timings.compute_ms, "d2h": timings.d2h_ms}


def _timed_gpu_query(runner: Any, batch: np.ndarray) -> tuple[float, dict[str, float]]:
    """One query on a GPU runner: host latency, and H2D / compute / D2H from CUDA events between the stages.

    The events are torch's, recorded on torch's current stream. Torch runners run on that stream (TensorRT's runs on
    its own and times itself: ``_self_timed_query``); ONNX Runtime's
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


def _host_timed_stages(runner: Any, batch: np.ndarray) -> tuple[float, dict[str, float]]:
    """Without a CUDA build of torch (e.g. onnxruntime-gpu alone): each stage on the host clock, after a device sync.

    Coarser than CUDA events (it includes the launch and sync overheads in each stage), and said so in the report's
    runner description. (Written for GPU machines; not run on this project's CPU machines.)
    """
    marks = [time.perf_counter()]
    device_input = runner.to_device(batch)
    runner.synchronize()
    marks.append(time.perf_counter())
    device_output = runner.compute(device_input)
    runner.synchronize()
    marks.append(time.perf_counter())
    runner.to_host(device_output)
    marks.append(time.perf_counter())
    h2d, compute, d2h = ((marks[i + 1] - marks[i]) * 1e3 for i in range(3))
    return (marks[3] - marks[0]) * 1e3, {"h2d": h2d, "compute": compute, "d2h": d2h}


def _torch_sees_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


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
