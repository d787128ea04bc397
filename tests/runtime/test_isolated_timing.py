"""Timing sessions each in a process of its own (runtime/isolated_timing.py, kernel_speed --isolated): every round
times every session once, each process's median pairs with the other sessions' of the same round, and a child that
fails says why in one line."""

import onnx
import pytest
from onnx import TensorProto, helper

from export.ort_sge.session import SessionPlan
from runtime.isolated_timing import time_isolated
from runtime.sge_cost import Timing


def _pooling_model(path, op: str) -> SessionPlan:
    """A one-node graph on the timed input's shape (1, 3, 224, 224)."""
    node = helper.make_node(op, ["input"], ["output"])
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 1, 1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return SessionPlan(model=str(path))


def test_each_round_times_every_session_in_its_own_process(tmp_path):
    plans = {
        "average": _pooling_model(tmp_path / "avg.onnx", "GlobalAveragePool"),
        "maximum": _pooling_model(tmp_path / "max.onnx", "GlobalMaxPool"),
    }
    timings = time_isolated(plans, rounds=3, runs=4, threads=1)
    assert set(timings) == set(plans)
    for timing in timings.values():
        assert len(timing.wall_ms) == 12 and len(timing.cpu_ms) == 12 and len(timing.process_medians) == 3
        for r, median in enumerate(timing.process_medians):  # the median of that round's own four calls
            calls = sorted(timing.wall_ms[4 * r : 4 * r + 4])
            assert median == calls[2]
        assert timing.to_dict()["wall_ms_process_medians"] == [round(m, 3) for m in timing.process_medians]


def test_a_child_that_fails_says_why_in_one_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(RuntimeError, match=r"broken\.onnx in its own process failed: .*") as caught:
        time_isolated({"broken": SessionPlan(model=str(broken))}, rounds=1, runs=1, threads=1)
    assert "\n" not in str(caught.value)


def test_isolated_rounds_pair_the_process_medians():
    from runtime.kernel_speed.ratios import ratio

    fused = Timing("fused", [1.0] * 6, [1.0] * 6, process_medians=[11.0, 12.0, 13.0])
    base = Timing("base", [1.0] * 6, [1.0] * 6, process_medians=[10.0, 10.0, 10.0])
    paired = ratio(fused, base, paired=True)
    assert paired["wall_paired"] == pytest.approx(1.2)  # the median of 1.1, 1.2, 1.3, not of the calls' 1.0
    assert "rounds_within_target" not in paired  # counted only where a target is given
    counted = ratio(fused, base, paired=True, target=1.15)
    assert (counted["rounds_within_target"], counted["rounds"]) == (1, 3)  # 1.1 only
    one = ratio(
        Timing("a", [2.0], [2.0], process_medians=[2.0]), Timing("b", [1.0], [1.0], process_medians=[1.0]), paired=True
    )
    assert one["wall_paired"] == 2.0 and one["wall_paired_iqr"] == 0.0
