"""The graph's own metadata: what set_metadata writes is all that is left."""

import onnx
from onnx import TensorProto, helper

from export.metadata import read_metadata, set_metadata


def test_set_metadata_replaces_every_earlier_key():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    helper.set_model_props(model, {"model_name": "stale", "left_by_the_exporter": "1"})
    set_metadata(model, {"model_name": "sge_resnet50", "opset": 17})
    assert read_metadata(model) == {"model_name": "sge_resnet50", "opset": "17"}
    assert [p.key for p in model.metadata_props] == ["model_name", "opset"]  # one entry a key
    onnx.checker.check_model(model)
