"""Re-run parity on an existing artifact directory (hashes verified first): eager PyTorch vs a backend.

Every ONNX graph the artifact deploys is checked: model.onnx and, for SGE models, model.sge_fused.onnx. With --int8,
its INT8 graphs too, with their export gates, on this machine's integer kernels (run it on the deployment CPU).

sge-deploy validate artifacts/sge_resnet50
sge-deploy validate artifacts/sge_resnet50 --images my.jpg --batch-sizes 1,5
sge-deploy validate artifacts/sge_resnet50 --int8
"""

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.cli import (
    EXIT_INPUT,
    EXIT_PARITY,
    check_output_paths,
    make_console,
    make_parser,
    run_main,
    write_json_output,
)
from runtime.cli_flags import add_backends, add_batch_sizes, add_json, artifact_directory

if TYPE_CHECKING:  # no export import at run time here: --help works without torch
    from export.artifacts import Manifest


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = make_parser(__doc__, prog=prog)  # no export/torch import here: --help works without torch
    p.add_argument("directory", type=artifact_directory, help="artifact directory (with manifest.json)")
    add_backends(p, default="onnxruntime", one=True, help="the backend checked against eager PyTorch: onnxruntime")
    p.add_argument("--images", nargs="+", type=Path, metavar="FILE", help="photographs (default: bundled)")
    add_batch_sizes(p, help="parity batch sizes, e.g. 1,3,8 (default: the export's)")
    p.add_argument("--checkpoint", type=Path, help="the checkpoint the artifact came from, if it moved")
    p.add_argument(
        "--int8", action="store_true", help="also re-check the INT8 graphs with their export gates on this CPU"
    )
    add_json(p, help="write the parity reports as JSON (keyed by file)")
    p.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    return p


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    backend = args.backends[0]
    if backend != "onnxruntime":  # refused after the model was rebuilt, as an "unknown backend"
        parser.error(
            f"--backend {backend}: validate checks the artifact's graphs on onnxruntime only; time or compare other "
            "backends with benchmark or evaluate"
        )
    console = make_console(highlight=False, min_width=110, json_path=args.json)

    import models
    from export.artifacts import ArtifactError
    from export.tables import int8_table, parity_table
    from export.validate import check_graphs, check_int8_graphs, open_reference
    from models.transforms import ImageReadError

    try:
        check_output_paths(json=args.json, inputs=[args.directory, *(args.images or ())])  # before the work
        graphs = graphs_to_check(args.directory, backend=backend, int8=args.int8)
        # the hashes are verified and the eager model rebuilt once, for the FP32 and the INT8 checks alike
        reference = open_reference(
            args.directory, images=args.images, batch_sizes=args.batch_sizes, checkpoint=args.checkpoint
        )
        reports = check_graphs(reference, backend=backend, graphs=graphs)
        int8 = check_int8_graphs(reference) if args.int8 else None
    except (ArtifactError, models.CheckpointError, ImageReadError, ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    for graph in graphs:
        if graph not in reports:  # the library logged why: the fused SGE kernel is not available here
            print(
                f"warning: {graph} not checked: the fused SGE graph cannot run here (the warning above says why)",
                file=sys.stderr,
            )
    for report in reports.values():
        console.print(parity_table(report))
    if int8 is not None:
        console.print(int8_table(int8))
    int8_graphs = int8.graphs if int8 is not None else []
    if args.json:
        as_json = {graph: report.to_dict() for graph, report in reports.items()}
        write_json_output(args.json, as_json | {graph.name: graph.parity.to_dict() for graph in int8_graphs})
    failures = [f"{graph}: {failure}" for graph, report in reports.items() for failure in report.failures()]
    if int8 is not None:
        from export.int8.stage import every_case_phrase

        failures += int8.failure_summary(every_case=every_case_phrase(args.json))
        # a CPU graph the export dropped: this artifact has no INT8 graph a CPU runner may open
        failures += export_failed_cpu_graphs(reference.manifest)
    if failures:
        hint = int8_remedy(reference.manifest, args.directory, int8) if int8 is not None and not int8.passed else ""
        print(f"error: parity failed: {'; '.join(failures)}{hint}", file=sys.stderr)
        return EXIT_PARITY
    checked = [*reports, *(graph.name for graph in int8_graphs)]
    console.print(f"{args.directory}: hashes verified, parity passed on {backend} ({', '.join(checked)})")
    return 0


def graphs_to_check(directory: Path, *, backend: str, int8: bool = False) -> list[str]:
    """The deploy file, and with ONNX Runtime the fused-SGE graph when the artifact has one; with ``int8`` an
    artifact without INT8 graphs is refused here, before the eager model is rebuilt (it took 37 s to say so)."""
    from export.artifacts import ArtifactError, load_manifest
    from export.int8.roles import SCHEME_OF_ROLE, file_with_role, missing_int8_graph
    from export.ort_sge.session import fused_graph_file

    manifest = load_manifest(directory, verify=False)  # open_reference verifies the hashes
    if int8 and not any(file_with_role(manifest, role) for role in SCHEME_OF_ROLE):
        raise ArtifactError(
            f"{directory} has no INT8 graph to check: {missing_int8_graph(manifest, fused=True, directory=directory)}"
            "; or drop --int8"
        )
    fused = fused_graph_file(manifest) if backend == "onnxruntime" else None
    return [manifest.deploy, *([fused] if fused else [])]


def export_failed_cpu_graphs(manifest: "Manifest") -> list[str]:
    """The CPU INT8 graphs (U8S8) the export made and left out for failing their gate, as failures: ``validate
    --int8`` otherwise checked only TensorRT's S8S8 graph and said "parity passed" for an artifact whose INT8 runners
    all refuse it."""
    from export.int8.roles import (
        EIGHT_BIT_WEIGHTS,
        INT8_FUSED_NAME,
        INT8_NAME,
        failed_int8_graphs,
        recorded_int8_graphs,
    )

    bits = {name: graph.get("weight_bits") for name, graph in recorded_int8_graphs(manifest).items()}

    def remedy(name: str) -> str:  # 8-bit weights already: more bits are not the way out
        if bits.get(name) == 8:
            return "re-export it with other calibration (--calib-images DIR of your own photographs)"
        return f"re-export it (README: INT8, weight range: {EIGHT_BIT_WEIGHTS})"

    return [
        f"{name} failed its INT8 gate at export ({report}) and is not in the artifact: {remedy(name)}"
        for name, report in failed_int8_graphs(manifest).items()
        if name in (INT8_NAME, INT8_FUSED_NAME)
    ]


def int8_remedy(manifest, directory, int8) -> str:
    """What to do about INT8 graphs that failed here: re-export with 7-bit weights where 8-bit ones saturate on this
    CPU (no VNNI), else calibrate again."""
    from export.int8.roles import saturation_note
    from export.reexport import export_command

    failed = [g.name for g in int8.graphs if not g.passed]
    notes = [saturation_note(manifest, name, backend="validate", directory=directory) for name in failed]
    saturating = next((note for note in notes if note), None)
    if saturating:
        return f"; {saturating}"
    command = export_command(manifest, directory=directory, adding=("--int8",), same_calibration=False)
    return f"; re-export with other calibration: `{command} --calib-images DIR` of your own photographs"
