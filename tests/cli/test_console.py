"""Tables are never cut when output is not a terminal: every script and sub-command takes its Console from
runtime.cli."""

import re
from pathlib import Path

from rich.table import Table

from runtime.cli import LOG_WIDTH, make_console

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*(ROOT / "scripts").glob("*.py"), *(ROOT / "runtime" / "commands").glob("*.py")])


def test_a_wide_table_is_not_cut_in_a_log(capsys):
    console = make_console(min_width=110)  # pytest captures: not a terminal
    assert console.width == LOG_WIDTH
    table = Table()
    cells = [f"onnxruntime:int8-column-{i} 199.123 ms" for i in range(5)]  # ~170 columns in all
    for cell in cells:
        table.add_column(cell)
    table.add_row(*cells)
    console.print(table)
    out = capsys.readouterr().out
    assert "…" not in out
    assert all(cell in out for cell in cells)


def test_no_script_builds_its_own_console():
    offenders = [p.name for p in SCRIPTS if re.search(r"(?<!make_console)\bConsole\(", p.read_text())]
    assert offenders == []


def test_user_text_prints_as_it_is_in_lines_titles_and_cells(capsys):
    """Paths, labels and model names are never read as rich markup: markup is off in every script's console."""
    console = make_console()
    name = "cat[bold].png [red]x[/red]"
    table = Table(title=f"{name} (onnxruntime)")
    table.add_column("label")
    table.add_row(name)
    console.print(f"wrote {name}")
    console.print(table)
    out = capsys.readouterr().out
    assert out.count(name) == 3


def test_benchmark_panel_title_prints_the_backend_as_it_is(capsys):
    """rich reads a Panel's str title as markup even with markup off: benchmark gives it a Text."""
    from runtime.bench_report import BenchmarkConfig, BenchmarkResult
    from runtime.commands.benchmark import print_result
    from runtime.latency import make_report

    name = "onnxruntime[/x][b]q[/b]"
    report = make_report(
        name, batch=1, times_ms=[1.0, 2.0, 3.0], walltime_s=0.006, percentiles=BenchmarkConfig().percentiles
    )
    result = BenchmarkResult("a", "m", BenchmarkConfig(), [report], {name: {"max_abs": 0.0, "rel_l2": 0.0}})
    print_result(make_console(), result)
    assert f"Performance summary: {name}" in capsys.readouterr().out
