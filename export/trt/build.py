"""Build a TensorRT engine (``model.plan`` + sidecar JSON) from the exported ONNX, for TensorRT 10.x and 11.x.

Written against TensorRT's documented Python API; it has NOT been run on this project's machines, where TensorRT
cannot be installed (see README: TensorRT). The decisions are pure functions (version gating, profile, precision
route, sidecar) and are tested without TensorRT; ``build_engine`` only carries them out.

Two API generations:

* **10.x** keeps weak typing. fp16 = ``BuilderFlag.FP16`` + ``OBEY_PRECISION_CONSTRAINTS`` with SGE's
  normalisation layers pinned to FP32 (the islands of ``export.fp16``); int8 = ``BuilderFlag.INT8`` with an
  entropy calibrator (``export.trt.calibrate``) and its cache. From 10.12 (weak typing deprecated), or with
  ``strong_typing``, fp16 builds the FP16-islands ONNX strongly typed when it exists, and int8 prefers the
  symmetric Q/DQ ONNX (``int8_onnx``) to the calibrator.
* **11.x** removed weak typing: every network is strongly typed, fp16 needs the FP16-islands ONNX
  (``export.fp16``), int8 needs an ONNX that already holds Q/DQ nodes; ``EXPLICIT_BATCH`` is gone.

The timing cache is handled as Polygraphy does: the file's cache is merged into a fresh one with
``combine(..., ignore_mismatch=True)`` (a cache from another GPU contributes nothing instead of failing the build),
and saved only after the plan is on disk, with a guard for a missing cache.
"""

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from export.artifacts import Manifest, TensorSpec, atomic_path, file_sha256, write_json
from export.metadata import tensor_dims
from models.transforms import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INSTALL_HINT = "pip install tensorrt-cu12 (CUDA 12) or tensorrt-cu13 (CUDA 13), on a machine with an NVIDIA GPU"
PLAN_NAME = "model.plan"
SIDECAR_NAME = "model.plan.json"
OPT_LEVELS = range(6)  # IBuilderConfig.builder_optimization_level: 0 (fastest build) .. 5 (slowest); default 3


class TensorRTNotInstalledError(ImportError):
    """The ``tensorrt`` package cannot be imported (the message says how to install it)."""


class TrtRequestError(ValueError):
    """The requested build cannot be met by this TensorRT version or these inputs (the message says what to do)."""


class TrtBuildError(RuntimeError):
    """TensorRT refused the network (parser errors) or failed to build it."""


@dataclass(frozen=True)
class TrtApi:
    """What the installed TensorRT offers, from its version string alone."""

    version: str
    major: int
    minor: int

    @property
    def weak_typing(self) -> bool:  # BuilderFlag.FP16/INT8, calibrators, layer precision constraints
        return self.major == 10

    @property
    def weak_typing_deprecated(self) -> bool:  # 10.12 deprecated the precision flags in favour of strong typing
        return self.major > 10 or (self.major, self.minor) >= (10, 12)

    @classmethod
    def from_version(cls, version: str) -> "TrtApi":
        try:
            major, minor = (int(p) for p in version.split(".")[:2])
        except ValueError:
            raise TrtRequestError(f"cannot read the TensorRT version {version!r}; expected e.g. '10.13.0'") from None
        if major < 10:
            raise TrtRequestError(
                f"TensorRT {version} is too old: this project uses the name-based I/O API of TensorRT 10 and 11; "
                f"upgrade with `{INSTALL_HINT}`"
            )
        return cls(version=version, major=major, minor=minor)


