"""ONNX Runtime CPU sessions for this project's graphs, including the fused-SGE graph (``model.sge_fused.onnx``).

A plain graph opens as usual (all graph optimisations). A graph with ``ai.sgedeploy::SgeResidual`` nodes needs the
custom-op library built at install (``export/ort_sge/kernels``), and is opened in two steps: ORT optimises it
once (NCHWc convolutions), ``drop_reorders`` wires the fused nodes to the blocked tensors (in an INT8 graph,
``fold_quantized_io`` to the uint8 NHWC ones), ``schedule_blocks``
fixes the node order, and the session runs that graph as listed, with no further optimisation. Export's parity check
and the runtime's ONNX Runtime runner both open sessions here, so what is verified is what runs.
"""

import logging
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from export.ort_sge.kernels import kernel_build, kernel_library
from export.ort_sge.nchwc import FUSED_DOMAIN, drop_reorders, nchwc_block_size, optimized_graph
from export.ort_sge.quantized_io import fold_quantized_io
from export.ort_sge.schedule import schedule_blocks

logger = logging.getLogger(__name__)


FUSED_ROLE = "model-ort-cpu"  # the fused graph's role in an artifact's manifest
FUSED_DATA_ROLE = "weights"  # the role of its weights file (export/external_data.py)
PLANNED_NAME = "planned.onnx"  # the rewritten graph, in the plan's scratch directory


def fused_graph_file(manifest: "Manifest") -> str | None:  # noqa: F821
    """The artifact's fused-SGE graph (relative path), or None for an artifact without one."""
    return next((rel for rel, entry in manifest.files.items() if entry.role == FUSED_ROLE), None)


def uses_fused_sge(opset_domains: Iterable[str]) -> bool:
    """Whether a graph that imports these opset domains holds fused SGE nodes (and so needs the custom-op library)."""
    return FUSED_DOMAIN in opset_domains


@dataclass(frozen=True)
class SessionPlan:
    """What a CPU session loads: a graph's path, the custom ops, and how it was made.

    A rewritten graph lives in ``scratch`` (a temporary directory, with its weights in a side file that the session
    maps) until ``close()`` or until the plan is collected; a session opened from it does not need it any more.
    """

    model: str
    library: Path | None = None
    optimize: bool = True  # False: the graph was optimised already (NCHWc) and must run as it is
    fused_blocks: int = 0
    nchwc_blocks: int = 0
    nchwc_block: int = 0
    quantized_blocks: int = 0  # INT8 graphs: fused blocks that read and write uint8 NHWC (SgeResidualQ)
    kernel_build: str = ""  # the kernel's instruction-set build on this CPU (export/ort_sge/kernels/library.py)
    scratch: tempfile.TemporaryDirectory | None = field(default=None, compare=False, repr=False)

    def close(self) -> None:
        """Delete the rewritten graph's scratch directory (sessions opened from it keep their mapped weights)."""
        if self.scratch is not None:
            self.scratch.cleanup()

    def describe(self) -> dict[str, Any]:
        if self.library is None:
            return {"graph": "plain"}
        return {
            "graph": "sge_fused",
            "fused_sge_blocks": self.fused_blocks,
            "nchwc_sge_blocks": self.nchwc_blocks,
            "nchwc_block": self.nchwc_block,
            "uint8_nhwc_sge_blocks": self.quantized_blocks,
            "kernel": str(self.library),
            "kernel_build": self.kernel_build,
        }


class FusedPlanError(RuntimeError):
    """The fused graph could not be planned on this machine (its cause named): runners open the plain graph."""


def _short_of_space(graph: Path, scratch: str, free: int) -> str | None:
    """Why planning failed, when the temporary folder had less room (``free`` bytes, before planning) than the
    optimised weights take (about the graph's own): ORT reports that only as a failed write in its serialiser."""
    weights = sum(f.stat().st_size for f in graph.parent.glob(f"{graph.name}*") if f.is_file())
    if free >= weights:
        return None
    return (
        f"planning {graph.name} writes its optimised weights (about {weights / 1e6:.0f} MB) to the temporary folder "
        f"{Path(scratch).parent}, which had {free / 1e6:.0f} MB free; free space there or set TMPDIR to a larger folder"
    )


