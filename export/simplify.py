"""Graph simplification: onnxsim (default), onnxslim, or none; the batch dimension must survive it.

Both tools fold the shape arithmetic the exporter emits (Shape → Gather → Unsqueeze → Concat → Reshape) into
constants. A folded Reshape target keeps ``-1`` in the batch slot (the models reshape with -1 only there), so the
batch stays symbolic; ``check_io`` verifies that on the result, and parity at unseen batch sizes proves it.
"""

import logging

import onnx

from export.spec import SIMPLIFIERS

logger = logging.getLogger(__name__)


class SimplifyError(RuntimeError):
    """The simplifier failed or produced a graph that is worse than its input."""


def simplify(model: onnx.ModelProto, *, simplifier: str = "onnxsim") -> onnx.ModelProto:
    """The simplified model (a new proto; ``model`` is not modified)."""
    if simplifier not in SIMPLIFIERS:
        raise SimplifyError(f"unknown simplifier {simplifier!r}; choose one of {', '.join(SIMPLIFIERS)}")
    if simplifier == "none":
        return model
    result = _onnxsim(model) if simplifier == "onnxsim" else _onnxslim(model)
    before, after = len(model.graph.node), len(result.graph.node)
    if after > before:
        raise SimplifyError(
            f"{simplifier} grew the graph from {before} to {after} nodes; export with --simplifier none"
        )
    logger.info("%s: %d → %d nodes", simplifier, before, after)
    return result


def _onnxsim(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxsim
    except ImportError as err:
        raise ImportError("onnxsim is not installed: pip install onnxsim (or use --simplifier onnxslim/none)") from err
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as err:  # onnxsim raises RuntimeError, ValueError or onnx errors; name the step
        raise SimplifyError(f"onnxsim failed: {err}; export with --simplifier onnxslim or none") from err
    if not ok:
        raise SimplifyError("onnxsim's own check of the simplified graph failed; export with --simplifier none")
    return simplified


def _onnxslim(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxslim
    except ImportError as err:
        raise ImportError("onnxslim is not installed: pip install onnxslim (or use --simplifier onnxsim/none)") from err
    source = onnx.ModelProto()
    source.CopyFrom(model)  # onnxslim edits its argument in place
    try:
        return onnxslim.slim(source)
    except Exception as err:  # onnxslim raises whatever its passes raise; name the step
        raise SimplifyError(f"onnxslim failed: {err}; export with --simplifier onnxsim or none") from err
