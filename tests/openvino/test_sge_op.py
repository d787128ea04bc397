"""The OpenVINO SgeResidual op against the float64 NumPy SGE reference, between convolutions (so in OpenVINO's own
layouts), at odd shapes, in f32 and bf16; the runner's fused graph; every fallback path."""

import logging
import shutil
import sys

import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime
from export.ov_sge import build as ov_build
from export.ov_sge.graph import FusedGraphError, openvino_onnx_bytes, read_fused_model
from tests.models.numpy_reference import sge
from tests.openvino.conftest import gate_failures

# (batch, channels, height, width, groups): odd sizes, groups of 1 to 5 channels, a 1×2 map (the smallest allowed).
SHAPES = [(2, 12, 7, 5, 3), (1, 20, 9, 11, 4), (3, 10, 1, 2, 2), (1, 64, 13, 13, 64)]
# f32: summation order only. bf16: both convolutions round their inputs and output to 8 mantissa bits.
TOLERANCE = {"f32": 2e-5, "bf16": 3e-2}  # max |Δ| / max |reference|


def fused_graph(shape, w1, w2, gamma, beta, *, eps=1e-5, block=0, convs=True) -> onnx.ModelProto:
    """x → Conv(w1) → SgeResidual(·, identity=x) → Conv(w2): the op between two blocked-layout convolutions
    (``convs=False``: the op alone, SgeResidual(x, x))."""
    n, c, h, w, groups = shape
    sge_node = helper.make_node(
        "SgeResidual",
        ["a" if convs else "x", "x", "gamma", "beta"],
        ["s" if convs else "y"],
        domain="ai.sgedeploy",
        groups=groups,
        eps=eps,
        block=block,
    )
    if convs:
        nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), sge_node, helper.make_node("Conv", ["s", "w2"], ["y"])]
    else:
        nodes = [sge_node]
    inits = [numpy_helper.from_array(v, name) for name, v in (("w1", w1), ("w2", w2), ("gamma", gamma), ("beta", beta))]
    graph = helper.make_graph(
        nodes,
        "sge_op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, h, w])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.sgedeploy", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def conv1x1(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0])


def case(shape, seed=0):
    n, c, h, w, groups = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    w1 = (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    w2 = (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    gamma = rng.standard_normal(groups).astype(np.float32)
    beta = rng.standard_normal(groups).astype(np.float32)
    a = conv1x1(x.astype(np.float64), w1.astype(np.float64))
    s = np.maximum(sge(a, gamma.astype(np.float64), beta.astype(np.float64), groups) + x, 0.0)
    return (x, w1, w2, gamma, beta), conv1x1(s, w2.astype(np.float64))


def runs_in(hint: str) -> str:
    """The precision OpenVINO's CPU plugin runs ``hint`` in here: bf16 only where the CPU has it natively (no
    AVX512-BF16 or AMX: f32, as the runner's precision note says)."""
    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "f32" if hint == "bf16" and not native else hint


def run_fused(path, library, hint, x):
    """Output, fused-op count and {layer type: precisions it ran in} of the graph, as the runner reads it."""
    core = ov.Core()
    model, blocks = read_fused_model(core, path, library, storage="bf16" if hint == "bf16" else "f32")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 2})
    layers: dict[str, set[str]] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layers.setdefault(info["layerType"].astype(str), set()).add(info["runtimePrecision"].astype(str))
    return compiled({0: x})[0], blocks, layers