@dataclass(frozen=True)
class Profile:
    """One optimisation profile for the (single) image input: min/opt/max shapes."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input_name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class TrtBuildOptions:
    precision: str = "fp16"
    batch: tuple[int, int, int] = (1, 8, 32)  # --trt-batch MIN OPT MAX
    workspace_gb: float = 4.0
    timing_cache: Path | None = None  # loaded if it exists, saved after the build
    calib_dir: Path | None = None  # int8 on 10.x: images for the entropy calibrator (batches of the OPT batch)
    calib_cache: Path | None = None  # default: calibration.cache beside the plan; reused only for the same inputs
    calib_max_images: int = 512
    mean: tuple[float, float, float] = IMAGENET_MEAN  # calibration preprocessing (the model's own)
    std: tuple[float, float, float] = IMAGENET_STD
    fp16_onnx: Path | None = None  # the FP16-islands ONNX (export.fp16); required for fp16 on 11.x
    int8_onnx: Path | None = None  # the symmetric Q/DQ ONNX (manifest role "model-int8-s8s8"); int8 on 11.x
    int8_mode: str = "auto"  # "auto": Q/DQ ONNX when given, else calibrator on 10.x; "qdq": insist on Q/DQ
    tf32: bool = False  # fp32 means FP32: TF32 convolutions are off unless asked
    strong_typing: bool = False  # 10.0-10.11: build fp16 strongly typed from fp16_onnx (automatic from 10.12)
    opt_level: int | None = None  # builder_optimization_level 0..5 (trtexec --builderOptimizationLevel)
    verbose: bool = False  # TensorRT's own log at VERBOSE severity, into Python logging (logger "tensorrt")
    log_file: Path | None = None  # every TensorRT log line of the build, at VERBOSE, written here

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class BuildRoute:
    """How the request is carried out on this TensorRT: which ONNX to parse, typing, flags, calibration."""

    onnx: Path
    strongly_typed: bool
    flags: tuple[str, ...]  # BuilderFlag member names
    fp32_islands: bool  # pin SGE normalisation layers to FP32 (weak typing only)
    calibrate: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "onnx": self.onnx.name, "flags": list(self.flags)}


def derive_profile(spec: TensorSpec, batch: tuple[int, int, int]) -> Profile:
    """Min/opt/max shapes from the ONNX input spec and ``--trt-batch MIN OPT MAX``; every problem at once."""
    lo, opt, hi = batch
    problems = []
    if not 1 <= lo <= opt <= hi:
        problems.append(f"--trt-batch needs 1 <= MIN <= OPT <= MAX; got {lo} {opt} {hi}")
    if not spec.shape:
        problems.append(f"input {spec.name!r} has no shape in the ONNX")
    else:
        first, rest = spec.shape[0], spec.shape[1:]
        if isinstance(first, int) and first > 0 and (lo, opt, hi) != (first,) * 3:
            problems.append(
                f"input {spec.name!r} has a fixed batch of {first}, so --trt-batch must be {first} {first} {first}; "
                "re-export with a dynamic batch axis for other sizes"
            )
        dynamic = [str(d) for d in rest if not (isinstance(d, int) and d > 0)]
        if dynamic:
            problems.append(
                f"input {spec.name!r} has dynamic non-batch dimensions {dynamic} (shape {list(spec.shape)}); "
                "re-export with a fixed image size"
            )
    if problems:
        raise TrtRequestError("; ".join(problems))
    rest = tuple(int(d) for d in spec.shape[1:])
    return Profile(spec.name, (lo, *rest), (opt, *rest), (hi, *rest))


def plan_route(
    api: TrtApi,
    options: TrtBuildOptions,
    *,
    onnx_path: Path,
    onnx_has_qdq: bool,
    fp16_onnx_exists: bool,
    calib_cache_exists: bool = False,
    int8_onnx_exists: bool = False,
) -> BuildRoute:
    """Gate the request on the TensorRT version; raise one TrtRequestError saying what to do if it cannot be met."""
    precision = options.precision
    if precision not in PRECISIONS:
        raise TrtRequestError(f"unknown TensorRT precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if options.int8_mode not in ("auto", "qdq"):
        raise TrtRequestError(f"unknown int8 mode {options.int8_mode!r}; choose auto or qdq")
    if options.opt_level is not None and options.opt_level not in OPT_LEVELS:
        raise TrtRequestError(
            f"--trt-opt-level must be 0..5 (TensorRT's builder optimisation level); got {options.opt_level}"
        )
    if precision == "fp32":
        return BuildRoute(onnx_path, not api.weak_typing, (), False, False)
    if precision == "fp16":
        if options.fp16_onnx is not None and not fp16_onnx_exists:
            raise TrtRequestError(f"the FP16 ONNX {options.fp16_onnx} does not exist; export it with --fp16-onnx")
        strong = options.strong_typing or api.weak_typing_deprecated
        if options.fp16_onnx is not None and strong:
            return BuildRoute(options.fp16_onnx, True, (), False, False)
        if not api.weak_typing:
            raise TrtRequestError(
                f"TensorRT {api.version} has no FP16 builder flag (11.x builds strongly typed networks only): "
                "give the FP16-islands ONNX (scripts/export.py --fp16-onnx writes model_fp16.onnx)"
            )
        return BuildRoute(onnx_path, False, ("FP16", "OBEY_PRECISION_CONSTRAINTS"), True, False)
    # int8
    if onnx_has_qdq:
        return BuildRoute(onnx_path, True, (), False, False)
    if options.int8_onnx is not None:
        if not int8_onnx_exists:
            raise TrtRequestError(
                f"the symmetric Q/DQ ONNX {options.int8_onnx} does not exist; export it with the INT8 step first"
            )
        return BuildRoute(options.int8_onnx, True, (), False, False)
    if options.int8_mode == "qdq" or not api.weak_typing:
        why = "Q/DQ was asked for" if options.int8_mode == "qdq" else f"TensorRT {api.version} has no calibrators"
        raise TrtRequestError(
            f"INT8: {why}, and the ONNX has no QuantizeLinear/DequantizeLinear nodes; inserting Q/DQ is not "
            "implemented here: give the symmetric Q/DQ ONNX (manifest role model-int8-s8s8) or quantize with NVIDIA "
            "ModelOpt (modelopt.onnx.quantization) and build that, or use TensorRT 10.x with --trt-calib-dir"
        )
    if options.calib_dir is None and not calib_cache_exists:
        raise TrtRequestError(
            "INT8 on TensorRT 10.x needs calibration images: pass --trt-calib-dir DIR (a folder of JPEG/PNG photos "
            "like the deployment's inputs; a few hundred are enough)"
        )
    return BuildRoute(onnx_path, False, ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"), True, True)


def network_flag_names(api: TrtApi, route: BuildRoute) -> tuple[str, ...]:
    """``NetworkDefinitionCreationFlag`` members to set: STRONGLY_TYPED on 10.x when asked; none on 11.x, where every
    network is strongly typed and EXPLICIT_BATCH no longer exists (10.x ignores it: networks are explicit batch)."""
    return ("STRONGLY_TYPED",) if route.strongly_typed and api.weak_typing else ()


def onnx_input_spec(model: onnx.ModelProto) -> TensorSpec:
    """The single graph input (initializers excluded) as a TensorSpec; symbolic dims keep their names."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise TrtRequestError(f"expected one image input in the ONNX; found {[v.name for v in inputs]}")
    return TensorSpec(name=inputs[0].name, shape=tuple(tensor_dims(inputs[0])))


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


