"""Time an exported model on several backends in one run, and print trtexec-shaped summaries and a comparison.

sge-deploy benchmark ARTIFACT [--backends torch,onnxruntime,openvino (those installed)] [--batch-size N] [--threads N]
    [--precision fp32,int8] [--warmup-ms 200] [--duration 3] [--iterations 10] [--percentiles 90,95,99] [--json PATH]
    [--export-times FILE] [--plot FILE.png]
"""

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from export.artifacts import ArtifactError, write_json
from runtime import UnknownBackendError
from runtime.backends.base import BackendUnavailableError, InputMismatchError, label_with_precision
from runtime.bench_report import PLOT_INSTALL, BenchmarkResult, can_plot, plot_latencies, run_benchmark
from runtime.cli import (
    EXIT_INPUT,
    check_output_paths,
    command_words,
    is_stdout,
    make_console,
    make_parser,
    run_main,
    write_json_output,
)
from runtime.cli_flags import add_backends, add_batch_size, add_json, add_threads, precision_option
from runtime.latency import BenchmarkConfig

MAX_BATCH = 256  # 256 images at 224×224 are 154 MB of input: every backend's activations fit in a few GB
# PyTorch's OpenMP threads busy-wait after each parallel region, as ONNX Runtime's spin: with several backends in one
# process (or a loaded machine) they steal the CPU, and torch at 2 threads measured 5-10× slower than at 1 thread on
# this project's shared 2-core machine. PASSIVE makes them sleep, the counterpart of ORT's allow_spinning="0". The
# entry points set it before torch is imported; an OMP_WAIT_POLICY already set wins.
PROCESS_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def backend_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Each backend's runner options from the command line (one entry per backend)."""
    table = {
        "torch": {"threads": args.threads, "device": args.device, "precision": "fp16" if args.fp16 else "fp32"},
        # Idle ORT threads must sleep, not spin, while other backends are timed in this process.
        "onnxruntime": {"threads": args.threads, "device": args.device, "allow_spinning": False},
        "openvino": {"threads": args.threads},
        # The engine's precision and batch profile were fixed when it was built; trtexec's --useCudaGraph and
        # --noDataTransfers are runner options.
        "tensorrt": {"cuda_graph": args.trt_cuda_graph, "transfers": not args.trt_no_transfers},
    }
    return table.get(name, {"threads": args.threads})


DEFAULT_BACKENDS = ("torch", "onnxruntime", "openvino")

# backend → the reduced precisions it runs (fp32 is every backend's default entry)
REDUCED_PRECISIONS = {"onnxruntime": ("int8",), "openvino": ("bf16", "fp16", "int8")}


