"""Folding the INT8 detour around the fused SGE op (export/ort_sge/quantized_io.py): hand-built graphs shaped like
ORT's optimised INT8 graph, then the real sge_resnet50 artifact where it has been built."""

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.ort_sge.nchwc import FUSED_DOMAIN, FUSED_OP, QUANTIZED_OP, node_attribute
from export.ort_sge.quantized_io import TO_NCHW, TO_NHWC, fold_quantized_io, runs_quantized

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "artifacts" / "sge_resnet50" / "model.int8.sge_fused.onnx"
MS = "com.microsoft"
C, GROUPS, EPS = 32, 8, 1e-5  # 4 channels a group, as sge_resnet50's layer1


def q(tensor: str) -> list[str]:
    """The names of a tensor's scale and zero point."""
    return [f"{tensor}_scale", f"{tensor}_zero_point"]


def conv(source: str, source_quantization: str, out: str) -> onnx.NodeProto:
    inputs = [source, *q(source_quantization), "w", "w_scale", "w_zero_point", *q(out)]
    return helper.make_node("QLinearConv", inputs, [out], name=out, domain=MS, channels_last=1)


def detour(nhwc: str, out: str) -> list[onnx.NodeProto]:
    """ORT's DequantizeLinear(Transpose[0,3,1,2](nhwc)) before the fused op."""
    return [
        helper.make_node("Transpose", [nhwc], [f"{nhwc}_nchw"], name=f"{nhwc}_nchw", perm=TO_NCHW),
        helper.make_node("DequantizeLinear", [f"{nhwc}_nchw", *q(nhwc)], [out], name=out, axis=1),
    ]


def sge_graph(
    identities: str,
    *,
    plain: frozenset[int] = frozenset(),
    float_outputs: frozenset[int] = frozenset(),
    per_channel: frozenset[int] = frozenset(),
    domain_import: bool = True,
    flatten: bool = False,
) -> onnx.ModelProto:
    """Blocks as ORT leaves them: ``identities`` has a ``d`` for a block whose identity is a downsample convolution,
    a ``c`` for one chained to the block before (a float graph input for the first). The blocks in ``plain`` read a
    float graph input as x; those in ``float_outputs`` make their float output a graph output; those in
    ``per_channel`` have a per-channel x scale. ``flatten``: the pooled result goes through a Flatten, as in a ResNet's
    head, instead of being the graph's output."""
    nodes, shapes, quantized = [], [], ["input", "pooled"]  # quantized: tensors with a scale and zero point
    inputs = [helper.make_tensor_value_info("input", TensorProto.UINT8, [1, 4, 4, C])]
    head, head_shape = ("flat", [1, C]) if flatten else ("pooled", [1, C, 1, 1])
    outputs = [helper.make_tensor_value_info(head, TensorProto.UINT8, head_shape)]
    source, source_quantization = "input", "input"
    for b, kind in enumerate(identities):
        nodes.append(conv(source, source_quantization, f"x{b}"))
        quantized.append(f"x{b}")
        if b in plain:
            x = f"plain{b}"
            inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, C, 4, 4]))
        else:
            x = f"x{b}_f"
            nodes += detour(f"x{b}", x)
        if kind == "d":
            nodes.append(conv(source, source_quantization, f"t{b}"))
            nodes += detour(f"t{b}", f"t{b}_f")
            quantized.append(f"t{b}")
        identity = f"t{b}_f" if kind == "d" else f"y{b - 1}" if b else "identity"
        if identity == "identity":  # chained to no block: a float graph input
            inputs.append(helper.make_tensor_value_info(identity, TensorProto.FLOAT, [1, C, 4, 4]))
        y = f"y{b}"
        nodes.append(
            helper.make_node(
                FUSED_OP,
                [x, identity, f"gamma{b}", f"beta{b}"],
                [y],
                name=y,
                domain=FUSED_DOMAIN,
                groups=GROUPS,
                block=0,
                eps=EPS,
            )
        )
        nodes.append(helper.make_node("QuantizeLinear", [y, *q(y)], [f"{y}_q"], name=f"{y}_q", axis=1))
        quantized.append(y)
        shapes.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", C, 4, 4]))
        if b in float_outputs:
            outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, C, 4, 4]))
        if b < len(identities) - 1:
            nodes.append(helper.make_node("Transpose", [f"{y}_q"], [f"{y}_t"], name=f"{y}_t", perm=TO_NHWC))
            source, source_quantization = f"{y}_t", y
        else:
            nodes.append(
                helper.make_node(
                    "QLinearGlobalAveragePool",
                    [f"{y}_q", *q(y), *q("pooled")],
                    ["pooled"],
                    name="pooled",
                    domain=MS,
                    channels_last=0,
                )
            )
            if flatten:
                nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flat", axis=1))
    weights = {
        "w": np.ones((C, C, 1, 1), np.uint8),
        "w_scale": np.full(C, 0.01, np.float32),
        "w_zero_point": np.zeros(C, np.uint8),
    }
    for name in quantized:
        per = name in {f"x{b}" for b in per_channel}
        weights[f"{name}_scale"] = np.full(C, 0.05, np.float32) if per else np.array(0.05, np.float32)
        weights[f"{name}_zero_point"] = np.full(C, 128, np.uint8) if per else np.array(128, np.uint8)
    for b in range(len(identities)):
        weights[f"gamma{b}"], weights[f"beta{b}"] = np.ones(GROUPS, np.float32), np.zeros(GROUPS, np.float32)
    graph = helper.make_graph(
        nodes,
        "sge_int8",
        inputs,
        outputs,
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
        value_info=shapes,
    )
    imports = [helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]
    if domain_import:
        imports.append(helper.make_opsetid(FUSED_DOMAIN, 1))
    return helper.make_model(graph, opset_imports=imports)


