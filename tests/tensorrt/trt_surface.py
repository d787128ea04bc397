"""The Python API surface of TensorRT 10.13, read from the published type stubs, and the 11.x surface derived from it.

The stubs (``pip install --no-deps tensorrt-stubs==10.13.0.35.1``; their own dependencies are TensorRT itself) are
pybind11-stubgen output of the real bindings: every class with its methods (each overload's parameters with their
annotations and defaults), properties (read or read/write, with the setter's type) and enum members with their values,
and the module's DataType aliases and functions. Nothing here is TensorRT:
it is the list of names a fake may expose, so that code calling a name the installed version lacks fails in tests.

11.x: the 10.13 surface minus what NVIDIA's "Migrating Python Code from TensorRT 10.x to 11.x" lists as removed
(docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html) and what
strong typing makes meaningless (layer precision constraints, EXPLICIT_BATCH). Names added in 11.x are not modelled.
"""

import ast
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

STUBS_DIST = "tensorrt-stubs"
STUBS_VERSION = "10.13.0.35.1"
STUBS_FILE = "tensorrt_bindings/tensorrt.pyi"
DEFAULT = re.compile(r"\s*=\s*[^,()]+(?=[,)])")
KEYWORD_PARAM = re.compile(r"([(,]\s*)(in|from|lambda|class)(?=\s*:)")
VALUE = re.compile(r"#\s*value = <([\w.]+): (-?\d+)>")

REMOVED_IN_11 = {
    "BuilderFlag": {
        "FP16",
        "BF16",
        "INT8",
        "FP8",
        "INT4",
        "FP4",
        "OBEY_PRECISION_CONSTRAINTS",
        "PREFER_PRECISION_CONSTRAINTS",
        "DIRECT_IO",
    },
    "IBuilderConfig": {
        "int8_calibrator",
        "set_calibration_profile",
        "get_calibration_profile",
        "set_quantization_flag",
        "get_quantization_flag",
        "quantization_flags",
        "clear_quantization_flag",
        "algorithm_selector",
    },
    "ICudaEngine": {"device_memory_size"},
    "Builder": {"platform_has_fast_fp16", "platform_has_fast_int8"},
    "ILayer": {
        "precision",
        "precision_is_set",
        "reset_precision",
        "set_output_type",
        "get_output_type",
        "output_type_is_set",
        "reset_output_type",
    },
    "NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH"},
}
CLASSES_REMOVED_IN_11 = {
    "IInt8Calibrator",
    "IInt8EntropyCalibrator",
    "IInt8EntropyCalibrator2",
    "IInt8LegacyCalibrator",
    "IInt8MinMaxCalibrator",
    "CalibrationAlgoType",
    "QuantizationFlag",
    "IAlgorithm",
    "IAlgorithmContext",
    "IAlgorithmIOInfo",
    "IAlgorithmSelector",
    "IAlgorithmVariant",
}


class StubsNotInstalledError(ImportError):
    """tensorrt-stubs is not installed (the message says how)."""


@dataclass(frozen=True)
class Param:
    name: str
    annotation: str  # as the stub writes it ("int", "Dims", "list[int]", "ILogger.Severity"); "" when it has none
    default: str | None = None  # the default's text ("None", "..."); None when the parameter is required


Signature = tuple[Param, ...]  # one overload's parameters, without self


@dataclass
class ClassSurface:
    name: str
    bases: tuple[str, ...]
    methods: dict[str, list[Signature]] = field(default_factory=dict)  # name → its overloads
    readonly: set[str] = field(default_factory=set)  # @property without setter
    readwrite: set[str] = field(default_factory=set)  # pybind def_property: plain annotations, or with setter
    setter_types: dict[str, str] = field(default_factory=dict)  # read/write property → the value's annotation
    members: dict[str, tuple[str, int]] = field(default_factory=dict)  # enum member → (enum class, value)
    nested: dict[str, "ClassSurface"] = field(default_factory=dict)

    def names(self) -> set[str]:
        return {*self.methods, *self.readonly, *self.readwrite, *self.members, *self.nested}


@dataclass
class Surface:
    version: str
    classes: dict[str, ClassSurface]
    aliases: dict[str, tuple[str, int]]  # module-level DataType aliases: float32 → ("DataType", 0)
    functions: dict[str, list[Signature]]


def stubs_path() -> Path:
    try:
        dist = metadata.distribution(STUBS_DIST)
    except metadata.PackageNotFoundError:
        raise StubsNotInstalledError(
            f"the fake TensorRT is generated from {STUBS_DIST}; install it with "
            f"`pip install --no-deps {STUBS_DIST}=={STUBS_VERSION}`"
        ) from None
    if dist.version != STUBS_VERSION:
        raise StubsNotInstalledError(f"{STUBS_DIST} {dist.version} is installed; the tests need {STUBS_VERSION}")
    return Path(dist.locate_file(STUBS_FILE))


