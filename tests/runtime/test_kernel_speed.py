"""scripts/kernel_speed.py and its study (runtime/kernel_speed/): refusals in one line before any work, which ratios
are reported, and the fused graph's extra split by stage round by round. The graphs it times are tested with the
fused export (tests/sgeperf/test_fused_export.py), its timing modes in test_shared_pool_timing.py and
test_isolated_timing.py."""

import pytest

from export.ort_sge.session import SessionPlan
from runtime.cli import EXIT_INPUT
from runtime.kernel_speed.cpu_placement import ONE_L3, TWO_L3S
from runtime.kernel_speed.graphs import WHOLE, cut_names, stage_positions
from runtime.kernel_speed.ratios import extra_by_stage, ratio_pairs
from runtime.kernel_speed.study import SpeedOptions, by_cpu_placement
from runtime.kernel_speed.text import report_lines
from runtime.sge_cost import Timing
from tests.runtime.test_scripts import load_script


@pytest.mark.parametrize(
    "words",
    [
        ["--shared-pool", "--spinning"],
        ["--shared-pool", "--fixed-order"],
        ["--shared-pool", "--isolated", "4"],
        ["--isolated", "4", "--spinning"],
        ["--spinning", "--fixed-order"],
        ["--isolated", "0"],
        ["--stages", "--through-layer", "2"],  # the stages project onto the whole network
        ["--stages", "--through-layer", "1", "3"],
    ],
)
def test_kernel_speed_refuses_options_that_clash(words, capsys):
    assert load_script("kernel_speed").main(words) == EXIT_INPUT
    assert capsys.readouterr().err.count("\n") == 1


