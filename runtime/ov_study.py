"""OpenVINO across precisions and SGE graphs: one interleaved timing run, parity against eager FP32 PyTorch, and
per-layer profiles (OpenVINO's perf counts, summed by layer type) that explain the ratios.

Each variant is (artifact, precision, graph): a plain model (resnet50), an SGE model's plain graph, its fused-SGE
graph in both forms (the OpenVINO extension op, export/ov_sge/graph.py, and the same graph rewritten into standard
ops, export/ov_sge/native.py: the runner's default) and optionally a rewritten SGE graph (export/sge_compact.py). The
ratios compare each SGE variant with the plain model at the same precision (README, OpenVINO precisions).
"""

import logging
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bench import measure_all
from runtime.latency import BenchmarkConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    label: str
    artifact: Path
    precision: str
    sge_fused: bool
    role: str  # "base" (the plain model) or "sge"
    sge_form: str = "native"  # the fused graph's form (runtime/backends/ov.py SGE_FORMS)
    backend: str = "openvino"  # or "onnxruntime": its default (fused-SGE) graph in FP32, for reference

    def options(self, threads: int, *, perf_count: bool = False) -> dict[str, Any]:
        if self.backend == "onnxruntime":  # no spinning: several sessions share the CPU in one interleaved run
            return {"threads": threads, "allow_spinning": False}
        config = {"PERF_COUNT": True} if perf_count else {}
        return {
            "threads": threads,
            "precision": self.precision,
            "sge_fused": self.sge_fused,
            "sge_form": self.sge_form,
            "config": config,
        }


def variants(
    base: Path,
    sge: Path,
    precisions: Sequence[str],
    *,
    compact: Path | None = None,
    onnxruntime: bool = False,
    references: Sequence[Path] = (),
) -> list[Variant]:
    """Per precision: the plain model, the SGE model's plain graph, its fused graph in both forms where the artifact
    has one for that precision, the compact graph (not at int8, which needs its own quantised file), and each
    ``references`` artifact (another attention model, e.g. se_resnet50: what a simpler block costs on the same
    backend; at int8 only where it has a Q/DQ model); with ``onnxruntime``, both models on ONNX Runtime FP32 first."""
    from export.artifacts import load_manifest
    from runtime.backends.ov import FUSED_ROLES

    def roles_of(artifact: Path) -> set[str]:
        return {entry.role for entry in load_manifest(artifact, verify=False).files.values()}

    roles = roles_of(sge)
    reference_roles = {ref: roles_of(ref) for ref in references}
    out = []
    if onnxruntime:
        out.append(Variant(f"{base.name} onnxruntime fp32", base, "fp32", True, "base", backend="onnxruntime"))
        out.append(Variant(f"{sge.name} onnxruntime fp32", sge, "fp32", True, "sge", backend="onnxruntime"))
    for precision in precisions:
        out.append(Variant(f"{base.name} {precision}", base, precision, False, "base"))
        out.append(Variant(f"{sge.name} {precision} plain", sge, precision, False, "sge"))
        if FUSED_ROLES.get(precision, "model-ort-cpu") in roles:
            out.append(Variant(f"{sge.name} {precision} extension", sge, precision, True, "sge", "extension"))
            out.append(Variant(f"{sge.name} {precision} native", sge, precision, True, "sge", "native"))
        if compact is not None and precision != "int8":
            out.append(Variant(f"{compact.name} {precision} compact", compact, precision, False, "sge"))
        for ref in references:
            if precision != "int8" or "model-int8" in reference_roles[ref]:
                out.append(Variant(f"{ref.name} {precision} (reference)", ref, precision, False, "sge"))
    return out


def time_variants(
    chosen: Sequence[Variant], batch: np.ndarray, *, threads: int, config: BenchmarkConfig
) -> dict[str, dict[str, Any]]:
    """Median latency and what ran, for every variant, in one run (``config.mode``, interleaved for the report)."""
    import runtime

    with ExitStack() as stack:
        runners = {
            v.label: stack.enter_context(runtime.load(v.artifact, v.backend, **v.options(threads))) for v in chosen
        }
        reports = measure_all(runners, batch, config)
        described = {label: runner.describe() for label, runner in runners.items()}
    results = {}
    for variant, report in zip(chosen, reports, strict=True):
        d = described[variant.label]
        results[variant.label] = {
            "median_ms": report.latency.median,
            "cv": report.latency.cv,
            "queries": report.queries,
            "backend": variant.backend,
            "precision_ran": d.get("precision", variant.precision),
            "graph": d.get("graph", "plain"),
            "model_path": d.get("model_path"),
        }
    return results


def ratios(chosen: Sequence[Variant], timings: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each SGE variant's median over the plain model's on the same backend at the same precision."""
    base = {(v.backend, v.precision): timings[v.label]["median_ms"] for v in chosen if v.role == "base"}
    return {v.label: timings[v.label]["median_ms"] / base[v.backend, v.precision] for v in chosen if v.role == "sge"}


def layer_profile(variant: Variant, batch: np.ndarray, *, threads: int, runs: int = 10) -> dict[str, Any]:
    """Mean ms per query by (layer type, kernel), from OpenVINO's perf counts, largest first."""
    import runtime

    totals: Counter = Counter()
    with runtime.load(variant.artifact, "openvino", **variant.options(threads, perf_count=True)) as runner:
        for _ in range(3):
            runner.infer(batch)
        for _ in range(runs):
            runner.infer(batch)
            for layer in runner.layer_times():
                totals[f"{layer['type']} ({layer['exec']})"] += layer["ms"] / runs
    rows = {key: round(ms, 3) for key, ms in totals.most_common() if ms >= 0.005}
    return {"total_ms": round(sum(totals.values()), 3), "by_layer_type": rows}


def parity_to_eager(chosen: Sequence[Variant], photos: np.ndarray, reference: dict[Path, np.ndarray], *, threads: int):
    """Cosine and relative L2 (worst photograph) of every variant against eager FP32 PyTorch."""
    import runtime
    from export.parity import compare

    results = {}
    for variant in chosen:
        with runtime.load(variant.artifact, variant.backend, **variant.options(threads)) as runner:
            stats = compare(reference[variant.artifact], runner.infer(photos))
        results[variant.label] = {"cosine": stats.cosine, "rel_l2": stats.rel_l2, "top1": stats.top1}
    return results