@dataclass(frozen=True)
class LayerView:
    """What the pinning decision reads of one network layer: its name, metadata and tensor names."""

    name: str
    metadata: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")  # the parser's layer metadata names the ONNX node
PARSER_SUFFIX = re.compile(r"_\d+$")  # further layers of one node: "<node>_<counter>" (onnx-tensorrt)


def fp32_layer_names(layers: list[LayerView], fp32_nodes: set[str], fp32_tensors: set[str]) -> list[str]:
    """TensorRT layers to pin to FP32: every layer the parser made for an FP32 ONNX node, and helpers inside an island.

    A layer belongs to an FP32 node when it is named after it, carries it in its metadata (``[ONNX Layer: node]``),
    is named ``<node>_<n>`` (the parser's suffix for a node's further layers), or writes one of the node's output
    tensors. An unnamed helper layer (``(Unnamed Layer* 7) [Shuffle]``) between pinned layers, reading only what
    pinned layers write and read only by pinned layers, is pinned too, so no FP16 step sits inside an island.
    """

    def owned(layer: LayerView) -> bool:
        return bool(
            layer.name in fp32_nodes
            or fp32_nodes.intersection(ONNX_LAYER.findall(layer.metadata))
            or PARSER_SUFFIX.sub("", layer.name) in fp32_nodes
            or fp32_tensors.intersection(layer.outputs)
        )

    chosen = {layer.name for layer in layers if owned(layer)}
    producer = {t: layer.name for layer in layers for t in layer.outputs}
    readers: dict[str, set[str]] = {}
    for layer in layers:
        for t in layer.inputs:
            readers.setdefault(t, set()).add(layer.name)
    changed = True
    while changed:
        changed = False
        for layer in layers:
            if layer.name in chosen or not layer.inputs or not layer.outputs:
                continue
            fed = all(producer.get(t) in chosen or t in fp32_tensors for t in layer.inputs)
            read = [readers.get(t, set()) for t in layer.outputs]
            if fed and all(r and r <= chosen for r in read):
                chosen.add(layer.name)
                changed = True
    return [layer.name for layer in layers if layer.name in chosen]


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


