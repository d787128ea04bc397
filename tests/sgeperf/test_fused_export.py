"""The fused-SGE graph: export, NCHWc rewiring, the runner's choice of graph, and what happens without a compiler."""

import collections
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import runtime
from export.artifacts import ArtifactError, load_manifest
from export.onnx_export import export_onnx, tensor_dims
from export.ort_sge.graph import OP_TYPE, SgeResidualBlock, _SgeResidual, fuse_sge_residual
from export.ort_sge.kernels import KernelUnavailableError
from export.ort_sge.nchwc import NCHWC_DOMAIN, drop_reorders, nchwc_block_size, optimized_graph
from export.ort_sge.session import cpu_session, plan_session
from export.pipeline import FUSED_NAME, export_model
from export.spec import ExportSpec
from models import create_model
from models.default_weights import calibrate_batchnorm
from models.transforms import photo_batch
from runtime.kernel_speed.graphs import cut_after_layer, identity_last_plan
from runtime.kernel_speed.profile import ms_by_side, node_profile
from tests.export.conftest import SMALL

ATOL, RTOL_L2 = 1e-4, 1e-5  # the export's parity gates (ExportSpec defaults)


@pytest.fixture(scope="module")
def sge18():
    model = create_model("sge_resnet18", init="random")
    calibrate_batchnorm(model, size=SMALL)
    return model.eval()


@pytest.fixture(scope="module")
def fused_onnx(sge18, tmp_path_factory) -> Path:
    """sge_resnet18's fused graph at SMALL (static size), exported once for the tests that only read it."""
    fused, _ = fuse_sge_residual(sge18)
    return export_onnx(fused, tmp_path_factory.mktemp("fused_onnx") / "fused.onnx", spec=ExportSpec(input_size=SMALL))


@pytest.fixture(scope="module")
def artifact(sge18, tmp_path_factory):
    out = tmp_path_factory.mktemp("fused") / "sge_resnet18"
    result = export_model(sge18, out, model_name="sge_resnet18", input_size=SMALL, batch_sizes=(1, 3))
    assert result.passed and result.fused_path is not None
    return out


def assert_parity(got: np.ndarray, want: np.ndarray) -> None:
    assert np.abs(got - want).max() <= ATOL
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= RTOL_L2
    assert (got.argmax(1) == want.argmax(1)).all()


def test_fuse_wraps_every_sge_block_of_a_copy():
    model = create_model("sge_resnet50", init="random").eval()
    fused, wrapped = fuse_sge_residual(model)
    assert wrapped == 16 and sum(isinstance(m, SgeResidualBlock) for m in fused.modules()) == 16
    assert not any(isinstance(m, SgeResidualBlock) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fused(x), model(x))  # eager runs the blocks' own modules
    assert fuse_sge_residual(create_model("se_resnet50", init="random"))[1] == 0


def test_the_export_time_maths_equals_the_block():
    """What the exporter traces through (the autograd function's forward) is the official block, to FP32 rounding."""
    block = create_model("sge_resnet50", init="random").eval().layer2[1]
    torch.nn.init.normal_(block.sge.weight)
    x = torch.randn(3, 512, 9, 7)
    with torch.no_grad():
        out, identity = block.branches(x)
        sge = block.sge
        got = _SgeResidual.apply(out, identity, sge.weight.reshape(-1), sge.bias.reshape(-1), sge.groups, sge.eps)
        torch.testing.assert_close(got, block(x), atol=1e-5, rtol=1e-5)


def test_graph_has_one_node_per_block_and_a_symbolic_batch(sge18, fused_onnx):
    model = onnx.load(str(fused_onnx))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops[OP_TYPE] == 8 and ops["ReduceMean"] == 0 and ops["Sigmoid"] == 0
    assert isinstance(tensor_dims(model.graph.input[0])[0], str)
    plan = plan_session(fused_onnx)
    x = photo_batch(SMALL)[:3]
    with torch.no_grad():
        assert_parity(cpu_session(plan, threads=2).run(None, {"input": x})[0], sge18(torch.from_numpy(x)).numpy())


@pytest.mark.skipif(nchwc_block_size() == 0, reason="ONNX Runtime uses no NCHWc layout on this CPU")
def test_every_block_reads_the_blocked_layout(fused_onnx):
    from export.ort_sge.kernels import kernel_library

    optimized = optimized_graph(str(fused_onnx), threads=1, custom_ops=str(kernel_library()))
    before = collections.Counter(n.op_type for n in optimized.graph.node if n.domain == NCHWC_DOMAIN)
    blocked = drop_reorders(optimized, block=nchwc_block_size())
    after = collections.Counter(n.op_type for n in optimized.graph.node if n.domain == NCHWC_DOMAIN)
    assert blocked == 8
    assert before["ReorderInput"] == 7 and after["ReorderInput"] == 0  # the last block feeds the plain pooling
    # the classifier pools the last block's blocked map, and only its [N, C, 1, 1] result is reordered (as ORT does
    # in plain ResNet): no reorder of a full map is left
    assert after["ReorderOutput"] == 1 and after["GlobalAveragePool"] == 1
    (reorder,) = [n for n in optimized.graph.node if n.op_type == "ReorderOutput"]
    (pool,) = [n for n in optimized.graph.node if n.op_type == "GlobalAveragePool"]
    assert pool.domain == NCHWC_DOMAIN and pool.input[0] == fused_nodes_last_output(optimized)
    assert reorder.input[0] == pool.output[0]
    fused_nodes = [n for n in optimized.graph.node if n.op_type == OP_TYPE]
    assert all(a.i == nchwc_block_size() for n in fused_nodes for a in n.attribute if a.name == "block")