def plan_session(path: str | Path, *, fused: bool | None = None) -> SessionPlan:
    """How to open ``path`` on this machine's CPU (checking the installed fused-SGE kernel first if the graph needs it).

    ``fused`` says whether the graph is a fused-SGE graph when the caller knows (an artifact's manifest does);
    None reads the graph to find out.
    """
    path = Path(path)
    graph = None  # the structure, read once if it is needed
    if fused is None:
        graph = onnx.load(str(path), load_external_data=False)
        fused = uses_fused_sge(op.domain for op in graph.opset_import)
    if not fused:
        return SessionPlan(model=str(path))
    library = kernel_library()
    build = kernel_build(library)
    block = nchwc_block_size()
    if block == 0:  # ORT uses no blocked layout on this CPU: the fused graph runs in plain NCHW
        graph = graph or onnx.load(str(path), load_external_data=False)
        blocks = sum(n.domain == FUSED_DOMAIN for n in graph.graph.node)
        return SessionPlan(model=str(path), library=library, fused_blocks=blocks, kernel_build=build)
    scratch = tempfile.TemporaryDirectory(prefix="sge-ort-plan-", ignore_cleanup_errors=True)
    free = shutil.disk_usage(scratch.name).free
    try:
        # ORT optimises once (NCHWc) and writes the weights beside the graph; only the structure is read back here
        optimized = optimized_graph(str(path), threads=1, custom_ops=str(library), weights_dir=scratch.name)
        blocks = sum(node.domain == FUSED_DOMAIN for node in optimized.graph.node)
        blocked = drop_reorders(optimized, block=block)
        quantized = fold_quantized_io(optimized)  # an INT8 graph's blocks; none in a float graph
        schedule_blocks(optimized.graph)
        planned = Path(scratch.name) / PLANNED_NAME
        onnx.save(optimized, str(planned))  # beside optimized.onnx.data, which its initializers name
    except BaseException as err:
        short = _short_of_space(path, scratch.name, free)
        scratch.cleanup()
        if short and isinstance(err, Exception):
            raise FusedPlanError(short) from err
        raise
    return SessionPlan(
        model=str(planned),
        library=library,
        optimize=False,
        fused_blocks=blocks,
        nchwc_blocks=blocked,
        nchwc_block=block,
        quantized_blocks=quantized,
        kernel_build=build,
        scratch=scratch,
    )


def session_options(
    *,
    threads: int | None = None,
    spinning: bool = True,
    optimize: bool = True,
    profile_prefix: str | None = None,
    shared: bool = False,
) -> "onnxruntime.SessionOptions":  # noqa: F821
    """The project's ONNX Runtime session options (every provider): sequential execution, ``threads`` intra-op
    threads, ``spinning=False`` lets idle intra-op threads sleep, ``optimize=False`` for an already optimised graph
    (run in its listed node order: export/ort_sge/schedule.py), ``profile_prefix`` turns on ORT's profiler
    (``<prefix>_<date>.json``). ``shared``: the session runs on the process's global thread pool
    (``onnxruntime.set_global_thread_pool_sizes`` before the first session; its size and spinning are the pool's, so
    ``threads`` and ``spinning`` must stay at their defaults)."""
    import onnxruntime as ort

    if shared and (threads is not None or not spinning):
        raise ValueError("a session on the global thread pool takes its threads and spinning from the pool")
    options = ort.SessionOptions()
    options.use_per_session_threads = not shared
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if not optimize:  # Kahn's order with ties broken by node index: a topologically sorted graph runs as listed
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not shared:  # the global pool's spinning is its own
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def cpu_session(
    plan: SessionPlan,
    *,
    threads: int | None = None,
    spinning: bool = True,
    profile_prefix: str | None = None,
    shared: bool = False,
) -> "onnxruntime.InferenceSession":  # noqa: F821
    """An ONNX Runtime CPU session for ``plan`` (options as ``session_options``)."""
    import onnxruntime as ort

    options = session_options(
        threads=threads, spinning=spinning, optimize=plan.optimize, profile_prefix=profile_prefix, shared=shared
    )
    if plan.library is not None:
        options.register_custom_ops_library(str(plan.library))
    return ort.InferenceSession(plan.model, options, providers=["CPUExecutionProvider"])
