"""Simplification keeps the batch symbolic, never adds nodes, and leaves the outputs unchanged."""

import numpy as np
import onnx
import pytest

import models
from export.onnx_export import check_io, check_onnx, export_onnx, tensor_dims
from export.simplify import simplify
from export.spec import ExportSpec
from export.validate import onnxruntime_runner
from tests.export.conftest import SMALL


@pytest.fixture(scope="module")
def raw_sge(tmp_path_factory):
    """The unsimplified TorchScript export of sge_resnet18 (SGE's reshapes are the shape arithmetic to fold)."""
    spec = ExportSpec(input_size=SMALL)
    path = tmp_path_factory.mktemp("raw") / "raw.onnx"
    export_onnx(models.create_model("sge_resnet18", init="random"), path, spec=spec)
    return check_onnx(path), path, spec


@pytest.mark.parametrize("simplifier", ["onnxsim", "onnxslim"])
def test_simplified_graph_is_smaller_keeps_the_batch_and_the_outputs(raw_sge, simplifier, tmp_path):
    raw, raw_path, spec = raw_sge
    simplified = simplify(raw, simplifier=simplifier)
    assert len(simplified.graph.node) < len(raw.graph.node)
    assert len(raw.graph.node) > 0 and "Shape" in {n.op_type for n in raw.graph.node}
    check_io(simplified, spec=spec, num_classes=1000)  # raises if the batch became static
    assert isinstance(tensor_dims(simplified.graph.input[0])[0], str)
    assert "Shape" not in {n.op_type for n in simplified.graph.node}  # folded, with -1 left in the batch slot
    path = tmp_path / "simplified.onnx"
    onnx.save(simplified, str(path))
    x = np.random.default_rng(1).standard_normal((5, 3, *SMALL), dtype=np.float32)
    before = onnxruntime_runner(raw_path, input_name="input")(x)
    after = onnxruntime_runner(path, input_name="input")(x)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5 * np.abs(before).max())


def test_none_returns_the_graph_unchanged(raw_sge):
    raw, _, _ = raw_sge
    assert simplify(raw, simplifier="none") is raw


def test_a_simplifier_that_grows_the_graph_or_fails_its_own_check_is_refused(raw_sge, monkeypatch):
    import onnxsim

    from export.simplify import SimplifyError

    raw, _, _ = raw_sge
    grown = onnx.ModelProto()
    grown.CopyFrom(raw)
    grown.graph.node.append(onnx.helper.make_node("Identity", ["logits"], ["unused"]))
    monkeypatch.setattr(onnxsim, "simplify", lambda model: (grown, True))
    with pytest.raises(SimplifyError, match=rf"grew the graph from {len(raw.graph.node)} to {len(raw.graph.node) + 1}"):
        simplify(raw)
    monkeypatch.setattr(onnxsim, "simplify", lambda model: (model, False))
    with pytest.raises(SimplifyError, match=r"onnxsim's own check .* failed"):
        simplify(raw)


def test_check_io_refuses_a_graph_with_another_class_count_or_a_static_batch(raw_sge):
    from export.onnx_export import OnnxExportError

    raw, _, spec = raw_sge
    with pytest.raises(OnnxExportError, match=r"output dims are \['batch', 1000\], expected \['batch', 10\]"):
        check_io(raw, spec=spec, num_classes=10)
    static = onnx.ModelProto()
    static.CopyFrom(raw)
    static.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # the batch frozen at 1
    with pytest.raises(OnnxExportError, match=r"input dims are \[1, 3, "):
        check_io(static, spec=spec, num_classes=1000)
    anonymous = onnx.ModelProto()
    anonymous.CopyFrom(raw)
    anonymous.graph.input[0].type.tensor_type.shape.dim[0].Clear()  # a batch dim with neither size nor name
    assert tensor_dims(anonymous.graph.input[0])[0] == "?"
    with pytest.raises(OnnxExportError, match=r"input dims are \['\?', 3, "):
        check_io(anonymous, spec=spec, num_classes=1000)
