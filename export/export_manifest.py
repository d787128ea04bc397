"""What an export's ``manifest.json`` records about it: the model's input and output, preprocessing, versions, parity,
where the model came from, and how many SGE layers it has and in which form (written last by export/pipeline.py)."""

from dataclasses import replace
from typing import TYPE_CHECKING

from torch import nn

from export.artifacts import Manifest, TensorSpec
from export.metadata import tool_versions
from export.ort_sge.export_stage import fused_manifest_entry
from export.source import ExportSource
from export.spec import ExportSpec
from models.layers.sge import SpatialGroupEnhance

if TYPE_CHECKING:
    from export.pipeline import ExportResult

ONNX_NAME = "model.onnx"


def sge_layers(model: nn.Module) -> int:
    """How many SGE layers ``model`` holds."""
    return sum(isinstance(m, SpatialGroupEnhance) for m in model.modules())


def compact_sge_layers(model: nn.Module, spec: ExportSpec) -> int:
    """How many SGE layers ``prepare_for_export`` rewrote into the compact form."""
    return sge_layers(model) if spec.sge_form == "compact" else 0


def manifest_input(source: ExportSource, spec: ExportSpec) -> TensorSpec:
    """The manifest's input: with --dynamic-hw, the smallest side the model takes (export/min_side.py)."""
    if not spec.dynamic_hw:
        return spec.input_spec()
    from export.min_side import smallest_input_side

    return replace(spec.input_spec(), min_side=smallest_input_side(source.model, min(spec.input_size)))


def export_manifest(
    source: ExportSource, *, spec: ExportSpec, opset: int | None, num_classes: int, result: "ExportResult"
) -> Manifest:
    from models.transforms import eval_preprocessing

    return Manifest(
        model=source.name,
        deploy=ONNX_NAME,
        inputs=[manifest_input(source, spec)],
        outputs=[spec.output_spec(num_classes)],
        opset=opset,
        preprocessing={**eval_preprocessing(spec.input_size), "mean": list(source.mean), "std": list(source.std)},
        versions=tool_versions(spec.simplifier),
        parity=result.parity.summary(),
        extra={
            "source": {
                "registry": source.registry,
                "factory": source.factory,
                "checkpoint": str(source.checkpoint) if source.checkpoint else None,
                "checkpoint_sha256": source.checkpoint_sha256,
                "init": source.init,
                "num_classes": num_classes,
                "block_overrides": source.model_kwargs,
            },
            "spec": spec.to_dict(),
            "sge_layers": sge_layers(source.model),  # runners warn where reduced precision can hurt SGE
            # SGE layers exported in the compact form (whose normalisation the FP16 converter cannot keep FP32)
            "compact_sge_layers": compact_sge_layers(source.model, spec),
            "sge_fused": fused_manifest_entry(result.fused_parity) if result.fused_path is not None else None,
            "int8": result.int8.to_dict() if result.int8 is not None else None,
            "ops_before": result.ops_before,
            "ops_after": result.ops_after,
            "stage_seconds": {k: round(v, 3) for k, v in result.stage_seconds.items()},
        },
    )