def wiring(model: onnx.ModelProto) -> list[tuple[str, list[str], list[str]]]:
    return [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def conv_wiring(source: str, source_quantization: str, out: str) -> tuple[str, list[str], list[str]]:
    return ("QLinearConv", [source, *q(source_quantization), "w", "w_scale", "w_zero_point", *q(out)], [out])


def folded_wiring(b: int, identity: str, identity_quantization: str) -> tuple[str, list[str], list[str]]:
    inputs = [f"x{b}", *q(f"x{b}"), identity, *q(identity_quantization), f"gamma{b}", f"beta{b}", *q(f"y{b}")]
    return (QUANTIZED_OP, inputs, [f"y{b}_q_nhwc"])


def test_a_chain_of_blocks_runs_in_uint8_nhwc_end_to_end():
    model = sge_graph("dcc")
    assert fold_quantized_io(model) == 3
    assert wiring(model) == [
        conv_wiring("input", "input", "x0"),
        conv_wiring("input", "input", "t0"),
        folded_wiring(0, "t0", "t0"),
        conv_wiring("y0_q_nhwc", "y0", "x1"),
        folded_wiring(1, "y0_q_nhwc", "y0"),
        conv_wiring("y1_q_nhwc", "y1", "x2"),
        folded_wiring(2, "y1_q_nhwc", "y1"),
        ("Transpose", ["y2_q_nhwc"], ["y2_q_nchw"]),  # the pooled result is the graph's output: NCHW stays
        ("QLinearGlobalAveragePool", ["y2_q_nchw", *q("y2"), *q("pooled")], ["pooled"]),
    ]
    for node in model.graph.node:
        if node.op_type == QUANTIZED_OP:
            assert node.domain == FUSED_DOMAIN
            assert attributes(node) == {"groups": GROUPS, "eps": pytest.approx(EPS)}  # block is dropped
        if node.op_type == "Transpose":
            assert attributes(node) == {"perm": TO_NCHW}
    # the float outputs' shapes are gone; the new outputs carry them in NHWC
    shapes = {info.name: info for info in model.graph.value_info}
    assert sorted(shapes) == ["y0_q_nhwc", "y1_q_nhwc", "y2_q_nhwc"]
    nhwc = shapes["y0_q_nhwc"].type.tensor_type
    assert nhwc.elem_type == TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in nhwc.shape.dim] == ["batch", 4, 4, C]
    onnx.checker.check_model(model)


def test_the_head_s_pooling_reads_nhwc_when_a_flatten_reads_its_result():
    model = sge_graph("dc", flatten=True)
    assert fold_quantized_io(model) == 2
    assert wiring(model)[-2:] == [
        ("QLinearGlobalAveragePool", ["y1_q_nhwc", *q("y1"), *q("pooled")], ["pooled"]),
        ("Flatten", ["pooled"], ["flat"]),
    ]
    pool = model.graph.node[-2]
    assert attributes(pool) == {"channels_last": 1}
    assert not any(n.op_type == "Transpose" for n in model.graph.node)
    onnx.checker.check_model(model)


def test_one_transpose_feeding_a_stage_s_two_convolutions_is_bypassed_for_both():
    model = sge_graph("dd")
    assert fold_quantized_io(model) == 2
    first = {n.output[0]: list(n.input) for n in model.graph.node}
    assert first["x1"][0] == first["t1"][0] == "y0_q_nhwc"
    assert Counter(n.op_type for n in model.graph.node)["Transpose"] == 1  # the one before the pooling
    onnx.checker.check_model(model)


