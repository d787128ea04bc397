"""The compiled SgeResidualQ kernel (quantised IO, uint8 NHWC) against a float64 NumPy reference.

Each case is a one-op ONNX graph run by ONNX Runtime. The reference dequantises x and the identity, applies the
official SGE, the residual and the ReLU in float64, and quantises as ONNX's QuantizeLinear does (round half to even,
saturate). The kernel works in float32 and scales by the inverse of the output scale, so a value within float
rounding of a half step may land one step away: the tolerance is one step, and nearly every value must be exact.
Each single-ISA build runs these cases too (tests/sgeperf/test_kernel_library.py).
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.ort_sge.graph import DOMAIN, DOMAIN_VERSION
from export.ort_sge.kernels import kernel_library
from export.ort_sge.nchwc import QUANTIZED_OP
from tests.sgeperf.test_fused_kernel import reference as float_reference

EPS = 1e-5
EXACT_SHARE = 0.99  # of output values equal to the reference's; the rest one step away


def quantize(values: np.ndarray, scale: float, zero: int) -> np.ndarray:
    return np.clip(np.rint(values / scale) + zero, 0, 255).astype(np.uint8)  # np.rint rounds half to even


def reference(x_q, identity_q, gamma, beta, groups, q) -> np.ndarray:
    """The op in float64: NHWC uint8 in, NHWC uint8 out."""
    x = q["x_scale"] * (x_q.astype(np.float64) - q["x_zero"])
    identity = q["identity_scale"] * (identity_q.astype(np.float64) - q["identity_zero"])
    nchw = float_reference(x.transpose(0, 3, 1, 2), identity.transpose(0, 3, 1, 2), gamma, beta, groups)
    return quantize(nchw.transpose(0, 2, 3, 1), q["y_scale"], q["y_zero"])


def q_graph(channels: int, groups: int, q: dict, rng) -> onnx.ModelProto:
    consts = [
        numpy_helper.from_array(np.array(q["x_scale"], np.float32), "x_scale"),
        numpy_helper.from_array(np.array(q["x_zero"], np.uint8), "x_zero"),
        numpy_helper.from_array(np.array(q["identity_scale"], np.float32), "identity_scale"),
        numpy_helper.from_array(np.array(q["identity_zero"], np.uint8), "identity_zero"),
        numpy_helper.from_array(rng.standard_normal(groups).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(groups).astype(np.float32), "beta"),
        numpy_helper.from_array(np.array(q["y_scale"], np.float32), "y_scale"),
        numpy_helper.from_array(np.array(q["y_zero"], np.uint8), "y_zero"),
    ]
    inputs = ["x", "x_scale", "x_zero", "identity", "identity_scale", "identity_zero", "gamma", "beta", "y_scale"]
    node = helper.make_node(QUANTIZED_OP, [*inputs, "y_zero"], ["y"], domain=DOMAIN, groups=groups, eps=EPS)
    value = helper.make_tensor_value_info
    shape = ["n", "h", "w", channels]
    graph = helper.make_graph(
        [node],
        "sge_residual_q",
        [value("x", TensorProto.UINT8, shape), value("identity", TensorProto.UINT8, shape)],
        [value("y", TensorProto.UINT8, shape)],
        consts,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def session(model: onnx.ModelProto, library) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


QUANT = {"x_scale": 0.05, "x_zero": 60, "identity_scale": 0.03, "identity_zero": 0, "y_scale": 0.04, "y_zero": 0}


def assert_matches(y: np.ndarray, expected: np.ndarray) -> None:
    steps = np.abs(y.astype(np.int32) - expected.astype(np.int32))
    assert steps.max() <= 1, f"{(steps > 1).sum()} values more than one step off (worst {steps.max()})"
    assert (steps == 0).mean() >= EXACT_SHARE, f"only {(steps == 0).mean():.4f} of values exact"


def run_case(library, channels, groups, size, rng, q=QUANT, batch=2) -> tuple[np.ndarray, np.ndarray]:
    model = q_graph(channels, groups, q, rng)
    gamma, beta = (numpy_helper.to_array(i) for i in model.graph.initializer if i.name in ("gamma", "beta"))
    x = rng.integers(0, 256, (batch, *size, channels), dtype=np.uint8)
    identity = rng.integers(0, 200, (batch, *size, channels), dtype=np.uint8)
    y = session(model, library).run(None, {"x": x, "identity": identity})[0]
    return y, reference(x, identity, gamma, beta, groups, q)


# channels per group 1, 2, 4, 8, 16, 32 (within one vector, or spanning several); units of 4, 2 and 1 vectors (48 and
# 32 channels: 3 and 2 vectors of 16 lanes); H·W not a multiple of the trees
GROUPINGS = [(64, 64), (64, 32), (256, 64), (128, 16), (256, 16), (256, 8), (48, 12), (32, 8)]
SIZES = [(7, 9), (4, 4), (1, 3)]


@pytest.mark.parametrize(("channels", "groups"), GROUPINGS)
@pytest.mark.parametrize("size", SIZES, ids=["63", "16", "3"])
def test_kernel_matches_reference(channels, groups, size):
    rng = np.random.default_rng(channels * 1000 + groups + size[0])
    assert_matches(*run_case(kernel_library(), channels, groups, size, rng))


def test_zero_points_and_saturation():
    """A non-zero output zero point, and outputs beyond the uint8 range, saturate as QuantizeLinear does."""
    rng = np.random.default_rng(7)
    q = {**QUANT, "x_scale": 0.2, "y_scale": 0.01, "y_zero": 20}
    y, expected = run_case(kernel_library(), 64, 16, (6, 6), rng, q=q)
    assert (expected == 255).mean() > 0.2  # the case does reach saturation
    assert_matches(y, expected)


@pytest.mark.parametrize(("channels", "groups"), [(64, 16), (256, 8)], ids=["narrow-groups", "wide-groups"])
def test_huge_scales_keep_their_statistics(channels, groups):
    """Scales of 1e9 (dequantized values up to 2.5e11): the similarity map's squared deviations pass float32's range,
    and the gates come from its moments taken again in double, as in the float op."""
    rng = np.random.default_rng(17)
    q = {**QUANT, "x_scale": 1e9, "identity_scale": 1e9, "y_scale": 2e9}
    assert_matches(*run_case(kernel_library(), channels, groups, (7, 7), rng, q=q))


@pytest.mark.parametrize(
    ("x_shape", "identity_shape", "message"),
    [
        ((1, 4, 4, 60), (1, 4, 4, 60), "vector width"),
        ((1, 4, 4, 64), (1, 4, 5, 64), "differs from x"),
        ((1, 1, 1, 64), (1, 1, 1, 64), "H*W must be at least 2"),
        ((1, 16, 64), (1, 16, 64), "must be 4-D"),
    ],
)
def test_bad_shapes_fail_with_one_clear_error(x_shape, identity_shape, message):
    model = q_graph(x_shape[-1], x_shape[-1] // 4 if x_shape[-1] == 60 else 16, QUANT, np.random.default_rng(0))
    del model.graph.input[:]
    for name in ("x", "identity"):
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.UINT8, None))
    model.graph.output[0].type.tensor_type.ClearField("shape")
    x = np.zeros(x_shape, np.uint8)
    errors = ort.capi.onnxruntime_pybind11_state
    with pytest.raises((errors.Fail, errors.InvalidArgument)) as err:
        session(model, kernel_library()).run(None, {"x": x, "identity": np.zeros(identity_shape, np.uint8)})
    assert message in str(err.value) and "\n" not in str(err.value)


def min_max_quantization(values: np.ndarray) -> tuple[float, int]:
    """Asymmetric uint8 scale and zero point over ``values``' range (0 included), as min-max calibration sets them."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = (high - low) / 255.0 or 1.0
    return scale, round(-low / scale)


