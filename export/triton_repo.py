"""A Triton Inference Server model repository from an artifact directory, for production serving.

Triton's own ONNX Runtime backend (and its TensorRT backend, for an engine) load the repository without any Python:
``DIR/<name>/config.pbtxt`` and ``DIR/<name>/1/model.onnx``; when the artifact holds a TensorRT engine, also
``DIR/<name>_tensorrt/config.pbtxt`` and ``DIR/<name>_tensorrt/1/model.plan`` with ``platform: "tensorrt_plan"``.
An engine is the manifest file with role ``engine`` (``export.trt.build.record_engine``); its config's
``max_batch_size`` is capped by the engine's optimisation profile.

TensorRT specifics: with the TensorRT accelerator in FP16, a graph with FP32 islands (SGE's normalisation, see
``export.fp16``) ships its FP16-islands ONNX (``model_fp16.onnx``, role ``model-fp16``) with ``precision_mode``
FP32, so the FP16 comes from the graph's own types and the islands are not handed to TensorRT's FP16 flag;
INT8 is refused for such graphs (serve the engine instead). A plan's config records the TensorRT release, GPU and
precision it was built with (``parameters``), since Triton cannot load a plan from another release or GPU.

The configs themselves (``config.pbtxt``, a pure function of its inputs) are ``export.triton_config``'s; only
``write_triton_repository`` touches the disk.
"""

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from export.artifacts import ArtifactError, check_unchanged, load_verified
from export.transaction import publish_directory, staging_directory
from export.triton_config import TensorRTAccelerator, TritonConfigError, TritonModelConfig, render_config

logger = logging.getLogger(__name__)

LABELS_NAME = "labels.txt"


@dataclass(frozen=True)
class TritonRepository:
    """What ``write_triton_repository`` wrote: the repository root and one config per model directory."""

    root: Path
    models: dict[str, TritonModelConfig]

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "models": {name: c.to_dict() for name, c in self.models.items()}}


def write_triton_repository(
    artifact: str | Path,
    repository: str | Path,
    *,
    name: str | None = None,
    max_batch_size: int = 32,
    queue_delay_us: int = 500,
    preferred_batch_sizes: Sequence[int] = (),
    instances: int = 1,
    kind: str = "auto",
    tensorrt: TensorRTAccelerator | None = None,
    labels: Sequence[str] | None = None,
    overwrite: bool = False,
) -> TritonRepository:
    """Write ``repository/<name>/`` (and ``<name>_tensorrt/`` when the artifact holds an engine); return what it wrote.

    Each model directory is assembled under a temporary name and renamed into place, so a directory under its
    final name is always complete.
    """
    artifact = Path(artifact)
    if Path(repository).resolve().is_relative_to(artifact.resolve()):  # its files would be strays of the artifact
        raise ArtifactError(
            f"the Triton repository {repository} lies in the artifact {artifact}, whose files are hashed (a later "
            "export there would be refused); write it elsewhere"
        )
    if artifact.resolve().is_relative_to(Path(repository).resolve()):  # Triton would take it for a model folder
        raise ArtifactError(
            f"the artifact {artifact} lies in the Triton repository {repository}, whose model folders are replaced "
            "whole (the artifact would go with one); keep the artifact outside the repository"
        )
    manifest, identities = load_verified(artifact)  # each file's identity taken as its hash was checked
    name = name or manifest.model
    if labels is not None:
        classes = manifest.outputs[0].shape[-1] if manifest.outputs and manifest.outputs[0].shape else None
        if len(labels) == 0 or (isinstance(classes, int) and len(labels) != classes):
            raise TritonConfigError(
                f"got {len(labels)} labels for an output of {classes} classes; pass one label per class or none"
            )
    onnx_file, tensorrt, onnx_params = accelerator_onnx(artifact, manifest, tensorrt)
    onnx_config = TritonModelConfig(
        name=name,
        inputs=tuple(manifest.inputs),
        outputs=tuple(manifest.outputs),
        max_batch_size=max_batch_size,
        queue_delay_us=queue_delay_us,
        preferred_batch_sizes=tuple(preferred_batch_sizes),
        instances=instances,
        kind=kind,
        tensorrt=tensorrt,
        label_filename=LABELS_NAME if labels is not None else None,
        extra=onnx_params,
    )
    plans = [p for p, entry in manifest.files.items() if entry.role == "engine"]
    if len(plans) > 1:
        raise ArtifactError(f"artifact {artifact} holds {len(plans)} engines ({', '.join(plans)}); expected one")
    plan_config = None
    if plans:
        plan_batch = engine_max_batch(manifest.extra, max_batch_size)
        plan_config = replace(
            onnx_config,
            name=f"{name}_tensorrt",
            platform="tensorrt_plan",
            tensorrt=None,
            max_batch_size=plan_batch,
            preferred_batch_sizes=tuple(b for b in preferred_batch_sizes if b <= plan_batch),
            extra=plan_parameters(manifest.extra),
        )
    # Render every config before writing anything: an invalid request leaves the repository untouched.
    texts = {onnx_config.name: render_config(onnx_config)}
    if plan_config is not None:
        texts[plan_config.name] = render_config(plan_config)
    root = Path(repository)
    root.mkdir(parents=True, exist_ok=True)
    for model_name in texts:
        if (root / model_name).exists() and not overwrite:
            raise FileExistsError(f"{root / model_name} exists; pass overwrite=True (--overwrite) or pick another name")

    def unchanged() -> None:  # what was copied is what was verified: nothing replaced while it was copied
        check_unchanged(artifact, identities)

    _write_model_dir(root, onnx_config.name, texts[onnx_config.name], onnx_file, "model.onnx", labels, unchanged)
    models = {onnx_config.name: onnx_config}
    if plan_config is not None:
        plan = artifact / plans[0]
        _write_model_dir(root, plan_config.name, texts[plan_config.name], plan, "model.plan", labels, unchanged)
        models[plan_config.name] = plan_config
    logger.info("wrote Triton model repository %s: %s", root, ", ".join(models))
    return TritonRepository(root=root, models=models)


