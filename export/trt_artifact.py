"""TensorRT steps on a finished artifact directory: the FP16-islands ONNX and the engine, recorded in the manifest.

Runs after ``export.pipeline.export_model`` has written a verified directory. Each step writes its files, records
them, and rewrites ``manifest.json`` (atomically, last), so the directory stays a valid artifact at every point:
if TensorRT is missing or its build fails, the ONNX artifacts (and the FP16 ONNX) remain usable.
"""

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import Manifest, load_manifest, write_manifest
from export.fp16 import Fp16ConversionError, fp16_refusal, write_fp16_onnx
from export.trt_build import EngineResult, TrtBuildOptions, build_engine, record_engine
from export.validate import onnxruntime_runner

logger = logging.getLogger(__name__)

FP16_ONNX_NAME = "model_fp16.onnx"


@dataclass(frozen=True)
class Fp16Parity:
    """The FP16-islands ONNX against the FP32 ONNX (itself verified against eager PyTorch), both on ORT CPU."""

    cases: int
    max_abs: float
    max_rel: float  # max |Δ| / max |reference logit|, per case, worst case
    top1_agreement: float

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def compare_fp16(fp32_onnx: Path, fp16_onnx: Path, batch: np.ndarray, *, input_name: str) -> Fp16Parity:
    ref, got = (onnxruntime_runner(p, input_name=input_name)(batch) for p in (fp32_onnx, fp16_onnx))
    diff = np.abs(got - ref)
    rel = diff.max(axis=1) / np.abs(ref).max(axis=1)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    return Fp16Parity(cases=len(batch), max_abs=float(diff.max()), max_rel=float(rel.max()), top1_agreement=agree)


def add_fp16_onnx(directory: str | Path, *, photos: np.ndarray | None = None) -> tuple[Path, Fp16Parity]:
    """Write ``model_fp16.onnx`` beside ``model.onnx``, measure it on photographs, record both in the manifest."""
    from models.transforms import photo_batch

    directory = Path(directory)
    manifest = load_manifest(directory, verify=True)
    refusal = fp16_refusal(model=manifest.model, compact_sge_layers=manifest.extra.get("compact_sge_layers", 0))
    if refusal:
        raise Fp16ConversionError(refusal)
    fp32_path = directory / manifest.deploy
    path, plan = write_fp16_onnx(fp32_path, directory / FP16_ONNX_NAME)
    if photos is None:
        h, w = manifest.preprocessing["input_size"]
        mean, std = tuple(manifest.preprocessing["mean"]), tuple(manifest.preprocessing["std"])
        photos = photo_batch((h, w), mean=mean, std=std)
    parity = compare_fp16(fp32_path, path, photos, input_name=manifest.inputs[0].name)
    manifest.record(directory, FP16_ONNX_NAME, role="model-fp16")
    manifest.parity["fp16_onnx"] = {"against": manifest.deploy, "inputs": "photographs", **parity.to_dict()}
    manifest.extra["fp16_onnx"] = {"file": FP16_ONNX_NAME, "policy": plan.to_dict()}
    write_manifest(directory, manifest)
    logger.info("FP16 ONNX: %s, top-1 agreement %.3f, max rel %.4f", path.name, parity.top1_agreement, parity.max_rel)
    return path, parity


def add_engine(directory: str | Path, *, options: TrtBuildOptions) -> EngineResult:
    """Build ``model.plan`` from the artifact's ONNX (and its FP16 ONNX when present) and record it."""
    directory = Path(directory)
    manifest = load_manifest(directory, verify=True)
    fp16 = directory / FP16_ONNX_NAME
    if options.precision == "fp16" and options.fp16_onnx is None and FP16_ONNX_NAME in manifest.files:
        options = replace(options, fp16_onnx=fp16)
    if options.precision == "int8" and options.mean == TrtBuildOptions.mean:
        pre = manifest.preprocessing
        options = replace(options, mean=tuple(pre["mean"]), std=tuple(pre["std"]))
    result = build_engine(directory / manifest.deploy, directory, options=options)
    record_engine(manifest, directory, result.info)
    _record_calibration_cache(manifest, directory, result)
    write_manifest(directory, manifest)
    return result


def _record_calibration_cache(manifest: Manifest, directory: Path, result: EngineResult) -> None:
    calibration = result.info.get("calibration")
    if calibration and (directory / calibration["cache"]).is_file():
        manifest.record(directory, calibration["cache"], role="calibration-cache")
