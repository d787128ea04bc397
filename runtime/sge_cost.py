"""What SGE costs on this CPU: interleaved latency of the deployed models against the machine's FP32 floor.

Measures, in one process and one interleaved loop (every round runs each runner once, so load from other
processes hits all of them alike): an FP32 GEMM in ONNX Runtime (the floor's rate), ONNX Runtime sessions,
OpenVINO compiled models and eager PyTorch on the same number of threads. ONNX Runtime sessions run with
``session.intra_op.allow_spinning = "0"`` (spinning threads would steal the CPU from the next runner).
Wall-clock medians are the figures; process CPU-time medians are kept too, because on a shared machine they
are far less disturbed by other processes than wall time.
"""

import logging
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.ort_sge.nchwc import FUSED_OP, QUANTIZED_OP

logger = logging.getLogger(__name__)

Runner = Callable[[], object]


@dataclass(frozen=True)
class Timing:
    name: str
    wall_ms: list[float]
    cpu_ms: list[float]
    places: list[int] = field(default_factory=list)  # each sample's place in its round (interleaved timing)
    process_medians: list[float] = field(default_factory=list)  # one per process (runtime/isolated_timing.py)
    # each call's start, in seconds (interleaved timing: time.perf_counter, the clock of wall_ms; the shared-pool
    # child sends them as wall-clock time, to set the rounds beside runtime/kernel_speed/cpu_placement.py's samples)
    starts: list[float] = field(default_factory=list)

    @property
    def paired_wall_ms(self) -> list[float]:
        """What per-round ratios pair: each process's median when timed isolated, else each call."""
        return self.process_medians or self.wall_ms

    def wall_median_by_place(self) -> list[float]:
        """Median wall time at each place in the round (first, second, …): a place that is faster for every runner
        biases the ratios of a fixed order, not of a rotated one."""
        if not self.places:  # timed in blocks
            return []
        samples = list(zip(self.wall_ms, self.places, strict=True))
        return [statistics.median(w for w, p in samples if p == k) for k in sorted(set(self.places))]

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall_ms)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_ms)

    @property
    def spread(self) -> float:
        """Interquartile range over the median of the wall times: 0.02 on a quiet machine, 0.3+ under load."""
        q1, _, q3 = (
            statistics.quantiles(self.wall_ms, n=4, method="inclusive") if len(self.wall_ms) > 1 else (0.0, 0.0, 0.0)
        )
        return (q3 - q1) / self.wall_median if self.wall_median > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        record = {
            "name": self.name,
            "wall_spread_iqr": round(self.spread, 3),
            "wall_ms_median": round(self.wall_median, 3),
            "cpu_ms_median": round(self.cpu_median, 3),
            "wall_ms_min": round(min(self.wall_ms), 3),
            "rounds": len(self.wall_ms),
        }
        if self.process_medians:
            record["wall_ms_process_medians"] = [round(m, 3) for m in self.process_medians]
        if len(set(self.places)) > 1:  # rotated rounds; in a fixed order it would only repeat the median
            record["wall_ms_median_by_place"] = [round(m, 3) for m in self.wall_median_by_place()]
        return record


def round_order(names: list[str], r: int) -> list[str]:
    """Round r's order when rounds rotate: it starts with names[r mod k], so over k rounds every name runs at every
    place once."""
    start = r % len(names)
    return names[start:] + names[:start]


