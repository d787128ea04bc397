"""A benchmark run across backends, and what goes around its latency reports: the comparison table, the plot of
the latency distributions, the machine description and the versions.

No clock is read here; every timing comes from ``runtime.bench``.
"""

import datetime
import importlib.metadata
import logging
import math
import os
import platform
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import atomic_path
from export.ort_sge.kernels.build import cpu_flags  # the standard library only
from runtime.backends.source_runner import usable_cpus
from runtime.bench import measure_all
from runtime.latency import BenchmarkConfig, LatencyReport, trtexec_median, trtexec_percentile
from runtime.preprocess import preprocess_arrays, preprocessing_for
from runtime.source import ModelSource, open_source

logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("sge-deploy", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt")
# the vector extensions that decide CPU figures, in the order reports list them (a VM's model name may be a generic
# "Intel(R) Xeon(R) Processor"); `sge-deploy env`, benchmark, load-test and sge-cost reports all show these
CPU_FLAGS_SHOWN = (
    "sse2", "avx2", "fma", "avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
# how LatencyStats reads the times: README, Latency reports
STATISTICS = {
    "percentiles": "nearest rank, as trtexec (runtime/latency.py): each an observed latency",
    "median": "as trtexec: the mean of the two middle values for an even count",
    "cv": "a fraction: standard deviation / mean",
    "units": "milliseconds; throughput per second",
}


def comparison(reports: Sequence[LatencyReport]) -> list[dict[str, Any]]:
    """One row per backend, with its median latency and throughput relative to the first backend's.

    ``latency_ratio`` = median / first median (below 1: faster than the first); ``speedup`` = first median / median.
    Ratios are meaningful only between backends measured in the same run, which is how they are produced here.
    """
    if not reports:
        return []
    base = reports[0]
    rows = []
    for r in reports:
        rows.append(
            {
                "backend": r.backend,
                "median_ms": r.latency.median,
                "mean_ms": r.latency.mean,
                "min_ms": r.latency.min,
                "percentiles_ms": dict(r.latency.percentiles),
                "cv": r.latency.cv,
                "throughput_qps": r.throughput_qps,
                "throughput_images_per_s": r.throughput_ips,
                "latency_ratio": r.latency.median / base.latency.median,
                "speedup": base.latency.median / r.latency.median,
                "throughput_ratio": r.throughput_qps / base.throughput_qps,
            }
        )
    return rows


PLOT_INSTALL = "pip install 'sge-deploy[plot]' (or matplotlib)"


def can_plot() -> bool:
    """Whether matplotlib is installed (checked before a long run that plots at its end)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def box_stats(times_ms: Sequence[float]) -> dict[str, Any]:
    """One box of the plot from the statistics the tables quote (trtexec's nearest rank, not numpy's interpolation):
    box p25–p75, line at the median, whiskers at p1 and p99, the queries beyond them as fliers."""
    ordered = sorted(times_ms)
    low, high = trtexec_percentile(ordered, 1), trtexec_percentile(ordered, 99)
    return {
        "med": trtexec_median(ordered),
        "q1": trtexec_percentile(ordered, 25),
        "q3": trtexec_percentile(ordered, 75),
        "whislo": low,
        "whishi": high,
        "mean": sum(ordered) / len(ordered),
        "fliers": [t for t in ordered if t < low or t > high],
    }


def plot_latencies(reports: Sequence[LatencyReport], path: str | Path, *, title: str = "") -> Path:
    """A PNG with each backend's latency distribution (box plot) and its per-query trace."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(f"plotting needs matplotlib: {PLOT_INSTALL}") from err
    path = Path(path)
    names = [r.backend for r in reports]
    fig, (box_ax, trace_ax) = plt.subplots(1, 2, figsize=(12, 1.2 + 0.9 * max(len(reports), 3)))
    box_ax.bxp([box_stats(r.times_ms) for r in reports], vert=False, showmeans=True)
    box_ax.set_yticks(range(1, len(names) + 1), names)
    box_ax.invert_yaxis()  # the first backend (the base of the ratios) on top
    box_ax.set_xlabel("host latency per query (ms); whiskers at p1/p99, triangle = mean")
    box_ax.grid(axis="x", alpha=0.3)
    for r in reports:
        trace_ax.plot(r.times_ms, linewidth=0.8, label=f"{r.backend} (median {r.latency.median:.3g} ms)")
    trace_ax.set_xlabel("query")
    trace_ax.set_ylabel("ms")
    trace_ax.legend(fontsize="small")
    trace_ax.grid(alpha=0.3)
    fig.suptitle(title or f"latency per query, batch {reports[0].batch if reports else '?'}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def machine_info() -> dict[str, Any]:
    """CPU model, core and thread counts, the cores this process may use, the load, the OS and Python."""
    model, physical = cpu_model_and_cores()
    info: dict[str, Any] = {
        "cpu_model": model or platform.processor() or "unknown",
        "physical_cores": physical,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "cpu_flags": shown_cpu_flags(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    gpus = gpu_names()
    if gpus:
        info["gpus"] = gpus
    return info


def shown_cpu_flags(flags: set[str] | None = None) -> list[str]:
    """``CPU_FLAGS_SHOWN`` that this CPU has (``flags``: this process's view, CPUID-aware under the AVX2 view)."""
    flags = cpu_flags() if flags is None else flags
    return [flag for flag in CPU_FLAGS_SHOWN if flag in flags]


def gpu_names() -> list[str]:
    """The NVIDIA GPUs nvidia-smi lists (none where it is absent or fails)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()] if listed.returncode == 0 else []


def cpu_model_and_cores() -> tuple[str | None, int | None]:
    """The CPU's model name and physical core count from /proc/cpuinfo (None for what it does not say)."""
    path = Path("/proc/cpuinfo")
    return parse_cpuinfo(path.read_text()) if path.is_file() else (None, None)


def parse_cpuinfo(text: str) -> tuple[str | None, int | None]:
    """The first model name and the count of distinct (physical id, core id) pairs: a core id repeats on each
    socket, and hyper-threads share theirs."""
    model, cores, physical_id = None, set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            cores.add((physical_id, value))
    return model, len(cores) or None


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide the figures (absent ones are left out)."""
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    module = sys.modules.get("onnxruntime")  # the one this process runs, where both wheels are installed
    if module is not None and getattr(module, "__version__", None):
        found["onnxruntime_imported"] = module.__version__
    return found


@dataclass
class BenchmarkResult:
    """Everything one benchmark run produced, for the console and for JSON."""

    artifact: str
    model: str | None
    config: BenchmarkConfig
    reports: list[LatencyReport]
    agreement: dict[str, dict[str, float]]  # backend → max_abs / rel_l2 against the first backend, same batch
    machine: dict[str, Any] = field(default_factory=machine_info)
    versions: dict[str, str] = field(default_factory=versions)
    command: list[str] = field(default_factory=list)

    def comparison(self) -> list[dict[str, Any]]:
        return comparison(self.reports)

    def to_dict(self, *, include_times: bool = False) -> dict[str, Any]:
        return {
            "command": self.command,
            "working_directory": os.getcwd(),
            "artifact": str(Path(self.artifact).resolve()),
            "model": self.model,
            "statistics": STATISTICS,
            "config": self.config.to_dict(),
            "machine": self.machine,
            "versions": self.versions,
            "reports": [r.to_dict(include_times=include_times) for r in self.reports],
            "comparison": self.comparison(),
            "agreement_with_first": self.agreement,
        }

    def times(self) -> dict[str, Any]:
        """Per-query times of every backend (what ``--export-times`` writes)."""
        return {
            r.backend: {"times_ms": r.times_ms, **r.to_dict(include_times=True)["device_times_ms"]}
            for r in self.reports
        }


def benchmark_batch(source: ModelSource, batch: int) -> np.ndarray:
    """A batch of real photographs (the bundled ones, cycled) with the artifact's preprocessing.

    The photographs ship inside scikit-image, which a deploy-only install lacks: there the batch is seeded
    uniform pixels instead (one log line says so). A CNN's latency does not depend on what the pixels show.
    """
    from models.transforms import sample_photos

    if batch < 1:
        raise ValueError(f"batch must be at least 1; got {batch}")
    try:
        photos = list(sample_photos().values())
    except ImportError:
        logger.warning("scikit-image is not installed: timing seeded random pixels instead of its photographs")
        rng = np.random.default_rng(0)
        photos = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(4)]
    images = [photos[i % len(photos)] for i in range(batch)]
    return preprocess_arrays(images, preprocessing_for(source))


def run_benchmark(
    path: str | Path,
    backends: Sequence[str],
    *,
    batch: int = 1,
    config: BenchmarkConfig | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    command: Sequence[str] = (),
) -> BenchmarkResult:
    """Open ``path`` once per backend, check they agree on one batch, then time them all in the same run.

    An entry may name a backend with a label after a colon ("onnxruntime:int8"): the runner is the backend's,
    its options are ``options[entry]``, and the reports keep the whole label.
    """
    import runtime

    config = config or BenchmarkConfig()
    if not backends:
        raise ValueError("no backends given")
    source = open_source(path)
    inputs = benchmark_batch(source, batch)
    runners = {
        name: runtime.load(source, backend=name.split(":")[0], **(options or {}).get(name, {})) for name in backends
    }
    with ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        outputs = {name: runner.infer(inputs) for name, runner in runners.items()}
        reports = measure_all(runners, inputs, config)
    first = outputs[backends[0]]
    agreement = {name: agreement_stats(out, first) for name, out in outputs.items()}
    return BenchmarkResult(
        artifact=str(path),
        model=source.model_name,
        config=config,
        reports=reports,
        agreement=agreement,
        command=list(command),
    )


def agreement_stats(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    diff = output.astype(np.float64) - reference.astype(np.float64)
    norm = float(np.linalg.norm(reference.astype(np.float64)))
    return {"max_abs": float(np.abs(diff).max()), "rel_l2": float(np.linalg.norm(diff)) / norm if norm else math.nan}
