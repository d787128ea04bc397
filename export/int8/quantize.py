"""Static INT8 quantisation with ONNX Runtime's tooling (``onnxruntime.quantization``): calibrate, then Q/DQ.

Two schemes, both QDQ format with per-channel symmetric int8 weights:

* ``u8s8``: asymmetric uint8 activations. ONNX Runtime's x86 kernels (VNNI, AVX2) are built for U8S8, and OpenVINO
  reads the same Q/DQ graph; this is the CPU file. Its weights take 7 bits by default (``weight_bits``; ORT's
  ``reduce_range``), so CPUs without VNNI cannot saturate (export.int8.calibration.WEIGHT_BITS).
* ``s8s8``: symmetric int8 activations (zero point 0), what TensorRT's explicit-quantisation builds take. On x86
  ONNX Runtime it gained nothing in the issue's measurement (1.05× at batch 1), so it is not the CPU file.

The SGE regions (``export.int8.sge_regions``) are excluded from quantisation, so their normalisation runs in float
between a DequantizeLinear and a QuantizeLinear. A fused-SGE graph's custom op is not quantised either (ORT's tool
does not know it); its calibration session registers the custom-op library. Ranges are measured once per graph
and reused (ORT's calibration cache) for every scheme of that graph.
"""

import contextlib
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from export.artifacts import atomic_path
from export.int8.calibration import BatchReader
from export.int8.sge_regions import fused_sge_nodes, sge_regions

logger = logging.getLogger(__name__)

SCHEMES = ("u8s8", "s8s8")
WEIGHT_LIMIT = {7: 64, 8: 127}  # the largest |int8 weight| each weight range writes (ORT's reduce_range: −64…63)
# Ops whose tensors are quantised: the ResNet family's compute. Attention maths (Mul, Sigmoid, Div, reductions)
# stays float; the excluded SGE regions hold Adds (eps, β) that this list alone would quantise.
# entropy calibration as TensorRT's: a 2048-bin histogram searched for the threshold whose 128-level
# quantisation loses least (KL divergence)
ENTROPY_BINS, ENTROPY_LEVELS = 2048, 128
OP_TYPES = ("Conv", "Gemm", "MatMul", "Add", "Relu", "Clip", "MaxPool", "GlobalAveragePool", "AveragePool")


class _SkipPreprocessAdvice(logging.Filter):
    """ORT's quantiser advises its pre-processing step on the root logger; the graphs here are already simplified
    and shape-inferred (and its optimiser cannot load the fused graph's custom op), so the advice is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in str(record.msg) and "pre-processing" not in str(record.msg)


class QuantizationError(RuntimeError):
    """ONNX Runtime's quantisation tooling failed on a graph (the message says which step)."""


def _import_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as err:
        raise ImportError("INT8 export needs onnxruntime (its quantization package): pip install onnxruntime") from err
    return quantization


def _method(name: str):
    quantization = _import_quantization()
    return {
        "minmax": quantization.CalibrationMethod.MinMax,
        "entropy": quantization.CalibrationMethod.Entropy,
        "percentile": quantization.CalibrationMethod.Percentile,
    }[name]


def calibrate(
    model_path: str | Path,
    batch: np.ndarray,
    *,
    input_name: str,
    method: str,
    ranges_path: str | Path,
    library: str | Path | None = None,
) -> Path:
    """Run ``batch`` through ``model_path`` augmented with range outputs; write ORT's calibration cache (JSON).

    ``library``: the custom-op library a fused-SGE graph needs (the calibration session registers it).
    """
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import (
        EntropyCalibrater,
        MinMaxCalibrater,
        PercentileCalibrater,
        save_tensors_data,
    )

    from export.ort_sge.session import session_options

    with tempfile.TemporaryDirectory(prefix="sge-int8-calib-") as tmp:
        augmented = str(Path(tmp) / "augmented.onnx")
        if method == "minmax":
            calibrator = MinMaxCalibrater(str(model_path), list(OP_TYPES), augmented)
        elif method == "entropy":  # ORT's defaults (128 bins for 128 levels) leave one threshold to try: minmax's
            calibrator = EntropyCalibrater(
                str(model_path), list(OP_TYPES), augmented, num_bins=ENTROPY_BINS, num_quantized_bins=ENTROPY_LEVELS
            )
        else:  # percentile; asymmetric, since most activations follow a ReLU
            calibrator = PercentileCalibrater(str(model_path), list(OP_TYPES), augmented, symmetric=False)
        calibrator.augment_graph()
        options = session_options(optimize=False, spinning=False)
        if library is not None:
            options.register_custom_ops_library(str(library))
        calibrator.infer_session = ort.InferenceSession(augmented, options, providers=["CPUExecutionProvider"])
        # the histogram calibrators print their progress to stdout, which `--json -` reserves for the JSON
        with contextlib.redirect_stdout(sys.stderr):
            calibrator.collect_data(BatchReader(batch, input_name=input_name))
            ranges = calibrator.compute_data()
    save_tensors_data(ranges, ranges_path)
    logger.info(
        "calibrated %s: %d tensors, %s on %d images", Path(model_path).name, len(ranges.data), method, len(batch)
    )
    return Path(ranges_path)


