"""Load report for a model served on this machine: throughput and p50/p90/p95/p99 latency per concurrency level.

sge-deploy loadtest URL --model NAME [--concurrency 1,4,16] [--duration 10] [--protocol http|grpc]
    [--batch-size 1] [--max-requests N] [--images FILE...] [--labels FILE] [--json PATH]

With --images, every request carries those photographs (ImageNet preprocessing at the served input size) and the
report ends with the server's top-5 classes for each, named (ImageNet-1k names for a 1000-class model).
"""

import argparse
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from models.transforms import ImageReadError
from runtime.bench_report import versions
from runtime.cli import (
    EXIT_FAILED,
    EXIT_INPUT,
    OutputPathError,
    check_output_paths,
    command_words,
    is_stdout,
    make_console,
    make_parser,
    run_main,
    write_json_output,
)
from runtime.cli_flags import add_batch_size, add_json, add_model_name
from runtime.kserve_client import LoadTestError, classify_once, loopback_address, model_metadata
from runtime.labels import labels_for
from runtime.loadtest import LoadConfig, run_load
from runtime.preprocess import Preprocessing, preprocess_images
from runtime.topk import LabelsError, NonFiniteLogits, Prediction, top_k

MAX_IMAGES = 8


def concurrency_levels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,4,16; got {text!r}") from err


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__.split("\n\n")[0], prog=prog)
    parser.add_argument("url", help="server address on this machine, e.g. http://127.0.0.1:8000 or 127.0.0.1:8001")
    add_model_name(parser, old_spelling="--model", help="the served model's name (serve's --model-name); required")
    parser.add_argument("--concurrency", type=concurrency_levels, default=(1, 4, 16), help="levels, e.g. 1,4,16")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--max-requests", type=int, default=100_000, help="request budget per level")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    add_batch_size(parser, default=1, help="images per request (1..1024)")
    parser.add_argument(
        "--bad-every", type=int, default=0, metavar="K", help="HTTP: every K-th request is malformed and must get 4xx"
    )
    parser.add_argument("--images", type=Path, nargs="+", help=f"photographs to send (at most {MAX_IMAGES})")
    parser.add_argument("--labels", type=Path, help="class names, one per line (default: ImageNet-1k for 1000)")
    add_json(parser, help="write the report here")
    parser.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    return parser


def photo_batch(url: str, model: str, images: list[Path], *, batch_size: int, protocol: str):
    """The photographs preprocessed at the served input size, cycled to ``batch_size`` rows; and all of them."""
    if len(images) > MAX_IMAGES:
        raise LoadTestError(f"give at most {MAX_IMAGES} images; got {len(images)}")
    meta = model_metadata(loopback_address(url, protocol=protocol), model, protocol=protocol)
    shape = meta["inputs"][0]["shape"]
    if len(shape) != 4 or min(shape[2:]) < 1:
        raise LoadTestError(f"--images needs an (N, 3, H, W) input with fixed H and W; the model takes {shape}")
    photos = preprocess_images(images, Preprocessing(size=(shape[2], shape[3])))
    return photos[[i % len(photos) for i in range(batch_size)]], photos, meta["outputs"][0]["shape"][-1]


def server_top5(images: list[Path], logits: np.ndarray, labels: list[str] | None) -> list[list[Prediction]]:
    """The server's top-5 for each photograph; NaN/Inf there is the served model's fault, said so in one line."""
    try:
        return top_k(logits, 5, labels=labels)
    except NonFiniteLogits as err:
        names = ", ".join(images[i].name for i in err.rows[:3])
        raise LoadTestError(
            f"the server answered NaN/Inf logits for {names}: the served model overflowed or is broken"
        ) from None


def print_predictions(console: Console, images: list[Path], top5: list[list[Prediction]]) -> list[dict]:
    table = Table(title="the server's top-5")
    for column in ("image", "rank", "class", "label", "probability"):
        table.add_column(column, justify="left" if column in ("image", "label") else "right")
    results = []
    for image, predictions in zip(images, top5, strict=True):
        for rank, p in enumerate(predictions, start=1):
            table.add_row(image.name if rank == 1 else "", str(rank), str(p.index), p.label, f"{p.probability:.4f}")
        results.append({"image": str(image), "top_k": [p.to_dict() for p in predictions]})
    console.print(table)
    return results


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.model_name is None:
        parser.error("--model-name is required: the name the server publishes the model under")
    if args.labels is not None and not args.images:
        parser.error("--labels names the classes of --images' predictions; give --images too, or drop --labels")
    console = make_console(min_width=110, json_path=args.json)  # nine columns
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_output_paths(json=args.json, inputs=[*(args.images or ()), args.labels])  # before the work
        config = LoadConfig(
            concurrency=args.concurrency,
            duration_s=args.duration,
            max_requests=args.max_requests,
            batch_size=args.batch_size,
            protocol=args.protocol,
            bad_every=args.bad_every,
        )
        batch = photos = None
        if args.images:
            batch, photos, classes = photo_batch(
                args.url, args.model_name, args.images, batch_size=args.batch_size, protocol=args.protocol
            )
            labels = labels_for(classes if classes > 0 else None, args.labels)
        report = run_load(args.url, model=args.model_name, config=config, batch=batch)
        gone = report.levels[-1].stopped if report.levels else None  # run_load ends at a level that stopped
        top5 = None
        if photos is not None and not gone:  # there is a server to classify the photographs
            logits = classify_once(args.url, model=args.model_name, batch=photos, protocol=args.protocol)
            top5 = server_top5(args.images, logits, labels)
    except (LoadTestError, OutputPathError, ImageReadError, LabelsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    setting = f"{args.protocol}, batch {args.batch_size}, {args.duration:g} s"
    table = Table(title=f"{args.model_name} at {args.url} ({setting})")
    columns = ["concurrency", "requests", "errors", "req/s", "img/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms"]
    for column in columns + (["bad → 4xx"] if args.bad_every else []):
        table.add_column(column, justify="right")
    for level in report.levels:
        lat = level.latency_ms
        cells = [f"{lat[k]:.1f}" if k in lat else "—" for k in ("p50", "p90", "p95", "p99")]
        table.add_row(
            str(level.concurrency),
            str(level.requests),
            str(level.errors),
            f"{level.throughput_rps:.1f}",
            f"{level.images_per_s:.1f}",
            *cells,
            *([str(level.rejected)] if args.bad_every else []),
        )
    console.print(table)
    m = report.machine
    console.print(
        f"machine: {m['cpu_model']}, {m['logical_cpus']} CPUs, load average {m.get('load_average_1_5_15')}; {m['note']}"
    )
    predictions = print_predictions(console, args.images, top5) if top5 is not None else None
    if args.json:
        command = shlex.join(command_words(prog, "loadtest", argv))
        provenance = {"command": command, "versions": versions()}  # what ran, as the benchmark's report says
        extra = {"predictions": predictions} if predictions else {}
        write_json_output(args.json, {**provenance, **report.to_dict(), **extra})
        if not is_stdout(args.json):
            console.print(f"wrote {args.json}")
    if gone:
        print(f"error: {' '.join(gone.split())}", file=sys.stderr)
        return EXIT_FAILED
    failed = [level for level in report.levels if level.errors]
    if failed:
        first = " ".join(str(failed[0].first_error).split())
        print(f"error: {sum(lv.errors for lv in failed)} requests failed; first: {first}", file=sys.stderr)
        return EXIT_FAILED
    return 0
