"""The export pipeline's INT8 stage: calibrate, quantise, check each INT8 graph, keep those that pass.

``add_int8_graphs`` writes into the directory the pipeline gives it and returns what to record in the manifest:

1. ranges of the portable FP32 graph on the calibration photographs (one pass), reused for
   ``model.int8.onnx`` (U8S8, the CPU file) and ``model.int8_s8s8.onnx`` (S8S8, TensorRT's Q/DQ);
2. for SGE models with a fused graph: ranges of ``model.sge_fused.onnx`` (its session registers the custom-op
   library) and ``model.int8.sge_fused.onnx`` (U8S8, ONNX Runtime CPU's fast INT8 file);
3. per graph: a check that no Q/DQ sits inside an SGE region, and parity against FP32 eager PyTorch and against the
   FP32 ONNX (``export.int8.parity``), written to ``parity_<graph>.json``.

A graph that fails is deleted (its parity report stays, unrecorded), so only passing INT8 graphs exist beside the
manifest; the caller exits 1.
"""

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export.artifacts import write_json
from export.int8.calibration import CalibrationOptions
from export.int8.parity import Int8Parity, int8_parity
from export.int8.quantize import WEIGHT_LIMIT, calibrate, largest_int8_weight, quantize_graph, scheme_of
from export.int8.roles import (
    INT8_FUSED_NAME,
    INT8_FUSED_ROLE,
    INT8_NAME,
    INT8_ROLE,
    INT8_S8S8_NAME,
    INT8_S8S8_ROLE,
    SCHEME_OF_ROLE,
    parity_file,
)
from export.int8.sge_regions import qdq_inside_sge, sge_regions
from export.ort_sge.nchwc import FUSED_DOMAIN
from export.parity import in_chunks

logger = logging.getLogger(__name__)

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Int8Graph:
    name: str  # file name in the artifact directory
    role: str
    scheme: str
    parity: Int8Parity
    parity_name: str
    sge_regions_float: int  # SGE regions (or fused SGE nodes) found float in the graph
    weight_bits: int = 8  # the int8 weights' range (export.int8.calibration.WEIGHT_BITS)

    @property
    def passed(self) -> bool:
        return self.parity.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.name,
            "role": self.role,
            "parity_json": self.parity_name,
            "sge_regions_float": self.sge_regions_float,
            "weight_bits": self.weight_bits,
            **self.parity.summary(),
            "failures": list(self.parity.failures),  # every failed case: a failed graph's report is not written
        }


@dataclass
class Int8Result:
    calibration: dict[str, Any]
    graphs: list[Int8Graph] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.graphs)

    def failure_summary(self, *, every_case: str) -> list[str]:
        """One phrase per failed graph: how many of its cases failed and the first of them (a line listing every case
        of every batch, against eager and against the FP32 graph, ran to 3,000 characters), and ``every_case``: where
        they all are (a failed graph's report is not written into the artifact)."""
        return [
            f"{g.name}: {len(g.parity.failures)} case(s) failed, first {g.parity.failures[0]} ({every_case})"
            for g in self.graphs
            if g.parity.failures
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"calibration": self.calibration, "graphs": [g.to_dict() for g in self.graphs]}


def every_case_phrase(json_path: Any) -> str:
    """Where a command's output lists every INT8 case: its --json file, or how to get one."""
    if json_path is None:
        return "every case: rerun with --json FILE"
    return "every case in the JSON on standard output" if str(json_path) == "-" else f"every case in {json_path}"


