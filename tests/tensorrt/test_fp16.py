"""FP16-with-FP32-islands ONNX: the policy (which nodes stay FP32), the graph it writes, and parity on ORT CPU."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto
from onnx.reference import ReferenceEvaluator

import models
from export.fp16 import (
    REASON_LAYERNORM,
    PrecisionPlan,
    convert_to_fp16,
    fp16_reductions_in_islands,
    name_nodes,
    plan_precision,
    write_fp16_onnx,
)
from models.layers import SpatialGroupEnhance
from models.transforms import photo_batch
from tests.tensorrt.conftest import export_onnx

# Parity of the FP16-islands graph against eager FP32 (sge_resnet18, 128×128, default calibrated weights):
# max |Δlogit| at most 1% of the largest |logit|, and the same top-1 class on every photograph.
RELATIVE_TOL = 0.01


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def run_ort(model: onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]


def test_one_island_per_sge_block_with_its_whole_normalisation(sge18):
    model, path = sge18
    plan = plan_precision(name_nodes(onnx.load(path)))
    n_sge = sum(isinstance(m, SpatialGroupEnhance) for m in model.modules())
    assert len(plan.islands) == n_sge == 8
    graph = {n.name: n.op_type for n in onnx.load(path).graph.node}
    for island in plan.islands:
        ops = {graph[name] for name in island}
        assert {"ReduceMean", "Sub", "Mul", "Sqrt", "Add", "Div"} <= ops, ops
        assert all("/sge/" in name for name in island), island  # nothing outside the SGE block is pulled in


def test_fp16_graph_has_no_fp16_reduction_in_sge_normalisation(sge18):
    _, path = sge18
    fp32 = name_nodes(onnx.load(path))
    plan = plan_precision(fp32)
    fp16 = convert_to_fp16(fp32, plan)
    assert fp16_reductions_in_islands(fp16, plan.islands) == []
    types = elem_types(fp16)
    nodes = list(fp16.graph.node)
    # Read the graph directly: every float op of SGE's mean/std/divide computes in FP32 (int64 shape maths aside).
    checked = 0
    for node in nodes:
        if "/sge/" in node.name and node.op_type in {"ReduceMean", "ReduceSum", "Sqrt", "Div", "Sub", "Pow"}:
            float_io = [types[t] for t in [*node.input, *node.output] if types.get(t) in (1, 10)]
            assert all(t == TensorProto.FLOAT for t in float_io), node.name
            checked += bool(float_io)
    assert checked >= 8 * 6  # per block: 3 ReduceMean, 2 Sub, 1 Sqrt (+ ReduceSum, Div from layer2 on)
    # ... while the convolutions really run in FP16 (the conversion did something) and the edges stay FP32.
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert convs and all(types[n.input[0]] == TensorProto.FLOAT16 for n in convs)
    assert types[fp16.graph.input[0].name] == TensorProto.FLOAT
    assert types[fp16.graph.output[0].name] == TensorProto.FLOAT


def test_fp16_islands_parity_with_eager_fp32_on_photos_and_random(sge18, tmp_path):
    model, path = sge18
    out_path, plan = write_fp16_onnx(path, tmp_path / "model_fp16.onnx")
    assert len(plan.islands) == 8
    fp16 = onnx.load(out_path)
    photos = photo_batch((128, 128))
    noise = np.random.default_rng(0).standard_normal((3, 3, 128, 128)).astype(np.float32)
    for batch, name in [(photos, "photographs"), (noise, "random")]:
        with torch.no_grad():
            ref = model(torch.from_numpy(batch)).numpy()
        got = run_ort(fp16, batch)
        err = np.abs(got - ref).max() / np.abs(ref).max()
        assert err <= RELATIVE_TOL, f"{name}: relative max error {err:.4f}"
        if name == "photographs":
            assert (got.argmax(1) == ref.argmax(1)).all()


def sge_layer_model(tmp_path):
    layer = SpatialGroupEnhance(64, groups=8).eval()
    with torch.no_grad():
        layer.weight.normal_(0, 1)
        layer.bias.normal_(0, 0.5)
    return layer, export_onnx(layer, tmp_path / "sge.onnx", shape=(1, 64, 16, 16))


def run_reference(model: onnx.ModelProto, batch: np.ndarray, *, name: str = "input") -> np.ndarray:
    """ONNX's numpy reference evaluator: FP16 nodes really compute in FP16 (ORT's CPU EP runs most FP16 nodes
    through FP32 fallback kernels, so it cannot show an FP16 overflow)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflow this test provokes on purpose
        return ReferenceEvaluator(model).run(None, {name: batch})[0]


