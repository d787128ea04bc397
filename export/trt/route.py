"""What a TensorRT build request becomes on the installed TensorRT, decided without TensorRT: the API generation
(``TrtApi``), the optimisation profile, the build options, and the route (which ONNX, typing, builder flags,
calibration). Pure functions, tested on both API generations; ``export.trt.build`` carries the route out."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from export.artifacts import TensorSpec
from export.metadata import tensor_dims
from export.trt import PRECISIONS
from export.trt.errors import TrtBuildError, TrtRequestError
from models.transforms import IMAGENET_MEAN, IMAGENET_STD

INSTALL_HINT = "pip install tensorrt-cu12 (CUDA 12) or tensorrt-cu13 (CUDA 13), on a machine with an NVIDIA GPU"
OPT_LEVELS = range(6)  # IBuilderConfig.builder_optimization_level: 0 (fastest build) .. 5 (slowest); default 3


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

    def __post_init__(self) -> None:  # a library caller may name any of the files with a str
        for name in ("timing_cache", "calib_dir", "calib_cache", "fp16_onnx", "int8_onnx", "log_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

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


def batch_order_problem(batch: tuple[int, int, int]) -> str | None:
    """What is wrong with ``--trt-batch MIN OPT MAX`` in itself, in one line (no ONNX needed); else None."""
    lo, opt, hi = batch
    return None if 1 <= lo <= opt <= hi else f"--trt-batch needs 1 <= MIN <= OPT <= MAX; got {lo} {opt} {hi}"


def derive_profile(spec: TensorSpec, batch: tuple[int, int, int]) -> Profile:
    """Min/opt/max shapes from the ONNX input spec and ``--trt-batch MIN OPT MAX``; every problem at once."""
    lo, opt, hi = batch
    problems = [problem] if (problem := batch_order_problem(batch)) else []
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


def check_same_input(onnx_path: Path, profile: Profile, *, batch: tuple[int, int, int]) -> None:
    """The graph TensorRT parses must have the input the profile (derived from the deploy ONNX) names and shapes."""
    other = derive_profile(onnx_input_spec(onnx.load(str(onnx_path), load_external_data=False)), batch)
    if other != profile:
        raise TrtBuildError(
            f"{onnx_path.name}'s input {other.input_name!r} {list(other.opt[1:])} differs from the deploy ONNX's "
            f"{profile.input_name!r} {list(profile.opt[1:])}; re-export the artifact so that its graphs agree"
        )


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
                "give the FP16-islands ONNX (sge-deploy export --fp16-onnx writes model_fp16.onnx)"
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