def test_a_node_whose_x_does_not_match_is_left_and_so_is_the_one_chained_to_it():
    model = sge_graph("dcd", plain=frozenset({0}))
    before = {n.name: n.SerializeToString() for n in model.graph.node}
    assert fold_quantized_io(model) == 1
    after = {n.name: n for n in model.graph.node}
    for name in ("y0", "y0_q", "y1", "y1_q", "y1_t"):
        assert after[name].SerializeToString() == before[name]
    assert wiring(model)[-3:] == [
        folded_wiring(2, "t2", "t2"),
        ("Transpose", ["y2_q_nhwc"], ["y2_q_nchw"]),
        ("QLinearGlobalAveragePool", ["y2_q_nchw", *q("y2"), *q("pooled")], ["pooled"]),
    ]
    assert after["x2"].input[0] == after["t2"].input[0] == "y1_t"  # block 1's output stays as ORT left it
    onnx.checker.check_model(model)


def test_a_reader_of_the_float_output_gets_it_dequantized():
    model = sge_graph("dc", plain=frozenset({1}))  # block 1 stays an SgeResidual and reads block 0's output
    assert fold_quantized_io(model) == 1
    assert wiring(model) == [
        conv_wiring("input", "input", "x0"),
        conv_wiring("input", "input", "t0"),
        folded_wiring(0, "t0", "t0"),
        ("Transpose", ["y0_q_nhwc"], ["y0_q_nchw"]),
        ("DequantizeLinear", ["y0_q_nchw", *q("y0")], ["y0_dq"]),
        conv_wiring("y0_q_nhwc", "y0", "x1"),
        (FUSED_OP, ["plain1", "y0_dq", "gamma1", "beta1"], ["y1"]),
        ("QuantizeLinear", ["y1", *q("y1")], ["y1_q"]),
        ("QLinearGlobalAveragePool", ["y1_q", *q("y1"), *q("pooled")], ["pooled"]),
    ]
    onnx.checker.check_model(model)


@pytest.mark.parametrize(
    ("identities", "options"),
    [
        ("dc", {"float_outputs": frozenset({0})}),  # block 0's float output is a graph output; block 1 chains to it
        ("d", {"per_channel": frozenset({0})}),
        ("c", {}),  # the identity is a float graph input, no folded block's output
    ],
    ids=["float-graph-output", "per-channel-scale", "unfolded-identity"],
)
def test_unfoldable_graphs_are_left_as_they_are(identities, options):
    model = sge_graph(identities, **options)
    before = model.SerializeToString()
    assert fold_quantized_io(model) == 0
    assert model.SerializeToString() == before


def test_the_domain_import_is_added_when_missing():
    model = sge_graph("d", domain_import=False)
    assert fold_quantized_io(model) == 1
    assert [o.version for o in model.opset_import if o.domain == FUSED_DOMAIN] == [1]


@pytest.mark.skipif(not ARTIFACT.exists(), reason=f"{ARTIFACT.relative_to(ROOT)} is not built (not in git)")
def test_sge_resnet50_int8_folds_every_block():
    from export.ort_sge.kernels import KernelUnavailableError, kernel_library
    from export.ort_sge.nchwc import optimized_graph

    try:
        library = kernel_library()
    except KernelUnavailableError as error:
        pytest.skip(str(error))
    model = optimized_graph(str(ARTIFACT), threads=1, custom_ops=str(library))
    before = Counter(n.op_type for n in model.graph.node)
    assert fold_quantized_io(model) == 16
    after = Counter(n.op_type for n in model.graph.node)
    producer = {out: n for n in model.graph.node for out in n.output}
    folded = [n for n in model.graph.node if n.op_type == QUANTIZED_OP]
    assert len(folded) == 16 and after[FUSED_OP] == 0
    assert all(producer[n.input[0]].op_type == "QLinearConv" for n in folded)
    assert not any(
        producer.get(name) and producer[name].op_type == "DequantizeLinear" for n in folded for name in n.input
    )
    # left: the input's Transpose to NHWC; the head's pooling reads the last block's NHWC output itself
    assert before["Transpose"] > after["Transpose"] == 1
    pool = next(n for n in model.graph.node if n.op_type == "QLinearGlobalAveragePool")
    assert producer[pool.input[0]].op_type == QUANTIZED_OP and node_attribute(pool, "channels_last") == 1
    onnx.checker.check_model(model)


@pytest.mark.parametrize(
    ("channels", "groups", "runs"),
    [(256, 64, True), (2048, 64, True), (64, 64, True), (32, 1, True), (24, 6, False), (48, 4, False), (40, 8, False)],
)
def test_only_shapes_every_build_runs_are_folded(channels, groups, runs):
    assert runs_quantized(channels, groups) is runs


def test_a_block_the_kernel_cannot_run_is_left_as_it_was():
    model = sge_graph("dc")
    weights = next(i for i in model.graph.initializer if i.name == "w")
    weights.CopyFrom(numpy_helper.from_array(np.ones((24, C, 1, 1), np.uint8), "w"))  # 24 channels: 6 a group
    before = model.SerializeToString()
    assert fold_quantized_io(model) == 0
    assert model.SerializeToString() == before