def time_interleaved(
    runners: Mapping[str, Runner], *, rounds: int, warmup: int = 2, rotate: bool = False
) -> dict[str, Timing]:
    """Run every runner once per round, ``rounds`` times after ``warmup`` untimed rounds; wall and CPU time.

    ``rotate``: round r starts with runner r mod k, so that every runner runs at every place in the round equally
    often (to within one round when ``rounds`` is not a multiple of k; in a fixed order, whatever the first place
    does to its runner, it does to the same one every round).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1; got {rounds}")
    for _ in range(warmup):
        for run in runners.values():
            run()
    names = list(runners)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    places: dict[str, list[int]] = {name: [] for name in names}
    starts: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for place, name in enumerate(round_order(names, r) if rotate else names):
            c0, t0 = time.process_time(), time.perf_counter()
            runners[name]()
            wall[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.process_time() - c0) * 1e3)
            places[name].append(place)
            starts[name].append(t0)
    return {name: Timing(name, wall[name], cpu[name], places[name], starts=starts[name]) for name in names}


def time_blocked(runners: Mapping[str, Runner], *, rounds: int, blocks: int = 3, warmup: int = 2) -> dict[str, Timing]:
    """Run each runner ``rounds`` times in a row (after ``warmup``), cycling through the runners ``blocks`` times.

    For runtimes whose threads spin between calls (ORT with allow_spinning "1", the deployment default): in a
    block only the runner being timed is active, and repeating the blocks spreads slow periods over all runners.
    """
    if rounds < 1 or blocks < 1:
        raise ValueError(f"rounds and blocks must be ≥ 1; got rounds={rounds}, blocks={blocks}")
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(blocks):
        for name, run in runners.items():
            for _ in range(warmup):
                run()
            for _ in range(rounds):
                c0, t0 = time.process_time(), time.perf_counter()
                run()
                wall[name].append((time.perf_counter() - t0) * 1e3)
                cpu[name].append((time.process_time() - c0) * 1e3)
    return {name: Timing(name, wall[name], cpu[name]) for name in runners}


def ort_runner(session: "onnxruntime.InferenceSession", batch: np.ndarray) -> Runner:  # noqa: F821
    feeds = {session.get_inputs()[0].name: batch}
    return lambda: session.run(None, feeds)


def openvino_runner(path: str | Path, batch: np.ndarray, *, threads: int) -> Runner:
    """OpenVINO CPU, latency hint, one stream, FP32, ``threads`` threads, on the same ONNX file."""
    try:
        import openvino as ov
    except ImportError as err:
        raise ImportError("OpenVINO timing needs the openvino package: pip install 'sge-deploy[openvino]'") from err
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
    }
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return lambda: request.infer({0: batch})


def torch_runner(model: "torch.nn.Module", batch: np.ndarray) -> Runner:  # noqa: F821
    import torch

    x = torch.from_numpy(batch)

    def run() -> object:
        with torch.inference_mode():
            return model(x)

    return run


def gemm_model(n: int) -> bytes:
    """A serialized ONNX model computing one n×n×n FP32 MatMul of two constant-shaped inputs."""
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "gemm", [a, b], [y])
    # IR 8 (opset 17's): onnx's newest IR (14 in onnx 1.23) is refused by an older ORT (1.31 reads up to 13)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def gemm_runner(*, n: int, threads: int) -> Runner:
    """ONNX Runtime's FP32 MatMul (MLAS SGEMM) of n×n by n×n; 2n³ FLOP per call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(gemm_model(n), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    return lambda: session.run(None, feeds)


