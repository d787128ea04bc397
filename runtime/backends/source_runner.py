"""The part every file-backed runner shares: open the model source, expose its specs, import the backend lazily."""

import importlib
import logging
import numbers
import os
from pathlib import Path
from typing import Any

from export.artifacts import ArtifactError, TensorSpec
from export.manifest_metadata import check_graph_metadata
from runtime.backends.base import BackendUnavailableError, Runner
from runtime.source import ModelSource, open_source

logger = logging.getLogger(__name__)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a container's cpuset limits it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_count(threads: int | None) -> int | None:
    """``threads`` checked: an integer ≥ 1, at most the usable CPUs (more threads only take turns on them, many
    times slower), with one warning when capped; None keeps the backend's default."""
    whole = isinstance(threads, numbers.Integral) and not isinstance(threads, bool)
    if threads is not None and (not whole or threads < 1):
        raise ValueError(f"threads must be an integer ≥ 1 (or None for the backend's default); got {threads!r}")
    cpus = usable_cpus()
    if threads is not None and threads > cpus:
        logger.warning("%d threads asked for, on %d usable CPUs: using %d", threads, cpus, cpus)
        return cpus
    return threads


def import_backend(module: str, *, backend: str, install: str) -> Any:
    """Import a backend's optional package, or raise BackendUnavailableError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise BackendUnavailableError(
            f"the {backend} backend needs the {module} package: pip install {install}"
        ) from err


class SourceRunner(Runner):
    """A runner over an artifact directory or a bare model file, with an intra-op thread count."""

    def __init__(
        self, source: str | Path | ModelSource, *, threads: int | None = None, check_finite: bool = False
    ) -> None:
        super().__init__(check_finite=check_finite)
        self.threads = thread_count(threads)
        self.source = open_source(source)

    @property
    def input_spec(self) -> TensorSpec:
        return self.source.input_spec

    @property
    def output_spec(self) -> TensorSpec:
        return self.source.output_spec

    def activate(self) -> "SourceRunner":
        """Activate, refusing files that changed since they were verified (checked before and after the backend
        reads them: a swap during the read is caught too)."""
        if self.is_active:
            return self
        self.source.check_unchanged()
        try:
            super().activate()
        except Exception as err:  # re-raised as it is unless a recorded graph is unreadable
            problem = self.source.unreadable_graph()
            if problem is not None:
                raise problem from err
            raise
        try:
            self.source.check_unchanged()
            check_model_io(self.source, self._model_io())
            props = self._graph_metadata()
            if props is not None and self.source.manifest is not None:
                check_graph_metadata(
                    self.source.manifest, props, directory=self.source.directory, graph="the graph it deploys"
                )
        except BaseException:
            self.deactivate()
            raise
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model_path": str(self.source.model_path), "threads": self.threads}

    def _model_io(self) -> "ModelIO | None":
        """The active backend's input and output as it reads them from the graph, for ``check_model_io``."""
        return None

    def _graph_metadata(self) -> dict[str, str] | None:
        """The metadata the export wrote into the graph, as the active backend read it (None where it cannot)."""
        return None


# (names the tensor answers to, its dimensions: an int where fixed, None where symbolic, its numpy dtype name or None
# where the backend does not say), input then output
TensorIO = tuple[frozenset[str], tuple[int | None, ...], str | None]
ModelIO = tuple[TensorIO, TensorIO]


def check_model_io(source: ModelSource, io: ModelIO | None) -> None:
    """ArtifactError unless the manifest's input and output agree with the graph the backend opened: names, fixed
    dimensions and dtypes (an edited manifest naming another tensor, 10 classes for 1000, or float16 for float32 gave
    ORT's raw error, a wrong answer, or a server that refused every request)."""
    if io is None or source.manifest is None:
        return
    for kind, spec, (names, dims, dtype) in (
        ("input", source.input_spec, io[0]),
        ("output", source.output_spec, io[1]),
    ):
        recorded = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
        fixed_differ = len(recorded) != len(dims) or any(
            a is not None and b is not None and a != b for a, b in zip(recorded, dims, strict=False)
        )
        dtype_differs = dtype is not None and dtype != spec.dtype
        if spec.name not in names or fixed_differ or dtype_differs:
            found = f"{sorted(names)[0]!r} {tuple('?' if d is None else d for d in dims)} {dtype or ''}".rstrip()
            raise ArtifactError(
                f"{source.directory}: the manifest's {kind} {spec.name!r} {tuple(spec.shape)} {spec.dtype} is not "
                f"the graph's ({found}); the manifest was edited or belongs to another model: re-export the artifact"
            )
