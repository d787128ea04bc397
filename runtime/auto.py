"""``--backend auto``: the fastest (backend, precision) this machine offers for an artifact, within the precision
the user allows, chosen from a short measured calibration or from a table stored by an earlier one.

Precisions rank by what they give up: fp32 (nothing) < bf16 (8-bit mantissa) < int8 (post-training quantisation).
``min_precision`` is the lowest rank allowed; the default, fp32, never loses precision. Candidates are ONNX Runtime
fp32 and OpenVINO fp32, plus OpenVINO bf16 where the CPU runs it natively (else it would run f32 under another
name) and OpenVINO int8 where the artifact holds an INT8 model. Each candidate is timed in one interleaved run on
the artifact's own input shape; the table stores the medians under the CPU's name, the model, batch and threads, and
is reused only when all four match.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import write_json
from export.int8.roles import INT8_ROLE, normalise_precision
from runtime.source import ModelSource, open_source

logger = logging.getLogger(__name__)

RANK = {"fp32": 0, "bf16": 1, "fp16": 1, "int8": 2}


@dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def options(self, threads: int | None, *, timing: bool = False) -> dict[str, Any]:
        """runtime.load options; ``timing``: ONNX Runtime's idle threads sleep while the others are timed."""
        options: dict[str, Any] = {"threads": threads}
        if self.backend == "openvino":
            options["precision"] = self.precision
        elif timing:
            options["allow_spinning"] = False
        return options


@dataclass
class AutoChoice:
    backend: str
    precision: str
    reason: str
    medians_ms: dict[str, float] = field(default_factory=dict)
    source: str = "measured"  # or "table"

    def load_options(self) -> dict[str, Any]:
        """runtime.load options besides threads: the precision, for OpenVINO."""
        return {"precision": self.precision} if self.backend == "openvino" else {}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidates(source: ModelSource, *, min_precision: str, capabilities: list[str]) -> list[Candidate]:
    """The (backend, precision) pairs worth timing here, within ``min_precision``."""
    allowed = RANK[normalise_precision(min_precision)]
    found = [Candidate("onnxruntime", "fp32"), Candidate("openvino", "fp32")]
    if allowed >= RANK["bf16"] and "BF16" in capabilities:
        found.append(Candidate("openvino", "bf16"))
    roles = {entry.role for entry in source.manifest.files.values()} if source.manifest is not None else set()
    if allowed >= RANK["int8"] and INT8_ROLE in roles:
        found.append(Candidate("openvino", "int8"))
    return found


def openvino_capabilities() -> tuple[str, list[str]]:
    """(CPU name, OPTIMIZATION_CAPABILITIES) as OpenVINO reports them; ("", []) without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return "", []
    core = ov.Core()
    return str(core.get_property("CPU", "FULL_DEVICE_NAME")), list(
        core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    )


def measure(source: ModelSource, chosen: list[Candidate], *, batch: int, threads: int | None) -> dict[str, float]:
    """Median ms per query of each candidate, one short interleaved run; a backend that cannot load is left out."""
    from contextlib import ExitStack

    import runtime
    from runtime.backends.base import BackendUnavailableError
    from runtime.bench import measure_all
    from runtime.latency import BenchmarkConfig

    shape = [d if isinstance(d, int) and d > 0 else batch for d in source.input_spec.shape]
    inputs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with ExitStack() as stack:
        runners = {}
        for candidate in chosen:
            try:
                runners[candidate.label] = stack.enter_context(
                    runtime.load(source, candidate.backend, **candidate.options(threads, timing=True))
                )
            except BackendUnavailableError as err:
                logger.info("auto: %s left out (%s)", candidate.label, err)
        config = BenchmarkConfig(warmup_ms=100.0, duration_s=0.5, iterations=5, mode="interleave")
        reports = measure_all(runners, inputs, config)
    return {report.backend: report.latency.median for report in reports}


def table_key(cpu: str, source: ModelSource, batch: int, threads: int | None) -> str:
    return f"{cpu} | {source.model_name or source.model_path.name} | batch {batch} | threads {threads}"


def choose_backend(
    path: str | Path | ModelSource,
    *,
    min_precision: str = "fp32",
    batch: int = 1,
    threads: int | None = None,
    table: str | Path | None = None,
) -> AutoChoice:
    """The fastest allowed (backend, precision) for ``path`` here, with the reason in words."""
    source = open_source(path)
    cpu, capabilities = openvino_capabilities()
    chosen = candidates(source, min_precision=min_precision, capabilities=capabilities)
    key = table_key(cpu, source, batch, threads)
    stored = json.loads(Path(table).read_text()) if table is not None and Path(table).is_file() else {}
    allowed = {c.label for c in chosen}
    medians = {k: v for k, v in stored.get(key, {}).items() if k in allowed}
    origin = "table"
    if set(medians) != allowed:
        medians, origin = measure(source, chosen, batch=batch, threads=threads), "measured"
        if table is not None:
            write_json(table, {**stored, key: medians})
    best = min(medians, key=medians.get)
    backend, precision = best.split(" ")
    others = ", ".join(f"{label} {ms:.1f} ms" for label, ms in sorted(medians.items(), key=lambda kv: kv[1]))
    skipped = "" if "BF16" in capabilities or RANK[normalise_precision(min_precision)] == 0 else "; no native bf16"
    reason = (
        f"{best}: fastest of {others} ({origin} on {cpu or 'this CPU'}, batch {batch}, threads {threads}; "
        f"precision allowed down to {normalise_precision(min_precision)}{skipped})"
    )
    return AutoChoice(backend=backend, precision=precision, reason=reason, medians_ms=medians, source=origin)
