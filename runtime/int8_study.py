"""What INT8 buys on this CPU: sge_resnet50 and resnet50, FP32 and INT8, in one interleaved run (the issue's targets).

Runners (each artifact must have been exported with ``--int8``): ONNX Runtime CPU on the FP32 graph each model
deploys (sge_resnet50: the fused-SGE graph), on the INT8 graph (sge_resnet50: ``model.int8.sge_fused.onnx``, and
``model.int8.onnx`` with SGE's ops unfused for comparison), and OpenVINO on ``model.int8.onnx``. Timing is
``runtime.sge_cost.time_interleaved`` (one query of every runner per round, ORT threads sleeping between calls);
the profile is ORT's, interleaved too. Accuracy: INT8 against FP32 logits on the bundled photographs.
"""

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import load_manifest
from export.int8.roles import INT8_FUSED_ROLE, INT8_ROLE, file_with_role
from export.ort_sge.session import FUSED_ROLE, cpu_session, plan_session
from runtime.sge_cost import machine_description, openvino_runner, ort_profiles, ort_runner, ratio, time_interleaved

logger = logging.getLogger(__name__)

TARGETS = {
    "sge fp32 fused / sge int8 (speed-up)": ("sge_fp32", "sge_int8", ">=", 2.5),
    "sge int8 / resnet50 int8": ("sge_int8", "r50_int8", "<=", 1.10),
}


@dataclass
class Int8Study:
    command: str
    machine: dict[str, Any]
    graphs: dict[str, str]
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)  # batch → runner → Timing.to_dict()
    ratios: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def study_graphs(sge_artifact: Path, resnet_artifact: Path) -> dict[str, Path]:
    """The graph files each runner opens (artifacts verified against their manifests)."""
    sge, r50 = load_manifest(sge_artifact), load_manifest(resnet_artifact)
    wanted = {
        "r50_fp32": (resnet_artifact, r50.deploy),
        "r50_int8": (resnet_artifact, file_with_role(r50, INT8_ROLE)),
        "sge_fp32": (sge_artifact, file_with_role(sge, FUSED_ROLE)),
        "sge_int8": (sge_artifact, file_with_role(sge, INT8_FUSED_ROLE)),
        "sge_int8_unfused": (sge_artifact, file_with_role(sge, INT8_ROLE)),
    }
    missing = [name for name, (_, rel) in wanted.items() if rel is None]
    if missing:
        raise ValueError(f"graphs missing for {', '.join(missing)}: export both models with --int8 (README: INT8)")
    return {name: directory / rel for name, (directory, rel) in wanted.items()}


def run_study(
    sge_artifact: Path,
    resnet_artifact: Path,
    *,
    threads: int,
    batch_sizes: tuple[int, ...],
    rounds: int,
    profile_runs: int,
    openvino: bool,
    command: str,
) -> Int8Study:
    from models.transforms import photo_batch

    graphs = study_graphs(sge_artifact, resnet_artifact)
    plans = {name: plan_session(path) for name, path in graphs.items()}
    study = Int8Study(
        command=command, machine=machine_description(threads), graphs={k: str(v) for k, v in graphs.items()}
    )
    sessions = {name: cpu_session(plan, threads=threads, spinning=False) for name, plan in plans.items()}
    for batch_size in batch_sizes:
        photos = photo_batch((224, 224))
        batch = np.ascontiguousarray(photos[np.arange(batch_size) % len(photos)])
        runners = {name: ort_runner(session, batch) for name, session in sessions.items()}
        if openvino:
            runners["ov_r50_int8"] = openvino_runner(graphs["r50_int8"], batch, threads=threads)
            runners["ov_sge_int8"] = openvino_runner(graphs["sge_int8_unfused"], batch, threads=threads)
        timings = time_interleaved(runners, rounds=rounds)
        study.timings[str(batch_size)] = {name: t.to_dict() for name, t in timings.items()}
        pairs = {
            "sge fp32 fused / sge int8": ("sge_fp32", "sge_int8"),
            "sge int8 / resnet50 int8": ("sge_int8", "r50_int8"),
            "sge int8 unfused / resnet50 int8": ("sge_int8_unfused", "r50_int8"),
            "resnet50 fp32 / resnet50 int8": ("r50_fp32", "r50_int8"),
            "sge fp32 fused / resnet50 fp32": ("sge_fp32", "r50_fp32"),
        }
        if openvino:
            pairs["openvino sge int8 / ort sge int8"] = ("ov_sge_int8", "sge_int8")
            pairs["openvino resnet50 int8 / ort resnet50 int8"] = ("ov_r50_int8", "r50_int8")
        study.ratios[str(batch_size)] = {label: ratio(timings, a, b) for label, (a, b) in pairs.items()}
        for label, (a, b, op, limit) in TARGETS.items():
            value = ratio(timings, a, b)["wall"]
            met = value >= limit if op == ">=" else value <= limit
            study.targets[f"{label}, batch {batch_size}"] = {"value": value, "target": f"{op} {limit}", "met": met}
    study.accuracy = _accuracy(sessions)
    if profile_runs:
        photos = photo_batch((224, 224))[:1]
        chosen = {name: plans[name] for name in ("r50_int8", "sge_int8", "sge_int8_unfused")}
        study.profile = ort_profiles(chosen, photos, threads=threads, runs=profile_runs, prefix="/tmp/sge-int8-profile")
    return study


def _accuracy(sessions: dict[str, Any]) -> dict[str, Any]:
    """INT8 against FP32 logits (same model, ONNX Runtime) on each bundled photograph: cosine and top-1."""
    from export.int8.parity import clear_top1_agreement
    from export.parity import compare
    from models.transforms import photo_batch

    photos = photo_batch((224, 224))
    out = {}
    for model, fp32, int8s in (("sge_resnet50", "sge_fp32", ("sge_int8", "sge_int8_unfused")),
                               ("resnet50", "r50_fp32", ("r50_int8",))):  # fmt: skip
        ref = ort_runner(sessions[fp32], photos)()[0]
        for name in int8s:
            got = ort_runner(sessions[name], photos)()[0]
            a, b = ref.astype(np.float64), got.astype(np.float64)
            cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            stats = compare(ref, got)
            out[name] = {
                "model": model,
                "photos": len(photos),
                "cosine_per_photo": [round(float(c), 5) for c in cosines],
                "cosine_min": round(float(cosines.min()), 5),
                "top1_agreement": stats.top1,
                "clear_top1_agreement": clear_top1_agreement(ref, got),
                "top5_agreement": stats.top5,
            }
    return out
