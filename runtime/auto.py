"""``--backend auto``: the fastest (backend, precision) this machine offers for an artifact, within the precision
the user allows, chosen from a short measured calibration or from a table stored by an earlier one.

Precisions rank by what they give up: fp32 (nothing) < bf16 (8-bit mantissa) < int8 (post-training quantisation).
``min_precision`` is the lowest rank allowed; the default, fp32, never loses precision. Candidates are ONNX Runtime
fp32 and OpenVINO fp32, plus OpenVINO bf16 where the CPU runs it natively (else it would run f32 under another
name) and OpenVINO int8 where the artifact holds an INT8 model that runs here as exported (not 8-bit weights on an
x86 CPU without VNNI, where they saturate: export/int8/roles.py). Each candidate is timed in one interleaved run on
the artifact's own input shape; the table stores the medians under the CPU's name, the model, batch and threads, and
is reused only when all four match.
"""

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.artifacts import write_json
from export.int8.roles import INT8_FUSED_ROLE, INT8_ROLE, normalise_precision
from runtime.backends.base import one_line
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


def int8_saturates_here(source: ModelSource, cpu_flags: set[str] | None = None) -> bool:
    """Whether the artifact's INT8 graph has 8-bit weights and this x86 CPU (``cpu_flags``; default: its own) lacks
    VNNI, so that its integer sums saturate; False without an INT8 graph."""
    from export.int8.roles import PrecisionError, int8_graph_file, int8_saturates

    if source.manifest is None:
        return False
    try:
        graph = int8_graph_file(source.manifest, fused=True)
    except PrecisionError:
        return False
    return int8_saturates(source.manifest, graph, cpu_flags)


def candidates(
    source: ModelSource, *, min_precision: str, capabilities: list[str], cpu_flags: set[str] | None = None
) -> list[Candidate]:
    """The (backend, precision) pairs worth timing here, within ``min_precision`` (``cpu_flags``: this CPU's)."""
    allowed = RANK[normalise_precision(min_precision)]
    found = [Candidate("onnxruntime", "fp32")]
    if not openvino_available():  # the [openvino] extra is optional: its candidates are not offered, not failed
        return found
    found.append(Candidate("openvino", "fp32"))
    if allowed >= RANK["bf16"] and "BF16" in capabilities:
        found.append(Candidate("openvino", "bf16"))
    roles = {entry.role for entry in source.manifest.files.values()} if source.manifest is not None else set()
    offers_int8 = roles & {INT8_ROLE, INT8_FUSED_ROLE}  # the fused graph alone runs too
    if allowed >= RANK["int8"] and offers_int8 and not int8_saturates_here(source, cpu_flags):
        found.append(Candidate("openvino", "int8"))
    return found


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_capabilities() -> tuple[str, list[str]]:
    """(CPU name, OPTIMIZATION_CAPABILITIES) as OpenVINO reports them; without OpenVINO, the CPU name from
    /proc/cpuinfo (the stored table's key must still name the machine) and no capabilities."""
    if not openvino_available():
        from runtime.bench_report import machine_info

        return machine_info()["cpu_model"], []
    import openvino as ov

    core = ov.Core()
    return str(core.get_property("CPU", "FULL_DEVICE_NAME")), list(
        core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    )


def timing_shape(source: ModelSource, batch: int) -> list[int]:
    """The input shape the candidates are timed on: ``batch`` images (``choose_backend`` passes a graph's fixed
    batch, which is what infer pads to) at the size the artifact's preprocessing feeds (a dynamic H×W takes it from
    the manifest, never from the batch)."""
    from runtime.preprocess import preprocessing_for

    shape = list(source.input_spec.shape)
    if len(shape) == 4:
        height, width = preprocessing_for(source).size
        channels = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else 3
        return [batch, channels, height, width]
    return [batch, *(d if isinstance(d, int) and d > 0 else 1 for d in shape[1:])]


