"""OpenVINO precisions: the names users give, what OpenVINO is asked for, what it actually runs, parity gates.

``fp32`` (alias ``f32``) pins ``INFERENCE_PRECISION_HINT`` to f32: the exported model's own numerics. ``bf16`` asks
for bfloat16 compute (OpenVINO's default on CPUs with AVX512-BF16 or AMX; weights and activations rounded to 8
mantissa bits, accumulation in f32). ``int8`` runs the artifact's Q/DQ model (manifest role ``model-int8``) with
its unquantised layers in f32 (for an SGE model, its fused INT8 graph). ``fp16`` is OpenVINO's f16 hint, native where
OpenVINO lists FP16 in the CPU's ``OPTIMIZATION_CAPABILITIES`` (its CPU plugin counts AVX512-FP16 and AVX2-VNNI-2).

On a CPU without the native instructions OpenVINO silently runs f32; ``precision_note`` turns the compiled
model's own ``INFERENCE_PRECISION_HINT`` and the device's ``OPTIMIZATION_CAPABILITIES`` into the one line that
says so. The gates are what each precision must reach against eager FP32 PyTorch (README, OpenVINO precisions).
"""

from dataclasses import asdict, dataclass
from typing import Any

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # int8: the unquantised layers in f32
CAPABILITIES = {"bf16": "BF16", "fp16": "FP16", "int8": "INT8"}  # OPTIMIZATION_CAPABILITIES entry it needs


@dataclass(frozen=True)
class ParityGate:
    """Worst sample's cosine and relative L2 against eager FP32 PyTorch; ``atol`` on every logit where set."""

    min_cosine: float
    max_rel_l2: float
    atol: float | None = None

    def failures(self, *, cosine: float, rel_l2: float, max_abs: float) -> list[str]:
        problems = []
        if cosine < self.min_cosine:
            problems.append(f"cosine {cosine:.6f} < {self.min_cosine}")
        if rel_l2 > self.max_rel_l2:
            problems.append(f"relative L2 {rel_l2:.3g} > {self.max_rel_l2}")
        if self.atol is not None and max_abs > self.atol:
            problems.append(f"max abs {max_abs:.3g} > {self.atol}")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Worst photograph against eager FP32 PyTorch (README, OpenVINO precisions; scripts/reports/openvino_precisions_*):
# fp32: the export gates (ExportSpec). bf16: cosine 0.99929 and relative L2 0.038 on resnet50, 0.99984 and 0.018 on
# sge_resnet50 (224²); the gate is the cosine 0.999 and 0.05. int8 (Q/DQ, photographs as calibration):
# cosine 0.9937 and relative L2 0.11 on resnet50; the gate 0.98 and 0.2. fp16 is not measured (no native-f16 run).
GATES = {
    "fp32": ParityGate(min_cosine=1.0 - 1e-9, max_rel_l2=1e-5, atol=1e-4),
    "bf16": ParityGate(min_cosine=0.999, max_rel_l2=0.05),
    "fp16": ParityGate(min_cosine=0.9999, max_rel_l2=0.01),
    "int8": ParityGate(min_cosine=0.98, max_rel_l2=0.2),
}


def hint_name(value: Any) -> str:
    """An ``INFERENCE_PRECISION_HINT`` value (an ov.Type or a string) as OpenVINO's short name: f32, bf16, f16."""
    text = str(value.get_type_name() if hasattr(value, "get_type_name") else value).lower()
    return {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(text, text)


def runs_as(precision: str, compiled_hint: str, capabilities: list[str]) -> str:
    """The precision that actually runs, given what was asked, the compiled model's hint and the device."""
    if precision == "int8":  # without INT8 kernels OpenVINO decomposes the Q/DQ pairs into f32 arithmetic
        return "int8" if "INT8" in capabilities else "fp32 (int8 emulated)"
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(compiled_hint, compiled_hint)


def precision_note(precision: str, *, compiled_hint: str, capabilities: list[str], cpu: str) -> str | None:
    """One line when ``precision`` does not run as asked (the CPU lacks its instructions); None when it does."""
    actual = runs_as(precision, compiled_hint, capabilities)
    needed = CAPABILITIES.get(precision)
    if actual == precision and (needed is None or needed in capabilities):
        return None
    why = (
        f"this CPU ({cpu}) lacks native {precision} (OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)})"
        if needed is not None and needed not in capabilities
        else f"OpenVINO compiled it as {compiled_hint}"
    )
    return f"openvino: {precision} requested but {why}; it runs {actual}"
