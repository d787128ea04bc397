"""The unit traces' tally: the caller's first units by placement, over the plain traces of one width only."""

import json

from runtime.kernel_speed.unit_trace_tally import first_units_by_placement, main, tally_lines


def node(name, lanes, times):
    return {"node": name, "channels": 256, "units": 256 // lanes, "unit_time_vs_median": times}


def trace(number, lanes, one=None, two=None, **kinds):
    """A --cpu-placement trace: each placement's layer1.0 and layer1.2 unit times (the same for both), or absent."""
    split = {"samples": 9, "unlabelled_rounds": 0}
    for place, times in (("one L3", one), ("two L3s", two)):
        if times:
            near = [50.0] * len(times)  # layer1.1 is not one of the far nodes
            nodes = [node("layer1.0", lanes, times), node("layer1.1", lanes, near), node("layer1.2", lanes, times)]
            split[place] = {"rounds": 50, "nodes": nodes}
    return {"run": number, "floor": None, "swap_halves": False, "by_cpu_placement": split} | kinds


RUNS = [
    trace(1, 8, one=[1.2, 0.9, 1.0, 5.0], two=[3.5, 2.0, 1.0, 9.0]),  # the 4th unit is past --first 3
    trace(2, 8, one=[1.1, 1.4, 0.8, 1.0]),
    trace(3, 16, two=[7.0, 7.0, 7.0]),  # the other width
    trace(4, 8, two=[20.0, 20.0, 20.0], floor="x_only"),  # a floor build reads other data
    trace(5, 8, two=[0.5, 0.5, 0.5], swap_halves=True),  # so do swapped halves
]


def test_the_range_is_over_the_callers_first_units_of_the_plain_traces_at_one_width():
    result = first_units_by_placement(RUNS, lanes=8, first=3)
    assert result == {
        "one L3": {"runs": [1, 2], "min": 0.8, "max": 1.4},
        "two L3s": {"runs": [1], "min": 1.0, "max": 3.5},
    }
    assert first_units_by_placement(RUNS, lanes=16, first=3) == {"two L3s": {"runs": [3], "min": 7.0, "max": 7.0}}
    lines = tally_lines(result, lanes=8, first=3)
    assert lines[1] == "  the two CPUs on one L3   0.80–1.40× over runs 1, 2"
    assert lines[2] == "  the two CPUs on two L3s  1.00–3.50× over runs 1"


def test_the_command_reads_a_kept_report_and_says_when_nothing_matches(tmp_path, capsys):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"note": "kept", "runs": RUNS}))
    assert main([str(path), "--first", "3"]) == 0
    assert "0.80–1.40× over runs 1, 2" in capsys.readouterr().out
    path.write_text(json.dumps(RUNS[3]))  # one unit_trace --json file: a floor trace, nothing plain
    assert main([str(path)]) == 2
    assert "no plain --cpu-placement trace at 8 lanes" in capsys.readouterr().err