def conv_linear_flops(model: "torch.nn.Module", size: tuple[int, int]) -> float:  # noqa: F821
    """FLOPs (2 per multiply-add) of every Conv2d and Linear in one forward pass of a 1×3×h×w input."""
    import torch
    from torch import nn

    total = 0.0

    def count(layer: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        else:
            per_output = layer.in_features
        total += 2.0 * per_output * out.numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def machine_description(threads: int) -> dict[str, Any]:
    """CPU model, core count and vector extensions, and the versions of the runtimes timed."""
    import os

    from export.ort_sge.kernels.build import avx2_view_active, cpu_flags
    from runtime.bench_report import cpu_model_and_cores, shown_cpu_flags

    flags = cpu_flags()
    cpu = cpu_model_and_cores()[0] or platform.processor() or "unknown CPU"
    versions = {}
    for package in ("onnxruntime", "openvino", "torch", "numpy"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            versions[package] = None
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "isa": shown_cpu_flags(flags),
        # under the AVX2 view (export/ort_sge/kernels/avx2_view.py) "isa" is what this process's CPUID shows
        "cpu_view": "AVX2 view: AVX-512, AMX and AVX-VNNI hidden from CPUID" if avx2_view_active() else None,
        "threads": threads,
        "python": platform.python_version(),
        "versions": versions,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


@dataclass
class CostReport:
    command: str
    machine: dict[str, Any]
    gemm: dict[str, Any]
    flops: dict[str, float]
    timing_mode: str = "interleaved, ORT allow_spinning 0"
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio(timings: Mapping[str, Timing], numerator: str, denominator: str) -> dict[str, float]:
    """numerator/denominator for wall-time medians and for CPU-time medians."""
    a, b = timings[numerator], timings[denominator]
    return {"wall": round(a.wall_median / b.wall_median, 4), "cpu": round(a.cpu_median / b.cpu_median, 4)}


def profiled_kernel_events(
    plans: Mapping[str, "SessionPlan"],  # noqa: F821  (export.ort_sge.session)
    batch: np.ndarray,
    *,
    threads: int,
    runs: int,
    prefix: str | Path,
) -> dict[str, list[dict[str, Any]]]:
    """ORT's profiler over ``runs`` calls of each model after one untimed call, interleaved round by round (as the
    timings are): each model's kernel-time events of the timed calls (``timed_kernel_events``)."""
    import json

    from export.ort_sge.session import cpu_session

    sessions = {
        name: cpu_session(plan, threads=threads, spinning=False, profile_prefix=f"{prefix}_{name}")
        for name, plan in plans.items()
    }
    feeds = {name: {session.get_inputs()[0].name: batch} for name, session in sessions.items()}
    for _ in range(runs + 1):  # the first run (allocations) is left out of the figures
        for name, session in sessions.items():
            session.run(None, feeds[name])
    return {
        name: timed_kernel_events(json.loads(Path(session.end_profiling()).read_text()))
        for name, session in sessions.items()
    }


def timed_kernel_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The nodes' kernel-time events of an ORT profile, without the first run's (allocations)."""
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    after_first = starts[1] if len(starts) > 1 else 0
    return [
        e
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= after_first
    ]


def ort_profiles(
    plans: Mapping[str, "SessionPlan"],  # noqa: F821  (export.ort_sge.session)
    batch: np.ndarray,
    *,
    threads: int,
    runs: int,
    prefix: str | Path,
) -> dict[str, dict[str, Any]]:
    """ORT's profiler over ``runs`` calls of each model, interleaved round by round (``profiled_kernel_events``).

    Per model: kernel ms per run by op type, and the SGE nodes' share. Nodes are attributed to SGE by the
    exporter's scope names (``/sge/``) or, in the fused graph, by the op (``SgeResidual``, or ``SgeResidualQ`` in a
    planned INT8 graph, which also does the residual add and ReLU); NCHWc reorders and the residual Add/ReLU that
    SGE keeps from fusing are listed by op type.
    """
    profiled = profiled_kernel_events(plans, batch, threads=threads, runs=runs, prefix=prefix)
    return {name: _profile_summary(events, runs=runs) for name, events in profiled.items()}


def _profile_summary(events: list[dict[str, Any]], *, runs: int) -> dict[str, Any]:
    """Kernel ms per run by op type and for SGE's nodes, from the timed calls' kernel events."""
    by_op: dict[str, float] = {}
    sge_ms = 0.0
    for e in events:
        ms = e["dur"] / 1e3 / runs
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] = by_op.get(op, 0.0) + ms
        if "/sge/" in e["name"] or op in (FUSED_OP, QUANTIZED_OP):
            sge_ms += ms
    return {
        "kernel_ms_per_run": round(sum(by_op.values()), 3),
        "sge_nodes_ms_per_run": round(sge_ms, 3),
        "by_op_ms_per_run": {k: round(v, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "runs": runs,
    }
