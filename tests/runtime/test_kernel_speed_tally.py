"""scripts/kernel_speed_tally.py (runtime/kernel_speed/tally.py): which kept runs count, the figures per CPU and code
paths, and one-line refusals. Reports are built here in the shape kernel_speed.py writes."""

import json

import pytest

from runtime.cli import EXIT_INPUT
from runtime.kernel_speed.tally import Selection, parse_runs, tally, tally_lines
from tests.runtime.test_scripts import load_script

SHARED = "interleaved (rotated order) in one process, 2 threads of ORT's global pool, spinning"
ISOLATED = "isolated: one process per session, 32 rounds of 150 runs, ORT allow_spinning 1"


def run(
    ratio, *, block=16, mode=SHARED, rounds=2000, resnet_ms=40.0, graphs=None, extra=(), view=None, threads=2, iqr=None
):
    """One run as kernel_speed.py --json writes it (the fields the tally reads)."""
    timings = {name: {"wall_ms_median": resnet_ms, "rounds": rounds} for name in ("resnet50", "sge_fused", *extra)}
    paired = {"wall": ratio, "wall_paired": ratio} | ({"wall_paired_iqr": iqr} if iqr is not None else {})
    out = {
        "machine": {"cpu": "AMD EPYC", "cpu_view": view, "threads": threads},
        "nchwc_block": block,
        "timing_mode": mode,
        "timings": timings,
        "ratios": {"sge_fused/resnet50": paired},
    }
    return out | ({"graphs": graphs} if graphs else {})


