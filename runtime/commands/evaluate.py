"""Top-1/top-5 accuracy and agreement with FP32 eager PyTorch on a folder of images, several backends in one run.

sge-deploy evaluate artifacts/sge_resnet50 --data val/ --backends onnxruntime,onnxruntime:int8,openvino:int8
sge-deploy evaluate ARTIFACT --data photos/ --labels labels.txt --json eval.json
sge-deploy evaluate ARTIFACT --data photos/ --reference onnxruntime   # no torch: FP32 ONNX Runtime as reference
(the default weights are untrained: accuracy needs --checkpoint at export; README: INT8)
"""

import argparse
import sys
from pathlib import Path

from runtime.cli import (
    EXIT_INPUT,
    check_output_paths,
    command_words,
    make_console,
    make_parser,
    run_main,
    write_json_output,
)
from runtime.cli_flags import add_backends, add_batch_size, add_json, add_threads, artifact_directory, backend_name


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = make_parser(__doc__.split("\n\n")[0], prog=prog)
    parser.add_argument("artifact", type=artifact_directory, help="artifact directory")
    parser.add_argument("--data", type=Path, required=True, help="ImageFolder directory, or images with --labels")
    parser.add_argument("--labels", type=Path, help="lines of '<relative image path> <class index>'")
    add_backends(
        parser,
        default=None,
        precision=True,
        help="backend[:precision], comma-separated (default: onnxruntime, and onnxruntime:int8 where the artifact "
        "has INT8 graphs)",
    )
    parser.add_argument(
        "--reference",
        type=backend_name,
        default="torch",
        help="what agreement is measured against (default: FP32 eager)",
    )
    add_batch_size(parser, default=8, help="images per inference call")
    add_threads(parser, help="intra-op threads (default: the backend's own)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    add_json(parser, help="write the report here")
    return parser


def _main(argv: list[str] | None, prog: str | None) -> int:
    args = build_parser(prog).parse_args(argv)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    import runtime
    from export.artifacts import ArtifactError
    from models.transforms import ImageReadError
    from runtime.backends.base import BackendUnavailableError, label_with_precision
    from runtime.commands import torch_installed
    from runtime.evaluate import DatasetError, check_evaluation, default_targets, evaluate, load_dataset, load_runners

    console = make_console(stderr=True)
    try:
        check_output_paths(json=args.json, inputs=[args.artifact, args.data, args.labels])  # before the work
        dataset = load_dataset(args.data, labels_file=args.labels, limit=args.limit)
        source = runtime.open_source(args.artifact)  # verified once
        targets = list(args.backends) if args.backends else default_targets(source)
        # everything refused before the progress bar starts: the data, the labels, every target and the reference
        check_evaluation(source, dataset, batch=args.batch_size)
        try:
            runners = load_runners(source, targets=targets, reference=args.reference, threads=args.threads)
        except BackendUnavailableError as err:
            if args.reference != "torch" or torch_installed():
                raise
            raise BackendUnavailableError(f"{err}; or measure agreement with --reference onnxruntime") from err
        columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("images", total=len(dataset))
            report = evaluate(
                source,
                dataset,
                targets=targets,
                reference=args.reference,
                batch=args.batch_size,
                threads=args.threads,
                progress=lambda n: bar.advance(task, n),
                runners=runners,
            )
    except (
        ArtifactError,
        DatasetError,
        ImageReadError,
        BackendUnavailableError,
        runtime.UnknownBackendError,
        ValueError,
        OSError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    table = Table(title=f"{report['model']} on {dataset.kind} {args.data} ({len(dataset)} images), vs {args.reference}")
    for column in ("target", "top-1", "top-5", "top-1 agree", "top-5 overlap", "cos mean", "cos min", "rel L2 max"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for row in report["results"]:
        acc, agree = row["accuracy"], row["agreement"]
        table.add_row(
            label_with_precision(row["target"], row["runner"]),
            f"{acc['top1']:.2%}" if acc else "–",
            f"{acc['top5']:.2%}" if acc else "–",
            f"{agree['top1_agreement']:.2%}",
            f"{agree['top5_overlap']:.2%}",
            f"{agree['cosine_mean']:.4f}",
            f"{agree['cosine_min']:.4f}",
            f"{agree['rel_l2_max']:.3g}",
        )
    make_console(json_path=args.json).print(table)
    if args.json:
        command = command_words(prog, "evaluate", argv)
        write_json_output(args.json, {**report, "command": command})
    return 0