def entries(backends: list[str], precisions: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Benchmark entries → runner options: each backend at fp32, and at each reduced precision it runs; a precision
    that none of the backends runs is a ValueError naming what each runs."""
    table = {}
    options = {precision: precision_option(precision) for precision in precisions}
    for name in backends:
        for reduced in options.values():
            if not reduced:
                table[name] = backend_options(name, args)
            elif reduced["precision"] in REDUCED_PRECISIONS.get(name, ()):
                table[f"{name}:{reduced['precision']}"] = {**backend_options(name, args), **reduced}
    run = {name.partition(":")[2] for name in table}
    for reduced in (o["precision"] for o in options.values() if o):
        if reduced not in run:
            runs = ", ".join(
                f"{name} runs {'/'.join(('fp32', *REDUCED_PRECISIONS.get(name, ())))}" for name in backends
            )
            raise ValueError(
                f"--precision {reduced} is run by none of --backends {','.join(backends)} ({runs}); "
                "change --precision or --backends"
            )
    return table


def left_out(backends: list[str], runs: dict[str, Any]) -> list[str]:
    """The backends with no entry in ``runs`` (none of the precisions asked for is one they run)."""
    return [name for name in backends if not any(key.partition(":")[0] == name for key in runs)]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__.split("\n\n")[0], prog=prog)
    parser.add_argument("artifact", type=Path, help="artifact directory (or a bare .onnx file)")
    add_backends(
        parser,
        default=None,
        help=f"comma-separated; the first is the base (default: {','.join(DEFAULT_BACKENDS)}, those installed)",
    )
    add_batch_size(parser, default=1, help=f"images per query, 1..{MAX_BATCH}")
    add_threads(parser, help="intra-op threads for every backend")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch and onnxruntime device")
    parser.add_argument("--fp16", action="store_true", help="torch on cuda in FP16")
    parser.add_argument(
        "--precision",
        default="fp32",
        help="comma-separated, e.g. fp32,bf16,int8: each backend once per precision it runs (onnxruntime: int8; "
        "openvino: bf16, int8), in the same run (entries named backend:int8)",
    )
    parser.add_argument("--trt-cuda-graph", action="store_true", help="TensorRT: replay a CUDA graph per batch size")
    parser.add_argument(
        "--trt-no-transfers", action="store_true", help="TensorRT: time compute only, no host copies after the first"
    )
    parser.add_argument("--warmup-ms", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=3.0, help="at least this many seconds per backend")
    parser.add_argument("--iterations", type=int, default=10, help="at least this many queries per backend")
    parser.add_argument("--percentiles", default="90,95,99")
    parser.add_argument("--mode", choices=("block", "interleave"), default="block")
    add_json(parser, help="write every figure, the command, versions and machine here")
    parser.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    parser.add_argument("--export-times", type=Path, help="write every query's latency here (JSON)")
    parser.add_argument("--plot", type=Path, help="PNG of the latency distributions")
    return parser


def parse_percentiles(text: str) -> tuple[float, ...]:
    """``--percentiles 90,95,99`` → (90.0, 95.0, 99.0); the range is BenchmarkConfig's to check."""
    try:
        return tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"--percentiles expects numbers such as 90,95,99; got {text!r}") from None


