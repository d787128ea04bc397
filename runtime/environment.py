"""What this machine can run: each backend and optional part of sge-deploy, found or not, with its version and, when
it is missing or unusable, the one line that says why and what to install (``sge-deploy env``).

Nothing here imports PyTorch (its version comes from the package metadata: importing it takes seconds), so the check
runs the same on a deploy-only machine. The fused SGE kernel is checked as the ONNX Runtime runner checks it
(export/ort_sge/kernels/library.py), and reports which build of its maths it runs on this CPU.
"""

from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from export.int8.roles import VNNI_FLAGS  # no import beyond the standard library
from export.ort_sge.kernels.build import KERNEL_DIR, cpu_flags  # the standard library only
from runtime.backends.base import one_line

OK, MISSING, UNAVAILABLE = "ok", "missing", "unavailable"


@dataclass(frozen=True)
class Component:
    """One part of the stack: ``status`` is OK, MISSING (not installed) or UNAVAILABLE (installed, cannot run
    here); ``detail`` is one line: what it offers, or why not and what to do."""

    name: str
    status: str
    version: str | None
    detail: str
    needed_for: str


def installed_version(*distributions: str) -> tuple[str, str] | None:
    """(distribution, version) of the first of ``distributions`` that is installed, from its metadata alone."""
    for name in distributions:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ValueError:  # sys.modules[module] is None: blocked, as on the tests' deploy-only interpreter
        return False


def package(name: str, module: str, distributions: tuple[str, ...], *, needed_for: str, install: str) -> Component:
    """A package found by its metadata, not imported; MISSING with the pip line when it is not there."""
    found = installed_version(*distributions) if importable(module) else None
    if found is None:
        return Component(name, MISSING, None, f"not installed: pip install {install}", needed_for)
    distribution, version = found
    return Component(name, OK, version, "" if distribution == name else distribution, needed_for)


def why(err: BaseException) -> str:
    """An error as one line for a detail: its type and its cause (the runners' one_line, which also drops
    OpenVINO's source-location lines)."""
    return f"{type(err).__name__}: {one_line(err)}"


def onnxruntime_component() -> Component:
    needed_for = "the default CPU runner (infer, benchmark, serve), export's parity check"
    install = "'sge-deploy[onnxruntime]' (or [onnxruntime-gpu], never both)"
    if not importable("onnxruntime"):
        return Component("onnxruntime", MISSING, None, f"not installed: pip install {install}", needed_for)
    try:
        import onnxruntime as ort
    except ImportError as err:  # installed, but its shared libraries do not load here
        return Component("onnxruntime", UNAVAILABLE, None, f"cannot be imported ({why(err)})", needed_for)
    from export.ort_sge.nchwc import nchwc_block_size

    both = [name for name in ("onnxruntime", "onnxruntime-gpu") if installed_version(name)]
    if len(both) == 2:  # one module from two wheels: whichever was installed last overwrote the other's files
        detail = "onnxruntime and onnxruntime-gpu are both installed (one module); pip uninstall both, then install one"
        return Component("onnxruntime", UNAVAILABLE, ort.__version__, detail, needed_for)
    block = nchwc_block_size()
    layout = f"NCHWc block {block}" if block else "no NCHWc layout on this CPU"
    providers = ", ".join(p.removesuffix("ExecutionProvider") for p in ort.get_available_providers())
    detail = f"{(both or ['onnxruntime'])[0]}; providers {providers}; {layout}"
    return Component("onnxruntime", OK, ort.__version__, detail, needed_for)


def fused_kernel_component(directory: Path = KERNEL_DIR) -> Component:
    """The fused SGE op's library in ``directory`` (default: the installed one), checked and asked as the ONNX
    Runtime runner does before it uses it."""
    from export.ort_sge.kernels import KernelUnavailableError, kernel_build, kernel_library

    needed_for = "model.sge_fused.onnx on ONNX Runtime CPU (else the runner runs model.onnx)"
    try:
        library = kernel_library(directory)
        build = kernel_build(library)
    except KernelUnavailableError as err:
        return Component("fused SGE kernel (ONNX Runtime)", UNAVAILABLE, None, str(err), needed_for)
    except OSError as err:  # intact, but the dynamic loader refuses it here (a missing libstdc++, another arch)
        detail = f"{library} cannot be loaded here ({why(err)})"
        return Component("fused SGE kernel (ONNX Runtime)", UNAVAILABLE, None, detail, needed_for)
    return Component("fused SGE kernel (ONNX Runtime)", OK, None, f"{build} build; {library}", needed_for)