def add_int8_graphs(
    directory: str | Path,
    *,
    eager: Runner,
    fp32_onnx: Path,
    fused_onnx: Path | None,
    calibration: np.ndarray,
    options: CalibrationOptions,
    photos: np.ndarray,
    random_inputs: np.ndarray,
    input_name: str,
    batch_sizes: tuple[int, ...],
    photo_set: int | None = None,
) -> Int8Result:
    """Write, check and keep-or-delete the INT8 graphs of an FP32 export (see the module docstring)."""
    directory = Path(directory)
    inputs = {"photos": photos, "random": random_inputs}
    references = int8_references(eager, fp32_onnx, inputs, input_name=input_name, batch_sizes=batch_sizes)
    result = Int8Result(calibration={**options.to_dict(), "samples": len(calibration)})
    plan = [(fp32_onnx, INT8_NAME, INT8_ROLE), (fp32_onnx, INT8_S8S8_NAME, INT8_S8S8_ROLE)]
    library = _fused_library() if fused_onnx is not None else None
    if library is not None:
        plan.append((fused_onnx, INT8_FUSED_NAME, INT8_FUSED_ROLE))
    with tempfile.TemporaryDirectory(prefix="sge-int8-ranges-") as tmp:
        ranges: dict[Path, Path] = {}
        for src, name, role in plan:
            scheme = SCHEME_OF_ROLE[role]
            if src not in ranges:
                ranges[src] = calibrate(
                    src,
                    calibration,
                    input_name=input_name,
                    method=options.method,
                    ranges_path=Path(tmp) / f"{src.stem}.json",
                    library=library if src == fused_onnx else None,
                )
            bits = options.cpu_weight_bits if scheme == "u8s8" else 8  # TensorRT's S8S8 sums in 32 bits
            path = quantize_graph(
                src, directory / name, ranges_path=ranges[src], method=options.method, scheme=scheme, weight_bits=bits
            )
            graph = check_int8_graph(
                path,
                role=role,
                library=library if src == fused_onnx else None,
                inputs=inputs,
                references=references,
                input_name=input_name,
                batch_sizes=batch_sizes,
                photo_set=photo_set,
                weight_bits=bits,
            )
            write_json(directory / graph.parity_name, graph.parity.to_dict())
            if not graph.passed:
                logger.error("%s failed INT8 parity (%s); deleted", name, "; ".join(graph.parity.failures))
                path.unlink()
            result.graphs.append(graph)
    return result


def int8_references(
    eager: Runner,
    fp32_onnx: Path,
    inputs: dict[str, np.ndarray],
    *,
    input_name: str,
    batch_sizes: tuple[int, ...],
) -> dict[str, dict[str, np.ndarray]]:
    """The logits the INT8 gates compare against: eager PyTorch's and the FP32 ONNX's, on every input kind."""
    from export.validate import onnxruntime_runner

    fp32 = onnxruntime_runner(fp32_onnx, input_name=input_name, fused=False)
    largest = max(batch_sizes)  # the full photo set runs in batches of this size, never as one
    return {
        "eager": {kind: in_chunks(eager, x, largest) for kind, x in inputs.items()},
        "fp32_onnx": {kind: in_chunks(fp32, x, largest) for kind, x in inputs.items()},
    }


def check_int8_graph(
    path: Path,
    *,
    role: str,
    library: Path | None,
    inputs: dict[str, np.ndarray],
    references: dict[str, dict[str, np.ndarray]],
    input_name: str,
    batch_sizes: tuple[int, ...],
    weight_bits: int,
    photo_set: int | None = None,
) -> Int8Graph:
    """One INT8 graph against its gates (export.int8.parity) and its structure: no Q/DQ inside SGE, the activation
    type of its scheme, weights within ``weight_bits``. ``library``: the fused-SGE kernel, for the fused graph;
    ``photo_set``: how many distinct photographs head ``inputs["photos"]``."""
    from export.validate import onnxruntime_runner

    scheme = SCHEME_OF_ROLE[role]
    model = onnx.load(str(path))
    regions = sge_regions(model)
    inside = qdq_inside_sge(model)
    counts = scheme_of(model)
    runner = onnxruntime_runner(path, input_name=input_name, fused=library is not None)
    parity = int8_parity(
        path.name, scheme, runner, inputs=inputs, references=references, batch_sizes=batch_sizes, photo_set=photo_set
    )
    if inside:
        parity.failures.append(f"Q/DQ inside SGE's float region: {', '.join(inside[:5])}")
    want = "int8" if scheme == "s8s8" else "uint8"
    if set(counts) != {want}:
        parity.failures.append(f"activations should all be {want}; the graph's QuantizeLinear types are {counts}")
    widest = largest_int8_weight(model)
    if widest > WEIGHT_LIMIT[weight_bits]:
        parity.failures.append(f"an int8 weight of {widest} exceeds the {weight_bits}-bit range")
    floats = len(regions) + sum(n.domain == FUSED_DOMAIN for n in model.graph.node)
    return Int8Graph(
        name=path.name,
        role=role,
        scheme=scheme,
        parity=parity,
        parity_name=parity_file(path.name),
        sge_regions_float=floats,
        weight_bits=weight_bits,
    )


def _fused_library() -> Path | None:
    from export.ort_sge.kernels import KernelUnavailableError, kernel_library

    try:
        return kernel_library()
    except KernelUnavailableError as err:
        logger.warning("%s; writing no %s (model.int8.onnx is complete without it)", err, INT8_FUSED_NAME)
        return None