def test_kernel_speed_refuses_orders_where_the_fused_graph_is_not_planned(tmp_path, monkeypatch, capsys):
    """Without ORT's NCHWc layout the fused graph is opened unplanned and ORT orders it itself: --orders would time
    the same order twice."""
    import export.ort_sge.session as ort_session
    import runtime.kernel_speed.graphs as graphs

    paths = {"resnet50": tmp_path / "resnet50.onnx", "sge_fused": tmp_path / "sge_fused.onnx"}
    monkeypatch.setattr(graphs, "export_graphs", lambda workdir, **_: paths)
    monkeypatch.setattr(ort_session, "plan_session", lambda path: SessionPlan(model=str(path)))
    assert load_script("kernel_speed").main(["--orders", "--workdir", str(tmp_path)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "--orders" in err and "NCHWc" in err and err.count("\n") == 1


def test_kernel_speed_splits_the_extra_by_stage_round_by_round():
    """--through-layer with several cuts: each stage's extra is the round's extra through its cut minus the same
    round's extra through the cut before (then the median), the largest cut under the plain names."""

    def timing(name, wall):
        return Timing(name, wall_ms=wall, cpu_ms=wall)

    timings = {
        "resnet50_through_layer1": timing("r1", [10.0, 10.0, 10.0]),
        "sge_fused_through_layer1": timing("f1", [10.5, 10.4, 10.6]),  # extra 0.5, 0.4, 0.6
        "resnet50_through_layer2": timing("r2", [20.0, 21.0, 20.0]),
        "sge_fused_through_layer2": timing("f2", [20.9, 21.8, 21.0]),  # extra 0.9, 0.8, 1.0: +0.4 each round
        "resnet50": timing("r4", [40.0, 40.0, 40.0]),
        "sge_fused": timing("f4", [41.5, 41.0, 41.2]),  # extra 1.5, 1.0, 1.2: +0.6, +0.2, +0.2
    }
    # medians of the round's differences, not differences of medians (which would give layer2 0.5 here)
    assert extra_by_stage(timings, [1, 2, 4]) == {"layer1": 0.5, "layer2": 0.4, "layer3–4": 0.2}
    assert cut_names(2, 4) == ("resnet50_through_layer2", "sge_fused_through_layer2")
    assert cut_names(4, 4) == ("resnet50", "sge_fused")


def test_the_split_by_stage_is_also_taken_per_placement_over_each_rounds_whole_span():
    """--through-layer 1 4 --cpu-placement: each placement's extra by stage comes from its own rounds, and a round
    is labelled by the samples around all its sessions, not only the two whole networks."""

    def timing(name, wall, first_start):
        starts = [first_start + 10.0 * r for r in range(len(wall))]  # one round every 10 s
        return Timing(name, wall_ms=wall, cpu_ms=wall, starts=starts)

    # each round: resnet50 through layer1 at +0 s, the fused cut at +1 s, resnet50 at +2 s, the fused graph at +3 s
    timings = {
        "resnet50_through_layer1": timing("r1", [10.0] * 4, 100.0),
        "sge_fused_through_layer1": timing("f1", [10.2, 10.2, 10.6, 10.6], 101.0),
        "resnet50": timing("r4", [40.0] * 4, 102.0),
        "sge_fused": timing("f4", [40.4, 40.4, 41.4, 41.4], 103.0),
    }
    # rounds 0-1 on one L3, rounds 2-3 on two; the sample at 121.5 s lands in round 2's span (120-123 s) but in none
    # of its calls, and before its two whole networks: that round is left out
    samples = [(95.0, 95.001, 45.0), (108.0, 108.001, 45.0), (118.0, 118.001, 45.0)]
    samples += [(119.5, 119.501, 170.0), (121.5, 121.501, 170.0), (128.0, 128.001, 170.0), (138.0, 138.001, 170.0)]
    split = by_cpu_placement(timings, samples, [1, WHOLE])
    assert split[ONE_L3]["rounds"] == 2 and split[ONE_L3]["extra_ms_by_stage"] == {"layer1": 0.2, "layer2–4": 0.2}
    assert split[TWO_L3S]["rounds"] == 1 and split[TWO_L3S]["extra_ms_by_stage"] == {"layer1": 0.6, "layer2–4": 0.8}
    assert split["unlabelled_rounds"] == 1 and split["samples"] == 7
    assert "extra_ms_by_stage" not in by_cpu_placement(timings, samples, [WHOLE])[ONE_L3]
    lines = report_lines_of_split(split)
    assert lines[-2:] == [
        "    the two CPUs on one L3   layer1 +0.200 ms, layer2–4 +0.200 ms",
        "    the two CPUs on two L3s  layer1 +0.600 ms, layer2–4 +0.800 ms",
    ]


def report_lines_of_split(split: dict) -> list[str]:
    """The people's lines of a report that holds only ``split`` and the whole run's split by stage."""
    machine = {"cpu": "a CPU", "logical_cpus": 2, "isa": ["avx2"], "cpu_view": None, "threads": 2, "load_average": []}
    report = {
        "command": "kernel_speed.py",
        "machine": machine,
        "nchwc_block": 8,
        "graphs": "the whole networks, and through layer1",
        "library": {"runs": "avx2"},
        "timing_mode": "shared pool",
        "timings": {},
        "ratios": {},
        "by_cpu_placement": split,
        "extra_ms_by_stage": {"layer1": 0.3, "layer2–4": 0.5},
        "sge_residual_ms_per_run": {},
    }
    return report_lines(report)


def test_kernel_speed_compares_each_session_with_its_baseline():
    """The ratios reported, in order: the fused graph against resnet50 at every cut (the largest under the plain
    names), the native build against resnet50 and the dispatched build against it, each floor against resnet50, the
    fused graph against the one pass, the worst order against the planned one; none for a session that did not run."""
    names = ["resnet50", "sge_fused", "resnet50_through_layer1", "sge_fused_through_layer1", "sge_fused_native"]
    names += ["floor_apply", "floor_none", "sge_fused_identity_last"]
    assert ratio_pairs(names, [1, 4]) == {
        "sge_fused/resnet50": ("sge_fused", "resnet50"),
        "sge_fused_through_layer1/resnet50_through_layer1": ("sge_fused_through_layer1", "resnet50_through_layer1"),
        "sge_fused_native/resnet50": ("sge_fused_native", "resnet50"),
        "dispatched/native": ("sge_fused", "sge_fused_native"),
        "floor_apply/resnet50": ("floor_apply", "resnet50"),
        "floor_none/resnet50": ("floor_none", "resnet50"),
        "sge_fused/floor_apply": ("sge_fused", "floor_apply"),
        "sge_fused/floor_none": ("sge_fused", "floor_none"),
        "identity_last/planned": ("sge_fused_identity_last", "sge_fused"),
    }
    assert list(ratio_pairs(names, [1, 4]))[:4] == [
        "sge_fused/resnet50",
        "sge_fused_through_layer1/resnet50_through_layer1",
        "sge_fused_native/resnet50",
        "dispatched/native",
    ]
    assert list(ratio_pairs(["resnet50", "sge_fused", "floor_none"], [4])) == [
        "sge_fused/resnet50",
        "floor_none/resnet50",
        "sge_fused/floor_none",
    ]
    assert list(ratio_pairs(["resnet50", "sge_fused", "sge_fused_swapped"], [4]).items())[1:] == [
        ("sge_fused_swapped/resnet50", ("sge_fused_swapped", "resnet50")),
        ("swapped/dispatched", ("sge_fused_swapped", "sge_fused")),
    ]


def test_each_stage_of_the_floors_is_named_by_its_blocks_positions():
    """--floor-layer K finds stage K's blocks by H·W at the study's 224×224 input."""
    assert [stage_positions(k) for k in (1, 2, 3, 4)] == [56 * 56, 28 * 28, 14 * 14, 7 * 7]


def test_the_options_name_every_reason_they_cannot_run():
    assert SpeedOptions().problems() == []
    assert SpeedOptions(cuts=(4, 1, 4)).cuts == (1, 4)  # sorted, each once: the split by stage relies on it
    wrong = SpeedOptions(threads=0, mode="isolated", isolated_rounds=0, profile_runs=-1, stages=True, cuts=(1, 2))
    assert wrong.problems() == [
        "--threads must be ≥ 1 and --rounds ≥ 3",
        "--isolated needs ROUNDS ≥ 1; got 0",
        "--profile-runs must be 0 (no profile) or more; got -1",
        "--stages projects onto the whole network: drop --through-layer",
    ]
    assert SpeedOptions(cuts=(0, 4)).problems() == ["--through-layer takes stages 1 to 4; got 0 4"]
    assert SpeedOptions(floors=True, floor_layer=1).problems() == []
    assert SpeedOptions(floor_layer=1).problems() == ["--floor-layer says where the floors go: add --floors"]
    assert SpeedOptions(floors=True, floor_layer=3, cuts=(2,)).problems() == [
        "--floor-layer must be a stage the graphs run (1 to 2); got 3"
    ]
    placement = "--cpu-placement labels the rounds of --shared-pool on 2 threads over the whole networks"
    assert SpeedOptions(mode="shared-pool", cpu_placement=True).problems() == []
    assert SpeedOptions(cpu_placement=True).problems() == [placement]
    assert SpeedOptions(mode="shared-pool", cpu_placement=True, cuts=(1,)).problems() == [placement]
    with pytest.raises(ValueError, match="unknown timing mode 'blocks'"):
        SpeedOptions(mode="blocks")


@pytest.mark.parametrize("flag", ["--json", "--workdir"])
def test_kernel_speed_refuses_an_output_it_cannot_write_before_any_work(flag, tmp_path, monkeypatch, capsys):
    import runtime.kernel_speed.study as study

    def no_work(*args, **kwargs):
        raise AssertionError("the study ran")

    monkeypatch.setattr(study, "run_study", no_work)
    a_file = tmp_path / "taken"
    a_file.write_text("")
    where = {"--json": str(tmp_path), "--workdir": str(a_file)}[flag]  # a folder for the JSON, a file for the graphs
    assert load_script("kernel_speed").main([flag, where]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} ") and err.count("\n") == 1