def accelerator_onnx(
    artifact: Path, manifest: Any, tensorrt: TensorRTAccelerator | None
) -> tuple[Path, TensorRTAccelerator | None, dict[str, str]]:
    """The ONNX to ship and the accelerator to configure: a graph with FP32 islands never meets TensorRT's FP16 or
    INT8 flag; in FP16 it ships as its FP16-islands ONNX with precision_mode FP32."""
    deploy = artifact / manifest.deploy
    if tensorrt is None or tensorrt.precision_mode == "FP32":
        return deploy, tensorrt, {}
    import onnx

    from export.fp16 import plan_precision

    islands = len(plan_precision(onnx.load(str(deploy), load_external_data=False)).islands)
    if not islands:
        return deploy, tensorrt, {}
    if tensorrt.precision_mode == "INT8":
        raise TritonConfigError(
            f"{manifest.model} has {islands} normalisation islands that must stay FP32, which ONNX Runtime's TensorRT "
            "accelerator in INT8 cannot guarantee; serve the TensorRT engine (<name>_tensorrt) or use FP16/FP32"
        )
    fp16 = [f for f, entry in manifest.files.items() if entry.role == "model-fp16"]
    if not fp16:
        raise TritonConfigError(
            f"{manifest.model} has {islands} normalisation islands that must stay FP32, and TensorRT's FP16 flag "
            "would run them in FP16: write the FP16-islands ONNX first (sge-deploy export --fp16-onnx), or use "
            "precision_mode FP32"
        )
    params = {"onnx_source": f"{fp16[0]} (FP16 with FP32 islands; precision_mode FP32 so TensorRT keeps its types)"}
    return artifact / fp16[0], replace(tensorrt, precision_mode="FP32"), params


def plan_parameters(extra: dict[str, Any]) -> dict[str, str]:
    """What the plan was built with, as config parameters: Triton loads a plan only on that release and GPU."""
    info = extra.get("tensorrt", {})
    params = {"tensorrt_version": info.get("tensorrt_version"), "precision": info.get("precision")}
    gpu = info.get("gpu") or {}
    params.update({"gpu": gpu.get("name"), "compute_capability": gpu.get("compute_capability")})
    return {k: str(v) for k, v in params.items() if v}


def triton_batch_problem(min_batch: int) -> str | None:
    """Why an engine whose profile starts at ``min_batch`` cannot be served by Triton, in words; else None."""
    if min_batch <= 1:
        return None
    return f"the engine's optimisation profile starts at batch {min_batch}, but Triton sends batches from 1"


def engine_max_batch(extra: dict[str, Any], requested: int) -> int:
    """The plan's max_batch_size: ``requested``, capped by the engine's profile (manifest ``extra["tensorrt"]``). A
    profile whose smallest batch is above 1 is refused: Triton's dynamic batcher sends whatever it has queued, one
    request too, and TensorRT refuses a shape below the profile's MIN."""
    profile = extra.get("tensorrt", {}).get("profile", {})
    profile_min = profile.get("min") or [None]
    problem = triton_batch_problem(profile_min[0]) if isinstance(profile_min[0], int) else None
    if problem:
        raise TritonConfigError(
            f"{problem}; rebuild it with --trt-batch 1 OPT MAX (sge-deploy trt-build), or serve the ONNX model alone"
        )
    profile_max = profile.get("max") or [None]
    if isinstance(profile_max[0], int) and 0 < profile_max[0] < requested:
        logger.warning("the engine's profile takes batches up to %d; its Triton config says so", profile_max[0])
        return profile_max[0]
    return requested


def _staging_parent(root: Path) -> Path:
    """Where a model directory is staged: beside the repository, not in it. Triton loads every folder of its
    repository, hidden ones too, so a staging folder inside it (briefly holding the previous model after the swap, or
    left by a killed export) was loaded as a model, and a failed load stops a server started with --exit-on-error.
    Inside only where the parent is another filesystem (a mounted volume: the swap is a rename) or not writable."""
    try:
        same_filesystem = os.stat(root.parent).st_dev == os.stat(root).st_dev
    except OSError:
        return root
    return root.parent if same_filesystem and os.access(root.parent, os.W_OK | os.X_OK) else root


def _write_model_dir(
    root: Path,
    name: str,
    config_text: str,
    model_file: Path,
    filename: str,
    labels: Sequence[str] | None,
    unchanged: Callable[[], None],
) -> Path:
    staging = staging_directory(_staging_parent(root), f".{root.name}.{name}.", ".tmp")
    try:
        (staging / "1").mkdir()
        shutil.copyfile(model_file, staging / "1" / filename)
        unchanged()
        if labels is not None:
            (staging / LABELS_NAME).write_text("".join(f"{label}\n" for label in labels))
        (staging / "config.pbtxt").write_text(config_text)
        publish_directory(staging, root / name)  # a running Triton polling the repository sees old or new, never none
        return root / name
    finally:
        if staging.exists():
            shutil.rmtree(staging)
