"""The INT8 graphs' file names and manifest roles, and the runners' ``precision`` option: torch-free, no ONNX import.

=====================  ==========================  =======================================================
role                   file                        what it is
=====================  ==========================  =======================================================
``model-int8``         ``model.int8.onnx``         Q/DQ, uint8 activations, per-channel int8 weights: the
                                                   CPU file (ONNX Runtime, OpenVINO)
``model-int8-ort-cpu`` ``model.int8.sge_fused.onnx``  the same quantisation of the fused-SGE graph (SGE models,
                                                   ONNX Runtime CPU with the custom-op library)
``model-int8-s8s8``    ``model.int8_s8s8.onnx``    symmetric int8 activations and weights: TensorRT's Q/DQ
=====================  ==========================  =======================================================
"""

from pathlib import Path

INT8_ROLE = "model-int8"
INT8_FUSED_ROLE = "model-int8-ort-cpu"
INT8_S8S8_ROLE = "model-int8-s8s8"

SCHEME_OF_ROLE = {INT8_ROLE: "u8s8", INT8_FUSED_ROLE: "u8s8", INT8_S8S8_ROLE: "s8s8"}

INT8_NAME = "model.int8.onnx"
INT8_FUSED_NAME = "model.int8.sge_fused.onnx"
INT8_S8S8_NAME = "model.int8_s8s8.onnx"

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
PRECISION_ALIASES = {
    "f32": "fp32",
    "float32": "fp32",
    "bfloat16": "bf16",
    "f16": "fp16",
    "float16": "fp16",
    "i8": "int8",
}


class PrecisionError(ValueError):
    """A precision a runner does not know or cannot run, or an artifact without the graph it needs."""


def holds_quantised_layer(op_types) -> bool:
    """Whether an ONNX graph with these node types holds a quantised layer (Q/DQ, QLinear* or *Integer nodes)."""
    return any(op.endswith("QuantizeLinear") or op.startswith("QLinear") or op.endswith("Integer") for op in op_types)


def not_quantised(path: object) -> PrecisionError:
    """The error for precision int8 on a float graph (it would run FP32 under the int8 name), worded once for every
    backend."""
    return PrecisionError(
        f"{path} holds no quantised layer (no QuantizeLinear/DequantizeLinear/QLinear* node): precision int8 "
        "needs a Q/DQ model; give an INT8 file (an artifact's model.int8.onnx) or run fp32"
    )


def normalise_precision(precision: str) -> str:
    """``precision`` in the canonical spelling ("f32" → "fp32"); an unknown one lists the choices."""
    key = str(precision).lower()
    canonical = PRECISION_ALIASES.get(key, key)
    if canonical not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)} (f32 = fp32)")
    return canonical


def file_with_role(manifest: "Manifest", role: str) -> str | None:  # noqa: F821
    """The artifact's file (relative path) recorded with ``role``, or None."""
    return next((rel for rel, entry in manifest.files.items() if entry.role == role), None)


def int8_graph_file(manifest: "Manifest", *, fused: bool = False, directory: Path | None = None) -> str:  # noqa: F821
    """The INT8 graph a runner opens: the fused-SGE one when ``fused`` and recorded, else ``model.int8.onnx``.

    Each graph passes its parity gate on its own, so either may be missing; a PrecisionError then says which graphs
    the export left out and why (or that the artifact was exported without ``--int8``).
    """
    found = (fused and file_with_role(manifest, INT8_FUSED_ROLE)) or file_with_role(manifest, INT8_ROLE)
    if not found:
        raise PrecisionError(missing_int8_graph(manifest, fused=fused, directory=directory))
    return found


def plain_int8_file(manifest: "Manifest", *, fused: bool, directory: Path | None = None) -> str | None:  # noqa: F821
    """The plain INT8 graph (``model.int8.onnx``) a runner falls back to; None where only the fused INT8 graph
    passed its gate and ``fused`` lets it run alone; a PrecisionError where neither can run."""
    plain = file_with_role(manifest, INT8_ROLE)
    if plain is not None:
        return plain
    if fused and file_with_role(manifest, INT8_FUSED_ROLE):
        return None
    raise PrecisionError(missing_int8_graph(manifest, fused=fused, directory=directory))


def int8_record(manifest: "Manifest") -> dict:  # noqa: F821
    """The manifest's ``extra.int8`` section (calibration, graphs), or {} where it has none or it is malformed."""
    int8 = manifest.extra.get("int8")
    return int8 if isinstance(int8, dict) else {}


def recorded_int8_graphs(manifest: "Manifest") -> dict[str, dict]:  # noqa: F821
    """Every INT8 graph the export made and recorded, passed or not: file → its entry (weight_bits, passed, ...)."""
    graphs = int8_record(manifest).get("graphs")
    return {str(g.get("file")): g for g in (graphs if isinstance(graphs, list) else ()) if isinstance(g, dict)}


