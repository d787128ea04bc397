"""The compact SGE graph exports with a symbolic batch, matches eager PyTorch in ONNX Runtime, and stays in NCHWc."""

import collections
import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx_export import export_onnx, tensor_dims
from export.ort_sge.nchwc import nchwc_block_size
from export.pipeline import prepare_for_export
from export.sge_compact import CompactSGE, compact_sge, restore_batch_symbol
from export.spec import ExportSpec, SpecError
from models import create_model
from models.layers import SpatialGroupEnhance
from models.transforms import photo_batch

ATOL, RTOL_L2 = 1e-4, 1e-5  # the export's parity gates (ExportSpec defaults)


def session(path: Path, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def assert_parity(got: np.ndarray, want: np.ndarray) -> None:
    assert np.abs(got - want).max() <= ATOL
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= RTOL_L2
    assert (got.argmax(1) == want.argmax(1)).all()


@pytest.fixture(scope="module")
def sge18():
    return create_model("sge_resnet18", init="random")


def export_compact(model, tmp: Path, spec: ExportSpec) -> Path:
    compact = compact_sge(copy.deepcopy(model), input_size=None if spec.dynamic_hw else spec.input_size)
    raw = export_onnx(compact, tmp / "raw.onnx", spec=spec)
    path = tmp / "compact.onnx"
    onnx.save(restore_batch_symbol(onnx.load(str(raw))), str(path))
    return path


def test_static_size_export_parity_dynamic_batch(sge18, tmp_path):
    spec = ExportSpec(input_size=(96, 96))
    path = export_compact(sge18, tmp_path, spec)
    graph = onnx.load(str(path)).graph
    assert tensor_dims(graph.input[0]) == ["batch", 3, 96, 96]
    assert not [n for n in graph.node if n.op_type == "Reshape"][1:]  # at most the classifier's flatten
    resized = {n.output[0] for n in graph.node if n.op_type == "Resize"}
    assert len(resized) == 8
    assert all(tensor_dims(v)[0] == "batch" for v in graph.value_info if v.name in resized)
    sess = session(path)
    photos = photo_batch((96, 96))
    noise = np.random.default_rng(0).standard_normal((8, 3, 96, 96), dtype=np.float32)
    with torch.no_grad():
        for x in (photos[:1], photos[:3], photos, noise[:1], noise[:3], noise):
            assert_parity(sess.run(None, {"input": x})[0], sge18(torch.from_numpy(x)).numpy())


def test_dynamic_hw_export_parity(sge18, tmp_path):
    spec = ExportSpec(input_size=(96, 96), dynamic_hw=True)
    path = export_compact(sge18, tmp_path, spec)
    assert tensor_dims(onnx.load(str(path)).graph.input[0]) == ["batch", 3, "height", "width"]
    sess = session(path)
    for size, batch in [((96, 96), 3), ((128, 96), 1), ((80, 112), 8)]:
        x = photo_batch(size)[:batch] if batch <= 7 else np.concatenate([photo_batch(size), photo_batch(size)[:1]])
        with torch.no_grad():
            assert_parity(sess.run(None, {"input": x})[0], sge18(torch.from_numpy(x)).numpy())


def test_compact_graph_runs_in_nchwc(sge18, tmp_path):
    """On AVX2 (ORT's 8-channel NCHWc block) only the small G-channel maps are reordered: 2 per SGE layer + 1."""
    if nchwc_block_size() != 8:
        pytest.skip("ONNX Runtime's NCHWc block is 8 only on AVX2 without AVX-512 (test_avx2_view.py runs it so)")
    spec = ExportSpec(input_size=(96, 96))
    compact = export_compact(sge18, tmp_path, spec)
    official = export_onnx(sge18, tmp_path / "official.onnx", spec=spec)
    counts = {}
    for name, path in [("compact", compact), ("official", official)]:
        optimized = tmp_path / f"{name}.opt.onnx"
        session(path, optimized)
        ops = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
        counts[name] = ops["ReorderInput"] + ops["ReorderOutput"]
    assert counts["compact"] <= 2 * 8 + 1 < counts["official"], counts


def test_prepare_for_export_rewrites_a_copy(sge18):
    prepared = prepare_for_export(sge18, spec=ExportSpec(input_size=(96, 96), sge_form="compact"))
    assert prepared is not sge18
    assert sum(isinstance(m, CompactSGE) for m in prepared.modules()) == 8
    assert all(m.feature_size is not None for m in prepared.modules() if isinstance(m, CompactSGE))
    assert sum(isinstance(m, SpatialGroupEnhance) for m in sge18.modules()) == 8  # the original is untouched
    dynamic = prepare_for_export(sge18, spec=ExportSpec(input_size=(96, 96), dynamic_hw=True, sge_form="compact"))
    assert all(m.feature_size is None for m in dynamic.modules() if isinstance(m, CompactSGE))
    assert prepare_for_export(sge18, spec=ExportSpec()) is sge18  # official is the default


def test_unknown_sge_form_is_refused():
    with pytest.raises(SpecError, match="sge_form"):
        ExportSpec(sge_form="fast")


def test_restore_batch_symbol_leaves_a_static_batch_alone(tmp_path):
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        )
    )
    assert restore_batch_symbol(model) is model


def test_spatial_mean_feeding_resize_becomes_global_pool():
    """The dynamo exporter's ReduceMean form of the channel mean is rewritten; other means are left alone."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1),
        helper.make_node("Resize", ["m", "", "scales"], ["mf"], mode="nearest"),
        helper.make_node("Mul", ["x", "mf"], ["p"]),
        helper.make_node("ReduceMean", ["p", "axes"], ["q"], keepdims=1),
        helper.make_node("Add", ["p", "q"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 4, 5])],
        [
            numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array([1, 1, 4, 5], dtype=np.float32), "scales"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    fixed = restore_batch_symbol(model)
    assert [n.op_type for n in fixed.graph.node] == ["GlobalAveragePool", "Resize", "Mul", "ReduceMean", "Add"]
    assert [tensor_dims(v) for v in fixed.graph.value_info if v.name == "mf"] == [["batch", 8, 4, 5]]
    x = np.random.default_rng(0).standard_normal((3, 8, 4, 5), dtype=np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
