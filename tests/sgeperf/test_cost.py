"""The timing helpers behind scripts/sge_cost.py (no timings are asserted: speed belongs to the script)."""

import numpy as np
import onnx
import pytest
import torch

from models import create_model
from runtime.sge_cost import (
    Timing,
    conv_linear_flops,
    gemm_model,
    gemm_runner,
    machine_description,
    ratio,
    time_blocked,
    time_interleaved,
)


def test_time_interleaved_runs_every_runner_each_round():
    calls = []
    timings = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=4, warmup=1)
    assert calls == ["a", "b"] * 5
    assert len(timings["a"].wall_ms) == 4 and timings["b"].wall_median == float(np.median(timings["b"].wall_ms))
    assert set(ratio(timings, "a", "b")) == {"wall", "cpu"}
    with pytest.raises(ValueError, match="rounds"):
        time_interleaved({"a": lambda: None}, rounds=0)


def test_ratio_divides_wall_medians_and_cpu_medians_apart():
    timings = {
        "fused": Timing("fused", wall_ms=[30.0, 31.0, 90.0], cpu_ms=[60.0, 62.0, 64.0]),
        "resnet50": Timing("resnet50", wall_ms=[29.0, 30.0, 31.0], cpu_ms=[58.0, 59.0, 60.0]),
    }
    assert ratio(timings, "fused", "resnet50") == {"wall": round(31 / 30, 4), "cpu": round(62 / 59, 4)}


def test_rotated_rounds_put_every_runner_at_every_place():
    calls = []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = time_interleaved(runners, rounds=3, warmup=1, rotate=True)
    assert "".join(calls) == "abc" + "abc" + "bca" + "cab"  # warm-up, then rounds starting at a, b, c
    assert [timings[n].places for n in "abc"] == [[0, 2, 1], [1, 0, 2], [2, 1, 0]]
    a = timings["a"]  # one sample at each place: each place's median is that sample
    assert a.wall_median_by_place() == [a.wall_ms[a.places.index(k)] for k in range(3)]
    assert len(timings["a"].to_dict()["wall_ms_median_by_place"]) == 3
    fixed = time_interleaved(runners, rounds=2, warmup=0)["c"]
    assert fixed.places == [2, 2] and "wall_ms_median_by_place" not in fixed.to_dict()  # fixed order: always last


def test_gemm_model_multiplies():
    model = onnx.load_from_string(gemm_model(16))
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    run = gemm_runner(n=16, threads=1)
    (y,) = run()
    assert y.shape == (16, 16) and np.isfinite(y).all()


def test_resnet50_flops_match_the_paper():
    # He et al. / the SGE paper: ResNet-50 is 4.1 GMAC at 224×224; conv+linear FLOPs count 2 per MAC.
    assert conv_linear_flops(create_model("resnet50", init="random"), (224, 224)) / 1e9 == pytest.approx(8.18, abs=0.05)


def test_machine_description_names_the_runtimes():
    import onnxruntime

    d = machine_description(2)
    assert d["versions"]["onnxruntime"] == onnxruntime.__version__ and d["versions"]["torch"] == torch.__version__


def test_time_blocked_runs_each_runner_in_blocks():
    calls = []
    timings = time_blocked({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2, blocks=2)
    assert calls == (["a"] * 4 + ["b"] * 4) * 2  # 2 warm-up + 2 timed per block
    assert len(timings["a"].wall_ms) == 4
    with pytest.raises(ValueError, match="blocks"):
        time_blocked({"a": lambda: None}, rounds=1, blocks=0)


def load_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "sge_cost.py"
    spec = importlib.util.spec_from_file_location("scripts_sge_cost", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "argv",
    [
        ["--threads", "0"],
        ["--rounds", "0"],
        ["--size", "32", "32"],
        ["--input-size", "2000", "2000"],  # an uncaught SpecError, exit 3
        ["--gemm-n", "0"],  # ZeroDivisionError, exit 3
        ["--gemm-n", "-5"],
        ["--profile-runs", "-1"],  # accepted without a word
        ["--workdir", __file__],  # FileExistsError, exit 3
    ],
)
def test_script_refuses_bad_options_without_writing(argv, tmp_path, capsys):
    out = tmp_path / "cost.json"
    assert load_script().main([*argv, "--json", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]  # --size
    assert len(errors) == 1 and errors[0].startswith("error:") and not out.exists()


def test_profile_summary_leaves_out_the_first_run_and_attributes_sge():
    from runtime.sge_cost import _profile_summary, timed_kernel_events

    def node(ts, name, op, dur):
        return {"cat": "Node", "ts": ts, "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": op}}

    events = [
        {"name": "model_run", "ts": 0},
        node(1, "/conv/Conv", "Conv", 9_000),  # first run: allocations, left out
        {"name": "model_run", "ts": 10},
        node(11, "/conv/Conv", "Conv", 2_000),
        node(12, "/layer1/layer1.0/SgeResidual", "SgeResidual", 500),
        node(13, "/layer1/layer1.0/sge/Mul", "Mul", 250),
        {"name": "model_run", "ts": 20},
        node(21, "/conv/Conv", "Conv", 4_000),
        node(22, "/layer1/layer1.1/SgeResidual_q_nhwc", "SgeResidualQ", 300),  # a planned INT8 graph's block
    ]
    summary = _profile_summary(timed_kernel_events(events), runs=2)
    assert summary["by_op_ms_per_run"] == {"Conv": 3.0, "SgeResidual": 0.25, "SgeResidualQ": 0.15, "Mul": 0.125}
    assert summary["sge_nodes_ms_per_run"] == 0.525 and summary["kernel_ms_per_run"] == 3.525


def test_the_study_end_to_end_at_a_small_size(tmp_path):
    """Export, parity guard, timing loop, floor, profile and targets run through (no timing is asserted)."""
    from runtime.sge_study import SGE_GRAPHS, TARGETS, StudyOptions, run_study

    options = StudyOptions(
        batch_sizes=(1,), size=(64, 64), rounds=1, gemm_n=64, openvino=False, torch=False, profile_runs=1
    )
    lines = []
    report = run_study(options, tmp_path, command="test", progress=lines.append)
    assert set(report.parity) == set(SGE_GRAPHS)
    assert all(p["max_abs"] < 1e-4 and p["top1_agree"] == 1.0 for p in report.parity.values())
    assert set(report.timings["batch1"]) == {"gemm", "ort_resnet50", *(f"ort_{g}" for g in SGE_GRAPHS)}
    medians = {name: t["wall_ms_median"] for name, t in report.timings["batch1"].items()}
    expected = medians["ort_sge_fused"] / medians["ort_resnet50"]  # medians are stored to 1 µs
    assert report.ratios["batch1"]["sge_fused/resnet50"]["wall"] == pytest.approx(expected, rel=1e-3)
    assert report.profile["sge_fused"]["by_op_ms_per_run"]["SgeResidual"] > 0  # the fused graph really ran
    assert set(report.targets) == set(TARGETS)
    assert report.targets["OpenVINO / ORT sge"]["met"] is None  # not measured: OpenVINO was off
    assert report.targets["sge/resnet50 (ORT, batch 1)"]["measured"] is not None
    assert len(lines) == 3 and lines[0].startswith("exporting")
