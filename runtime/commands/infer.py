"""Classify image files with an exported model on any backend and print the top classes.

sge-deploy infer ARTIFACT IMAGE... [--backend onnxruntime] [--batch-size 8] [--top-k 5] [--labels FILE] [--json PATH]

Images run in batches of --batch-size (default 8: memory stays bounded however many files are given).
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import runtime
from export.artifacts import ArtifactError
from models.transforms import MAX_IMAGE_PIXELS, ImageReadError
from runtime.backends.base import BackendUnavailableError, InputMismatchError, NonFiniteOutputError
from runtime.cli import (
    EXIT_INPUT,
    check_output_paths,
    make_console,
    make_parser,
    options_given,
    run_main,
    write_json_output,
)
from runtime.cli_flags import add_backends, add_batch_size, add_json, add_threads, precision_option
from runtime.labels import labels_for
from runtime.preprocess import preprocess_images, preprocessing_for
from runtime.topk import LabelsError, Prediction, top_k

DEFAULT_BATCH_SIZE = 8


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__.split("\n\n")[0], prog=prog)
    parser.add_argument("artifact", type=Path, help="artifact directory (or a bare .onnx file)")
    parser.add_argument(
        "images", type=Path, nargs="+", help=f"JPEG or PNG files, each at most {MAX_IMAGE_PIXELS:,} pixels"
    )
    add_backends(
        parser, default="onnxruntime", one=True, help=f"one of {', '.join(runtime.list_backends())}, or auto (README)"
    )
    add_batch_size(parser, default=DEFAULT_BATCH_SIZE, help="images per inference call")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--labels", type=Path, help="class names, one per line (default: the ImageNet-1k names for 1000 classes)"
    )
    add_threads(parser, help="intra-op threads (default: the backend's own)")
    parser.add_argument("--precision", default="fp32", help="fp32 (= f32), bf16 (openvino), int8 (README)")
    parser.add_argument(
        "--min-precision", default="fp32", help="--backend auto: the lowest precision allowed (fp32, bf16, int8)"
    )
    parser.add_argument("--auto-table", type=Path, help="--backend auto: reuse/store its timings in this JSON file")
    add_json(parser, help="write the predictions here")
    parser.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    return parser


def check_precision_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """ValueError for a flag the chosen backend would ignore: --precision with auto (which picks the precision
    itself, down to --min-precision), or auto's own flags with a named backend."""
    from export.int8.roles import normalise_precision

    if args.backends[0] == "auto":
        if normalise_precision(args.precision) != "fp32":  # fp32 (= f32) is auto's own floor anyway
            raise ValueError(
                "--backend auto chooses the precision itself: give --min-precision (the lowest it may choose) "
                "instead of --precision"
            )
        return
    ignored = options_given(parser, args, ["min_precision", "auto_table"])
    if ignored:
        verb = "goes" if len(ignored) == 1 else "go"
        raise ValueError(
            f"{' and '.join(ignored)} {verb} with --backend auto; with --backend {args.backends[0]} give --precision"
        )


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    console = make_console(json_path=args.json)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_precision_flags(parser, args)
        check_output_paths(
            json=args.json, auto_table=args.auto_table, inputs=[args.artifact, *args.images, args.labels]
        )  # before the work
        if args.top_k < 1:
            raise ValueError(f"--top-k must be at least 1; got {args.top_k}")
        source = runtime.open_source(args.artifact)
        classes = source.output_spec.shape[-1]
        labels = labels_for(classes if isinstance(classes, int) else None, args.labels)  # before timing backends
        preprocessing = preprocessing_for(source)  # a bad manifest size too
        options = precision_option(args.precision)
        backend = args.backends[0]
        if backend == "auto":
            from runtime.auto import choose_backend

            choice = choose_backend(
                source,
                min_precision=args.min_precision,
                batch=min(args.batch_size, len(args.images)),
                threads=args.threads,
                table=args.auto_table,
            )
            console.print(f"auto: {choice.reason}", soft_wrap=True)
            backend, options = choice.backend, choice.load_options()
        runner = runtime.load(source, backend=backend, threads=args.threads, check_finite=True, **options)
        predictions = []
        fixed = source.fixed_batch  # a bare ONNX file may fix its batch: send exactly that many
        step = fixed or args.batch_size
        with runner:
            for start in range(0, len(args.images), step):
                batch = preprocess_images(args.images[start : start + step], preprocessing)
                count = len(batch)
                if fixed is not None and count < fixed:  # the last images: padded, their padding's outputs dropped
                    batch = np.concatenate([batch, np.zeros((fixed - count, *batch.shape[1:]), batch.dtype)])
                predictions += top_k(runner.infer(batch)[:count], args.top_k, labels=labels)
            ran = runner.describe()  # which graph and kernel build ran (cleared when the runner closes)
        untrained = f"{source.weights}: default weights, NOT trained" if source.untrained else None
        if untrained:
            print(
                f"warning: {args.artifact} has the project's {untrained}: these predictions are meaningless; "
                "export with --checkpoint for real ones",
                file=sys.stderr,
            )
        results = print_predictions(console, args.images, predictions, backend=backend, untrained=source.untrained)
        if args.json:
            write_json_output(
                args.json,
                {
                    "artifact": str(args.artifact),
                    "backend": args.backends[0],
                    "weights": source.weights,
                    "untrained": source.untrained,
                    "runner": ran,
                    "predictions": results,
                },
            )
    except (
        ArtifactError,
        BackendUnavailableError,
        ImageReadError,
        InputMismatchError,
        LabelsError,
        NonFiniteOutputError,
        OSError,
        runtime.UnknownBackendError,
        ValueError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    return 0


def print_predictions(
    console: Console, images: list[Path], predictions: list[list[Prediction]], *, backend: str, untrained: bool
) -> list[dict[str, Any]]:
    """One table per image; returns the predictions as JSON-ready dicts."""
    results = []
    for image, preds in zip(images, predictions, strict=True):
        # short enough to stay one line over the table: the warning and the JSON name the weights in full
        table = Table(title=f"{image.name} ({backend}{'; NOT trained' if untrained else ''})")
        for column in ("rank", "class", "label", "probability"):
            table.add_column(column, justify="right" if column != "label" else "left")
        for rank, p in enumerate(preds, start=1):
            table.add_row(str(rank), str(p.index), p.label, f"{p.probability:.4f}")
        console.print(table)
        results.append({"image": str(image), "top_k": [p.to_dict() for p in preds]})
    return results
