"""``export_model``: a registry model, a ``package.module:factory`` spec (models/factory.py) or any image classifier
module → a verified ONNX artifact directory.

Stages: load (model, checkpoint, photographs, and one eager forward at the example size, so every bad input fails
before any file is written) → export (torch.onnx.export, checker, shape inference) → simplify (op counts before
and after, batch still symbolic, metadata) → parity (eager vs ONNX Runtime, parity.json) → fused (SGE models only:
the same model with each SGE + residual add + ReLU as one custom op, ``model.sge_fused.onnx``, with its own parity
file; ONNX Runtime's CPU runner prefers it) → int8 (on request: calibrated Q/DQ graphs, export/int8/; each is
recorded only if it passes its INT8 parity) → manifest (written last, only when every parity check passed).

The export is a transaction (export/transaction.py): every file is written into a staging directory beside the
target, which is swapped in only when every check passed. A failed or interrupted export leaves the previous
artifact exactly as it was; two exports to one directory cannot interleave (the second fails, naming the lock).
"""

import copy
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from export.artifacts import (
    MANIFEST_NAME,
    atomic_path,
    write_json,
    write_manifest,
)
from export.export_manifest import ONNX_NAME, compact_sge_layers, export_manifest, sge_layers
from export.int8.calibration import CalibrationOptions
from export.int8.roles import INT8_FUSED_NAME, INT8_NAME, INT8_S8S8_NAME, parity_file
from export.metadata import build_metadata, set_metadata
from export.onnx_export import check_io, check_onnx, export_onnx, op_counts, opset_of
from export.ort_sge.export_stage import (
    FUSED_DATA_NAME,
    FUSED_NAME,
    FUSED_PARITY_NAME,
    export_fused_graph,
)
from export.ort_sge.session import FUSED_DATA_ROLE, FUSED_ROLE
from export.parity import ParityReport
from export.sge_compact import compact_sge, restore_batch_symbol
from export.simplify import simplify
from export.source import ExportSource, load_source, probe_num_classes
from export.spec import ExportSpec
from export.transaction import artifact_transaction
from export.validate import eager_runner, onnxruntime_runner, parity_inputs, photo_inputs, run_parity

logger = logging.getLogger(__name__)

PARITY_NAME = "parity.json"
INT8_FILES = (
    *(INT8_NAME, INT8_S8S8_NAME, INT8_FUSED_NAME),
    *map(parity_file, (INT8_NAME, INT8_S8S8_NAME, INT8_FUSED_NAME)),
)
STAGES = ("load", "export", "simplify", "parity", "fused", "int8", "manifest")
# What an export of this pipeline writes: an artifact holding these beside what its manifest records may be replaced.
ARTIFACT_NAMES = frozenset(
    {ONNX_NAME, PARITY_NAME, FUSED_NAME, FUSED_DATA_NAME, FUSED_PARITY_NAME, MANIFEST_NAME, *INT8_FILES}
)

# Called with (stage, None) when a stage starts and (stage, seconds) when it ends.
ProgressCallback = Callable[[str, float | None], None]


@dataclass
class ExportResult:
    model: str
    output_dir: Path
    spec: ExportSpec
    parity: ParityReport
    onnx_path: Path | None  # None when parity failed
    parity_path: Path | None  # None when parity failed: nothing was written (``parity`` holds the report)
    manifest_path: Path | None  # None when parity failed: the previous artifact, if any, was left as it was
    fused_path: Path | None = None  # model.sge_fused.onnx, for SGE models when the kernel compiled here
    fused_parity: ParityReport | None = None
    int8: Any = None  # export.int8.stage.Int8Result when INT8 graphs were asked for
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    opset: int | None = None
    kept_previous: bool = False  # the INT8 graphs failed and an artifact was there: it was left as it was

    @property
    def passed(self) -> bool:
        return self.parity.passed and (self.fused_parity is None or self.fused_parity.passed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "output_dir": str(self.output_dir),
            "onnx": str(self.onnx_path) if self.onnx_path else None,
            "parity_json": str(self.parity_path) if self.parity_path else None,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "spec": self.spec.to_dict(),
            "ops_before": self.ops_before,
            "ops_after": self.ops_after,
            "stage_seconds": self.stage_seconds,
            "parity": self.parity.to_dict(),
            "sge_fused": str(self.fused_path) if self.fused_path else None,
            "sge_fused_parity": self.fused_parity.to_dict() if self.fused_parity else None,
            "int8": self.int8.to_dict() if self.int8 is not None else None,
        }


