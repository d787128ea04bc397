"""Build a TensorRT engine (``model.plan`` + sidecar JSON) from the exported ONNX, for TensorRT 10.x and 11.x.

Written against TensorRT's documented Python API; it has NOT been run on this project's machines, where TensorRT
cannot be installed (see README: TensorRT). The decisions are pure functions (version gating, profile and precision
route in ``export.trt.route``; the sidecar here) and are tested without TensorRT; ``build_engine`` only carries them
out.

Two API generations:

* **10.x** keeps weak typing. fp16 = ``BuilderFlag.FP16`` + ``OBEY_PRECISION_CONSTRAINTS`` with SGE's
  normalisation layers pinned to FP32 (the islands of ``export.fp16``); int8 = ``BuilderFlag.INT8`` with an
  entropy calibrator (``export.trt.calibrate``) and its cache. From 10.12 (weak typing deprecated), or with
  ``strong_typing``, fp16 builds the FP16-islands ONNX strongly typed when it exists, and int8 prefers the
  symmetric Q/DQ ONNX (``int8_onnx``) to the calibrator.
* **11.x** removed weak typing: every network is strongly typed, fp16 needs the FP16-islands ONNX
  (``export.fp16``), int8 needs an ONNX that already holds Q/DQ nodes; ``EXPLICIT_BATCH`` is gone.

The timing cache (``export.trt.timing_cache``) is attached if TensorRT accepts it for this GPU (never merged with
another device's) and saved after the plan.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from export.artifacts import Manifest, atomic_path, file_sha256, write_json
from export.trt import pinning
from export.trt.errors import TensorRTNotInstalledError, TrtBuildError, TrtRequestError
from export.trt.log import capture, check_heard
from export.trt.route import (
    INSTALL_HINT,
    BuildRoute,
    Profile,
    TrtApi,
    TrtBuildOptions,
    check_same_input,
    derive_profile,
    has_qdq,
    network_flag_names,
    onnx_input_spec,
    plan_route,
)
from export.trt.timing_cache import attach_timing_cache, save_timing_cache

logger = logging.getLogger(__name__)

PLAN_NAME = "model.plan"
SIDECAR_NAME = "model.plan.json"


def sidecar(
    *,
    api: TrtApi,
    gpu: dict[str, str],
    options: TrtBuildOptions,
    route: BuildRoute,
    profile: Profile,
    onnx_sha256: str,
    fp32_layers: int,
    calibration: dict[str, Any] | None = None,
    build: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON written beside the plan: enough to tell whether the plan can run here and how it was built."""
    return {
        "tensorrt_version": api.version,
        "api": "weakly typed (10.x)" if not route.strongly_typed else f"strongly typed ({api.major}.x)",
        "gpu": gpu,
        "precision": options.precision,
        "profile": profile.to_dict(),
        "onnx": route.onnx.name,
        "onnx_sha256": onnx_sha256,
        "route": route.to_dict(),
        "fp32_layers": fp32_layers,
        "workspace_bytes": workspace_bytes(options.workspace_gb),
        "opt_level": options.opt_level,
        "timing_cache": str(options.timing_cache) if options.timing_cache else None,
        "calibration": calibration,
        "build": build or {},  # seconds, engine bytes, timing cache outcome, log file
    }


def record_engine(manifest: Manifest, directory: str | Path, info: dict[str, Any]) -> Manifest:
    """Record the plan and its sidecar in the manifest (the caller writes the manifest last)."""
    manifest.record(directory, PLAN_NAME, role="engine")
    manifest.record(directory, SIDECAR_NAME, role="engine-info")
    manifest.extra["tensorrt"] = {
        "plan": PLAN_NAME,
        "sidecar": SIDECAR_NAME,
        "precision": info["precision"],
        "tensorrt_version": info["tensorrt_version"],
        "gpu": info.get("gpu"),
        "profile": info["profile"],
    }
    return manifest


def workspace_bytes(gb: float) -> int:
    if gb <= 0:
        raise TrtRequestError(f"--trt-workspace must be a positive number of GB; got {gb}")
    return int(gb * (1 << 30))


def import_tensorrt() -> Any:
    """The real ``tensorrt`` package; a namespace package (e.g. only ``tensorrt-stubs`` installed) is not one."""
    try:
        import tensorrt
    except ImportError as err:
        raise TensorRTNotInstalledError(f"TensorRT is not installed ({err}); install it with `{INSTALL_HINT}`") from err
    if not hasattr(tensorrt, "__version__"):
        raise TensorRTNotInstalledError(
            f"the importable `tensorrt` is not TensorRT (no __version__; type stubs only?); install it with "
            f"`{INSTALL_HINT}`"
        )
    return tensorrt


def gpu_info() -> dict[str, str]:
    """Name and compute capability of CUDA device 0 (through torch.cuda, the runner's buffer library)."""
    import torch

    if not torch.cuda.is_available():
        raise TrtRequestError("no CUDA device is visible to PyTorch; TensorRT engines are built on the target GPU")
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}"}