@pytest.mark.parametrize("hint", ["f32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_op_matches_float64_reference(sge_extension, tmp_path, shape, hint):
    (x, w1, w2, gamma, beta), expected = case(shape)
    path = tmp_path / "fused.onnx"
    onnx.save(fused_graph(shape, w1, w2, gamma, beta), path)
    got, blocks, layers = run_fused(path, sge_extension, hint, x)
    assert blocks == 1 and layers["Reference"] == {runs_in(hint)}  # the extension ran, in the graph's precision
    assert got.shape == expected.shape
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error <= TOLERANCE[hint], f"{hint} {shape}: relative max error {error:.2e}"


def test_op_propagates_nan_and_keeps_relu(sge_extension, tmp_path):
    shape = (1, 8, 4, 4, 2)
    (x, w1, w2, gamma, beta), _ = case(shape)
    path = tmp_path / "fused.onnx"
    onnx.save(fused_graph(shape, w1, w2, gamma, beta, convs=False), path)  # a convolution would spread the NaN
    clean, _, _ = run_fused(path, sge_extension, "f32", x)
    assert clean.min() == 0.0  # ReLU
    x[0, 0, 1, 1] = np.nan
    dirty, _, _ = run_fused(path, sge_extension, "f32", x)
    assert np.isnan(dirty[0, :4]).any() and not np.isnan(dirty[0, 4:]).any()  # only the NaN's group


def test_graph_in_ort_nchwc_layout_is_refused(tmp_path):
    shape = (1, 16, 4, 4, 2)
    (_, w1, w2, gamma, beta), _ = case(shape)
    path = tmp_path / "nchwc.onnx"
    onnx.save(fused_graph(shape, w1, w2, gamma, beta, block=16), path)
    with pytest.raises(FusedGraphError, match=r"NCHWc.*re-export"):
        openvino_onnx_bytes(path)


def test_runner_runs_the_fused_graph_within_each_gate(artifact, reference_model, photos, random_inputs, sge_extension):
    for precision in ("fp32", "bf16"):
        with runtime.load(
            artifact, "openvino", threads=2, precision=precision, sge_form="extension", sge_extension=sge_extension
        ) as runner:
            described = runner.describe()
            assert described["graph"] == "sge_fused" and described["fused_sge_blocks"] == 8
            assert described["model_path"].endswith("model.sge_fused.onnx")
            assert gate_failures(runner, reference_model, (photos, random_inputs), precision) == []


@pytest.mark.parametrize("library", ["missing.so", "garbage.so"])
def test_runner_falls_back_to_the_plain_graph_with_one_warning(artifact, photos, tmp_path, caplog, library):
    (tmp_path / "garbage.so").write_text("not a shared library")
    runner = runtime.load(artifact, "openvino", threads=1, sge_form="extension", sge_extension=tmp_path / library)
    with caplog.at_level(logging.WARNING, logger="runtime.backends.ov"), runner:
        assert runner.describe()["graph"] == "plain"
        assert runner.describe()["model_path"].endswith("model.onnx")
        assert runner.infer(photos[:1]).shape == (1, 1000)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SGE extension unavailable" in warnings[0] and "running model.onnx" in warnings[0]


def test_runner_without_a_built_extension_says_how_to_build_it(artifact, tmp_path, caplog, monkeypatch):
    installed = ov_build.installed_library
    monkeypatch.setattr(ov_build, "installed_library", lambda: installed(tmp_path))
    runner = runtime.load(artifact, "openvino", sge_form="extension")
    with caplog.at_level(logging.WARNING, logger="runtime.backends.ov"), runner:
        assert runner.describe()["graph"] == "plain"
    assert "python -m export.ov_sge.build" in caplog.text


def test_sge_fused_off_runs_the_plain_graph(artifact, sge_extension):
    with runtime.load(artifact, "openvino", sge_fused=False, sge_extension=sge_extension) as runner:
        assert runner.describe()["graph"] == "plain"


def test_build_without_a_compiler_raises_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ov_build.OvKernelBuildError, match="needs a C\\+\\+ compiler"):
        ov_build.build_extension(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_build_without_openvino_names_the_install_profile(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(ov_build.OvKernelBuildError, match=r"pip install 'sge-deploy\[openvino\]'"):
        ov_build.build_extension(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failed_compile_leaves_no_library(monkeypatch, tmp_path):
    monkeypatch.setattr(ov_build, "FLAGS", (*ov_build.FLAGS, "-DSGE_BROKEN", "-include", "no_such_header.h"))
    with pytest.raises(ov_build.OvKernelBuildError, match=r"compiling sge_ov_op\.cc failed"):
        ov_build.build_extension(tmp_path)
    assert not list(tmp_path.glob("*.so"))


def test_bf16_storage_casts_around_each_op_only(tmp_path):
    shape = (1, 16, 4, 4, 2)
    (_, w1, w2, gamma, beta), _ = case(shape)
    path = tmp_path / "fused.onnx"
    onnx.save(fused_graph(shape, w1, w2, gamma, beta), path)
    for storage, casts in (("f32", 0), ("bf16", 3)):
        data, count = openvino_onnx_bytes(path, storage=storage)
        graph = onnx.load_from_string(data).graph
        assert count == 1 and sum(node.op_type == "Cast" for node in graph.node) == casts
        assert [n.domain for n in graph.node if n.op_type == "SgeResidual"] == [""]
        assert graph.output[0].name == "y"
    with pytest.raises(ValueError, match="storage must be one of f32, bf16"):
        openvino_onnx_bytes(path, storage="f16")


def fake_quant(v: np.ndarray, scale: float, zero: int, low: int, high: int) -> np.ndarray:
    return (np.clip(np.round(v / scale) + zero, low, high) - zero) * scale  # numpy rounds half to even, as ONNX


def int8_case(tmp_path):
    """x → Q/DQ (uint8) → Conv (int8 per-channel weights) → Q/DQ → SgeResidual → y, as quantize_static writes it:
    (graph file, x, float64 expectation from the same quantisation, the conv output's scale)."""
    n, c, h, w, groups = 2, 16, 9, 7, 4
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)
    # 7-bit weights, as the export writes the CPU graphs: 8-bit ones saturate on CPUs without VNNI (tests/int8)
    w_scale = (np.abs(weight).reshape(c, -1).max(axis=1) / 64).astype(np.float32)
    w_int8 = np.round(weight / w_scale[:, None, None, None]).astype(np.int8)
    gamma, beta = rng.standard_normal(groups).astype(np.float32), rng.standard_normal(groups).astype(np.float32)
    x_scale, a_scale = np.float32(8 / 255), np.float32(6 / 255)
    consts = {
        "w_q": w_int8, "w_s": w_scale, "w_z": np.zeros(c, np.int8), "x_s": x_scale, "x_z": np.uint8(128),
        "a_s": a_scale, "a_z": np.uint8(128), "gamma": gamma, "beta": beta,
    }  # fmt: skip
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["a"]),
        helper.make_node("QuantizeLinear", ["a", "a_s", "a_z"], ["a_q"]),
        helper.make_node("DequantizeLinear", ["a_q", "a_s", "a_z"], ["a_dq"]),
        helper.make_node("SgeResidual", ["a_dq", "x_dq", "gamma", "beta"], ["y"], domain="ai.sgedeploy",
                         groups=groups, eps=1e-5, block=0),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "sge_int8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, h, w])],
        [numpy_helper.from_array(np.asarray(v), name) for name, v in consts.items()],
    )
    path = tmp_path / "int8.onnx"
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.sgedeploy", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    x_dq = fake_quant(x.astype(np.float64), x_scale, 128, 0, 255)
    a = conv1x1(x_dq, w_int8.astype(np.float64) * w_scale[:, None, None, None])
    a_dq = fake_quant(a, a_scale, 128, 0, 255)
    expected = np.maximum(sge(a_dq, gamma.astype(np.float64), beta.astype(np.float64), groups) + x_dq, 0.0)
    return path, x, expected, a_scale


def test_op_inside_an_int8_graph(sge_extension, tmp_path):
    """The convolution runs in int8 and the op between the dequantised tensors."""
    path, x, expected, a_scale = int8_case(tmp_path)
    got, blocks, layers = run_fused(path, sge_extension, "f32", x)
    assert blocks == 1 and "Reference" in layers
    assert layers["Convolution"] == {"u8"} and layers["Reference"] == {"f32"}  # int8 conv, the op on float
    # measured 3e-7 at most; at most one a_scale step where float rounding moves a convolution output across a tie
    assert np.abs(got - expected).max() <= a_scale
    assert np.abs(got - expected).mean() <= 1e-4
