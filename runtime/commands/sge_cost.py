"""What SGE costs on this CPU: sge_resnet50 vs resnet50 vs the FP32 floor, eager PyTorch and OpenVINO, in one run.

    sge-deploy sge-cost                     # batch 1 and 8, 2 threads, 224×224; prints ratios, writes JSON
    sge-deploy sge-cost --rounds 30 --json results/sge_cost.json

Every figure of one batch size comes from one interleaved loop (each round runs every runner once), so load
from other processes affects them alike; ONNX Runtime runs with allow_spinning "0". With --spinning, ORT threads
spin between calls (ORT's default in a single-model deployment) and the runners are timed in repeated blocks.
Medians of wall time are the figures; CPU-time medians are printed beside them (less disturbed on a shared
machine). The floor's GEMM rate comes from a warm block of back-to-back calls after each loop. The targets are
judged on the project's default CPU path, ONNX Runtime running the fused-SGE graph (model.sge_fused.onnx: SGE +
residual add + ReLU as one compiled op, in ORT's blocked layout); the portable official graph (model.onnx), the
compact graph, and OpenVINO on the official and compact graphs are measured beside it.
"""

import argparse
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from runtime.cli import (
    EXIT_INPUT,
    OutputPathError,
    check_output_dir,
    check_output_paths,
    command_words,
    is_stdout,
    make_console,
    make_parser,
    run_main,
    write_json_output,
)
from runtime.cli_flags import add_batch_sizes, add_input_size, add_json, add_threads


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = make_parser(__doc__.split("\n\n")[0], raw_help=True, prog=prog)
    add_threads(p, default=2, help="intra-op threads for every runtime")
    add_batch_sizes(p, default=(1, 8), help="batch sizes timed, e.g. 1,8")
    add_input_size(p, default=(224, 224), help="input size")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds at batch 1 (batch 8 uses a third)")
    p.add_argument("--gemm-n", type=int, default=1024, help="n of the n×n×n FP32 MatMul that sets the floor")
    p.add_argument(
        "--spinning",
        action="store_true",
        help="ORT threads spin between calls (its deployment default); timing then runs in blocks, not interleaved",
    )
    p.add_argument("--no-openvino", action="store_true", help="skip OpenVINO")
    p.add_argument("--no-torch", action="store_true", help="skip eager PyTorch")
    p.add_argument("--profile-runs", type=int, default=10, help="ORT profiler runs per model at batch 1 (0: skip)")
    p.add_argument("--workdir", type=Path, help="keep the exported ONNX files here (default: a temporary folder)")
    add_json(p, default=Path("sge_cost.json"), help="result file")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def print_report(report, console) -> None:
    from rich.table import Table
    from rich.text import Text

    m = report.machine
    console.print(report.command, style="bold")
    console.print(
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, {'/'.join(m['isa'])}; {m['threads']} threads; "
        f"onnxruntime {m['versions']['onnxruntime']}, openvino {m['versions']['openvino']}, "
        f"torch {m['versions']['torch']}; load average {m['load_average']}"
    )
    console.print(f"FLOPs (conv+linear, 2/MAC): {report.flops}; parity on photographs: {report.parity}")
    for key, timings in report.timings.items():
        table = Table(title=f"{key}: medians of {report.timing_mode} timing (ms)")
        for col in ("runner", "wall", "CPU time", "wall min"):
            table.add_column(col, justify="right" if col != "runner" else "left")
        for t in timings.values():
            table.add_row(
                t["name"], f"{t['wall_ms_median']:.2f}", f"{t['cpu_ms_median']:.2f}", f"{t['wall_ms_min']:.2f}"
            )
        console.print(table)
        rate, loop_rate = report.gemm.get(f"gflops_{key}"), report.gemm.get(f"gflops_{key}_loop")
        rt = Table(title=f"{key}: ratios (floor: GEMM {rate} GFLOP/s warm; {loop_rate} between the other runners)")
        for col in ("ratio", "wall", "CPU time"):
            rt.add_column(col, justify="right" if col != "ratio" else "left")
        for name, value in report.ratios[key].items():
            rt.add_row(name, f"{value['wall']:.3f}", f"{value['cpu']:.3f}" if "cpu" in value else "–")
        console.print(rt)
    if report.profile:
        pt = Table(title="ORT profile, batch 1: kernel ms per run by op type")
        pt.add_column("op")
        for name in report.profile:
            pt.add_column(name, justify="right")
        ops = sorted({op for p in report.profile.values() for op in p["by_op_ms_per_run"]})
        ops.sort(key=lambda op: -max(p["by_op_ms_per_run"].get(op, 0.0) for p in report.profile.values()))
        for op in ops:
            pt.add_row(op, *(f"{p['by_op_ms_per_run'].get(op, 0.0):.2f}" for p in report.profile.values()))
        pt.add_row("total", *(f"{p['kernel_ms_per_run']:.2f}" for p in report.profile.values()))
        pt.add_row("in /sge/ nodes", *(f"{p['sge_nodes_ms_per_run']:.2f}" for p in report.profile.values()))
        console.print(pt)
    tt = Table(title="issue 7 targets")
    for col in ("target", "bound", "measured", "met"):
        tt.add_column(col)
    for name, t in report.targets.items():
        value = "–" if t["measured"] is None else f"{t['measured']:.3f}"
        verdict = {True: "yes", False: "NO", None: "–"}[t["met"]] + (" (noisy run)" if t["noisy"] else "")
        tt.add_row(name, t["target"], value, verdict)
    console.print(tt)
    for note in report.notes:
        console.print(Text.assemble(("warning:", "yellow"), f" {note}"))


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    args = build_parser(prog).parse_args(argv)

    from runtime.sge_study import StudyOptions, run_study

    console = make_console(json_path=args.json)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    options = StudyOptions(
        threads=args.threads,
        batch_sizes=tuple(args.batch_sizes),
        size=tuple(args.input_size),
        rounds=args.rounds,
        gemm_n=args.gemm_n,
        spinning=args.spinning,
        openvino=not args.no_openvino,
        torch=not args.no_torch,
        profile_runs=args.profile_runs,
    )
    try:
        check_output_paths(json=args.json)  # before the work
        if args.workdir is not None:
            check_output_dir(args.workdir, flag="--workdir")
    except OutputPathError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    if options.problems():
        print(f"error: {'; '.join(options.problems())}", file=sys.stderr)
        return EXIT_INPUT
    command = shlex.join(command_words(prog, "sge_cost", argv))
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            report = run_study(options, args.workdir, command=command, progress=console.print)
        else:
            with tempfile.TemporaryDirectory(prefix="sge-cost-") as tmp:
                report = run_study(options, Path(tmp), command=command, progress=console.print)
    except ImportError as err:
        print(f"error: {err} (or pass --no-openvino / --no-torch)", file=sys.stderr)
        return EXIT_INPUT
    print_report(report, console)
    write_json_output(args.json, report.to_dict())
    if not is_stdout(args.json):
        console.print(f"wrote {args.json}")
    return 0