@dataclass
class EngineResult:
    plan: Path
    sidecar: Path
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"plan": str(self.plan), "sidecar": str(self.sidecar), **self.info}


def build_engine(onnx_path: str | Path, out_dir: str | Path, *, options: TrtBuildOptions) -> EngineResult:
    """Parse ``onnx_path``, build with ``options`` and write ``model.plan`` + ``model.plan.json`` into ``out_dir``.

    The plan is written before the timing cache, so a failure while saving the cache never loses the engine.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    model = onnx.load(str(onnx_path), load_external_data=False)
    profile = derive_profile(onnx_input_spec(model), options.batch)  # requests checked before TensorRT is needed
    workspace = workspace_bytes(options.workspace_gb)
    trt = import_tensorrt()
    api = TrtApi.from_version(trt.__version__)
    calib_cache = options.calib_cache or out_dir / "calibration.cache"
    route = plan_route(
        api,
        options,
        onnx_path=onnx_path,
        onnx_has_qdq=has_qdq(model),
        fp16_onnx_exists=options.fp16_onnx is not None and options.fp16_onnx.is_file(),
        calib_cache_exists=calib_cache.is_file(),
        int8_onnx_exists=options.int8_onnx is not None and options.int8_onnx.is_file(),
    )
    if route.onnx.resolve() != onnx_path.resolve():  # the FP16-islands or Q/DQ graph is parsed: the profile's input?
        check_same_input(route.onnx, profile, batch=options.batch)
    gpu = gpu_info()
    onnx_sha256 = file_sha256(route.onnx)  # the calibration cache's fingerprint and the sidecar record it
    logger.info("TensorRT %s: building %s from %s (%s)", api.version, options.precision, route.onnx.name, route)

    # the build log is written when this block ends, before any verdict: a failed build's reason is in it
    with capture(trt, verbose=options.verbose, log_file=options.log_file) as trt_logger:
        builder = trt.Builder(trt_logger)
        flags = 0
        for name in network_flag_names(api, route):
            flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(route.onnx)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise TrtBuildError(f"TensorRT's ONNX parser rejected {route.onnx}: {errors}")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer precisions readable by the inspector
        if options.opt_level is not None:
            config.builder_optimization_level = options.opt_level
        trt_profile = builder.create_optimization_profile()
        try:  # the binding raises where a shape is negative or MIN ≤ OPT ≤ MAX does not hold
            trt_profile.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
        except RuntimeError as err:
            raise TrtBuildError(f"TensorRT refused the optimization profile {profile.to_dict()}: {err}") from None
        if config.add_optimization_profile(trt_profile) < 0:  # -1: TensorRT found the profile invalid
            raise TrtBuildError(f"TensorRT refused the optimization profile {profile.to_dict()} (see its log)")
        cache_outcome = attach_timing_cache(config, options.timing_cache)
        for flag in route.flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if not options.tf32:
            config.clear_flag(trt.BuilderFlag.TF32)
        fp32_layers = 0
        if route.fp32_islands:
            fp32_layers = pinning.pin_fp32_layers(trt, network, onnx.load(str(route.onnx), load_external_data=False))
        calibration = calibrator = None
        if route.calibrate:
            from export.trt.calibrate import calibration_source, make_entropy_calibrator

            source = calibration_source(
                options, profile, cache=calib_cache, onnx_sha256=onnx_sha256, trt_version=api.version
            )
            calibrator = make_entropy_calibrator(trt, source)
            calibration = source.info
            config.int8_calibrator = calibrator
            if not config.set_calibration_profile(trt_profile):  # False: not set (the binding's bool)
                raise TrtBuildError("TensorRT refused the calibration profile (see the build log); check --trt-batch")

        started = time.perf_counter()  # build time for the sidecar, as trtexec reports it; not a latency figure
        serialized = builder.build_serialized_network(network, config)
        build_seconds = time.perf_counter() - started
        check_heard(trt_logger)
    if calibrator is not None:
        calibrator.check()  # an image that failed inside get_batch, swallowed by the binding, fails the build here
    if serialized is None:
        raise TrtBuildError(
            "TensorRT could not build the engine (its log above says why); try a larger --trt-workspace or a "
            "smaller --trt-batch MAX"
        )
    plan = out_dir / PLAN_NAME
    with atomic_path(plan) as tmp:
        tmp.write_bytes(bytes(serialized))
    cache_outcome["saved"] = save_timing_cache(config, options.timing_cache)
    build = {
        "seconds": round(build_seconds, 3),
        "engine_bytes": plan.stat().st_size,
        "timing_cache": cache_outcome,
        "log": str(options.log_file) if options.log_file else None,
    }
    info = sidecar(
        api=api,
        gpu=gpu,
        options=options,
        route=route,
        profile=profile,
        onnx_sha256=onnx_sha256,
        fp32_layers=fp32_layers,
        calibration=calibration,
        build=build,
    )
    return EngineResult(plan=plan, sidecar=write_json(out_dir / SIDECAR_NAME, info), info=info)
