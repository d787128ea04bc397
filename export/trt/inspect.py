"""Engine validation and inspection after a build, as ``polygraphy run --trt --onnxrt`` and trtexec
``--dumpLayerInfo --profilingVerbosity=detailed`` do.

* **Parity**: the engine's outputs against ONNX Runtime FP32 on the photographs, gated per precision, written as
  ``model.plan.parity.json`` beside the plan.
* **Layer information**: the engine inspector's JSON (the build sets ``ProfilingVerbosity.DETAILED``; the inspector
  is given an execution context with the OPT shape set, otherwise formats read "N/A due to dynamic shapes"), saved
  as ``model.plan.layers.json``; ``check_fp32_islands`` reads it and proves that every engine layer made from one
  of SGE's normalisation nodes (by its ``[ONNX Layer: …]`` metadata or its fused name) computes in FP32. A Myelin
  region (``ForeignNode[…]``) shows only its own outputs: the islands inside it are reported as not proven.

The checks are pure functions of the JSON and the arrays; only ``engine_layer_info`` and ``engine_parity`` touch
TensorRT (through the runner).
"""

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.parity import in_chunks

logger = logging.getLogger(__name__)

PARITY_NAME = "model.plan.parity.json"
LAYERS_NAME = "model.plan.layers.json"
ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


class EngineParityError(AssertionError):
    """The engine's outputs are outside its precision's gate against ONNX Runtime FP32 (exit 1)."""


@dataclass(frozen=True)
class ParityGate:
    """Per precision: the largest |Δlogit| as a share of the largest |logit|, and the least top-1 agreement."""

    max_rel: float
    min_top1: float


# FP32 with TF32 off: summation order only. FP16 with FP32 islands: FP16 storage of activations, as the CPU parity
# of model_fp16.onnx shows (0.19 % on sge_resnet50). INT8: scales from 7-ish photos; top-1 may move on close calls.
GATES = {"fp32": ParityGate(1e-3, 1.0), "fp16": ParityGate(0.02, 1.0), "int8": ParityGate(0.15, 5 / 7)}


@dataclass
class ParityReport:
    precision: str
    cases: int
    max_abs: float
    max_rel: float
    top1_agreement: float
    gate: ParityGate
    passed: bool
    reference: str = "ONNX Runtime FP32 (CPU EP), model.onnx"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gate": asdict(self.gate)}


def compare_outputs(got: np.ndarray, ref: np.ndarray, *, precision: str) -> ParityReport:
    """The engine's outputs ``got`` against the reference ``ref``, judged by the precision's gate."""
    if got.shape != ref.shape:
        raise EngineParityError(f"the engine returned shape {got.shape}; ONNX Runtime returned {ref.shape}")
    diff = np.abs(got.astype(np.float64) - ref)
    rel = diff.max(axis=1) / np.maximum(np.abs(ref).max(axis=1), 1e-12)
    top1 = float((got.argmax(1) == ref.argmax(1)).mean())
    gate = GATES[precision]
    finite = bool(np.isfinite(got).all())
    passed = finite and float(rel.max()) <= gate.max_rel and top1 >= gate.min_top1
    return ParityReport(precision, len(got), float(diff.max()), float(rel.max()), top1, gate, passed)


def engine_parity(plan: Path, onnx_path: Path, photos: np.ndarray, *, precision: str, input_name: str) -> ParityReport:
    """Run the plan (``TrtRunner``) and the FP32 ONNX (ONNX Runtime CPU) on ``photos`` and compare."""
    from export.validate import onnxruntime_runner
    from runtime.backends.trt import TrtRunner

    ref = onnxruntime_runner(onnx_path, input_name=input_name)(photos)
    with TrtRunner(plan) as runner:
        lo, hi = runner.batch_range  # a last chunk below the profile's MIN is padded, its padding's outputs dropped
        got = in_chunks(runner.infer, photos, hi, minimum=lo)
    return compare_outputs(got, ref, precision=precision)