def make_logger(trt: Any, *, verbose: bool, log_file: Path | None) -> Any:
    """An ``ILogger`` that forwards TensorRT's messages to Python logging (logger ``tensorrt``) and, when asked,
    writes every message to ``log_file``; VERBOSE severity when verbose or logging to a file, else WARNING."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }
    python_log = logging.getLogger("tensorrt")
    lowest = logging.DEBUG if verbose else logging.WARNING

    class TrtLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, sev: Any, msg: str) -> None:
            level = levels.get(sev, logging.INFO)
            if level >= lowest:
                python_log.log(level, "%s", msg)
            if log_file is not None:
                self.lines.append(f"[{getattr(sev, 'name', sev)}] {msg}")

    return TrtLogger()


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
        fp16_onnx_exists=options.fp16_onnx is not None and Path(options.fp16_onnx).is_file(),
        calib_cache_exists=calib_cache.is_file(),
        int8_onnx_exists=options.int8_onnx is not None and Path(options.int8_onnx).is_file(),
    )
    gpu = gpu_info()
    logger.info("TensorRT %s: building %s from %s (%s)", api.version, options.precision, route.onnx.name, route)

    trt_logger = make_logger(trt, verbose=options.verbose, log_file=options.log_file)
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
    trt_profile.set_shape(profile.input_name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    cache_outcome = attach_timing_cache(config, options.timing_cache)
    for flag in route.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if not options.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    fp32_layers = _pin_fp32_layers(trt, network, onnx.load(str(route.onnx), load_external_data=False)) if (
        route.fp32_islands
    ) else 0
    calibration = calibrator = None
    if route.calibrate:
        from export.trt.calibrate import calibration_source, make_entropy_calibrator

        source = calibration_source(options, profile, cache=calib_cache, onnx_sha256=file_sha256(route.onnx))
        calibrator = make_entropy_calibrator(trt, source)
        calibration = source.info
        config.int8_calibrator = calibrator
        config.set_calibration_profile(trt_profile)

    started = time.perf_counter()  # build time for the sidecar, as trtexec reports it; not a latency figure
    serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - started
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
    log_path = _write_log(trt_logger, options.log_file)
    build = {
        "seconds": round(build_seconds, 3),
        "engine_bytes": plan.stat().st_size,
        "timing_cache": cache_outcome,
        "log": str(log_path) if log_path else None,
    }
    info = sidecar(
        api=api,
        gpu=gpu,
        options=options,
        route=route,
        profile=profile,
        onnx_sha256=file_sha256(route.onnx),
        fp32_layers=fp32_layers,
        calibration=calibration,
        build=build,
    )
    return EngineResult(plan=plan, sidecar=write_json(out_dir / SIDECAR_NAME, info), info=info)


def attach_timing_cache(config: Any, path: Path | None) -> dict[str, Any]:
    """A fresh cache with the file's entries merged in (``ignore_mismatch=True``: a cache from another GPU or
    TensorRT adds nothing rather than failing), attached with the builder's verdict checked."""
    outcome: dict[str, Any] = {"file": str(path) if path else None, "loaded": False}
    cache = config.create_timing_cache(b"")
    if path is not None and path.is_file():
        previous = config.create_timing_cache(path.read_bytes())
        outcome["loaded"] = bool(cache.combine(previous, ignore_mismatch=True))
        if not outcome["loaded"]:
            logger.warning("the timing cache %s could not be merged (another TensorRT?); building without it", path)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        logger.warning("TensorRT rejected the timing cache from %s for this GPU; building with an empty one", path)
        outcome["loaded"] = False
        if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
            raise TrtBuildError("TensorRT rejected even an empty timing cache; build without --trt-timing-cache")
    return outcome


def save_timing_cache(config: Any, path: Path | None) -> bool:
    """Write the build's timing cache to ``path`` (after the plan); a missing cache is a warning, not a failure."""
    if path is None:
        return False
    cache = config.get_timing_cache()
    serialized = cache.serialize() if cache is not None else None
    if serialized is None:
        logger.warning("TensorRT returned no timing cache after the build; %s was not updated", path)
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(serialized))
    return True


def _write_log(trt_logger: Any, path: Path | None) -> Path | None:
    if path is None:
        return None
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in trt_logger.lines))
    return path


def _pin_fp32_layers(trt: Any, network: Any, model: onnx.ModelProto) -> int:
    """Weak typing: force the layers of SGE's normalisation (``export.fp16`` policy) to compute and output FP32."""
    from export.fp16 import plan_precision

    fp32_nodes = set(plan_precision(model).fp32_nodes)
    fp32_tensors = {o for n in model.graph.node if n.name in fp32_nodes for o in n.output}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    views = [_layer_view(layer) for layer in layers]
    chosen = set(fp32_layer_names(views, fp32_nodes, fp32_tensors))
    pinned = 0
    for layer in layers:
        if layer.name not in chosen or layer.type in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
            continue
        float_outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in (trt.float32, trt.float16)]
        if not float_outputs:
            continue  # shape arithmetic
        layer.precision = trt.float32
        for j in float_outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    if fp32_nodes and not pinned:
        raise TrtBuildError(
            f"none of the {len(fp32_nodes)} FP32 ONNX nodes (SGE normalisation) matched a TensorRT layer, so an FP16 "
            "build would compute them in FP16; build strongly typed from the FP16-islands ONNX (--fp16-onnx) instead"
        )
    logger.info("pinned %d TensorRT layers to FP32 (%d FP32 ONNX nodes)", pinned, len(fp32_nodes))
    return pinned


def _layer_view(layer: Any) -> LayerView:
    inputs = (layer.get_input(i) for i in range(layer.num_inputs))
    return LayerView(
        name=layer.name,
        metadata=layer.metadata or "",
        inputs=tuple(t.name for t in inputs if t is not None),  # optional inputs are None
        outputs=tuple(layer.get_output(j).name for j in range(layer.num_outputs)),
    )
