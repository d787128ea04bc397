"""An artifact on the GPU against FP32 eager PyTorch on the CPU: each GPU variant's parity on seeded random inputs
and on the bundled photographs (export/parity.py's statistics), for a GPU report and the `gpu` tests.

Variants: eager PyTorch on CUDA in FP32 (TF32 off, the runner's default) and FP16; ONNX Runtime's CUDA provider
in FP32 (use_tf32=0, the runner's default) and with TF32 on (the provider's own default, shown for what it costs).
A variant whose backend is missing (no CUDA torch, no onnxruntime-gpu) is reported as skipped with the reason.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.parity import ParityStats, compare

# name → (backend, runner options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "torch:cuda:fp32": ("torch", {"device": "cuda"}),
    "torch:cuda:fp16": ("torch", {"device": "cuda", "precision": "fp16"}),
    "onnxruntime:cuda:fp32": ("onnxruntime", {"device": "cuda"}),
    "onnxruntime:cuda:tf32": ("onnxruntime", {"device": "cuda", "provider_options": {"use_tf32": 1}}),
}


@dataclass(frozen=True)
class VariantParity:
    name: str
    random: ParityStats | None  # None: skipped
    photos: ParityStats | None
    skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.name,
            "random": self.random.to_dict() if self.random else None,
            "photos": self.photos.to_dict() if self.photos else None,
            "skipped": self.skipped,
        }


def _outputs(runner: Any, batches: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with runner:
        return {kind: np.asarray(runner.infer(batch), dtype=np.float32) for kind, batch in batches.items()}


def gpu_parity(
    artifact: str | Path, batches: dict[str, np.ndarray], variants: list[str] | None = None
) -> list[VariantParity]:
    """Each variant against FP32 eager PyTorch on the CPU, on ``batches`` ({"random": …, "photos": …}); a variant
    whose backend cannot reach the GPU here (the runner's BackendUnavailableError) is skipped with the reason, and
    any other failure propagates."""
    import runtime
    from runtime.backends.base import BackendUnavailableError

    reference = _outputs(runtime.load(artifact, "torch"), batches)
    results = []
    for name in variants or list(VARIANTS):
        backend, options = VARIANTS[name]
        try:
            got = _outputs(runtime.load(artifact, backend, **options), batches)
        except BackendUnavailableError as error:
            results.append(VariantParity(name, None, None, skipped=str(error)))
            continue
        stats = {kind: compare(reference[kind], got[kind]) for kind in ("random", "photos")}
        results.append(VariantParity(name, stats["random"], stats["photos"]))
    return results