def engine_layer_info(plan: Path) -> dict[str, Any]:
    """The engine inspector's JSON for ``plan`` with the profile's OPT shape set on an execution context."""
    from export.trt.build import import_tensorrt
    from export.trt.log import process_logger
    from runtime.backends.trt import input_shape_range

    trt = import_tensorrt()
    runtime = trt.Runtime(process_logger(trt))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise EngineParityError(f"TensorRT could not deserialize {plan} for inspection")
    context = engine.create_execution_context()
    if context is None:  # null where TensorRT cannot allocate the context's device memory
        raise EngineParityError(f"TensorRT could not create an execution context for {plan} (out of GPU memory?)")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            opt = input_shape_range(engine, name)[1]
            if not context.set_input_shape(name, opt):
                raise EngineParityError(f"TensorRT refused the OPT shape {opt} of {name!r} while inspecting")
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def tensor_precision(format_datatype: str) -> str:
    """The data type in a layer-info "Format/Datatype" (10.x) or "DataType" (11.x) string ("Row major linear FP32",
    "Float", "... Half ...", "BFloat16", "Int8")."""
    text = format_datatype.lower()
    for token, name in (
        ("bf16", "bf16"),  # before "float": "bfloat16" contains it
        ("bfloat", "bf16"),
        ("fp32", "fp32"),
        ("float", "fp32"),
        ("fp16", "fp16"),
        ("half", "fp16"),
        ("int8", "int8"),
        ("fp8", "fp8"),
        ("int32", "int32"),
        ("int64", "int64"),
        ("bool", "bool"),
    ):
        if token in text:
            return name
    return "unknown"  # "N/A due to dynamic shapes", or a format this table does not know


@dataclass
class IslandReport:
    """Whether every engine layer of SGE's normalisation runs in FP32, from the engine's layer information."""

    island_nodes: int
    layers_checked: int
    not_fp32: list[dict[str, Any]] = field(default_factory=list)  # layer, tensor, precision
    unknown: list[str] = field(default_factory=list)  # layers whose precision the JSON does not say
    opaque: list[str] = field(default_factory=list)  # fused regions (Myelin "ForeignNode[…]"): insides not shown
    nodes_not_found: list[str] = field(default_factory=list)  # fused beyond recognition (e.g. Myelin regions)

    @property
    def proven(self) -> bool:
        return bool(self.layers_checked) and not (self.not_fp32 or self.unknown or self.opaque)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "proven": self.proven}


def check_fp32_islands(
    layer_info: dict[str, Any], fp32_nodes: set[str], aliases: dict[str, str] | None = None
) -> IslandReport:
    """Every layer made from an FP32 ONNX node must have only FP32 float tensors; report every exception.
    ``aliases``: the parser's name of an unnamed node → the plan's name for it (``pinning.parser_aliases``)."""
    aliases = aliases or {}
    report = IslandReport(island_nodes=len(fp32_nodes), layers_checked=0)
    layers = layer_info.get("Layers", [])
    if layers and isinstance(layers[0], str):
        report.unknown.append("layer information holds names only: build with ProfilingVerbosity.DETAILED")
        return report
    seen: set[str] = set()
    for layer in layers:
        name = str(layer.get("Name", ""))
        nodes = set(ONNX_LAYER.findall(str(layer.get("Metadata", "")))) | {p.strip() for p in name.split(" + ")}
        mine = {aliases.get(n, n) for n in nodes} & fp32_nodes
        if not mine:
            continue
        if "ForeignNode[" in name:  # one region's outputs say nothing about the islands inside it
            report.opaque.append(name)
            continue
        seen |= mine
        report.layers_checked += 1
        for tensor in layer.get("Outputs", []):
            # 10.x: one "Format/Datatype" field; 11.x split it into "Format" and "DataType"
            precision = tensor_precision(str(tensor.get("Format/Datatype") or tensor.get("DataType") or ""))
            if precision == "unknown":
                report.unknown.append(name)
            elif precision not in ("fp32", "int32", "int64", "bool"):
                report.not_fp32.append({"layer": name, "tensor": tensor.get("Name"), "precision": precision})
    report.nodes_not_found = sorted(fp32_nodes - seen)
    return report