def failed_int8_graphs(manifest: "Manifest") -> dict[str, str]:  # noqa: F821
    """The INT8 graphs the export made but left out for failing their parity gate: file → its parity report."""
    graphs = recorded_int8_graphs(manifest)
    return {name: str(g.get("parity_json")) for name, g in graphs.items() if g.get("passed") is False}


def missing_int8_graph(manifest: "Manifest", *, fused: bool, directory: Path | None = None) -> str:  # noqa: F821
    """Why the artifact (in ``directory``, where known) records no INT8 graph a runner can open (``fused``: the
    fused-SGE one would do), in one line."""
    from export.reexport import export_command

    if not int8_record(manifest):
        return (
            f"the {manifest.model} artifact has no INT8 graph (role {INT8_ROLE!r}); re-export it with "
            f"`{export_command(manifest, directory=directory, adding=('--int8',))}`"
        )
    usable = (INT8_NAME, INT8_FUSED_NAME) if fused else (INT8_NAME,)
    failed = [f"{name} ({report})" for name, report in failed_int8_graphs(manifest).items() if name in usable]
    its, was = ("its", "was") if len(failed) == 1 else ("their", "were")
    why = (
        f"{', '.join(failed)} failed {its} INT8 parity gate and {was} left out" if failed else f"it has no {INT8_NAME}"
    )
    fused_file = file_with_role(manifest, INT8_FUSED_ROLE)
    if fused_file and not fused:
        why += f" ({fused_file}, which it has, runs only on the CPU with the fused-SGE graph: sge_fused=True)"
    seven_bit = any(recorded_int8_graphs(manifest).get(name, {}).get("weight_bits") == 7 for name in usable)
    bits = f", or {EIGHT_BIT_WEIGHTS}" if failed and seven_bit else ""
    return (
        f"the {manifest.model} artifact was exported with --int8 but {why}; re-export it with --int8 and other "
        f"calibration (--calib-images DIR of your own photographs, --calib-method percentile|entropy{bits}), or run "
        "fp32"
    )


def fused_int8_cannot_run(
    manifest: "Manifest",  # noqa: F821
    backend: str,
    fused_file: str,
    reason: str,
    *,
    directory: Path | None = None,
) -> PrecisionError:
    """The fused INT8 graph failed on ``backend`` and the artifact has no plain INT8 graph to fall back to: both, in
    one line (the fused graph was tried, so the message never points back at it)."""
    missing = missing_int8_graph(manifest, fused=True, directory=directory)
    return PrecisionError(f"{backend} cannot run {fused_file} here ({reason}), and {missing}")


def parity_file(graph: str) -> str:
    """The INT8 parity report's name for a graph file: ``model.int8.onnx`` → ``parity_model_int8.json``."""
    return f"parity_{graph.removesuffix('.onnx').replace('.', '_')}.json"


# /proc/cpuinfo names of the instructions that sum uint8 × int8 products in 32 bits (VNNI, AMX); without them x86
# kernels pair products in 16 bits (vpmaddubsw), which 8-bit weights can saturate (export.int8.calibration).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# what a 7-bit graph below its gate may try instead, where the user knows the CPUs (README: INT8, weight range)
EIGHT_BIT_WEIGHTS = "--int8-weight-bits 8 where every CPU it runs on has VNNI or AMX"


def int8_weight_bits(manifest: "Manifest", graph_file: str) -> int:  # noqa: F821
    """The weight range (7 or 8 bits) the export wrote ``graph_file`` with; 8 for artifacts from before the choice."""
    bits = recorded_int8_graphs(manifest).get(graph_file, {}).get("weight_bits", 8)
    return bits if bits in (7, 8) else 8


def int8_saturates(manifest: "Manifest", graph_file: str, cpu_flags: set[str] | None = None) -> bool:  # noqa: F821
    """Whether ``graph_file``'s integer sums can saturate on a CPU with these /proc/cpuinfo flags (default: this
    one's): 8-bit weights on x86 without VNNI or AMX. Not x86 (no flags): not judged, False."""
    if cpu_flags is None:
        from export.ort_sge.kernels.build import cpu_flags as this_cpu  # the standard library only

        cpu_flags = this_cpu()
    return bool(cpu_flags) and not cpu_flags & VNNI_FLAGS and int8_weight_bits(manifest, graph_file) == 8


def saturation_note(
    manifest: "Manifest",  # noqa: F821
    graph_file: str,
    *,
    backend: str,
    cpu_flags: set[str] | None = None,
    directory: Path | None = None,
) -> str | None:
    """One line where ``graph_file`` can saturate on this CPU (``int8_saturates``); None where it runs as exported.
    ``directory``: the artifact's, for the re-export command."""
    from export.reexport import export_command

    if not int8_saturates(manifest, graph_file, cpu_flags):
        return None
    return (
        f"{backend}: {graph_file} has 8-bit weights and this CPU has no VNNI ({', '.join(sorted(VNNI_FLAGS))}): "
        "its uint8×int8 sums can saturate here and move the logits beyond the export's INT8 parity; re-export "
        f"with `{export_command(manifest, directory=directory, adding=('--int8',))}` (7-bit weights, the default)"
    )