def default_output_dir(name_or_module: str | nn.Module) -> Path | None:
    """``artifacts/<name>`` where the name is known before the model loads (a registry model's); else None."""
    import models

    if isinstance(name_or_module, str) and name_or_module in models.MODEL_CONFIGS:
        return Path("artifacts") / models.get_config(name_or_module).name
    return None


def prepare_for_export(model: nn.Module, *, spec: ExportSpec) -> nn.Module:
    """The one place where a module is rewritten for export: SGE layers → CompactSGE unless sge_form="official".

    Returns a rewritten copy (``model`` is untouched). Parity always compares the exported graph with the ORIGINAL
    eager module, so a rewrite is verified too.
    """
    if spec.sge_form == "official":
        return model
    return compact_sge(copy.deepcopy(model), input_size=None if spec.dynamic_hw else spec.input_size)


def export_model(
    name_or_module: str | nn.Module,
    output_dir: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    init: str = "calibrated",
    images: Sequence[str | Path] | None = None,
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    check: bool = True,
    progress: ProgressCallback | None = None,
    spec: ExportSpec | None = None,
    int8: CalibrationOptions | None = None,
    fp16_follows: bool = False,
    **spec_options: Any,
) -> ExportResult:
    """Export, simplify, verify and package a model; returns paths, op counts, stage times and the parity report.

    ``spec_options`` are ExportSpec fields (``input_size=(h, w)``, ``dynamic_hw``, ``opset``, ``simplifier``,
    ``atol``, ``rtol``, ...). With ``check`` a parity failure raises ParityError; either way a model that failed
    parity writes nothing and ``output_dir`` keeps the previous artifact, if any, exactly as it was. ``int8`` adds
    the INT8 graphs (export/int8/); one that fails its INT8 parity is left out of the manifest (``result.int8.passed``
    is then False). ``fp16_follows``: an FP16 graph or engine will be made from this export, so a model whose FP16
    graph would be unsafe (export/fp16.py) is refused once loaded, before any file is written.
    """
    if spec is not None and spec_options:
        raise TypeError(f"give either spec or ExportSpec fields, not both; got spec and {sorted(spec_options)}")
    spec = spec or ExportSpec(**spec_options)
    times: dict[str, float] = {}
    stage = _stage_timer(times, progress)

    output_dir = Path(output_dir) if output_dir is not None else default_output_dir(name_or_module)
    if images:  # an unreadable photograph (a folder, a text file) is refused before the model loads
        from models.transforms import check_image

        for image in images:
            check_image(image)  # its header only: the photographs are decoded once, after the load
    with ExitStack() as stack:
        # an output known before the load is locked first: a second export to it fails at once, not after the load
        # (where its folder is still to be made, the lock waits: a failed load must leave no folder behind)
        transaction = None
        if output_dir is not None and output_dir.parent.is_dir():
            transaction = stack.enter_context(artifact_transaction(output_dir, replaceable=ARTIFACT_NAMES))
        with stage("load"):
            source = load_source(
                name_or_module, checkpoint=checkpoint, init=init, model_name=model_name, model_kwargs=model_kwargs or {}
            )
            if fp16_follows:
                _refuse_unsafe_fp16(source, spec=spec)
            photos = photo_inputs(spec.input_size, mean=source.mean, std=source.std, images=images)
            num_classes = probe_num_classes(source, spec)
            calibration = _calibration(int8, spec=spec, source=source)  # bad calibration images fail before any file
        output_dir = output_dir or Path("artifacts") / source.name
        if transaction is None:
            transaction = stack.enter_context(artifact_transaction(output_dir, replaceable=ARTIFACT_NAMES))
        result = _export_into(
            transaction.staging,
            source=source,
            spec=spec,
            photos=photos,
            num_classes=num_classes,
            stage=stage,
            int8=int8,
            calibration=calibration,
        )
        # the commit swaps the target's directory out: a relative path through the working directory would then
        # name the deleted one (--output .), so the result's paths use the absolute target there
        cwd_inside = Path.cwd().resolve().is_relative_to(transaction.target)
        result.stage_seconds, result.output_dir = times, transaction.target if cwd_inside else output_dir
        if not result.passed:
            logger.error("parity failed; %s was left as it was (nothing written)", output_dir)
            result.parity_path = result.onnx_path = result.fused_path = None
            if check:
                for failed in (result.parity, result.fused_parity):
                    if failed is not None:
                        failed.raise_for_failures()
            return result
        if result.int8 is not None and not result.int8.passed and (transaction.target / MANIFEST_NAME).is_file():
            # only a first export publishes its FP32 graphs without the failed INT8 ones: a re-export never
            # replaces an artifact (which may hold INT8 graphs that passed) with less than it asked for
            logger.error("INT8 parity failed; the artifact in %s was left as it was (nothing written)", output_dir)
            result.kept_previous = True
            result.parity_path = result.onnx_path = result.fused_path = None
            return result
        with stage("manifest"):
            manifest = export_manifest(source, spec=spec, opset=result.opset, num_classes=num_classes, result=result)
            manifest.record(transaction.staging, ONNX_NAME, role="model")
            manifest.record(transaction.staging, PARITY_NAME, role="report")
            if result.fused_path is not None:
                manifest.record(transaction.staging, FUSED_NAME, role=FUSED_ROLE)
                manifest.record(transaction.staging, FUSED_DATA_NAME, role=FUSED_DATA_ROLE)
                manifest.record(transaction.staging, FUSED_PARITY_NAME, role="report")
            for graph in result.int8.graphs if result.int8 is not None else ():
                if graph.passed:
                    manifest.record(transaction.staging, graph.name, role=graph.role)
                # a failed graph's report stays, and is recorded: unrecorded, every later validate warned of it
                manifest.record(transaction.staging, graph.parity_name, role="report")
            write_manifest(transaction.staging, manifest)
        transaction.commit()  # the swap: from here on output_dir is the new artifact
    final = result.output_dir  # the absolute target when the working directory is inside it (see above)
    result.onnx_path, result.parity_path = final / ONNX_NAME, final / PARITY_NAME
    result.manifest_path = final / MANIFEST_NAME
    if result.fused_path is not None:
        result.fused_path = final / FUSED_NAME
    return result


