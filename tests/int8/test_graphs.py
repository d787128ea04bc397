"""The INT8 graphs: SGE's normalisation stays float (read off the graph), the schemes are what their roles say,
the manifest names each passing graph, and the parity reports hold the gated figures."""

import json

import onnx
import pytest

from export.artifacts import load_manifest
from export.int8.quantize import calibrate, excluded_nodes, quantize_graph, scheme_of
from export.int8.roles import INT8_FUSED_ROLE, INT8_ROLE, INT8_S8S8_ROLE, file_with_role
from export.int8.sge_regions import QDQ_OPS, fused_sge_nodes, qdq_inside_sge, sge_regions
from tests.int8.conftest import SGE_BLOCKS

SGE_OPS = {"ReduceMean", "Sub", "Div", "Sqrt", "Sigmoid"}


@pytest.fixture(scope="module")
def graphs(int8_artifact):
    directory, _ = int8_artifact
    manifest = load_manifest(directory)
    return {
        role: onnx.load(str(directory / file_with_role(manifest, role)))
        for role in (INT8_ROLE, INT8_S8S8_ROLE, INT8_FUSED_ROLE)
    }


@pytest.mark.parametrize("role", [INT8_ROLE, INT8_S8S8_ROLE])
def test_sge_normalisation_has_no_qdq_inside(graphs, role):
    model = graphs[role]
    regions = sge_regions(model)
    assert len(regions) == SGE_BLOCKS
    assert qdq_inside_sge(model) == []
    by_name = {n.name: n for n in model.graph.node}
    for region in regions:
        ops = {by_name[name].op_type for name in region.nodes}
        assert ops >= SGE_OPS and not ops & QDQ_OPS
    # ...while the convolutions around it are quantised: every Conv reads a DequantizeLinear output
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(producer[n.input[0]].op_type == "DequantizeLinear" for n in convs)


def test_fused_int8_graph_keeps_the_float_op_between_dq_and_q(graphs):
    model = graphs[INT8_FUSED_ROLE]
    nodes = fused_sge_nodes(model)
    assert len(nodes) == SGE_BLOCKS and qdq_inside_sge(model) == []
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = {i: [n for n in model.graph.node if i in n.input] for n in nodes for i in n.output}
    for node in nodes:
        assert producer[node.input[0]].op_type == "DequantizeLinear"  # x: the quantised convolution's output
        assert producer[node.input[1]].op_type in {"DequantizeLinear", "SgeResidual"}  # identity, float
        assert any(c.op_type == "QuantizeLinear" for c in consumers[node.output[0]])


def test_schemes_match_roles(graphs):
    assert set(scheme_of(graphs[INT8_ROLE])) == {"uint8"}
    assert set(scheme_of(graphs[INT8_FUSED_ROLE])) == {"uint8"}
    assert set(scheme_of(graphs[INT8_S8S8_ROLE])) == {"int8"}
    # S8S8 is symmetric: every activation zero point is 0
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graphs[INT8_S8S8_ROLE].graph.initializer}
    q_nodes = [n for n in graphs[INT8_S8S8_ROLE].graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes and all((inits[n.input[2]] == 0).all() for n in q_nodes)
    # weights are per channel: a Conv weight's DequantizeLinear has one scale per output channel
    weight_dq = [
        n
        for n in graphs[INT8_ROLE].graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4
    ]
    assert weight_dq and all(inits[n.input[1]].shape == (inits[n.input[0]].shape[0],) for n in weight_dq)


def test_the_float_check_catches_a_graph_quantised_through_sge(int8_artifact, tmp_path, monkeypatch):
    """Quantise with nothing excluded: the graph check must then find Q/DQ inside SGE."""
    directory, _ = int8_artifact
    import numpy as np

    import export.int8.quantize as quantize

    src = directory / "model.onnx"
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)  # ranges only, no parity
    assert excluded_nodes(onnx.load(str(src)))  # what is normally left float
    monkeypatch.setattr(quantize, "excluded_nodes", lambda model: [])
    monkeypatch.setattr(quantize, "OP_TYPES", (*quantize.OP_TYPES, "Mul", "Sigmoid", "Div", "Sub", "ReduceMean"))
    ranges = calibrate(src, batch, input_name="input", method="minmax", ranges_path=tmp_path / "r.json")
    out = quantize_graph(src, tmp_path / "bad.onnx", ranges_path=ranges, method="minmax", scheme="u8s8")
    assert qdq_inside_sge(onnx.load(str(out)))


def test_manifest_records_each_graph_and_its_report(int8_artifact):
    directory, result = int8_artifact
    manifest = load_manifest(directory)
    roles = {entry.role: name for name, entry in manifest.files.items()}
    assert roles[INT8_ROLE] == "model.int8.onnx"
    assert roles[INT8_S8S8_ROLE] == "model.int8_s8s8.onnx"
    assert roles[INT8_FUSED_ROLE] == "model.int8.sge_fused.onnx"
    assert manifest.extra["int8"]["calibration"]["samples"] == 8
    for graph in result.int8.graphs:
        assert graph.passed and graph.parity_name in manifest.files
        report = json.loads((directory / graph.parity_name).read_text())
        cases = {(c["reference"], c["inputs"], c["batch"]) for c in report["cases"]}
        assert {("eager", "photos", 8), ("fp32_onnx", "random", 1)} <= cases
        assert report["worst"]["eager / photos"]["cosine"] >= report["gates"]["photos_cosine"]


def test_tensorrts_s8s8_graph_keeps_its_biases_float(int8_artifact):
    """onnx-tensorrt takes DequantizeLinear on int8 tensors only: an int32 bias behind one fails the parse. ONNX
    Runtime's U8S8 graphs keep their int32 biases (its integer convolution adds them)."""
    import onnx

    def int32_dequantized(name):
        model = onnx.load(str(int8_artifact[0] / name))
        int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
        return sum(n.op_type == "DequantizeLinear" and n.input[0] in int32 for n in model.graph.node)

    assert int32_dequantized("model.int8_s8s8.onnx") == 0
    assert int32_dequantized("model.int8.onnx") > 0


@pytest.mark.parametrize("role", [INT8_ROLE, INT8_S8S8_ROLE, INT8_FUSED_ROLE])
def test_the_logits_stay_float(graphs, int8_artifact, role):
    """A Q/DQ pair on the classifier's output left 86-162 distinct values among 1000 logits, and exact top-1 ties."""
    import numpy as np
    import onnxruntime as ort

    from models.transforms import photo_batch

    model = graphs[role]
    producer = {out: node for node in model.graph.node for out in node.output}
    assert producer[model.graph.output[0].name].op_type not in QDQ_OPS  # the Gemm writes the output itself
    if role == INT8_FUSED_ROLE:
        return  # the same graph with the fused op: its own session (tests/int8 runs it elsewhere)
    directory, _ = int8_artifact
    path = directory / file_with_role(load_manifest(directory), role)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    logits = session.run(None, {spec.name: photo_batch(tuple(spec.shape[2:]))})[0]
    assert min(len(np.unique(row)) for row in logits) > 900