def write(tmp_path, runs, name="report.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"runs": runs}))
    return path


def test_only_whole_network_runs_of_the_mode_with_the_two_graphs_and_enough_rounds_count(tmp_path):
    view = "AVX2 view: AVX-512, AMX and AVX-VNNI hidden from CPUID"
    report = write(
        tmp_path,
        [
            run(1.016),
            run(1.030, mode=ISOLATED),  # another mode
            run(1.018, graphs="the whole networks"),
            run(1.050, graphs="both networks through layer1 only"),  # a cut
            run(1.040, extra=("floor_none",)),  # more sessions: its ratio sits higher
            run(1.060, rounds=400),  # too short
            run(1.070, threads=1),  # not the target's 2 threads
            run(1.022),
            run(1.025, block=8, view=view),
            run(1.021, block=8, view=view),
            run(1.001) | {"by_cpu_placement": {}},  # a placement monitor shared its CPUs
        ],
    )
    result = tally([report], Selection(min_rounds=2000))
    wide, narrow = result["groups"]
    assert (wide["nchwc_block"], wide["paths"], wide["count"]) == (16, "AVX-512 paths", 3)
    assert (wide["median"], wide["min"], wide["max"], wide["runs_within_target"]) == (1.018, 1.016, 1.022, 2)
    assert wide["runs"] == ["report.json#1", "report.json#3", "report.json#8"]
    assert (narrow["paths"], narrow["count"], narrow["median"], narrow["runs_within_target"]) == (
        "AVX2 paths, AVX2 view",
        2,
        1.023,
        0,
    )
    with_extra = tally([report], Selection(min_rounds=2000, extra_sessions=True))["groups"][0]
    assert with_extra["count"] == 4 and with_extra["max"] == 1.04
    isolated = tally([report], Selection(mode="isolated"))["groups"]
    assert [g["median"] for g in isolated] == [1.03]
    one_thread = tally([report], Selection(min_rounds=2000, threads=1))["groups"]
    assert [(g["count"], g["median"]) for g in one_thread] == [(1, 1.07)]


def test_runs_are_numbered_from_one_in_each_report_and_a_range_keeps_only_those(tmp_path):
    first = write(tmp_path, [run(1.010), run(1.020), run(1.030)], "a.json")
    second = write(tmp_path, [run(1.040), run(1.050)], "b.json")
    result = tally([first, second], Selection(first=2, last=2))
    assert result["groups"][0]["runs"] == ["a.json#2", "b.json#2"]
    assert result["groups"][0]["median"] == pytest.approx(1.035)
    assert parse_runs("47-75") == (47, 75) and parse_runs("47-") == (47, None) and parse_runs("3") == (3, 3)
    for bad in ("0-3", "5-2", "a-b", "-4"):
        with pytest.raises(ValueError):
            parse_runs(bad)


def test_the_correlation_says_whether_the_ratio_rises_as_the_machine_slows(tmp_path):
    rising = write(tmp_path, [run(1.015, resnet_ms=40), run(1.020, resnet_ms=44), run(1.030, resnet_ms=48)], "r.json")
    falling = write(tmp_path, [run(1.030, resnet_ms=40), run(1.020, resnet_ms=44), run(1.015, resnet_ms=48)], "f.json")
    assert tally([rising], Selection())["groups"][0]["correlation_with_resnet50_ms"] > 0.9
    assert tally([falling], Selection())["groups"][0]["correlation_with_resnet50_ms"] < -0.9
    two = write(tmp_path, [run(1.015, resnet_ms=40), run(1.020, resnet_ms=44)], "two.json")
    assert "correlation_with_resnet50_ms" not in tally([two], Selection())["groups"][0]


def test_the_per_round_spread_is_given_over_the_runs_that_kept_it(tmp_path):
    runs = [run(1.015, iqr=0.030), run(1.020, iqr=0.010), run(1.025), run(1.018, iqr=0.100)]  # one older run: no IQR
    result = tally([write(tmp_path, runs)], Selection())
    assert result["groups"][0]["per_round_iqr"] == [0.01, 0.03, 0.1]
    assert tally_lines(result)[1].endswith("per-round IQR 0.010–0.100, median 0.030")
    older = tally([write(tmp_path, [run(1.015), run(1.020)], "old.json")], Selection())
    assert "per_round_iqr" not in older["groups"][0] and "IQR" not in tally_lines(older)[1]


def test_a_single_run_report_is_tallied_as_one_run(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps(run(1.019)))
    assert tally([path], Selection())["groups"][0]["runs"] == ["one.json#1"]


@pytest.mark.parametrize(
    ("content", "words", "expected"),
    [
        (None, [], "no such file"),
        ("not json", [], "cannot be read as JSON"),
        ('{"runs": [{"timings": {}}]}', [], "no kernel_speed.py run"),
        ("[1, 2]", [], "no kernel_speed.py run"),
        ("RUNS", ["--mode", "isolated"], "no run of 2 matches"),
        ("EXTRA", [], "1 with --extra-sessions"),
        ("RUNS", ["--runs", "3-1"], "the last run comes before the first"),
        ("RUNS", ["--min-rounds", "-1"], "give 0 or more"),
        ("RUNS", ["--threads", "0"], "give 1 or more"),
        ("RUNS", ["--threads", "1"], "no run of 2 matches (shared-pool, 1 thread,"),
    ],
)
def test_the_script_refuses_in_one_line(tmp_path, capsys, content, words, expected):
    path = tmp_path / "report.json"
    if content == "RUNS":
        content = json.dumps({"runs": [run(1.01), run(1.02)]})
    elif content == "EXTRA":
        content = json.dumps({"runs": [run(1.01, extra=("sge_fused_native",))]})
    if content is not None:
        path.write_text(content)
    assert load_script("kernel_speed_tally").main([str(path), *words]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_the_script_prints_a_line_per_group_and_json_alone_on_stdout(tmp_path, capsys):
    path = write(tmp_path, [run(1.016), run(1.024, block=8)])
    assert load_script("kernel_speed_tally").main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "NCHWc 16 (AVX-512 paths): 1 run, median 1.0160" in lines[1]
    assert load_script("kernel_speed_tally").main([str(path), "--json", "-"]) == 0
    out = capsys.readouterr()
    assert [g["median"] for g in json.loads(out.out)["groups"]] == [1.016, 1.024] and "NCHWc 8" in out.err


def test_the_script_never_writes_its_json_over_a_report_it_reads(tmp_path, capsys):
    path = write(tmp_path, [run(1.016)])
    before = path.read_bytes()
    assert load_script("kernel_speed_tally").main([str(path), "--json", str(path)]) == EXIT_INPUT
    assert "would overwrite the input" in capsys.readouterr().err and path.read_bytes() == before


def placed(ratio, one=None, two=None, **kwargs):
    """A --cpu-placement run: each placement as (per-round ratio, rounds labelled), or absent."""
    split = {"unlabelled_rounds": 0, "samples": 100}
    for place, entry in (("one L3", one), ("two L3s", two)):
        if entry:
            split[place] = {"per_round_ratio": entry[0], "rounds": entry[1], "rounds_within_target": 0}
    return run(ratio, **kwargs) | {"by_cpu_placement": split}


def test_by_placement_tallies_only_the_placement_runs_and_the_gap_where_both_placements_have_rounds(tmp_path):
    report = write(
        tmp_path,
        [
            run(1.016),  # no placement split: not in this tally
            placed(1.020, one=(1.014, 900), two=(1.026, 800)),
            placed(1.021, one=(1.018, 1200), two=(1.024, 40)),  # too few rounds on two L3s for the gap
            placed(1.025, two=(1.027, 1900)),  # never on one L3
            placed(1.019, one=(1.022, 700), two=(1.020, 600)),
        ],
    )
    result = tally([report], Selection(by_placement=True))
    (group,) = result["groups"]
    assert group["runs"] == ["report.json#2", "report.json#3", "report.json#4", "report.json#5"]
    assert group["one L3"] == {"count": 3, "median": 1.018, "min": 1.014, "max": 1.022, "runs_within_target": 2}
    assert group["two L3s"] == {"count": 4, "median": 1.025, "min": 1.02, "max": 1.027, "runs_within_target": 1}
    assert group["two_minus_one_points"] == {"runs": 2, "higher_on_two": 1, "min": -0.2, "max": 1.2}
    lines = tally_lines(result)
    assert lines[0].endswith("split by the two CPUs' placement; sge_fused/resnet50, per-round medians")
    assert lines[2] == "    the two CPUs on one L3   3 runs, median 1.0180, 1.0140–1.0220, 2 of 3 ≤ 1.02"
    assert (
        lines[4]
        == "    two L3s - one L3, in the 2 runs with ≥ 100 rounds on each: -0.20 to +1.20 points, higher on two in 1"
    )
    plain = tally([report], Selection())["groups"][0]
    assert plain["runs"] == ["report.json#1"]


def test_the_script_tallies_by_placement_on_request(tmp_path, capsys):
    report = write(tmp_path, [run(1.016), placed(1.020, one=(1.014, 900), two=(1.026, 800))])
    assert load_script("kernel_speed_tally").main([str(report), "--by-placement"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].endswith("(AVX-512 paths): 1 run") and "+1.20 to +1.20 points, higher on two in 1" in out[-1]
