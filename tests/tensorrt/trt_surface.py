"""The Python API surface of TensorRT 10.13, read from the published type stubs, and the 11.x surface derived from it.

The stubs (``pip install --no-deps tensorrt-stubs==10.13.0.35.1``; their own dependencies are TensorRT itself) are
pybind11-stubgen output of the real bindings: every class with its methods (and parameter names), properties (read
or read/write) and enum members with their values, and the module's DataType aliases. Nothing here is TensorRT:
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


@dataclass
class ClassSurface:
    name: str
    bases: tuple[str, ...]
    methods: dict[str, set[str]] = field(default_factory=dict)  # name → parameter names over all overloads
    readonly: set[str] = field(default_factory=set)  # @property without setter
    readwrite: set[str] = field(default_factory=set)  # pybind def_property: plain annotations, or with setter
    members: dict[str, tuple[str, int]] = field(default_factory=dict)  # enum member → (enum class, value)
    nested: dict[str, "ClassSurface"] = field(default_factory=dict)

    def names(self) -> set[str]:
        return {*self.methods, *self.readonly, *self.readwrite, *self.members, *self.nested}


@dataclass
class Surface:
    version: str
    classes: dict[str, ClassSurface]
    aliases: dict[str, tuple[str, int]]  # module-level DataType aliases: float32 → ("DataType", 0)
    functions: set[str]


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
    tree = _parse(lines)
    classes, aliases, functions = {}, {}, set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes[node.name] = _class_surface(node, lines)
        elif isinstance(node, ast.FunctionDef):
            functions.add(node.name)
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
            {k: v for k, v in cls.members.items() if k not in gone},
            cls.nested,
        )
    return Surface("11.1.0.4", classes, dict(base.aliases), set(base.functions))


def _parse(lines: list[str]) -> ast.Module:
    """Parse the stubs; stubgen writes a few signatures with a default before a non-default parameter, whose
    defaults are dropped (only names matter here), and a few use a keyword as a parameter name."""
    for _ in range(100):
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError as err:
            if err.lineno is None:
                raise
            line = DEFAULT.sub("", lines[err.lineno - 1])
            lines[err.lineno - 1] = KEYWORD_PARAM.sub(r"\1_\2", line)  # a parameter named `in`
    raise SyntaxError("too many malformed signatures in the TensorRT stubs")


def _class_surface(node: ast.ClassDef, lines: list[str]) -> ClassSurface:
    bases = tuple(ast.unparse(b) for b in node.bases)
    surface = ClassSurface(node.name, bases)
    for item in node.body:
        if isinstance(item, ast.ClassDef):
            surface.nested[item.name] = _class_surface(item, lines)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            name = item.target.id
            match = VALUE.search(lines[item.lineno - 1])
            if "ClassVar" in ast.unparse(item.annotation):
                if match:
                    surface.members[name] = (match.group(1).split(".")[0], int(match.group(2)))
            else:
                surface.readwrite.add(name)
        elif isinstance(item, ast.FunctionDef):
            decorators = {ast.unparse(d) for d in item.decorator_list}
            if "property" in decorators:
                surface.readonly.add(item.name)
            elif any(d.endswith(".setter") for d in decorators):
                surface.readonly.discard(item.name)
                surface.readwrite.add(item.name)
            else:
                args = [a.arg for a in (*item.args.posonlyargs, *item.args.args, *item.args.kwonlyargs)]
                surface.methods.setdefault(item.name, set()).update(a for a in args if a not in ("self", "this"))
    return surface
