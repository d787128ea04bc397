"""One export specification drives both the export and its validation (names, shapes, dynamic axes, opset, tolerances).

The defaults are the project's deployment contract: input ``input`` (N, 3, H, W) float32 NCHW with a symbolic batch
``batch``, output ``logits`` (N, classes), opset 17, onnxsim, and the FP32 parity tolerances the README measures.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from export.artifacts import MAX_INPUT_SIDE, TensorSpec

EXPORTERS = ("torchscript", "dynamo")
SIMPLIFIERS = ("onnxsim", "onnxslim", "none")
SGE_FORMS = ("compact", "official")  # export/sge_compact.py; the README's Performance section has the measurements
# TensorRT 10's ONNX parser and ONNX Runtime both import opsets up to 20; the dynamo exporter emits 18 or newer.
MIN_OPSET, MAX_OPSET = 13, 20

# The smallest height and width of the dynamo exporter's symbolic range (--dynamic-hw); the example input, and so
# --input-size, must lie in that range.
MIN_DYNAMO_DYNAMIC_SIDE = 33
MAX_PARITY_BATCH = 64


def fits_input_side(*sides: object) -> bool:
    """Every side a whole number in 1..MAX_INPUT_SIDE (an export's input, a manifest's, inspect's --input-size)."""
    return all(isinstance(side, int) and 1 <= side <= MAX_INPUT_SIDE for side in sides)


class SpecError(ValueError):
    """An export option is out of range."""


@dataclass(frozen=True)
class ExportSpec:
    input_name: str = "input"
    output_name: str = "logits"
    input_size: tuple[int, int] = (224, 224)  # (H, W) of the example input and of the parity inputs
    dynamic_hw: bool = False  # the batch is always dynamic; height and width only on request
    opset: int = 17
    exporter: str = "torchscript"  # see the README (Export) for the measurements behind this default
    simplifier: str = "onnxsim"
    sge_form: str = "official"  # "compact": SGE as CompactSGE (same numerics, no Reshape; README, Performance)
    fused_sge: bool = (
        True  # SGE models: also model.sge_fused.onnx, ONNX Runtime CPU's fast graph (export/ort_sge/graph.py)
    )
    atol: float = 1e-4  # gate: max |onnx - eager| over every logit
    rtol: float = 1e-5  # gate: ‖onnx - eager‖₂ / ‖eager‖₂ per case
    noise_floor: bool = True  # False: atol/rtol are final, no FP32 noise-floor pass (gates given explicitly)
    batch_sizes: tuple[int, ...] = (1, 3, 8)  # parity batches, none of them the example batch
    example_batch: int = 2  # neither 0 nor 1, which torch.export specialises into a constant
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        h, w = self.input_size
        if not fits_input_side(h, w):
            problems.append(f"input size must be 1..{MAX_INPUT_SIDE} on each side; got {h}×{w}")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            problems.append(
                f"opset must be within {MIN_OPSET}..{MAX_OPSET} (TensorRT 10 and ONNX Runtime); got {self.opset}"
            )
        if self.exporter == "dynamo" and self.opset < 18:
            problems.append(
                f"the dynamo exporter emits opset 18 or newer; got opset {self.opset} (17 by default): pass --opset 18"
            )
        if self.exporter == "dynamo" and self.dynamic_hw and min(self.input_size) < MIN_DYNAMO_DYNAMIC_SIDE:
            problems.append(
                f"the dynamo exporter with --dynamic-hw needs --input-size of at least {MIN_DYNAMO_DYNAMIC_SIDE}; "
                f"got {list(self.input_size)}"
            )
        if self.exporter not in EXPORTERS:
            problems.append(f"exporter must be one of {', '.join(EXPORTERS)}; got {self.exporter!r}")
        if self.simplifier not in SIMPLIFIERS:
            problems.append(f"simplifier must be one of {', '.join(SIMPLIFIERS)}; got {self.simplifier!r}")
        if self.sge_form not in SGE_FORMS:
            problems.append(f"sge_form must be one of {', '.join(SGE_FORMS)}; got {self.sge_form!r}")
        if not (0 < self.atol < math.inf and 0 < self.rtol < math.inf):  # NaN or inf would switch the gates off
            problems.append(f"tolerances must be positive and finite; got atol={self.atol}, rtol={self.rtol}")
        if not self.batch_sizes or min(self.batch_sizes) < 1 or max(self.batch_sizes) > MAX_PARITY_BATCH:
            problems.append(f"parity batch sizes must lie in 1..{MAX_PARITY_BATCH}; got {list(self.batch_sizes)}")
        if self.example_batch < 2:
            problems.append(
                f"the example batch must be at least 2 so the batch stays symbolic; got {self.example_batch}"
            )
        if problems:
            raise SpecError("; ".join(problems))

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        h, w = ("height", "width") if self.dynamic_hw else self.input_size
        return ("batch", 3, h, w)

    def example_shape(self) -> tuple[int, int, int, int]:
        return (self.example_batch, 3, *self.input_size)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """The TorchScript exporter's form."""
        axes = {0: "batch"} | ({2: "height", 3: "width"} if self.dynamic_hw else {})
        return {self.input_name: axes, self.output_name: {0: "batch"}}

    def dynamic_shapes(self) -> tuple[dict[int, Any]]:
        """torch.export's form (the dynamo exporter), by position: the forward's one argument, whatever its name."""
        from torch.export import Dim

        axes: dict[int, Any] = {0: Dim("batch", min=1, max=4096)}
        if self.dynamic_hw:
            side = {"min": MIN_DYNAMO_DYNAMIC_SIDE, "max": 4096}
            axes |= {2: Dim("height", **side), 3: Dim("width", **side)}
        return (axes,)

    def input_spec(self) -> TensorSpec:
        return TensorSpec(self.input_name, self.input_shape, "float32", "NCHW")

    def output_spec(self, num_classes: int) -> TensorSpec:
        return TensorSpec(self.output_name, ("batch", num_classes), "float32", "NC")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["batch_sizes"] = list(self.batch_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExportSpec":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        for key in ("input_size", "batch_sizes"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)
