"""The cache probe (runtime/kernel_speed/cache_probe.{cc,py}): its buffer sizes, where it says the caches stop
reaching, that the compiled probe answers for the sizes asked, and that bad arguments get a one-line error."""

import json

import pytest

from runtime.kernel_speed.cache_probe import (
    buffer_sizes_kb,
    build_probe,
    cache_reach_kb,
    main,
    run_probe,
    table_lines,
)
from tests.conftest import needs_compiler


def test_buffer_sizes_double_from_256_kb_up_to_the_largest():
    assert buffer_sizes_kb(1) == [256, 512, 1024]
    assert buffer_sizes_kb(3) == [256, 512, 1024, 2048]
    assert buffer_sizes_kb(128)[-1] == 128 * 1024 and len(buffer_sizes_kb(128)) == 10
    with pytest.raises(ValueError, match="at least 1 MB"):
        buffer_sizes_kb(0)


def test_the_reach_is_the_last_buffer_nearer_the_caches_than_memory():
    # the midpoint of 4 and 160 ns is 82: 4 MB (60 ns) is under it, 8 MB (130 ns) is not
    curve = [[256, 4.0], [512, 5.0], [1024, 9.0], [2048, 13.0], [4096, 60.0], [8192, 130.0], [16384, 160.0]]
    assert cache_reach_kb(curve) == 4096
    # a dip past the first slow size does not extend the reach
    assert cache_reach_kb([[256, 4.0], [512, 100.0], [1024, 20.0], [2048, 100.0]]) == 256
    with pytest.raises(ValueError, match="smallest first"):
        cache_reach_kb([[512, 5.0], [256, 4.0]])
    with pytest.raises(ValueError, match="at least two"):
        cache_reach_kb([[256, 4.0]])


def test_the_table_has_a_column_per_pass_and_the_reach():
    passes = [
        {"chase_ns": [[256, 4.0], [4096, 20.0], [8192, 150.0]], "handoff_ns": 31.5, "cpus": [0, 1]},
        {"chase_ns": [[256, 4.5], [4096, 120.0], [8192, 160.0]], "handoff_ns": None, "cpus": [0]},
    ]
    lines = table_lines(passes)
    assert lines[0].split() == ["buffer", "pass", "1", "pass", "2"]
    assert lines[2].split() == ["4", "MB", "20.0", "ns", "120.0", "ns"]
    assert lines[-2].split() == ["CPU-to-CPU", "31.5", "ns", "-"]
    assert lines[-1].split() == ["reach", "4", "MB", "256", "KB"]


@needs_compiler
def test_the_probe_answers_for_every_size_asked(tmp_path):
    probe = build_probe(tmp_path)
    result = run_probe(probe, sizes_kb=[16, 64, 2048], loads=20_000)
    assert [kb for kb, _ in result["chase_ns"]] == [16, 64, 2048]
    assert all(0 < ns < 10_000 for _, ns in result["chase_ns"])
    if len(result["cpus"]) == 2:
        assert result["cpus"][0] != result["cpus"][1] and 0 < result["handoff_ns"] < 100_000
    else:
        assert result["handoff_ns"] is None
    with pytest.raises(RuntimeError, match="each KB at least 4"):
        run_probe(probe, sizes_kb=[2], loads=100)


@needs_compiler
def test_the_command_prints_the_table_and_writes_each_pass(tmp_path, capsys):
    report = tmp_path / "probe.json"
    assert main(["--repeats", "2", "--pause", "0", "--loads", "5000", "--largest-mb", "1", "--json", str(report)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["buffer", "pass", "1", "pass", "2"] and out[-1].split()[0] == "reach"
    written = json.loads(report.read_text())
    assert written["loads"] == 5000 and len(written["passes"]) == 2
    assert [kb for kb, _ in written["passes"][1]["chase_ns"]] == [256, 512, 1024]


def test_bad_arguments_exit_with_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--largest-mb", "0"])
    assert exit_info.value.code == 2
    assert "must be positive" in capsys.readouterr().err