def test_islands_are_what_keeps_sge_right_past_fp16_range(tmp_path):
    layer, path = sge_layer_model(tmp_path)
    # Activations of ~±30 give similarities in the thousands: |c − mean| > 256, so (c − mean)² overflows FP16.
    x = (30 * np.random.default_rng(1).standard_normal((2, 64, 16, 16))).astype(np.float32)
    with torch.no_grad():
        ref = layer(torch.from_numpy(x)).numpy()
    fp32 = name_nodes(onnx.load(path))
    naive = run_reference(convert_to_fp16(fp32, PrecisionPlan(fp32_nodes={})), x)
    islands = run_reference(convert_to_fp16(fp32, plan_precision(fp32)), x)
    # All-FP16: the variance is inf, the normalised map 0, the gate a constant: errors of tens on values of ~100.
    assert np.abs(naive - ref).max() > 10
    np.testing.assert_allclose(islands, ref, rtol=0.01, atol=0.2)  # FP16 rounding of the ±100 gated values only


def test_plain_resnet_has_no_island_and_gc_keeps_layernorm_fp32(tmp_path):
    plain = plan_precision(
        onnx.load(
            export_onnx(models.create_model("resnet18", init="random"), tmp_path / "r.onnx", shape=(1, 3, 64, 64))
        )
    )
    assert plain.islands == [] and plain.fp32_nodes == {}
    gc = name_nodes(
        onnx.load(
            export_onnx(models.create_model("gc_resnet18", init="random"), tmp_path / "g.onnx", shape=(1, 3, 64, 64))
        )
    )
    plan = plan_precision(gc)
    layernorms = {n.name for n in gc.graph.node if n.op_type == "LayerNormalization"}
    softmaxes = {n.name for n in gc.graph.node if n.op_type == "Softmax"}
    assert layernorms and all(plan.fp32_nodes[name] == REASON_LAYERNORM for name in layernorms)
    assert softmaxes and not softmaxes & set(plan.fp32_nodes)


def test_decomposed_layernorm_is_found_as_a_standardisation(tmp_path):
    # At opset 16 LayerNorm has no ONNX op: torch writes mean/sub/pow/mean/sqrt/div, the same risk as SGE.
    gc = models.create_model("gc_resnet18", init="random")
    plan = plan_precision(onnx.load(export_onnx(gc, tmp_path / "g16.onnx", shape=(1, 3, 64, 64), opset=16)))
    n_blocks = sum(isinstance(m, torch.nn.LayerNorm) for m in gc.modules())
    assert len(plan.islands) == n_blocks > 0


