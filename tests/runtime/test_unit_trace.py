"""runtime/kernel_speed/unit_trace.py and the kernel's trace build (export/ort_sge/kernels/sge_unit_trace.h): a trace
build records every unit of every call with its thread, computes what the shipped library computes, and is never
taken for the kernel; the summary's shares and per-unit profile."""

import ctypes
import json
import shutil

import numpy as np
import pytest

from export.ort_sge.kernels import KernelUnavailableError, kernel_library
from export.ort_sge.kernels.build import RECORD_NAME, build_library, diagnostic_record
from runtime.kernel_speed.cpu_placement import ONE_L3, TWO_L3S
from runtime.kernel_speed.unit_trace import (
    RECORD_DTYPE,
    node_names,
    placement_summary_lines,
    read_trace,
    reset_trace,
    summarize,
    summarize_by_placement,
    summary_lines,
    trace_units,
)
from tests.conftest import needs_compiler


def records(rows) -> np.ndarray:
    """(call, unit, on_caller, ticks) rows as the trace build writes them, 256 channels × 3136 positions each."""
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    for k, (call, unit, on_caller, ticks) in enumerate(rows):
        out[k] = (call, unit, on_caller, 0, 256, 3136, 1000, 1000 + ticks)
    return out


def test_the_summary_counts_who_ran_what_and_profiles_each_unit():
    # two runs of one node, 4 units: the caller's half is units 0-1; in run 1 the other thread takes unit 1
    rows = [(0, 0, 1, 400), (0, 1, 1, 100), (0, 2, 0, 100), (0, 3, 0, 100)]
    rows += [(1, 0, 1, 400), (1, 1, 0, 100), (1, 2, 0, 100), (1, 3, 0, 100)]
    (node,) = summarize(records(rows), nodes_per_run=1, ticks_per_us=100.0)
    assert (node["node"], node["units"], node["runs"]) == ("layer1.0", 4, 2)
    assert node["caller_share"] == 3 / 8 and node["off_half_share"] == 1 / 8
    assert node["median_unit_us"] == 1.0 and node["unit_time_vs_median"] == [4.0, 1.0, 1.0, 1.0]
    lines = summary_lines([node])
    assert "ran 0.38 of the units, 0.125 ran off their half; median unit 1.0 µs" in lines[0]
    assert lines[1].endswith(": 4.0 1.0") and lines[2].endswith(": 1.0 1.0")


def test_a_swapped_summary_gives_the_caller_the_second_half():
    # the caller ran units 2-3 (its half in a swapped build) and, in run 1, unit 0 of the other thread's half
    rows = [(0, 2, 1, 100), (0, 3, 1, 100), (0, 0, 0, 300), (0, 1, 0, 100)]
    rows += [(1, 2, 1, 100), (1, 3, 1, 100), (1, 0, 1, 300), (1, 1, 0, 100)]
    (node,) = summarize(records(rows), nodes_per_run=1, ticks_per_us=100.0, swapped=True)
    assert node["caller_half"] == "second" and node["off_half_share"] == 1 / 8
    assert node["unit_time_vs_median"] == [3.0, 1.0, 1.0, 1.0]  # in unit order, whoever ran them
    lines = summary_lines([node])
    assert "first half (the other's)" in lines[1] and lines[1].endswith(": 3.0 1.0")
    assert "second half (the caller's)" in lines[2]


def test_a_trace_missing_units_of_the_rounds_asked_for_is_refused():
    # the trace build's buffer drops every unit once full: two whole runs of one 4-unit node, then one unit short
    rows = [(call, unit, 1, 100) for call in (0, 1) for unit in range(4)]
    assert summarize(records(rows), nodes_per_run=1, ticks_per_us=1.0, rounds=2)[0]["runs"] == 2
    for kept, rounds in ((rows, 3), (rows[:-1], 2)):
        with pytest.raises(ValueError, match="trace fewer rounds"):
            summarize(records(kept), nodes_per_run=1, ticks_per_us=1.0, rounds=rounds)


def test_the_rounds_are_summarised_by_where_the_two_cpus_were():
    # three runs of one 4-unit node: unit 0 slow in run 1 only; run 0 on one L3, run 1 on two, run 2 unlabelled
    rows = [(call, unit, 1, 400 if (call, unit) == (1, 0) else 100) for call in range(3) for unit in range(4)]
    split = summarize_by_placement(records(rows), 1, 100.0, [ONE_L3, TWO_L3S, None])
    assert split[ONE_L3]["rounds"] == 1 and split[ONE_L3]["nodes"][0]["unit_time_vs_median"] == [1.0] * 4
    assert split[TWO_L3S]["rounds"] == 1 and split[TWO_L3S]["nodes"][0]["unit_time_vs_median"] == [4.0, 1.0, 1.0, 1.0]
    assert split["unlabelled_rounds"] == 1
    lines = placement_summary_lines(split | {"samples": 5})
    assert (
        lines[0] == "the rounds with the two CPUs on one L3 (1):"
        and lines[4] == "the rounds with the two CPUs on two L3s (1):"
    )
    assert lines[5].startswith("  layer1.0 (256 channels, 3136 positions, 4 units, 1 runs)")
    assert lines[6].endswith(": 4.0 1.0") and lines[7].endswith(": 1.0 1.0")
    assert lines[-1] == "1 rounds unlabelled (beside one of 5 samples, or the placement unclear)"
    # a placement no round had is left out, not summarised empty
    assert TWO_L3S not in summarize_by_placement(records(rows), 1, 100.0, [ONE_L3, None, None])


