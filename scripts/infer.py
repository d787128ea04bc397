"""Classify image files with an exported model on any backend and print the top classes.

python scripts/infer.py ARTIFACT IMAGE... [--backend onnxruntime] [--top-k 5] [--labels FILE] [--json FILE]
"""

import sys
from pathlib import Path

# repo root, not scripts/ (scripts/inspect.py would shadow stdlib)
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import logging  # noqa: E402

from rich.table import Table  # noqa: E402

import runtime  # noqa: E402
from export.artifacts import ArtifactError  # noqa: E402
from models.transforms import MAX_IMAGE_PIXELS, ImageReadError  # noqa: E402
from runtime.backends.base import BackendUnavailableError, InputMismatchError, NonFiniteOutputError  # noqa: E402
from runtime.cli import check_output_paths, make_console, make_parser, run_main, write_json_output  # noqa: E402
from runtime.labels import labels_for  # noqa: E402
from runtime.preprocess import preprocess_images, preprocessing_for  # noqa: E402
from runtime.topk import LabelsError, top_k  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="artifact directory (or a bare .onnx file)")
    parser.add_argument(
        "images", type=Path, nargs="+", help=f"JPEG or PNG files, each at most {MAX_IMAGE_PIXELS:,} pixels"
    )
    parser.add_argument(
        "--backend", default="onnxruntime", help=f"one of {', '.join(runtime.list_backends())}, or auto (README)"
    )
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--labels", type=Path, help="class names, one per line (default: the ImageNet-1k names for 1000 classes)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", default="fp32", help="fp32 (= f32), bf16 (openvino), int8 (README)")
    parser.add_argument(
        "--min-precision", default="fp32", help="--backend auto: the lowest precision allowed (fp32, bf16, int8)"
    )
    parser.add_argument("--auto-table", type=Path, help="--backend auto: reuse/store its timings in this JSON file")
    parser.add_argument("--json", type=Path, help="write the predictions here")
    parser.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    console = make_console(json_path=args.json)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_output_paths(json=args.json)  # before the work
        source = runtime.open_source(args.artifact)
        options = {"precision": args.precision} if args.precision not in ("fp32", "f32") else {}
        backend = args.backend
        if backend == "auto":
            from runtime.auto import choose_backend

            choice = choose_backend(
                source,
                min_precision=args.min_precision,
                batch=len(args.images),
                threads=args.threads,
                table=args.auto_table,
            )
            console.print(f"auto: {choice.reason}", soft_wrap=True)
            backend, options = choice.backend, choice.load_options()
        runner = runtime.load(source, backend=backend, threads=args.threads, check_finite=True, **options)
        batch = preprocess_images(args.images, preprocessing_for(source))
        classes = source.output_spec.shape[-1]
        labels = labels_for(classes if isinstance(classes, int) else None, args.labels)
        with runner:
            logits = runner.infer(batch)
        predictions = top_k(logits, args.top_k, labels=labels)
    except (
        ArtifactError,
        BackendUnavailableError,
        FileNotFoundError,
        ImageReadError,
        InputMismatchError,
        LabelsError,
        NonFiniteOutputError,
        runtime.UnknownBackendError,
        ValueError,
    ) as err:
        console.print(f"[red]error:[/red] {err}", soft_wrap=True)
        return 2
    untrained = f"{source.weights}: default weights, NOT trained" if source.untrained else None
    if untrained:
        console.print(
            f"[yellow]warning:[/yellow] {args.artifact} has the project's {untrained}: these predictions "
            "are meaningless; export with --checkpoint for real ones",
            soft_wrap=True,
        )
    results = []
    for image, preds in zip(args.images, predictions, strict=True):
        table = Table(title=f"{image.name} ({backend}{'; ' + untrained if untrained else ''})")
        for column in ("rank", "class", "label", "probability"):
            table.add_column(column, justify="right" if column != "label" else "left")
        for rank, p in enumerate(preds, start=1):
            table.add_row(str(rank), str(p.index), p.label, f"{p.probability:.4f}")
        console.print(table)
        results.append({"image": str(image), "top_k": [p.to_dict() for p in preds]})
    if args.json:
        write_json_output(
            args.json,
            {
                "artifact": str(args.artifact),
                "backend": args.backend,
                "weights": source.weights,
                "untrained": source.untrained,
                "predictions": results,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
