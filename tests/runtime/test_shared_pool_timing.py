"""Timing sessions interleaved on ORT's global thread pool (runtime/shared_pool_timing.py, kernel_speed
--shared-pool): every round times every session once in rotated order, in one fresh process whose sessions share
the pool, and a child that fails says why in one line."""

import itertools
import time

import pytest

from export.ort_sge.session import SessionPlan
from runtime.shared_pool_timing import time_shared_pool
from tests.runtime.test_isolated_timing import _pooling_model


def test_every_round_times_every_session_in_rotated_order_on_the_shared_pool(tmp_path):
    # ORT refuses a session with threads of its own once the global pool is set, so a child that returns at all ran
    # both sessions on the shared pool
    plans = {
        "average": _pooling_model(tmp_path / "avg.onnx", "GlobalAveragePool"),
        "maximum": _pooling_model(tmp_path / "max.onnx", "GlobalMaxPool"),
    }
    timings = time_shared_pool(plans, rounds=5, threads=2)
    assert list(timings) == ["average", "maximum"]
    assert timings["average"].places == [0, 1, 0, 1, 0] and timings["maximum"].places == [1, 0, 1, 0, 1]
    spans = {}
    for name, timing in timings.items():
        assert len(timing.wall_ms) == 5 and len(timing.cpu_ms) == 5
        assert all(ms > 0 for ms in timing.wall_ms) and not timing.process_medians
        # each timed call's wall-clock (start, end), in order, the warm-up calls left out
        spans[name] = [(start, start + ms / 1e3) for start, ms in zip(timing.starts, timing.wall_ms, strict=True)]
        assert len(spans[name]) == 5 and abs(spans[name][0][0] - time.time()) < 600
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans[name]))
    rounds = list(zip(spans["average"], spans["maximum"], strict=True))
    assert rounds[0][0][1] <= rounds[0][1][0] and rounds[1][1][1] <= rounds[1][0][0]  # round 1 starts with "maximum"


def test_a_failing_child_says_why_in_one_line(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(RuntimeError, match=r"timing broken on a shared thread pool failed: .*") as caught:
        time_shared_pool({"broken": SessionPlan(model=str(broken))}, rounds=1, threads=1)
    assert "\n" not in str(caught.value)


def test_a_session_on_the_shared_pool_takes_no_threads_or_spinning_of_its_own():
    from export.ort_sge.session import session_options

    assert not session_options(shared=True).use_per_session_threads
    assert session_options().use_per_session_threads
    for own in ({"threads": 2}, {"spinning": False}):
        with pytest.raises(ValueError, match="global thread pool"):
            session_options(shared=True, **own)