def print_result(console: Console, result: BenchmarkResult) -> None:
    for report in result.reports:
        text = "\n".join(report.summary_lines())
        style = "yellow" if report.cv_warning else "green"
        title = Text(f"Performance summary: {report.backend}")  # a str title would be read as markup
        console.print(Panel(text, title=title, border_style=style, expand=False))
    percentiles = list(result.config.percentiles)
    table = Table(
        title=f"{result.model or result.artifact}, batch {result.reports[0].batch}, same run ({result.config.mode})"
    )
    for column in ("backend", "median ms", "mean ms", *(f"p{p:g} ms" for p in percentiles), "CV %", "qps", "images/s"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    table.add_column(f"median / {result.reports[0].backend}", justify="right")
    for row, report in zip(result.comparison(), result.reports, strict=True):
        table.add_row(
            label_with_precision(row["backend"], report.description),
            f"{row['median_ms']:.3f}",
            f"{row['mean_ms']:.3f}",
            *(f"{row['percentiles_ms'][f'{p:g}']:.3f}" for p in percentiles),
            f"{row['cv'] * 100:.2f}",
            f"{row['throughput_qps']:.4g}",
            f"{row['throughput_images_per_s']:.4g}",
            f"{row['latency_ratio']:.2f}×",
        )
    console.print(table)
    agreement = ", ".join(f"{k}: max|Δ| {v['max_abs']:.2e}" for k, v in list(result.agreement.items())[1:])
    if agreement:
        console.print(f"outputs vs {result.reports[0].backend} on the timed batch: {agreement}")
    for report in result.reports:
        graph = report.description.get("graph")
        if graph == "sge_fused" and "nchwc_sge_blocks" in report.description:  # ONNX Runtime's
            total = report.description["fused_sge_blocks"]
            layout = f"{report.description['nchwc_sge_blocks']}/{total} blocks in NCHWc"
            if report.description.get("uint8_nhwc_sge_blocks"):  # a planned INT8 graph (SgeResidualQ)
                layout = f"{report.description['uint8_nhwc_sge_blocks']}/{total} blocks in uint8 NHWC"
            graph_file = Path(report.description.get("model_path", "model.sge_fused.onnx")).name
            build = report.description.get("kernel_build")
            kernel = f"; its kernel's {build} build" if build else ""
            console.print(f"{report.backend} ran the fused-SGE graph ({graph_file}; {layout}{kernel})")
        elif graph is not None:
            graph_file = Path(report.description.get("model_path", "model.onnx")).name
            console.print(f"{report.backend} ran {graph_file}")
    machine = result.machine
    console.print(
        f"machine: {machine['cpu_model']}, {machine['physical_cores']} cores / {machine['logical_cpus']} threads "
        f"({machine['usable_cpus']} usable), load {machine.get('load_average_1_5_15')}"
    )


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def installed_default_backends() -> list[str]:
    """The default backends whose package is installed, with one line naming those left out (a deploy-only install
    has no torch: the default run must not fail on it)."""
    from runtime.environment import importable

    present = [name for name in DEFAULT_BACKENDS if importable(name)]  # each backend's package has its name
    missing = [name for name in DEFAULT_BACKENDS if name not in present]
    if missing and present:
        print(
            f"note: {', '.join(missing)} not installed: timing {','.join(present)} (--backends chooses)",
            file=sys.stderr,
        )
    return present or list(DEFAULT_BACKENDS)  # none installed: each one's own error says what to install


def _main(argv: list[str] | None, prog: str | None) -> int:
    args = build_parser(prog).parse_args(argv)
    console = make_console(json_path=args.json)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    backends = list(args.backends or installed_default_backends())  # canonical names, no repeats
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    try:
        runs = entries(backends, precisions, args)  # an unknown precision is a ValueError: one line, exit 2
        for name in left_out(backends, runs):  # the base of the ratios changes: say so, never silently
            print(
                f"warning: {name} runs none of --precision {args.precision} and is left out; add fp32 to --precision "
                "to time it too",
                file=sys.stderr,
            )
        if args.batch_size > MAX_BATCH:  # 100000 images would be refused only by the OOM killer
            raise ValueError(f"--batch-size must lie in 1..{MAX_BATCH}; got {args.batch_size}")
        check_output_paths(
            json=args.json, export_times=args.export_times, plot=args.plot, inputs=[args.artifact]
        )  # before the work
        if args.plot and not can_plot():
            raise ValueError(f"--plot needs matplotlib: {PLOT_INSTALL}, or drop --plot")
        config = BenchmarkConfig(
            warmup_ms=args.warmup_ms,
            duration_s=args.duration,
            iterations=args.iterations,
            percentiles=parse_percentiles(args.percentiles),
            mode=args.mode,
        )
        result = run_benchmark(
            args.artifact,
            list(runs),
            batch=args.batch_size,
            config=config,
            options=runs,
            command=command_words(prog, "benchmark", argv),
        )
        print_result(console, result)
        write_outputs(console, result, args)
    except (
        ArtifactError,
        BackendUnavailableError,
        InputMismatchError,
        UnknownBackendError,
        OSError,
        ValueError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    return 0


def write_outputs(console: Console, result: BenchmarkResult, args: argparse.Namespace) -> None:
    """--json, --export-times and --plot, each announced on the console."""
    if args.json:
        environment = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ}
        write_json_output(args.json, {**result.to_dict(), "environment": environment})
        if not is_stdout(args.json):
            console.print(f"wrote {args.json}")
    if args.export_times:
        write_json(args.export_times, result.times())
        console.print(f"wrote {args.export_times}")
    if args.plot:
        plot_latencies(result.reports, args.plot, title=f"{result.model}: latency per query, batch {args.batch_size}")
        console.print(f"wrote {args.plot}")