def openvino_component() -> Component:
    needed_for = "the openvino backend (f32, bf16, INT8)"
    if not importable("openvino"):
        return Component("openvino", MISSING, None, "not installed: pip install 'sge-deploy[openvino]'", needed_for)
    try:
        import openvino

        devices = ", ".join(openvino.Core().available_devices)
    except (ImportError, RuntimeError) as err:  # installed, but it does not load or finds no plugin here
        return Component("openvino", UNAVAILABLE, None, f"cannot be used ({why(err)})", needed_for)
    return Component("openvino", OK, openvino.__version__.split("-")[0], f"devices {devices}", needed_for)


def openvino_extension_component() -> Component:
    from export.ov_sge.build import OvKernelBuildError, installed_library

    needed_for = "OpenVINO's fused SGE op as an extension (sge_form='extension'; the default, standard ops, needs none)"
    try:
        library = installed_library()
    except OvKernelBuildError as err:
        return Component("OpenVINO SGE extension", UNAVAILABLE, None, str(err), needed_for)
    return Component("OpenVINO SGE extension", OK, None, str(library), needed_for)


def int8_component(flags: set[str]) -> Component:
    """How this CPU sums INT8 products (export.int8.calibration.WEIGHT_BITS): VNNI or AMX in 32 bits, else pairs in
    16 bits, which 8-bit weights can saturate; ``flags``: /proc/cpuinfo's (empty: not x86, not judged)."""
    name, needed_for = "INT8 integer kernels", "precision int8 on ONNX Runtime and OpenVINO (infer, benchmark, serve)"
    if not flags:
        return Component(name, OK, None, "not an x86 CPU: its integer kernels are not judged here", needed_for)
    found = sorted(flags & VNNI_FLAGS)
    if found:
        detail = f"{', '.join(found)}: 32-bit sums; INT8 graphs with 7- or 8-bit weights run as exported"
        return Component(name, OK, None, detail, needed_for)
    detail = (
        "no VNNI: products are paired in 16 bits; graphs with 7-bit weights (the export's default) run as exported, "
        "8-bit ones (--int8-weight-bits 8, artifacts from before it) can saturate: re-export them"
    )
    return Component(name, OK, None, detail, needed_for)


# The parts found by their package metadata alone, never imported: (component, module, distributions, what it is
# needed for, what to pip install).
PACKAGES = (
    ("torch", "torch", ("torch",), "export, validate, inspect, sge-cost and the torch backend", "'sge-deploy[export]'"),
    ("onnxsim", "onnxsim", ("onnxsim",), "export's graph simplification", "'sge-deploy[export]'"),
    (
        "tensorrt",
        "tensorrt",
        ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
        "TensorRT engines (export --trt, trt-build) and the tensorrt backend, on an NVIDIA GPU",
        "tensorrt-cu12 (CUDA 12) or tensorrt-cu13 (CUDA 13), NVIDIA's wheels, on a CUDA machine",
    ),
    ("pytriton", "pytriton", ("nvidia-pytriton",), "serve (a Triton Inference Server)", "'sge-deploy[serve]'"),
    ("tritonclient", "tritonclient", ("tritonclient",), "loadtest and Triton clients", "'sge-deploy[serve]'"),
)


@dataclass(frozen=True)
class EnvironmentReport:
    machine: dict[str, Any]
    isa: list[str]
    components: list[Component]

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "isa": self.isa, "components": [asdict(c) for c in self.components]}


def environment_report(*, kernel_dir: Path = KERNEL_DIR) -> EnvironmentReport:
    """The machine (CPU, cores, OS, Python), its vector extensions, and every component's state; ``kernel_dir``: check
    the fused kernel library there instead of the installed one."""
    from runtime.bench_report import machine_info

    flags = cpu_flags()
    components = [
        onnxruntime_component(),
        fused_kernel_component(kernel_dir),
        openvino_component(),
        openvino_extension_component(),
        int8_component(flags),
        *(package(n, m, d, needed_for=f, install=i) for n, m, d, f, i in PACKAGES),
    ]
    machine = machine_info()
    return EnvironmentReport(machine, machine["cpu_flags"], components)