def quantize_graph(
    src: str | Path,
    dst: str | Path,
    *,
    ranges_path: str | Path,
    method: str,
    scheme: str,
    weight_bits: int = 8,
) -> Path:
    """Write the Q/DQ graph of ``src`` in ``scheme`` to ``dst`` (atomically), SGE regions kept float; its int8
    weights span ``weight_bits`` bits (7: |w| ≤ 64, 8: |w| ≤ 127)."""
    quantization = _import_quantization()
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}; got {scheme!r}")
    if weight_bits not in WEIGHT_LIMIT:
        raise ValueError(f"weight_bits must be 7 or 8; got {weight_bits!r}")
    model = onnx.load(str(src))
    fused = bool(fused_sge_nodes(model))
    exclude = excluded_nodes(model)
    symmetric = scheme == "s8s8"
    extra = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        # TensorRT fuses Relu into the preceding layer itself and wants the Q/DQ placement to say so
        "QDQKeepRemovableActivations": symmetric,
        # TensorRT's ONNX parser takes DequantizeLinear on int8 activations and weights only: an int32 bias behind one
        # is refused ("only activation types allowed as input to this layer"); it folds a float bias itself
        "QuantizeBias": not symmetric,
        # the classifier's output stays float: 256 levels over 1000 logits made exact ties at the top, and no
        # consumer of the logits reads int8
        "OpTypesToExcludeOutputQuantization": ["Gemm"],
    }
    with tempfile.TemporaryDirectory(prefix="sge-int8-") as tmp:
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named))  # with the node names sge_regions filled in, which nodes_to_exclude refers to
        out = Path(tmp) / "quantized.onnx"
        advice = _SkipPreprocessAdvice()
        logging.getLogger().addFilter(advice)
        try:
            quantization.quantize_static(
                str(named),
                str(out),
                None,
                calibration_cache_path=str(ranges_path),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                reduce_range=weight_bits == 7,
                activation_type=quantization.QuantType.QInt8 if symmetric else quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                op_types_to_quantize=list(OP_TYPES),
                nodes_to_exclude=exclude,
                calibrate_method=_method(method),
                extra_options=extra,
            )
        except (ValueError, RuntimeError, onnx.checker.ValidationError) as err:
            raise QuantizationError(f"quantising {Path(src).name} ({scheme}) failed: {err}") from err
        finally:
            logging.getLogger().removeFilter(advice)
        quantized = onnx.load(str(out))
    if fused:
        rewired = read_float_identity(quantized)
        logger.info("%d fused SGE nodes read their identity in float", rewired)
    with atomic_path(dst) as tmp_path:
        onnx.save(quantized, str(tmp_path))
    name, source = Path(dst).name, Path(src).name
    logger.info("%s: %s, %d-bit weights, %d nodes kept float in %s", name, scheme, weight_bits, len(exclude), source)
    return Path(dst)


def read_float_identity(model: onnx.ModelProto) -> int:
    """Let each fused SGE node read its identity from the previous fused node's float output (in place).

    The quantiser puts Q→DQ on that tensor because a convolution also reads it; the fused node need not take the
    rounded copy: one DequantizeLinear pass less per block, and the residual sum is exact. Returns how many.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in fused_sge_nodes(model):
        dq = producer.get(node.input[1])
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        source = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if source is not None and source.domain == node.domain and source.op_type == node.op_type:
            node.input[1] = q.input[0]
            rewired += 1
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if any(o in used for o in n.output)]
    del graph.node[:]
    graph.node.extend(kept)
    return rewired


def scheme_of(model: onnx.ModelProto) -> dict[str, int]:
    """Count the graph's Q/DQ nodes by their integer type (uint8 / int8), for reports and tests."""
    inits = {t.name: t for t in model.graph.initializer}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            kind = onnx.helper.tensor_dtype_to_np_dtype(inits[node.input[2]].data_type).name
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def excluded_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes quantisation leaves float: every SGE region's (node names filled in place where missing)."""
    return sorted({name for region in sge_regions(model) for name in region.nodes})


def largest_int8_weight(model: onnx.ModelProto) -> int:
    """The largest |value| of the graph's int8 initializers (its quantised weights; 0 without any)."""
    from onnx import numpy_helper

    int8 = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    return max((int(np.abs(a.astype(np.int16)).max()) for a in int8 if a.size), default=0)
