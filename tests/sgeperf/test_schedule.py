"""The planned graph's node order (export/ort_sge/schedule.py): every SgeResidual right after the producer of its x."""

import onnx
import pytest
from onnx import helper

from export.ort_sge.nchwc import FUSED_DOMAIN, FUSED_OP
from export.ort_sge.schedule import schedule_blocks


def node(op: str, inputs: list[str], output: str, *, fused: bool = False) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output, domain=FUSED_DOMAIN if fused else "")


# A downsampling block: the stem's map b feeds the downsample (the identity) and the conv chain (x).
NODES = {
    "b": node("Conv", ["input"], "b"),
    "identity": node("Conv", ["b"], "identity"),
    "h1": node("Conv", ["b"], "h1"),
    "h2": node("Conv", ["h1"], "h2"),
    "x": node("Conv", ["h2"], "x"),
    "out": node(FUSED_OP, ["x", "identity", "gamma", "beta"], "out", fused=True),
    "logits": node("GlobalAveragePool", ["out"], "logits"),
}


def graph_in_order(names: list[str], *, extra: list[onnx.NodeProto] = ()) -> onnx.GraphProto:
    value = helper.make_tensor_value_info
    return helper.make_graph(
        [NODES[n] for n in names] + list(extra),
        "block",
        [value("input", onnx.TensorProto.FLOAT, None)],
        [value("logits", onnx.TensorProto.FLOAT, None)],
    )


def names(graph: onnx.GraphProto) -> list[str]:
    return [n.output[0] for n in graph.node]


@pytest.mark.parametrize(
    "listed",
    [
        ["b", "h1", "h2", "x", "identity", "out", "logits"],  # the downsample between the last convolution and SGE
        ["b", "identity", "h1", "h2", "x", "out", "logits"],
        ["b", "h1", "identity", "h2", "x", "out", "logits"],
    ],
)
def test_the_identity_branch_runs_first_and_sge_follows_its_x(listed):
    graph = graph_in_order(listed)
    assert schedule_blocks(graph)
    assert names(graph) == ["b", "identity", "h1", "h2", "x", "out", "logits"]


def test_the_diagnostic_order_puts_the_downsample_between_x_and_sge():
    graph = graph_in_order(["b", "identity", "h1", "h2", "x", "out", "logits"])
    schedule_blocks(graph, identity_last=True)
    assert names(graph) == ["b", "h1", "h2", "x", "identity", "out", "logits"]


def test_other_nodes_keep_their_inputs_order_and_nothing_is_lost():
    add = node("Add", ["x", "identity"], "out")  # not fused: its inputs' producers in input order
    graph = graph_in_order(["b", "identity", "h1", "h2", "x"], extra=[add, NODES["logits"]])
    unused = node("Relu", ["b"], "unused")  # no output depends on it: kept, after the rest
    graph.node.insert(1, unused)
    schedule_blocks(graph)
    assert names(graph) == ["b", "h1", "h2", "x", "identity", "out", "logits", "unused"]


def test_a_graph_with_control_flow_is_left_as_it_is():
    listed = ["b", "h1", "h2", "x", "identity", "out", "logits"]
    graph = graph_in_order(listed)
    branch = helper.make_graph([node("Relu", ["x"], "y")], "branch", [], [])  # reads x from the outer graph
    graph.node.insert(4, helper.make_node("If", ["cond"], ["z"], name="z", then_branch=branch, else_branch=branch))
    assert not schedule_blocks(graph)
    assert names(graph) == [*listed[:4], "z", *listed[4:]]


def test_a_cycle_is_refused():
    graph = graph_in_order(["b", "identity", "h1", "h2", "x", "out", "logits"])
    graph.node[2].input[0] = "x"  # h1 reads x, which depends on h1
    with pytest.raises(ValueError, match="cycle"):
        schedule_blocks(graph)