@pytest.mark.skipif(nchwc_block_size() == 0, reason="ONNX Runtime uses no NCHWc layout on this CPU")
def test_the_session_runs_each_block_right_after_its_x_in_every_plan(fused_onnx, tmp_path):
    """ORT's optimised graph lists a downsampling block's two branches in a different order from plan to plan; the
    plan fixes it (export/ort_sge/schedule.py) and the session runs it as listed, so no block's x is pushed out of
    cache by its downsample."""
    orders = set()
    for attempt in range(3):
        plan = plan_session(fused_onnx)
        nodes = list(onnx.load(plan.model, load_external_data=False).graph.node)
        session = cpu_session(plan, threads=2, profile_prefix=str(tmp_path / f"profile{attempt}"))
        session.run(None, {"input": photo_batch(SMALL)[:1]})
        events = json.loads(Path(session.end_profiling()).read_text())
        plan.close()
        ran = [e["name"].removesuffix("_kernel_time") for e in events if e["name"].endswith("_kernel_time")]
        assert ran == [n.name for n in nodes]  # as listed (ORT's default order runs independent branches reversed)
        orders.add(tuple(ran))
        for before, node in itertools.pairwise(nodes):
            if node.op_type == OP_TYPE:
                assert before.output[0] == node.input[0], f"{before.name} ran between {node.name} and its x"
    assert len(orders) == 1
    producer = {name: n for n in nodes for name in n.output}
    identities = [producer[n.input[1]].name for n in nodes if n.op_type == OP_TYPE]
    assert sum("downsample" in name for name in identities) == 3  # layer2-4's first blocks: the case the order is for


@pytest.mark.skipif(nchwc_block_size() == 0, reason="ONNX Runtime uses no NCHWc layout on this CPU")
def test_kernel_speed_orders_puts_each_downsample_right_before_its_block(fused_onnx):
    """kernel_speed --orders: the same graph and results, each downsampling block's identity computed last."""
    plan = plan_session(fused_onnx)
    worst = identity_last_plan(plan)
    nodes = list(onnx.load(worst.model, load_external_data=False).graph.node)
    last_before = [before.name for before, node in itertools.pairwise(nodes) if node.op_type == OP_TYPE]
    assert sum("downsample" in name for name in last_before) == 3
    x = photo_batch(SMALL)[:2]
    want = cpu_session(plan, threads=2).run(None, {"input": x})[0]
    np.testing.assert_array_equal(cpu_session(worst, threads=2).run(None, {"input": x})[0], want)  # same kernels
    plan.close()


