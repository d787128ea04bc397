"""The fused stage of an export (export/pipeline.py): the model with each SGE block tail as one ``SgeResidual`` op,
written as ``model.sge_fused.onnx`` beside the portable graph and checked against the eager model on its own, and
the manifest's record of it."""

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from export.artifacts import atomic_path, write_json
from export.external_data import data_file_for, save_with_external_weights, share_mode
from export.metadata import set_metadata
from export.onnx_export import check_io, check_onnx, export_onnx
from export.ort_sge.graph import DOMAIN, OP_TYPE, fuse_sge_residual
from export.ort_sge.kernels import KernelUnavailableError, kernel_library
from export.parity import ParityReport
from export.simplify import simplify
from export.source import ExportSource
from export.spec import ExportSpec
from export.validate import onnxruntime_runner, run_parity

logger = logging.getLogger(__name__)

FUSED_NAME = "model.sge_fused.onnx"  # ONNX Runtime CPU only: needs the custom-op library (export/ort_sge/kernels)
FUSED_DATA_NAME = data_file_for(FUSED_NAME)  # its weights, mapped by ORT instead of parsed (export/external_data.py)
FUSED_PARITY_NAME = "parity_sge_fused.json"


def export_fused_graph(
    source: ExportSource, *, spec: ExportSpec, photos: Any, props: dict[str, str], num_classes: int, out: Path
) -> tuple[Path, ParityReport] | None:
    """``model.sge_fused.onnx`` (and its weights file) in ``out`` with its parity report against the eager model
    (``parity_sge_fused.json``), or None: with a warning where the kernel library is unavailable here, silently where
    the model has no SGE block tail to fuse."""
    try:
        kernel_library()  # installed and intact? without it the graph cannot be checked
    except KernelUnavailableError as err:
        logger.warning("%s; writing no %s (model.onnx is complete without it)", err, FUSED_NAME)
        return None
    fused_model, blocks = fuse_sge_residual(source.model)
    if blocks == 0:  # SGE layers outside a ResNet block's tail: nothing to fuse
        return None
    fused_spec = replace(spec, exporter="torchscript")  # the op's symbolic is the TorchScript exporter's
    with tempfile.TemporaryDirectory(prefix="sge-fused-") as tmp:
        raw = check_onnx(export_onnx(fused_model, Path(tmp) / "fused.onnx", spec=fused_spec))
    final = simplify(raw, simplifier=spec.simplifier)
    check_io(final, spec=spec, num_classes=num_classes)
    path = out / FUSED_NAME
    with atomic_path(path) as tmp_path:
        final = set_metadata(final, {**props, "exporter": "torchscript", "sge_fused_blocks": str(blocks)})
        data = save_with_external_weights(final, tmp_path, data_name=FUSED_DATA_NAME)
    share_mode(data, path)
    runner = onnxruntime_runner(path, input_name=spec.input_name, fused=True)
    report = run_parity(source.model, runner, spec=spec, photos=photos, backend="onnxruntime (sge_fused)")
    write_json(out / FUSED_PARITY_NAME, report.to_dict())
    return path, report


def fused_manifest_entry(parity: ParityReport | None) -> dict[str, Any] | None:
    """What the manifest says of the fused graph (None without its parity report: no graph was written)."""
    if parity is None:
        return None
    return {
        "file": FUSED_NAME,
        "weights": FUSED_DATA_NAME,
        "op": f"{DOMAIN}::{OP_TYPE}",
        "parity": parity.summary(),
        "runs_on": "onnxruntime CPU with the custom-op library built at install (export/ort_sge/kernels)",
    }