def _export_into(
    out: Path,
    *,
    source: ExportSource,
    spec: ExportSpec,
    photos: Any,
    num_classes: int,
    stage: Callable[[str], Any],
    int8: CalibrationOptions | None = None,
    calibration: Any = None,
) -> ExportResult:
    """Every stage up to the manifest, writing into ``out`` (the transaction's staging directory)."""
    onnx_path, parity_path = out / ONNX_NAME, out / PARITY_NAME
    with stage("export"), tempfile.TemporaryDirectory(prefix="sge-export-") as tmp:
        raw_path = export_onnx(prepare_for_export(source.model, spec=spec), Path(tmp) / "raw.onnx", spec=spec)
        raw = check_onnx(raw_path)
    with stage("simplify"):
        final = simplify(raw, simplifier=spec.simplifier)
        if spec.sge_form == "compact":
            final = restore_batch_symbol(final)  # after the simplifier, which may re-infer shapes
        check_io(final, spec=spec, num_classes=num_classes)
        opset = opset_of(final)
        props = build_metadata(
            model_name=source.name,
            input_name=spec.input_name,
            input_shape=spec.input_shape,
            mean=source.mean,
            std=source.std,
            num_classes=num_classes,
            checkpoint_sha256=source.checkpoint_sha256,
            exporter=spec.exporter,
            opset=opset,
        )
        with atomic_path(onnx_path) as tmp_onnx:
            onnx.save(set_metadata(final, props), str(tmp_onnx))
            check_onnx(tmp_onnx)  # the file that ships passes the full check, shape inference included
    with stage("parity"):
        runner = onnxruntime_runner(onnx_path, input_name=spec.input_name, fused=False)
        report = run_parity(source.model, runner, spec=spec, photos=photos, backend="onnxruntime")
        write_json(parity_path, report.to_dict())

    fused_path, fused_report = None, None
    if spec.fused_sge and sge_layers(source.model) and report.passed:
        with stage("fused"):
            fused = export_fused_graph(source, spec=spec, photos=photos, props=props, num_classes=num_classes, out=out)
            if fused is not None:
                fused_path, fused_report = fused
    int8_result = None
    if int8 is not None and report.passed and (fused_report is None or fused_report.passed):
        with stage("int8"):
            int8_result = _export_int8(
                source,
                spec=spec,
                photos=photos,
                calibration=calibration,
                options=int8,
                out=out,
                fp32_onnx=onnx_path,
                fused_onnx=fused_path,
            )
    return ExportResult(
        model=source.name,
        output_dir=out,
        spec=spec,
        parity=report,
        onnx_path=onnx_path,
        parity_path=parity_path,
        manifest_path=None,
        fused_path=fused_path,
        fused_parity=fused_report,
        int8=int8_result,
        ops_before=dict(op_counts(raw).most_common()),
        ops_after=dict(op_counts(final).most_common()),
        opset=opset,
    )