@pytest.mark.skipif(nchwc_block_size() == 0, reason="ONNX Runtime uses no NCHWc layout on this CPU")
def test_kernel_speed_splits_the_profiled_op_time_by_stage(fused_onnx, tmp_path):
    """kernel_speed's profile: each SgeResidual node's time, read from ORT's profile with its input shape, and the
    sum by feature-map side, one entry per ResNet stage, largest first."""
    plan = plan_session(fused_onnx)
    x = photo_batch(SMALL)[:1]
    nodes = node_profile({"sge_fused": plan}, x, threads=1, runs=2, prefix=tmp_path / "p")["sge_fused"]
    assert len(nodes) == 8  # sge_resnet18: two blocks a stage
    side = SMALL[0] // 4  # the stem and its pooling: 1/4 of the input
    by_side = ms_by_side(nodes)
    assert list(by_side) == [str(side), str(side // 2), str(side // 4), str(side // 8)]
    assert sum(by_side.values()) == pytest.approx(sum(n["ms"] for n in nodes), abs=5e-3)
    assert all(ms > 0 for ms in by_side.values())
    plan.close()


def test_kernel_speed_cuts_both_networks_after_a_stage(sge18):
    """kernel_speed --through-layer: the network up to that stage unchanged, its later stages gone, and a classifier
    of as many classes on that stage's channels; fused, only the kept stages' blocks."""
    import copy

    cut = cut_after_layer(copy.deepcopy(sge18), 2)
    assert not any(name.startswith(("layer3.", "layer4.")) for name in cut.state_dict())
    assert cut.fc.in_features == 128 and cut.fc.out_features == sge18.fc.out_features  # BasicBlock: 128 channels
    x = torch.from_numpy(photo_batch(SMALL)[:2])
    with torch.no_grad():
        stem = sge18.maxpool(sge18.relu(sge18.bn1(sge18.conv1(x))))
        torch.testing.assert_close(cut.forward_features(x), sge18.layer2(sge18.layer1(stem)), rtol=0, atol=0)
        assert cut(x).shape == (2, sge18.fc.out_features)
    assert fuse_sge_residual(cut)[1] == 4  # two blocks in each of layer1 and layer2
    assert cut_after_layer(sge18, 4) is sge18


def fused_nodes_last_output(model: onnx.ModelProto) -> str:
    return [n for n in model.graph.node if n.op_type == OP_TYPE][-1].output[0]


def test_dynamic_hw_graph_runs_at_another_size(sge18, tmp_path):
    fused, _ = fuse_sge_residual(sge18)
    path = export_onnx(fused, tmp_path / "fused.onnx", spec=ExportSpec(input_size=SMALL, dynamic_hw=True))
    x = np.random.default_rng(0).standard_normal((2, 3, 80, 112), dtype=np.float32)
    got = cpu_session(plan_session(path), threads=2).run(None, {"input": x})[0]
    with torch.no_grad():
        assert_parity(got, sge18(torch.from_numpy(x)).numpy())


def test_runner_prefers_the_fused_graph_and_can_be_told_not_to(artifact, sge18):
    x = photo_batch(SMALL)[:3]
    with torch.no_grad():
        want = sge18(torch.from_numpy(x)).numpy()
    with runtime.load(artifact, "onnxruntime", threads=2) as runner:
        described = runner.describe()
        assert described["graph"] == "sge_fused" and described["fused_sge_blocks"] == 8
        assert described["model_path"].endswith(FUSED_NAME)
        assert_parity(runner.infer(x), want)
    with runtime.load(artifact, "onnxruntime", threads=2, sge_fused=False) as runner:
        assert runner.describe()["graph"] == "plain"
        assert_parity(runner.infer(x), want)


def test_manifest_records_the_fused_graph_and_its_parity(artifact):
    manifest = load_manifest(artifact, verify=True)
    assert manifest.files[FUSED_NAME].role == "model-ort-cpu"
    assert manifest.extra["sge_fused"]["file"] == FUSED_NAME and manifest.extra["sge_fused"]["parity"]["passed"]
    assert manifest.deploy == "model.onnx"  # the portable graph stays the one to deploy elsewhere


def test_tampered_fused_graph_is_refused(artifact, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(artifact, copy)
    with open(copy / FUSED_NAME, "r+b") as f:
        f.seek(-64, 2)
        f.write(b"\0" * 8)
    with pytest.raises(ArtifactError, match=FUSED_NAME):
        runtime.load(copy, "onnxruntime")


def test_without_a_compiler_the_export_is_complete_without_the_fused_graph(
    artifact, sge18, tmp_path, monkeypatch, caplog
):
    import shutil

    import export.ort_sge.export_stage as fused_stage

    def no_compiler(**_):
        raise KernelUnavailableError("the fused SGE kernel is not built")

    monkeypatch.setattr(fused_stage, "kernel_library", no_compiler)
    earlier = Path(shutil.copytree(artifact, tmp_path / "artifact"))  # an earlier export's fused graph
    assert (earlier / FUSED_NAME).exists()
    with caplog.at_level(logging.WARNING):
        result = export_model(sge18, earlier, model_name="sge_resnet18", input_size=SMALL, batch_sizes=(1,))
    assert result.passed and result.fused_path is None and not (earlier / FUSED_NAME).exists()  # it did not survive
    assert load_manifest(earlier, verify=True).extra["sge_fused"] is None
    assert any("not built" in r.message for r in caplog.records)


def test_spec_can_turn_the_fused_graph_off(sge18, tmp_path):
    result = export_model(
        sge18, tmp_path, model_name="sge_resnet18", input_size=SMALL, batch_sizes=(1,), fused_sge=False
    )
    assert result.passed and result.fused_path is None and result.fused_parity is None


def test_runner_falls_back_to_the_portable_graph_without_a_compiler(artifact, sge18, monkeypatch, caplog):
    import export.ort_sge.session as ort_session

    def no_compiler(**_):
        raise KernelUnavailableError("the fused SGE kernel is not built")

    monkeypatch.setattr(ort_session, "kernel_library", no_compiler)
    x = photo_batch(SMALL)[:2]
    with caplog.at_level(logging.WARNING), runtime.load(artifact, "onnxruntime", threads=2) as runner:
        described = runner.describe()
        assert described["graph"] == "plain" and described["model_path"].endswith("model.onnx")
        with torch.no_grad():
            assert_parity(runner.infer(x), sge18(torch.from_numpy(x)).numpy())
    assert any("running model.onnx instead" in r.message for r in caplog.records)