def test_a_trace_with_more_rounds_than_labels_is_refused():
    rows = [(call, 0, 1, 100) for call in range(3)]
    with pytest.raises(ValueError, match="more rounds than the 2 labelled"):
        summarize_by_placement(records(rows), 1, 1.0, [ONE_L3, TWO_L3S])


def test_placement_needs_the_two_cpus(tmp_path):
    with pytest.raises(ValueError, match="--threads 2"):
        trace_units(tmp_path, rounds=5, threads=1, cpu_placement=True)


def test_nodes_are_named_by_stage_where_the_positions_change():
    shapes = [(256, 3136)] * 3 + [(512, 784)] * 2 + [(1024, 196)]
    assert node_names(shapes) == ["layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1", "layer3.0"]


def test_nothing_traced_is_refused():
    with pytest.raises(ValueError, match="no traced unit"):
        summarize(np.zeros(0, dtype=RECORD_DTYPE), nodes_per_run=16, ticks_per_us=1.0)


def test_a_swapped_halves_build_is_never_taken_for_the_kernel(tmp_path):
    shipped = kernel_library()
    shutil.copy(shipped, tmp_path / shipped.name)
    record = json.loads((shipped.parent / RECORD_NAME).read_text())
    (tmp_path / RECORD_NAME).write_text(json.dumps(record))
    assert kernel_library(tmp_path) == tmp_path / shipped.name  # the copy, as shipped, is taken
    (tmp_path / RECORD_NAME).write_text(json.dumps(record | diagnostic_record(swap_halves=True)))
    with pytest.raises(KernelUnavailableError, match="swaps its threads' halves"):
        kernel_library(tmp_path)


def test_the_shipped_library_records_nothing():
    assert not hasattr(ctypes.CDLL(str(kernel_library())), "SgeTraceUnits")


@pytest.mark.slow
@needs_compiler
def test_a_trace_build_records_every_unit_and_computes_what_the_kernel_does(tmp_path, monkeypatch):
    import export.ort_sge.session as ort_session
    from tests.sgeperf.test_fused_kernel import fused_graph, run

    library = build_library(tmp_path / "trace", trace=True)
    assert json.loads((tmp_path / "trace" / RECORD_NAME).read_text())["trace"] is True
    with pytest.raises(KernelUnavailableError, match="traces its units"):
        kernel_library(tmp_path / "trace")
    rng = np.random.default_rng(5)
    shape = (2, 32, 5, 7)  # 4 groups: 4 NCHW units an image, 8 a call
    x, identity = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    model = fused_graph(shape, 4, rng, around_convs=False)
    (tmp_path / "shipped").mkdir()
    _, shipped = run(model, tmp_path / "shipped", x, identity)
    monkeypatch.setattr(ort_session, "kernel_library", lambda: library)
    reset_trace(library)
    _, traced = run(model, tmp_path, x, identity)
    np.testing.assert_array_equal(traced, shipped)
    got = read_trace(library)
    assert sorted(got["unit"]) == list(range(8)) and set(got["call"]) == {0}
    assert set(got["channels"]) == {32} and set(got["positions"]) == {35} and set(got["on_caller"]) <= {0, 1}
    # who ran a unit varies with two threads (the pool's thread may take all 8 of these tiny units): the flag's value
    # is checked on one thread, in the swapped-halves test below
    assert (got["end"] >= got["start"]).all()
    (node,) = summarize(got, nodes_per_run=1, ticks_per_us=1.0, rounds=1)
    assert (node["units"], node["runs"]) == (8, 1)


@pytest.mark.slow
@needs_compiler
def test_a_swapped_halves_build_runs_the_upper_half_first_and_computes_what_the_kernel_does(tmp_path, monkeypatch):
    import onnx
    import onnxruntime as ort

    import export.ort_sge.session as ort_session
    from export.ort_sge.session import plan_session, session_options
    from tests.sgeperf.test_fused_kernel import fused_graph, run

    library = build_library(tmp_path / "swapped", trace=True, swap_halves=True)
    assert json.loads((tmp_path / "swapped" / RECORD_NAME).read_text())["swap_halves"] is True
    rng = np.random.default_rng(6)
    shape = (1, 48, 5, 7)  # 6 groups: 6 NCHW units, an odd half
    x, identity = rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)
    model = fused_graph(shape, 6, rng, around_convs=False)
    (tmp_path / "shipped").mkdir()
    _, shipped = run(model, tmp_path / "shipped", x, identity)
    monkeypatch.setattr(ort_session, "kernel_library", lambda: library)
    onnx.save(model, str(tmp_path / "one.onnx"))
    plan = plan_session(tmp_path / "one.onnx")
    options = session_options(threads=1, spinning=False, optimize=plan.optimize)
    options.register_custom_ops_library(str(plan.library))
    session = ort.InferenceSession(plan.model, options, providers=["CPUExecutionProvider"])
    reset_trace(library)
    swapped = session.run(None, {"x": x, "identity": identity})[0]
    np.testing.assert_array_equal(swapped, shipped)
    got = read_trace(library)
    # one thread runs ORT's items in order: item k is unit (k + 3) mod 6
    assert list(got["unit"]) == [3, 4, 5, 0, 1, 2] and got["on_caller"].all()
