"""Rich tables for the export and validate scripts (built here, printed by the scripts)."""

from collections.abc import Mapping

from rich.table import Table
from rich.text import Text

from export.parity import ParityReport


def ops_table(before: Mapping[str, int], after: Mapping[str, int], *, simplifier: str) -> Table:
    table = Table(title=f"ONNX op counts: exported → {simplifier}")
    table.add_column("op")
    table.add_column("exported", justify="right")
    table.add_column("simplified", justify="right")
    ops = sorted(set(before) | set(after), key=lambda op: (-after.get(op, 0), -before.get(op, 0), op))
    for op in ops:
        table.add_row(op, str(before.get(op, 0)), str(after.get(op, 0)))
    table.add_section()
    table.add_row("total", str(sum(before.values())), str(sum(after.values())), style="bold")
    return table


def parity_table(report: ParityReport) -> Table:
    table = Table(
        title=f"parity: eager PyTorch vs {report.backend} (gates: max abs ≤ {report.atol:g}, rel L2 ≤ {report.rtol:g})"
    )
    for name in ("inputs", "batch", "max abs", "mean abs", "rel L2", "1 − cos", "top-1", "top-5", "result"):
        table.add_column(name, justify="left" if name in ("inputs", "result") else "right")
    for case in report.cases:
        s = case.stats
        cells = (
            [
                f"{s.max_abs:.2e}",
                f"{s.mean_abs:.2e}",
                f"{s.rel_l2:.2e}",
                f"{1 - s.cosine:.1e}",
                f"{s.top1:.0%}",
                f"{s.top5:.0%}",
            ]
            if s
            else ["—"] * 6
        )
        verdict = (
            Text("FAIL", "red")
            if not case.passed
            else Text("pass", "green")
            if case.gate == "tolerance"
            else Text("pass*", "yellow")
        )
        table.add_row(case.inputs, str(case.batch), *cells, verdict)
    floors = [case for case in report.cases if case.noise_floor]
    if floors:
        worst = max(floors, key=lambda case: case.noise_floor["candidate"])
        table.caption = (
            f"pass*: beyond the FP32 gates, but no further from float64 than eager FP32 is "
            f"(worst: {report.backend} {worst.noise_floor['candidate']:.2e} vs eager FP32 "
            f"{worst.noise_floor['eager_fp32']:.2e} relative L2)"
        )
    return table


def stage_table(seconds: Mapping[str, float]) -> Table:
    table = Table(title="stage times")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, value in seconds.items():
        table.add_row(stage, f"{value:.2f}")
    table.add_section()
    table.add_row("total", f"{sum(seconds.values()):.2f}", style="bold")
    return table


def int8_table(result: "Int8Result") -> Table:  # noqa: F821
    """The INT8 graphs' parity (export/int8/stage.py): the worst sample per reference, per graph."""
    table = Table(
        title=f"INT8 graphs (calibration: {result.calibration['samples']} samples, "
        f"{result.calibration['method']}); worst sample per reference"
    )
    for column in (
        "graph",
        "scheme",
        "weights",
        "vs",
        "photos cos",
        "photos top-1",
        "clear top-1",
        "photos top-5",
        "random cos",
        "SGE float",
        "status",
    ):
        table.add_column(column, no_wrap=column == "graph")
    for graph in result.graphs:
        for ref in ("eager", "fp32_onnx"):
            photos, noise = graph.parity.worst(ref, "photos"), graph.parity.worst(ref, "random")
            table.add_row(
                graph.name,
                graph.scheme,
                f"{graph.weight_bits}-bit",
                ref,
                f"{photos['cosine']:.4f}",
                f"{photos['top1']:.0%}",
                f"{photos['clear_top1']:.0%}",
                f"{photos['top5']:.0%}",
                f"{noise['cosine']:.4f}",
                str(graph.sge_regions_float),
                "pass" if graph.passed else "FAIL",
            )
    return table