def _refuse_unsafe_fp16(source: ExportSource, *, spec: ExportSpec) -> None:
    from export.fp16 import Fp16ConversionError, fp16_refusal

    refusal = fp16_refusal(model=source.name, compact_sge_layers=compact_sge_layers(source.model, spec))
    if refusal:
        raise Fp16ConversionError(refusal)


def _calibration(options: CalibrationOptions | None, *, spec: ExportSpec, source: ExportSource) -> Any:
    if options is None:
        return None
    from export.int8.calibration import Int8RequestError, calibration_batch

    if compact_sge_layers(source.model, spec):
        raise Int8RequestError(
            f"{source.name} with --sge-form compact: the INT8 export cannot find (and keep float) the compact SGE's "
            "normalisation; re-export with --sge-form official for --int8"
        )

    return calibration_batch(options, size=spec.input_size, mean=source.mean, std=source.std)


def _export_int8(
    source: ExportSource,
    *,
    spec: ExportSpec,
    photos: Any,
    calibration: Any,
    options: CalibrationOptions,
    out: Path,
    fp32_onnx: Path,
    fused_onnx: Path | None,
) -> Any:
    """The INT8 stage (export/int8/stage.py) on this export's graphs, checked against the eager model."""
    from export.int8.stage import add_int8_graphs

    inputs = parity_inputs(spec, photos, every_photo=True)  # the INT8 photo gates judge every photograph
    return add_int8_graphs(
        out,
        eager=eager_runner(source.model),
        fp32_onnx=fp32_onnx,
        fused_onnx=fused_onnx,
        calibration=calibration,
        options=options,
        photos=inputs["photos"],
        random_inputs=inputs["random"],
        input_name=spec.input_name,
        batch_sizes=spec.batch_sizes,
        photo_set=len(photos),
    )


def _stage_timer(times: dict[str, float], progress: ProgressCallback | None) -> Callable[[str], Any]:
    @contextmanager
    def stage(name: str) -> Iterator[None]:
        if progress:
            progress(name, None)
        start = time.perf_counter()
        yield
        times[name] = time.perf_counter() - start
        logger.info("stage %s: %.2f s", name, times[name])
        if progress:
            progress(name, times[name])

    return stage