def surface_10() -> Surface:
    path = stubs_path()
    lines = path.read_text().splitlines()
    tree, defaults_dropped = _parse(lines)
    classes, aliases, functions = {}, {}, {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = _class_surface(node, lines, defaults_dropped)
        elif isinstance(node, ast.FunctionDef):
            functions.setdefault(node.name, []).append(_signature(node, defaults_dropped, method=False))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            match = VALUE.search(lines[node.lineno - 1])
            if match:
                aliases[node.target.id] = (match.group(1).split(".")[0], int(match.group(2)))
    return Surface("10.13.0.35", classes, aliases, functions)


def surface_11(base: Surface | None = None) -> Surface:
    base = base or surface_10()
    classes = {}
    for name, cls in base.classes.items():
        if name in CLASSES_REMOVED_IN_11:
            continue
        gone = REMOVED_IN_11.get(name, set())
        classes[name] = ClassSurface(
            name,
            cls.bases,
            {k: v for k, v in cls.methods.items() if k not in gone},
            cls.readonly - gone,
            cls.readwrite - gone,
            {k: v for k, v in cls.setter_types.items() if k not in gone},
            {k: v for k, v in cls.members.items() if k not in gone},
            cls.nested,
        )
    return Surface("11.1.0.4", classes, dict(base.aliases), dict(base.functions))


def _parse(lines: list[str]) -> tuple[ast.Module, set[int]]:
    """Parse the stubs, and say on which lines defaults were dropped. stubgen writes a few signatures with a default
    before a non-default parameter (their defaults are dropped, and every parameter there counts as optional), and a
    few use a keyword as a parameter name (renamed with a trailing underscore)."""
    dropped = set()
    for _ in range(100):
        try:
            return ast.parse("\n".join(lines)), dropped
        except SyntaxError as err:
            if err.lineno is None:
                raise
            line = lines[err.lineno - 1]
            without_defaults = DEFAULT.sub("", line)
            if without_defaults != line:
                dropped.add(err.lineno)
            lines[err.lineno - 1] = KEYWORD_PARAM.sub(r"\1_\2", without_defaults)  # a parameter named `in`
    raise SyntaxError("too many malformed signatures in the TensorRT stubs")


def _signature(node: ast.FunctionDef, defaults_dropped: set[int], *, method: bool) -> Signature:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + [ast.unparse(d) for d in args.defaults]
    kw_defaults = [None if d is None else ast.unparse(d) for d in args.kw_defaults]
    pairs = [*zip(positional, defaults, strict=True), *zip(args.kwonlyargs, kw_defaults, strict=True)]
    if method and "staticmethod" not in {ast.unparse(d) for d in node.decorator_list}:
        pairs = pairs[1:]  # self (stubgen sometimes names or annotates it otherwise)
    if args.vararg or args.kwarg:
        pairs.append((ast.arg(arg="*", annotation=None), "..."))  # anything goes: see trt_types.binds
    optional = node.lineno in defaults_dropped
    return tuple(
        Param(a.arg, "" if a.annotation is None else ast.unparse(a.annotation), "..." if optional else d)
        for a, d in pairs
    )


def _class_surface(node: ast.ClassDef, lines: list[str], defaults_dropped: set[int]) -> ClassSurface:
    bases = tuple(ast.unparse(b) for b in node.bases)
    surface = ClassSurface(node.name, bases)
    for item in node.body:
        if isinstance(item, ast.ClassDef):
            surface.nested[item.name] = _class_surface(item, lines, defaults_dropped)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            name = item.target.id
            match = VALUE.search(lines[item.lineno - 1])
            if "ClassVar" in ast.unparse(item.annotation):
                if match:
                    surface.members[name] = (match.group(1).split(".")[0], int(match.group(2)))
            else:
                surface.readwrite.add(name)
                surface.setter_types[name] = ast.unparse(item.annotation)
        elif isinstance(item, ast.FunctionDef):
            decorators = {ast.unparse(d) for d in item.decorator_list}
            if "property" in decorators:
                surface.readonly.add(item.name)
            elif any(d.endswith(".setter") for d in decorators):
                surface.readonly.discard(item.name)
                surface.readwrite.add(item.name)
                (value,) = _signature(item, defaults_dropped, method=True)
                surface.setter_types[item.name] = value.annotation
            else:
                signature = _signature(item, defaults_dropped, method=True)
                surface.methods.setdefault(item.name, []).append(signature)
    return surface