def measure(
    source: ModelSource, chosen: list[Candidate], *, batch: int, threads: int | None
) -> dict[str, float | None]:
    """Median ms per query of each candidate, one short interleaved run; None for one whose backend cannot load
    (stored so, the table is reused for it too)."""
    from contextlib import ExitStack

    import runtime
    from runtime.bench import measure_all
    from runtime.latency import BenchmarkConfig

    inputs = np.random.default_rng(0).standard_normal(timing_shape(source, batch)).astype(np.float32)
    with ExitStack() as stack:
        runners = {}
        for candidate in chosen:
            try:
                runners[candidate.label] = stack.enter_context(
                    runtime.load(source, candidate.backend, **candidate.options(threads, timing=True))
                )
            except Exception as err:  # any backend that cannot load is left out, never fatal
                logger.info("auto: %s left out (%s)", candidate.label, one_line(err))
        config = BenchmarkConfig(warmup_ms=100.0, duration_s=0.5, iterations=5, mode="interleave")
        reports = measure_all(runners, inputs, config)
    medians = {report.backend: report.latency.median for report in reports}
    return {candidate.label: medians.get(candidate.label) for candidate in chosen}


def read_table(table: str | Path | None) -> dict[str, Any]:
    """The stored medians (``{key: {candidate: ms or null}}``, null: it could not load); {} without a file. A file
    that is not such a table is one line that names it."""
    if table is None or not Path(table).is_file():
        return {}
    try:
        stored = json.loads(Path(table).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--auto-table {table} is not readable JSON ({err}); delete it or pass another file") from None
    valid = isinstance(stored, dict) and all(
        isinstance(row, dict) and all(ms is None or _is_median(ms) for ms in row.values()) for row in stored.values()
    )
    if not valid:
        raise ValueError(
            f"--auto-table {table} is not an auto table ({{key: {{candidate: ms}}}}, each a positive finite median "
            "or null); delete it or pass another file"
        )
    return stored


def _is_median(ms: Any) -> bool:
    return isinstance(ms, int | float) and not isinstance(ms, bool) and math.isfinite(ms) and ms > 0


def table_key(cpu: str, source: ModelSource, batch: int, threads: int | None) -> str:
    """What a timing holds for: the CPU, the model, its input shape and graph (the deploy file's sha256, where the
    manifest records it), the batch and the threads. Without the shape and the graph, a 160² export reused the 96²
    export's medians (a generic CPU name such as "Intel(R) Xeon(R) Processor" did not tell machines apart either)."""
    entry = source.manifest.files.get(source.manifest.deploy) if source.manifest is not None else None
    graph = entry.sha256[:12] if entry is not None else source.model_path.name
    shape = "×".join(str(d) for d in source.input_spec.shape[1:])
    name = source.model_name or source.model_path.name
    return f"{cpu} | {name} {shape} {graph} | batch {batch} | threads {threads}"


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
    batch = source.fixed_batch or batch  # what infer sends such a graph, and so what is timed and stored
    key = table_key(cpu, source, batch, threads)
    stored = read_table(table)
    allowed = {c.label for c in chosen}
    medians = {k: v for k, v in stored.get(key, {}).items() if k in allowed}
    origin = "table"
    if set(medians) != allowed or all(ms is None for ms in medians.values()):
        medians, origin = measure(source, chosen, batch=batch, threads=threads), "measured"
        if table is not None and any(ms is not None for ms in medians.values()):
            write_json(table, {**stored, key: medians})  # a run where nothing loaded is never kept
    medians = {label: ms for label, ms in medians.items() if ms is not None}
    if not medians:
        from runtime.backends.base import BackendUnavailableError

        raise BackendUnavailableError(
            "--backend auto: no candidate backend could be loaded here; install onnxruntime or openvino "
            "(pip install -e '.[onnxruntime]') or name a backend with --backend"
        )
    best = min(medians, key=medians.get)
    backend, precision = best.split(" ")
    others = ", ".join(f"{label} {ms:.1f} ms" for label, ms in sorted(medians.items(), key=lambda kv: kv[1]))
    skipped = ""  # why a lower precision the user allowed was not a candidate
    if RANK[normalise_precision(min_precision)] > 0:
        skipped = "; openvino not installed" if not openvino_available() else ""
        skipped = skipped or ("; no native bf16" if "BF16" not in capabilities else "")
        if RANK[normalise_precision(min_precision)] >= RANK["int8"] and int8_saturates_here(source):
            skipped += "; its INT8 graph has 8-bit weights, which saturate without VNNI (re-export: --int8)"
    reason = (
        f"{best}: fastest of {others} ({origin} on {cpu or 'this CPU'}, batch {batch}, "
        f"{'each backend its own threads' if threads is None else f'threads {threads}'}; "
        f"precision allowed down to {normalise_precision(min_precision)}{skipped})"
    )
    return AutoChoice(backend=backend, precision=precision, reason=reason, medians_ms=medians, source=origin)
