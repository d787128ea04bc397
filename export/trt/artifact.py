"""TensorRT steps on a finished artifact directory: the FP16-islands ONNX and the engine, recorded in the manifest.

Runs after ``export.pipeline.export_model`` has written a verified directory, or later on its own
(``scripts/trt_build.py``, like trtexec ``--saveEngine`` from an existing ONNX: nothing is re-exported). Each step
writes its files, records them, and rewrites ``manifest.json`` (atomically, last), so the directory stays a valid
artifact at every point: if TensorRT is missing or its build fails, the ONNX artifacts (and the FP16 ONNX) remain
usable. After a build the engine is validated (``export.trt.inspect``): parity against ONNX Runtime FP32 on the
photographs and the layer information proving SGE's normalisation runs in FP32, both saved beside the plan.
"""

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import Manifest, load_manifest, write_json, write_manifest
from export.fp16 import Fp16ConversionError, fp16_refusal, write_fp16_onnx
from export.trt.build import EngineResult, build_engine, record_engine
from export.trt.inspect import (
    LAYERS_NAME,
    PARITY_NAME,
    EngineParityError,
    IslandReport,
    ParityReport,
    check_fp32_islands,
    engine_layer_info,
    engine_parity,
)
from export.trt.route import TrtBuildOptions
from export.validate import onnxruntime_runner

logger = logging.getLogger(__name__)

FP16_ONNX_NAME = "model_fp16.onnx"
INT8_S8S8_ROLE = "model-int8-s8s8"  # the symmetric Q/DQ ONNX TensorRT builds strongly typed (INT8 engineer)


@dataclass(frozen=True)
class Fp16Parity:
    """The FP16-islands ONNX against the FP32 ONNX (itself verified against eager PyTorch), both on ORT CPU."""

    cases: int
    max_abs: float
    max_rel: float  # max |Δ| / max |reference logit|, per case, worst case
    top1_agreement: float
    reference_max: float = 0.0  # the largest |FP32 logit|: beyond FP16's range the FP16 output is Inf on a GPU

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


FP16_MAX = 65504.0  # the largest finite float16


def compare_fp16(fp32_onnx: Path, fp16_onnx: Path, batch: np.ndarray, *, input_name: str) -> Fp16Parity:
    ref, got = (onnxruntime_runner(p, input_name=input_name)(batch) for p in (fp32_onnx, fp16_onnx))
    diff = np.abs(got - ref)
    rel = diff.max(axis=1) / np.abs(ref).max(axis=1)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    return Fp16Parity(
        cases=len(batch),
        max_abs=float(diff.max()),
        max_rel=float(rel.max()),
        top1_agreement=agree,
        reference_max=float(np.abs(ref).max()),
    )


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
    if not parity.reference_max <= FP16_MAX:  # ORT's CPU graph skips casts, so its FP16 run stayed finite
        path.unlink()
        raise Fp16ConversionError(
            f"the FP32 logits reach {parity.reference_max:.4g} on the photographs, beyond FP16's {FP16_MAX:g}: the "
            "FP16 graph would give Inf on a GPU; keep FP32 (no --fp16-onnx, --trt fp32)"
        )
    manifest.record(directory, FP16_ONNX_NAME, role="model-fp16")
    manifest.parity["fp16_onnx"] = {"against": manifest.deploy, "inputs": "photographs", **parity.to_dict()}
    manifest.extra["fp16_onnx"] = {"file": FP16_ONNX_NAME, "policy": plan.to_dict()}
    write_manifest(directory, manifest)
    logger.info("FP16 ONNX: %s, top-1 agreement %.3f, max rel %.4f", path.name, parity.top1_agreement, parity.max_rel)
    return path, parity


@dataclass
class EngineValidation:
    parity: ParityReport
    islands: IslandReport

    @property
    def passed(self) -> bool:  # a layer of an island proven not FP32 fails; an unproven island is reported
        return self.parity.passed and not self.islands.not_fp32


