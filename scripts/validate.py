"""Re-run parity on an existing artifact directory (hashes verified first): eager PyTorch vs a backend.

Every ONNX graph the artifact deploys is checked: model.onnx and, for SGE models, model.sge_fused.onnx.

python scripts/validate.py artifacts/sge_resnet50
python scripts/validate.py artifacts/sge_resnet50 --images my.jpg --batch-sizes 1,5
"""

import sys
from pathlib import Path

sys.path[0] = str(
    Path(__file__).resolve().parents[1]
)  # repo root, not scripts/ (scripts/inspect.py would shadow stdlib)

import argparse  # noqa: E402

from runtime.cli import (  # noqa: E402
    EXIT_INPUT,
    EXIT_PARITY,
    check_output_paths,
    make_console,
    make_parser,
    run_main,
    write_json_output,
)


def build_parser() -> argparse.ArgumentParser:
    from export.validate import BACKENDS

    p = make_parser(__doc__)
    p.add_argument("directory", type=Path, help="artifact directory (with manifest.json)")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    p.add_argument("--images", nargs="+", type=Path, metavar="FILE", help="photographs (default: bundled)")
    p.add_argument("--batch-sizes", default=None, help="comma-separated, e.g. 1,3,8 (default: the export's)")
    p.add_argument("--checkpoint", type=Path, help="the checkpoint the artifact came from, if it moved")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the parity reports as JSON (keyed by file)")
    p.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    console = make_console(highlight=False, min_width=110, json_path=args.json)
    import models
    from export.artifacts import ArtifactError
    from export.tables import parity_table
    from export.validate import validate_artifact
    from models.transforms import ImageReadError

    try:
        check_output_paths(json=args.json)  # before the work
        sizes = tuple(int(b) for b in args.batch_sizes.split(",")) if args.batch_sizes else None
        graphs = graphs_to_check(args.directory, backend=args.backend)
        reports = validate_artifact(
            args.directory,
            backend=args.backend,
            images=args.images,
            batch_sizes=sizes,
            checkpoint=args.checkpoint,
            graphs=graphs,
        )
    except (ArtifactError, models.CheckpointError, ImageReadError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    for graph in graphs:
        if graph not in reports:  # the library logged why: the fused-SGE kernel cannot be compiled here
            print(f"warning: {graph} not checked: the fused-SGE kernel cannot be compiled here", file=sys.stderr)
    for report in reports.values():
        console.print(parity_table(report))
    if args.json:
        write_json_output(args.json, {graph: report.to_dict() for graph, report in reports.items()})
    failures = [f"{graph}: {failure}" for graph, report in reports.items() for failure in report.failures()]
    if failures:
        print(f"error: parity failed: {'; '.join(failures)}", file=sys.stderr)
        return EXIT_PARITY
    console.print(f"{args.directory}: hashes verified, parity passed on {args.backend} ({', '.join(reports)})")
    return 0


def graphs_to_check(directory: Path, *, backend: str) -> list[str]:
    """The deploy file, and with ONNX Runtime the fused-SGE graph when the artifact has one."""
    from export.artifacts import load_manifest
    from export.ort_session import fused_graph_file

    manifest = load_manifest(directory, verify=False)  # validate_artifact verifies the hashes
    fused = fused_graph_file(manifest) if backend == "onnxruntime" else None
    return [manifest.deploy, *([fused] if fused else [])]


if __name__ == "__main__":
    sys.exit(main())