@pytest.mark.parametrize("stage", ["layer1", "layer4"])
def test_kernel_on_photograph_activations(stage):
    """What a real block sees: sge_resnet18's (calibrated default weights) last block of a stage, fed the bundled
    photographs, its x and identity quantised by min-max (x signed: a non-zero zero point) and given in NHWC; the
    kernel must match the float64 reference on the same quantised values (layer1: 1 channel a group; layer4: 8)."""
    import torch

    from models import create_model
    from models.transforms import photo_batch

    model = create_model("sge_resnet18", init="calibrated").eval()
    block = getattr(model, stage)[-1]
    sge = getattr(block, block.attn_name)
    gamma, beta = sge.weight.detach().flatten().numpy(), sge.bias.detach().flatten().numpy()
    inputs = {}
    block.register_forward_pre_hook(lambda module, args: inputs.setdefault("x", args[0]))
    with torch.no_grad():
        model(torch.from_numpy(photo_batch((112, 112))))
        x, identity = (t.numpy().transpose(0, 2, 3, 1) for t in block.branches(inputs["x"]))
        eager = block(inputs["x"]).numpy()
    q = {}
    for name, values in (("x", x), ("identity", identity), ("y", eager)):
        q[f"{name}_scale"], q[f"{name}_zero"] = min_max_quantization(values)
    assert q["x_zero"] > 0  # the convolution's output is signed: the zero point is exercised
    x_q, identity_q = (quantize(v, q[f"{n}_scale"], q[f"{n}_zero"]) for n, v in (("x", x), ("identity", identity)))
    model_graph = q_graph(x.shape[-1], sge.groups, q, np.random.default_rng(0))
    for init in model_graph.graph.initializer:
        if init.name in ("gamma", "beta"):
            init.CopyFrom(numpy_helper.from_array(gamma if init.name == "gamma" else beta, init.name))
    y = session(model_graph, kernel_library()).run(None, {"x": np.ascontiguousarray(x_q), "identity": identity_q})[0]
    assert_matches(y, reference(x_q, np.ascontiguousarray(identity_q), gamma, beta, sge.groups, q))
