"""PyTorch module → ONNX file with ``torch.onnx.export``, then the ONNX checker and shape inference.

Two exporters are available (``ExportSpec.exporter``): the TorchScript tracer (``dynamo=False``, the default here)
and torch.export (``dynamo=True``, PyTorch's default since 2.9). the README (Export) has the measurements behind the
choice. Either way the example batch is ``spec.example_batch`` (2): torch.export specialises sizes 0 and 1 into
constants, and a traced example of 1 would hide a Reshape that bakes the batch in.
"""

import logging
import warnings
from collections import Counter
from pathlib import Path

import onnx
import torch
from torch import nn

from export.metadata import tensor_dims
from export.spec import ExportSpec
from models.checkpoints import strip_ansi

logger = logging.getLogger(__name__)


class OnnxExportError(RuntimeError):
    """torch.onnx.export failed, or its graph breaks the export spec (e.g. a batch that is not symbolic)."""


def export_onnx(model: nn.Module, path: str | Path, *, spec: ExportSpec) -> Path:
    """Export ``model`` (eval mode) to ``path`` as one self-contained ONNX file; returns ``path``."""
    check_fits_one_file(model)
    path = Path(path)
    example = torch.randn(spec.example_shape(), generator=torch.Generator().manual_seed(spec.seed))
    common = {
        "input_names": [spec.input_name],
        "output_names": [spec.output_name],
        "opset_version": spec.opset,
    }
    model = model.eval()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        try:
            if spec.exporter == "dynamo":
                # its registry logs one warning per torchvision op it skips (nms, roi_align, ...): not this model's
                logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
                program = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    dynamic_shapes=spec.dynamic_shapes(),
                    optimize=True,
                    verbose=False,
                    **common,
                )
                program.save(str(path), external_data=False)
            else:
                torch.onnx.export(
                    model, (example,), str(path), dynamo=False, dynamic_axes=spec.dynamic_axes(), **common
                )
        except Exception as err:  # the exporters raise many unrelated types; name the step and re-raise one
            lines = [line.strip() for line in strip_ansi(str(err)).splitlines() if line.strip()]
            # the dynamo exporter's messages run to a dozen lines around an "Exception summary" section
            marker = lines.index("## Exception summary") if "## Exception summary" in lines else -1
            summary = lines[marker + 1] if 0 <= marker < len(lines) - 1 else (lines[0] if lines else type(err).__name__)
            more = " (the debug log has the rest)" if len(lines) > 1 else ""
            logger.debug("torch.onnx.export (%s) failed:\n%s", spec.exporter, err)
            raise OnnxExportError(f"torch.onnx.export ({spec.exporter}) failed: {summary}{more}") from err
    for w in caught:  # the legacy exporter's deprecation notice and tracer warnings about shape checks
        logger.debug("torch.onnx.export: %s", w.message)
    return path


# protobuf's limit on one message, the whole ONNX file here; the graph beside the weights needs some room
ONNX_FILE_LIMIT = 2**31
GRAPH_ROOM = 64 * 2**20


def check_fits_one_file(model: torch.nn.Module) -> None:
    """OnnxExportError, before any export work, if the weights cannot fit one self-contained ONNX file."""
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    if size > ONNX_FILE_LIMIT - GRAPH_ROOM:
        raise OnnxExportError(
            f"the model holds {size / 2**30:.2f} GiB of weights, and an ONNX file holds at most 2 GiB (protobuf's "
            "limit); this exporter writes one self-contained file: export a smaller model"
        )


def check_onnx(path: str | Path) -> onnx.ModelProto:
    """The ONNX checker's full check, which includes strict shape inference; returns the loaded model."""
    model = onnx.load(str(path))  # parsed once: the exports are single self-contained files
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise OnnxExportError(f"{path} fails the ONNX checker: {err}") from err
    except ValueError as err:  # "This protobuf of onnx model is too large (>2GiB)"
        raise OnnxExportError(f"{path} cannot be checked: {err}") from err
    return model


def check_io(model: onnx.ModelProto, *, spec: ExportSpec, num_classes: int) -> None:
    """The graph's input and output have the spec's names, and symbolic dims exactly where the spec wants them."""
    problems = []
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if [i.name for i in inputs] != [spec.input_name]:
        problems.append(f"inputs are {[i.name for i in inputs]}, expected [{spec.input_name!r}]")
    elif not _dims_match(tensor_dims(inputs[0]), spec.input_shape):
        problems.append(f"input dims are {tensor_dims(inputs[0])}, expected {list(spec.input_shape)}")
    outputs = list(model.graph.output)
    if [o.name for o in outputs] != [spec.output_name]:
        problems.append(f"outputs are {[o.name for o in outputs]}, expected [{spec.output_name!r}]")
    elif not _dims_match(tensor_dims(outputs[0]), ("batch", num_classes)):
        problems.append(f"output dims are {tensor_dims(outputs[0])}, expected ['batch', {num_classes}]")
    if problems:
        raise OnnxExportError("the exported graph breaks the export spec: " + "; ".join(problems))


def _dims_match(dims: list[int | str], expected: tuple[int | str, ...]) -> bool:
    """Static dims must be equal; a symbolic expected dim must be symbolic (any name) in the graph."""
    if len(dims) != len(expected):
        return False
    return all(
        (isinstance(d, str) and d != "?") if isinstance(e, str) else d == e for d, e in zip(dims, expected, strict=True)
    )


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Node count per op type in the main graph."""
    return Counter(node.op_type for node in model.graph.node)


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