def test_dynamo_form_of_the_normalisation_is_found(tmp_path):
    """The dynamo exporter writes the std as two-pass variance → Reshape → Expand → Sqrt (no Shape/Cast count);
    built by hand here (the dynamo export itself takes ~30 s), with the island boundary checked exactly."""
    from onnx import helper, numpy_helper

    def const(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], name="conv"),
        helper.make_node("Reshape", ["conv", "shape_groups"], ["view"], name="view"),
        helper.make_node("ReduceMean", ["view", "axes_hw"], ["gap"], name="gap"),
        helper.make_node("Mul", ["view", "gap"], ["xg"], name="xg"),
        helper.make_node("ReduceSum", ["xg", "axes_c"], ["sim"], name="sim", keepdims=1),
        helper.make_node("Reshape", ["sim", "shape_flat"], ["t"], name="t"),
        helper.make_node("ReduceMean", ["t", "axes_1"], ["mean"], name="mean"),
        helper.make_node("Sub", ["t", "mean"], ["centred"], name="centred"),
        helper.make_node("ReduceMean", ["centred", "axes_1"], ["m2"], name="m2"),
        helper.make_node("Sub", ["centred", "m2"], ["d"], name="d"),
        helper.make_node("Mul", ["d", "d"], ["sq"], name="sq"),
        helper.make_node("ReduceMean", ["sq", "axes_1"], ["var_n"], name="var_n"),
        helper.make_node("Mul", ["var_n", "n"], ["ssq"], name="ssq"),
        helper.make_node("Div", ["ssq", "n_minus_1"], ["var"], name="var"),
        helper.make_node("Expand", ["var", "shape_var"], ["var_b"], name="var_b"),
        helper.make_node("Sqrt", ["var_b"], ["std"], name="std"),
        helper.make_node("Add", ["std", "eps"], ["den"], name="den"),
        helper.make_node("Div", ["centred", "den"], ["norm"], name="norm"),
        helper.make_node("Reshape", ["norm", "shape_gate"], ["gate_in"], name="gate_in"),
        helper.make_node("Sigmoid", ["gate_in"], ["gate"], name="gate"),
        helper.make_node("Mul", ["view", "gate"], ["y"], name="y"),
    ]
    inits = [
        const("w", np.random.default_rng(0).standard_normal((8, 8, 1, 1)) * 10),
        const("shape_groups", [-1, 2, 4, 4], np.int64),
        const("axes_hw", [2, 3], np.int64),
        const("axes_c", [1], np.int64),
        const("shape_flat", [-1, 16], np.int64),
        const("axes_1", [1], np.int64),
        const("n", 16.0),
        const("n_minus_1", 15.0),
        const("shape_var", [4, 1], np.int64),
        const("eps", 1e-5),
        const("shape_gate", [-1, 1, 4, 4], np.int64),
    ]
    graph = helper.make_graph(
        nodes,
        "sge_dynamo_form",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    plan = plan_precision(model)
    assert len(plan.islands) == 1
    island = set(plan.islands[0])
    # Everything from the similarity to the divide; not the conv, the gate, or the gated product.
    similarity = {"gap", "xg", "sim", "t"}
    standardisation = {"mean", "centred", "m2", "d", "sq", "var_n", "ssq", "var", "var_b", "std", "den", "norm"}
    assert island == similarity | standardisation
    x = np.random.default_rng(1).standard_normal((1, 8, 4, 4)).astype(np.float32)
    ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_reference(convert_to_fp16(model, plan), x, name="x"), ref, rtol=0.01, atol=0.05)


def test_logits_beyond_fp16s_range_are_refused(tmp_path, monkeypatch):
    """ONNX Runtime's CPU run of the FP16 graph stayed finite (it skips some casts) where FP16 arithmetic gives Inf:
    a checkpoint with logits near 2.9e5 was written with a passing parity."""
    import pytest

    from export.artifacts import load_manifest
    from export.fp16 import Fp16ConversionError
    from export.pipeline import export_model
    from export.trt import artifact

    out = tmp_path / "r18"
    export_model("resnet18", out, init="random", input_size=(64, 64), batch_sizes=(1,))
    real = artifact.compare_fp16

    def huge_logits(*args, **kwargs):
        from dataclasses import replace

        return replace(real(*args, **kwargs), reference_max=2.9e5)

    monkeypatch.setattr(artifact, "compare_fp16", huge_logits)
    with pytest.raises(Fp16ConversionError, match=r"the FP32 logits reach 2\.9e\+05 .* beyond FP16's 65504"):
        artifact.add_fp16_onnx(out)
    assert not (out / "model_fp16.onnx").exists() and "model_fp16.onnx" not in load_manifest(out).files


def test_a_centring_by_another_tensors_mean_is_no_standardisation():
    """(a − mean(b)) / f(a − mean(b)) with a ≠ b is not a standardisation: only a − mean(a) is kept FP32."""
    from onnx import helper, numpy_helper

    def graph(mean_of: str) -> onnx.ModelProto:
        nodes = [
            helper.make_node("Mul", ["x", "two"], ["a"], name="a"),
            helper.make_node("Add", ["x", "two"], ["b"], name="b"),
            helper.make_node("ReduceMean", [mean_of, "axes"], ["mean"], name="mean"),
            helper.make_node("Sub", ["a", "mean"], ["centred"], name="centred"),
            helper.make_node("Mul", ["centred", "centred"], ["sq"], name="sq"),
            helper.make_node("ReduceMean", ["sq", "axes"], ["var"], name="var"),
            helper.make_node("Sqrt", ["var"], ["std"], name="std"),
            helper.make_node("Div", ["centred", "std"], ["y"], name="norm"),
        ]
        inits = [numpy_helper.from_array(np.float32(2.0), "two"), numpy_helper.from_array(np.array([1]), "axes")]
        value = helper.make_tensor_value_info
        g = helper.make_graph(
            nodes, "centring", [value("x", TensorProto.FLOAT, [1, 16])], [value("y", TensorProto.FLOAT, [1, 16])], inits
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])

    assert len(plan_precision(graph("a")).islands) == 1  # the standardisation itself
    assert plan_precision(graph("b")).islands == []
