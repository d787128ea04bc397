"""Classify image files with an exported model on any backend and print the top classes.

python scripts/infer.py ARTIFACT IMAGE... [--backend onnxruntime] [--top-k 5] [--labels FILE] [--json FILE]
"""

import sys
from pathlib import Path

# repo root, not scripts/ (scripts/inspect.py would shadow stdlib)
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import logging  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import runtime  # noqa: E402
from export.artifacts import ArtifactError, write_json  # noqa: E402
from models.transforms import ImageReadError  # noqa: E402
from runtime.backends.base import BackendUnavailableError, InputMismatchError, NonFiniteOutputError  # noqa: E402
from runtime.preprocess import preprocess_images, preprocessing_for  # noqa: E402
from runtime.topk import LabelsError, load_labels, top_k  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path, help="artifact directory (or a bare .onnx file)")
    parser.add_argument("images", type=Path, nargs="+", help="JPEG or PNG files")
    parser.add_argument(
        "--backend", default="onnxruntime", help=f"one of {', '.join(runtime.list_backends())}, or auto (README)"
    )
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--labels", type=Path, help="class names, one per line")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", default="fp32", help="fp32 (= f32), bf16, int8: openvino (README)")
    parser.add_argument(
        "--min-precision", default="fp32", help="--backend auto: the lowest precision allowed (fp32, bf16, int8)"
    )
    parser.add_argument("--auto-table", type=Path, help="--backend auto: reuse/store its timings in this JSON file")
    parser.add_argument("--json", type=Path, help="write the predictions here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
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
        labels = load_labels(args.labels) if args.labels else None
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
    results = []
    for image, preds in zip(args.images, predictions, strict=True):
        table = Table(title=f"{image.name} ({backend})")
        for column in ("rank", "class", "label", "probability"):
            table.add_column(column, justify="right" if column != "label" else "left")
        for rank, p in enumerate(preds, start=1):
            table.add_row(str(rank), str(p.index), p.label, f"{p.probability:.4f}")
        console.print(table)
        results.append({"image": str(image), "top_k": [p.to_dict() for p in preds]})
    if args.json:
        write_json(args.json, {"artifact": str(args.artifact), "backend": args.backend, "predictions": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
