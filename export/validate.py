"""Run parity: eager PyTorch against an exported model on seeded random inputs and on real photographs.

A case that fails the FP32 gates is re-checked against a float64 copy of the eager model (export/parity.py: the
FP32 noise floor), so an ill-conditioned network is not mistaken for an unfaithful export.

Inputs at each batch size (1, 3, 8 by default; the exporter saw only batch 2): a seeded standard-normal batch, and
photographs through the ImageNet eval transform (resize the shorter side to crop/0.875, centre-crop, mean/std),
cycled to fill the batch: scikit-image's bundled photographs, or the user's ``images``.
``validate_artifact`` re-runs this on an existing artifact directory after verifying its hashes.
"""

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from export.artifacts import ArtifactError, check_unchanged, file_sha256, load_verified
from export.manifest_metadata import check_graph_metadata
from export.metadata import read_metadata
from export.parity import ParityReport, evaluate_case
from export.spec import ExportSpec

logger = logging.getLogger(__name__)

Runner = Callable[[np.ndarray], np.ndarray]
BACKENDS = ("onnxruntime",)


def photo_inputs(
    size: tuple[int, int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    images: Sequence[str | Path] | None = None,
) -> np.ndarray:
    """(N, 3, h, w) float32: the given image files, or the bundled photographs, eval-transformed."""
    from models.transforms import load_transformed, photo_batch

    if not images:
        return photo_batch(size, mean=tuple(mean), std=tuple(std))
    return np.stack([load_transformed(p, size=size, mean=tuple(mean), std=tuple(std)) for p in images])


def parity_inputs(spec: ExportSpec, photos: np.ndarray, *, every_photo: bool = False) -> dict[str, np.ndarray]:
    """One batch per input kind, as large as the largest parity batch; batch ``b`` is its first ``b`` images.

    "random": seeded standard normal; "photos": the photographs, cycled to fill the batch, and with ``every_photo``
    never fewer than all of them (the INT8 gates judge the full set: export/int8/parity.py).
    """
    n = max(spec.batch_sizes)
    rng = np.random.default_rng(spec.seed)
    count = max(n, len(photos)) if every_photo else n
    return {
        "random": rng.standard_normal((n, 3, *photos.shape[2:]), dtype=np.float32),
        "photos": np.ascontiguousarray(photos[np.arange(count) % len(photos)]),
    }


def onnxruntime_runner(path: str | Path, *, input_name: str, fused: bool | None = None) -> Runner:
    """An ONNX Runtime CPU session as a function of one input array (fused-SGE graphs included)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "parity needs ONNX Runtime: pip install 'sge-deploy[onnxruntime]' (or [onnxruntime-gpu])"
        ) from err
    from export.ort_sge.session import cpu_session, plan_session

    session = cpu_session(plan_session(path, fused=fused), spinning=False)  # PyTorch runs in the same process
    return lambda x: session.run(None, {input_name: x})[0]


def make_runner(backend: str, path: str | Path, *, input_name: str, fused: bool | None = None) -> Runner:
    if backend == "onnxruntime":
        return onnxruntime_runner(path, input_name=input_name, fused=fused)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


@torch.no_grad()
def run_parity(
    model: nn.Module, runner: Runner, *, spec: ExportSpec, photos: np.ndarray, backend: str = "onnxruntime"
) -> ParityReport:
    """Eager ``model`` against ``runner`` on every parity input; the report holds every case, passed or not.

    The eager reference runs once per input kind on the largest batch (per-sample results do not depend on the
    batch beyond FP32 rounding); the candidate runs at every batch size, which is what exercises its batch axis.
    """
    model = model.eval()
    exact_model: nn.Module | None = None  # a float64 copy, built only if a case fails the FP32 gates
    report = ParityReport(backend=backend, atol=spec.atol, rtol=spec.rtol)
    for kind, x in parity_inputs(spec, photos).items():
        reference = model(torch.from_numpy(x)).numpy()
        exact = None
        for batch in spec.batch_sizes:
            ref, candidate = reference[:batch], runner(np.ascontiguousarray(x[:batch]))
            case = evaluate_case(kind, ref, candidate, atol=spec.atol, rtol=spec.rtol)
            if case.failures and case.stats is not None and spec.noise_floor:
                if exact is None:
                    exact_model = exact_model or copy.deepcopy(model).double()
                    exact = exact_model(torch.from_numpy(x).double()).numpy()
                case = evaluate_case(kind, ref, candidate, atol=spec.atol, rtol=spec.rtol, exact=exact[:batch])
            logger.info("parity %s batch %d: %s", kind, batch, case.stats)
            report.cases.append(case)
    return report


def validate_artifact(
    directory: str | Path,
    *,
    backend: str = "onnxruntime",
    images: Sequence[str | Path] | None = None,
    batch_sizes: Sequence[int] | None = None,
    checkpoint: str | Path | None = None,
    graphs: Sequence[str] | None = None,
) -> dict[str, ParityReport]:
    """Verify the artifact's hashes once, rebuild the eager reference it was exported from, and re-run parity on each
    of ``graphs`` (the artifact's ONNX files; default: the deploy file): ``check_graphs`` on ``open_reference``."""
    reference = open_reference(directory, images=images, batch_sizes=batch_sizes, checkpoint=checkpoint)
    return check_graphs(reference, backend=backend, graphs=graphs)


def check_graphs(
    reference: "Reference", *, backend: str = "onnxruntime", graphs: Sequence[str] | None = None
) -> dict[str, ParityReport]:
    """Parity of each of ``graphs`` (default: the deploy file) against the reference's eager model. A graph whose
    runner cannot be opened because the fused SGE kernel is not available here (not built at install, or refused by
    its checks) is left out, with a warning; the result maps file → report."""
    from export.ort_sge.kernels import KernelUnavailableError
    from export.ort_sge.session import FusedPlanError, fused_graph_file

    manifest, spec = reference.manifest, reference.spec
    graphs = list(graphs or [manifest.deploy])
    onnx_files = sorted(name for name in manifest.files if name.endswith(".onnx"))
    unknown = [graph for graph in graphs if graph not in onnx_files]
    if unknown:
        raise ArtifactError(
            f"{reference.directory} records no ONNX file {', '.join(unknown)}; it has {', '.join(onnx_files)}"
        )
    reports = {}
    for graph in graphs:
        try:
            fused = graph == fused_graph_file(manifest)
            runner = make_runner(backend, reference.directory / graph, input_name=spec.input_name, fused=fused)
        except (KernelUnavailableError, FusedPlanError) as err:  # only the fused graph needs the kernel and a plan
            logger.warning("%s; %s not checked", err, graph)
            continue
        label = backend if graph == manifest.deploy else f"{backend} ({graph})"
        try:
            reports[graph] = run_parity(reference.model, runner, spec=spec, photos=reference.photos, backend=label)
        except Exception as err:
            if not type(err).__module__.startswith(("onnxruntime", "openvino")):
                raise
            raise ArtifactError(  # the graph refused what extra.spec says it takes: an edited or swapped manifest
                f"{graph} cannot run the input extra.spec records ({spec.input_name!r} at {spec.input_size}): "
                f"{' '.join(str(err).split())[:200]}; the manifest does not belong to this graph: re-export it"
            ) from None
    check_unchanged(reference.directory, reference.identities)  # what was checked is what was verified
    return reports


def check_int8_graphs(reference: "Reference") -> "Int8Result":  # noqa: F821
    """Each recorded INT8 graph through the export's own INT8 check (export/int8/stage.py: its gates against eager
    PyTorch and the FP32 deploy graph, and its structure) on this machine's ONNX Runtime: integer kernels differ
    between CPUs (x86 without VNNI saturates 8-bit weights), so the export machine's pass need not hold here. The
    fused INT8 graph is left out, with a warning, where the fused SGE kernel is unavailable; an artifact without
    INT8 graphs is an ArtifactError."""
    from export.int8.roles import (
        INT8_FUSED_ROLE,
        INT8_S8S8_ROLE,
        SCHEME_OF_ROLE,
        file_with_role,
        int8_record,
        int8_saturates,
        int8_weight_bits,
        missing_int8_graph,
    )
    from export.int8.stage import Int8Result, check_int8_graph, int8_references
    from export.ort_sge.kernels import KernelUnavailableError, kernel_library

    manifest, spec = reference.manifest, reference.spec
    plan = [(name, role) for role in SCHEME_OF_ROLE if (name := file_with_role(manifest, role))]
    if not plan:
        raise ArtifactError(
            f"{reference.directory} has no INT8 graph to check: "
            f"{missing_int8_graph(manifest, fused=True, directory=reference.directory)}"
        )
    inputs = parity_inputs(spec, reference.photos, every_photo=True)  # the INT8 photo gates judge every photograph
    fp32_onnx = reference.directory / manifest.deploy
    references = int8_references(
        eager_runner(reference.model), fp32_onnx, inputs, input_name=spec.input_name, batch_sizes=spec.batch_sizes
    )
    result = Int8Result(calibration=dict(int8_record(manifest).get("calibration", {})))
    for name, role in plan:
        library = None
        if role == INT8_S8S8_ROLE and int8_saturates(manifest, name):  # TensorRT's graph, which no CPU deploys
            logger.warning(
                "%s (TensorRT's S8S8 graph, 8-bit weights) not judged here: this CPU's integer kernels add pairs of "
                "products in 16 bits (no VNNI or AMX), which saturates it; TensorRT sums in 32 bits",
                name,
            )
            continue
        if role == INT8_FUSED_ROLE:
            try:
                library = kernel_library()
            except KernelUnavailableError as err:
                logger.warning("%s; %s not checked", err, name)
                continue
        graph = check_int8_graph(
            reference.directory / name,
            role=role,
            library=library,
            inputs=inputs,
            references=references,
            input_name=spec.input_name,
            batch_sizes=spec.batch_sizes,
            photo_set=len(reference.photos),
            weight_bits=int8_weight_bits(manifest, name),
        )
        result.graphs.append(graph)
    check_unchanged(reference.directory, reference.identities)
    return result


def eager_runner(model: nn.Module) -> Runner:
    """``model`` as a runner: float32 array in, logits out, without autograd."""

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run


@dataclass
class Reference:
    """A verified artifact and the eager model it was exported from, with the photographs to judge it on
    (``open_reference``)."""

    directory: Path
    manifest: Any
    identities: Any
    spec: ExportSpec
    model: nn.Module
    photos: np.ndarray


def open_reference(
    directory: str | Path,
    *,
    images: Sequence[str | Path] | None = None,
    batch_sizes: Sequence[int] | None = None,
    checkpoint: str | Path | None = None,
) -> Reference:
    """Verify the artifact's hashes and rebuild the eager model it was exported from (its recorded checkpoint, or
    ``checkpoint`` if it moved), with the photographs (``images`` or the bundled ones) and the export's spec
    (``batch_sizes`` replacing its parity batches); ArtifactError with what to do where any of it cannot be."""
    import models

    directory = Path(directory)
    manifest, identities = load_verified(directory)
    source = manifest.extra.get("source", {})
    try:
        spec = ExportSpec.from_dict(manifest.extra.get("spec", {}))
    except (TypeError, ValueError) as err:  # SpecError is a ValueError
        raise ArtifactError(
            f"{directory}/manifest.json: extra.spec is malformed ({err}); re-export the model"
        ) from None
    if batch_sizes:
        spec = replace(spec, batch_sizes=tuple(batch_sizes))
    factory = source.get("factory")
    if source.get("registry") is not True and not factory:
        raise ArtifactError(
            f"{directory} was exported from a module outside the model registry; validate it from Python with "
            "export.validate.run_parity and the original module, or export it with --model package.module:factory"
        )
    checkpoint = checkpoint or source.get("checkpoint")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ArtifactError(
                f"the checkpoint {checkpoint} this artifact was exported from is gone; pass --checkpoint"
            )
        if file_sha256(checkpoint) != source.get("checkpoint_sha256"):
            raise ArtifactError(f"{checkpoint} is not the checkpoint this artifact was exported from (sha256 differs)")
    try:
        if factory:
            from models.factory import rebuild

            model = rebuild(factory, checkpoint=checkpoint, weights_sha256=source.get("checkpoint_sha256", ""))
        else:
            model = models.create_model(
                manifest.model,
                num_classes=source.get("num_classes", 1000),
                checkpoint=checkpoint,
                init="calibrated" if checkpoint is not None else source.get("init", "calibrated"),  # unused with one
                **source.get("block_overrides", {}),
            )
    except TypeError as err:  # block_overrides the model does not take: an edited manifest
        raise ArtifactError(
            f"{directory}/manifest.json: extra.source does not rebuild {manifest.model} ({err}); re-export the model"
        ) from None
    if checkpoint is not None and file_sha256(checkpoint) != source.get("checkpoint_sha256"):  # changed while read
        raise ArtifactError(f"{checkpoint} changed while it was read; validate again once nothing is writing it")
    pre = manifest.preprocessing
    if not {"mean", "std"} <= pre.keys():
        raise ArtifactError(f"{directory}/manifest.json: preprocessing lacks mean or std; re-export the model")
    deployed = onnx.load(directory / manifest.deploy, load_external_data=False)
    check_graph_metadata(manifest, read_metadata(deployed), directory=directory, graph=manifest.deploy)
    photos = photo_inputs(tuple(spec.input_size), mean=pre["mean"], std=pre["std"], images=images)
    return Reference(directory, manifest, identities, spec, model, photos)