def add_engine(
    directory: str | Path, *, options: TrtBuildOptions, validate: bool = True, photos: np.ndarray | None = None
) -> tuple[EngineResult, EngineValidation | None]:
    """Build ``model.plan`` from the artifact's ONNX (its FP16 or Q/DQ INT8 ONNX when present), validate it, record
    it; raise ``EngineParityError`` (after recording, so the evidence stays) when the validation fails."""
    directory = Path(directory)
    manifest = load_manifest(directory, verify=True)
    if options.precision == "fp16" and options.fp16_onnx is None and FP16_ONNX_NAME in manifest.files:
        options = replace(options, fp16_onnx=directory / FP16_ONNX_NAME)
    s8s8 = [name for name, entry in manifest.files.items() if entry.role == INT8_S8S8_ROLE]
    if options.precision == "int8" and options.int8_onnx is None and s8s8:
        options = replace(options, int8_onnx=directory / s8s8[0])
    if options.precision == "int8" and options.mean == TrtBuildOptions.mean:
        pre = manifest.preprocessing
        options = replace(options, mean=tuple(pre["mean"]), std=tuple(pre["std"]))
    result = build_engine(directory / manifest.deploy, directory, options=options)
    drop_validation(manifest, directory)  # the previous plan's verdict and reports say nothing of this one
    record_engine(manifest, directory, result.info)
    _record_calibration_cache(manifest, directory, result)
    validation = None
    try:
        if validate:
            validation = validate_engine(directory, manifest, result, photos=photos)
    finally:  # the new plan is on disk: the manifest records it whatever the validation did
        write_manifest(directory, manifest)
    if validation is not None and not validation.passed:
        raise EngineParityError(_failure(validation))
    return result, validation


ENGINE_LAYERS_ROLE, ENGINE_PARITY_ROLE = "engine-layers", "engine-parity"


def drop_validation(manifest: Manifest, directory: Path) -> None:
    """Forget the recorded plan's validation (its reports and parity verdict), files included, until
    ``validate_engine`` validates the plan now on disk."""
    for name in [n for n, e in manifest.files.items() if e.role in (ENGINE_LAYERS_ROLE, ENGINE_PARITY_ROLE)]:
        del manifest.files[name]
        (directory / name).unlink(missing_ok=True)
    manifest.parity.pop("tensorrt", None)


def validate_engine(
    directory: Path, manifest: Manifest, result: EngineResult, *, photos: np.ndarray | None = None
) -> EngineValidation:
    """Parity against ONNX Runtime FP32 on the photographs and the FP32-islands check; both JSONs beside the plan."""
    import onnx

    from export.fp16 import plan_precision
    from export.trt.pinning import parser_aliases
    from models.transforms import photo_batch

    pre = manifest.preprocessing
    if photos is None:
        photos = photo_batch(tuple(pre["input_size"]), mean=tuple(pre["mean"]), std=tuple(pre["std"]))
    fp32_onnx = directory / manifest.deploy
    parity = engine_parity(
        result.plan, fp32_onnx, photos, precision=result.info["precision"], input_name=manifest.inputs[0].name
    )
    layer_info = engine_layer_info(result.plan)
    graph = onnx.load(str(fp32_onnx), load_external_data=False)
    plan = plan_precision(graph)
    islands = check_fp32_islands(layer_info, {n for island in plan.islands for n in island}, parser_aliases(graph))
    write_json(directory / LAYERS_NAME, layer_info)
    write_json(directory / PARITY_NAME, {"parity": parity.to_dict(), "fp32_islands": islands.to_dict()})
    manifest.record(directory, LAYERS_NAME, role=ENGINE_LAYERS_ROLE)
    manifest.record(directory, PARITY_NAME, role=ENGINE_PARITY_ROLE)
    manifest.parity["tensorrt"] = {
        "file": PARITY_NAME,
        "passed": parity.passed,
        "max_rel": parity.max_rel,
        "top1_agreement": parity.top1_agreement,
        "fp32_islands_proven": islands.proven,
    }
    if not islands.proven:
        logger.warning(
            "could not prove every SGE normalisation layer runs in FP32 (%d unknown, %d nodes not found); see %s",
            len(islands.unknown),
            len(islands.nodes_not_found),
            LAYERS_NAME,
        )
    return EngineValidation(parity, islands)


def _failure(validation: EngineValidation) -> str:
    p, problems = validation.parity, []
    if not p.passed:
        problems.append(
            f"{p.precision} engine vs ONNX Runtime FP32 on {p.cases} photographs: max |Δ| {p.max_rel:.2%} of the "
            f"largest logit (gate {p.gate.max_rel:.2%}), top-1 agreement {p.top1_agreement:.0%} "
            f"(gate {p.gate.min_top1:.0%})"
        )
    if validation.islands.not_fp32:
        bad = validation.islands.not_fp32
        problems.append(
            f"{len(bad)} SGE normalisation layers are not FP32 (first: {bad[0]['layer']} in {bad[0]['precision']})"
        )
    return f"the TensorRT engine failed validation: {'; '.join(problems)}; see {PARITY_NAME} and {LAYERS_NAME}"


def _record_calibration_cache(manifest: Manifest, directory: Path, result: EngineResult) -> None:
    calibration = result.info.get("calibration")
    if calibration and (directory / calibration["cache"]).is_file():
        manifest.record(directory, calibration["cache"], role="calibration-cache")
        if (directory / (calibration["cache"] + ".json")).is_file():  # what the scales were computed from
            manifest.record(directory, calibration["cache"] + ".json", role="calibration-info")
