"""Top-1/top-5 accuracy and agreement with FP32 eager PyTorch on a folder of images, several backends in one run.

python scripts/evaluate.py artifacts/sge_resnet50 --data val/ --targets onnxruntime,onnxruntime:int8,openvino:int8
python scripts/evaluate.py ARTIFACT --data photos/ --labels labels.txt --json eval.json
python scripts/evaluate.py ARTIFACT --data photos/ --reference onnxruntime   # no torch: FP32 ONNX Runtime as reference
(the default weights are untrained: accuracy needs --checkpoint at export; README: INT8)
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # repo root, not scripts/

from runtime.cli import make_console, make_parser, write_json_output  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="ImageFolder directory, or images with --labels")
    parser.add_argument("--labels", type=Path, help="lines of '<relative image path> <class index>'")
    parser.add_argument(
        "--targets", default="onnxruntime,onnxruntime:int8", help="backend[:precision], comma-separated"
    )
    parser.add_argument("--reference", default="torch", help="what agreement is measured against (default: FP32 eager)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    import runtime
    from export.artifacts import ArtifactError
    from models.transforms import ImageReadError
    from runtime.backends.base import BackendUnavailableError
    from runtime.evaluate import DatasetError, evaluate, load_dataset

    console = make_console(stderr=True)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    try:
        dataset = load_dataset(args.data, labels_file=args.labels, limit=args.limit)
        columns = (TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("images", total=len(dataset))
            report = evaluate(
                args.artifact,
                dataset,
                targets=targets,
                reference=args.reference,
                batch=args.batch,
                threads=args.threads,
                progress=lambda n: bar.advance(task, n),
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
        return 2
    table = Table(title=f"{report['model']} on {dataset.kind} {args.data} ({len(dataset)} images), vs {args.reference}")
    for column in ("target", "top-1", "top-5", "top-1 agree", "top-5 overlap", "cos mean", "cos min", "rel L2 max"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for row in report["results"]:
        acc, agree = row["accuracy"], row["agreement"]
        table.add_row(
            row["target"],
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
        write_json_output(args.json, {**report, "command": ["python", "scripts/evaluate.py", *(argv or sys.argv[1:])]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
