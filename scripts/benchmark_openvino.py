"""OpenVINO precisions with SGE: a plain model and an SGE model (plain graph, fused graph as standard ops and as the
extension op, optionally the compact graph) at each precision, and optionally both on ONNX Runtime FP32, timed in
one interleaved run per batch size; ratios; parity with eager FP32 PyTorch on the photographs; per-layer profiles.

python scripts/benchmark_openvino.py --base artifacts/resnet50 --sge artifacts/sge_resnet50 \\
    [--compact DIR] [--reference DIR ...] [--precisions fp32,bf16] [--onnxruntime] [--batch 1] [--threads 2]
    [--duration 3] [--json FILE] [--no-parity] [--no-profile]
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # repo root, not scripts/

import argparse  # noqa: E402
import logging  # noqa: E402

from rich.table import Table  # noqa: E402

from export.artifacts import ArtifactError  # noqa: E402
from runtime.backends.base import BackendUnavailableError  # noqa: E402
from runtime.bench_report import machine_info, versions  # noqa: E402
from runtime.cli import EXIT_INPUT, command_words, is_stdout, make_console, make_parser, write_json_output  # noqa: E402
from runtime.cli_flags import add_batch_size, add_json, add_threads  # noqa: E402
from runtime.latency import BenchmarkConfig  # noqa: E402
from runtime.ov_study import layer_profile, parity_to_eager, ratios, time_variants, variants  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the plain model's artifact (e.g. resnet50)")
    parser.add_argument("--sge", type=Path, required=True, help="the SGE model's artifact (with model.sge_fused.onnx)")
    parser.add_argument("--compact", type=Path, help="the SGE model exported with --sge-form compact")
    parser.add_argument(
        "--reference",
        type=Path,
        action="append",
        default=[],
        help="another attention model's artifact timed beside them (e.g. se_resnet50; repeatable)",
    )
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, int8")
    parser.add_argument("--onnxruntime", action="store_true", help="also both models on ONNX Runtime FP32")
    add_batch_size(parser, default=1, help="images per timed call")
    add_threads(parser, default=2, help="inference threads")
    parser.add_argument("--duration", type=float, default=3.0, help="at least this many seconds per variant")
    parser.add_argument("--no-parity", action="store_true", help="skip the comparison with eager PyTorch")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-layer profiles")
    add_json(parser, help="write every figure, the command and the machine here")
    return parser.parse_args(argv)


def eager_references(artifacts: set[Path], photos):
    """Eager FP32 PyTorch logits of each artifact's model (its default weights) on the photographs."""
    import torch

    import models
    from export.artifacts import load_manifest

    out = {}
    for artifact in artifacts:
        model = models.create_model(load_manifest(artifact).model).eval()
        with torch.no_grad():
            out[artifact] = model(torch.from_numpy(photos)).numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = make_console(json_path=args.json)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    command = command_words(None, "benchmark_openvino", argv)
    try:
        import numpy as np

        from models.transforms import photo_batch

        chosen = variants(
            args.base,
            args.sge,
            precisions,
            compact=args.compact,
            onnxruntime=args.onnxruntime,
            references=args.reference,
        )
        config = BenchmarkConfig(duration_s=args.duration, mode="interleave")
        from runtime.preprocess import preprocessing_for
        from runtime.source import open_source

        photos = photo_batch(preprocessing_for(open_source(args.sge)).size)  # the artifacts' own size, not 224²
        batch = np.resize(photos, (args.batch_size, *photos.shape[1:])).astype(np.float32)
        timings = time_variants(chosen, batch, threads=args.threads, config=config)
        result = {"command": command, "machine": machine_info(), "versions": versions(), "batch": args.batch_size}
        result.update(threads=args.threads, timings=timings, ratios=ratios(chosen, timings))
        if not args.no_profile:
            profiled = [v for v in chosen if v.backend == "openvino"]  # OpenVINO's perf counts
            result["profiles"] = {v.label: layer_profile(v, batch, threads=args.threads) for v in profiled}
        if not args.no_parity:
            reference = eager_references({v.artifact for v in chosen}, photos)
            result["parity_vs_eager_fp32"] = parity_to_eager(chosen, photos, reference, threads=args.threads)
    except (ArtifactError, BackendUnavailableError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    table = Table(title=f"OpenVINO, batch {args.batch_size}, {args.threads} threads, one interleaved run")
    # "graph": plain; sge_native = fused graph as standard ops (the default); sge_fused = the extension op
    for column in ("variant", "ran", "graph", "median ms", "CV %", "× base", "cosine vs eager"):
        table.add_column(column, justify="left" if column in ("variant", "ran", "graph") else "right")
    for label, t in timings.items():
        ratio = result["ratios"].get(label)
        parity = result.get("parity_vs_eager_fp32", {}).get(label)
        table.add_row(
            label,
            t["precision_ran"],
            t["graph"],
            f"{t['median_ms']:.2f}",
            f"{t['cv'] * 100:.1f}",
            f"{ratio:.2f}×" if ratio else "",
            f"{parity['cosine']:.6f}" if parity else "",
        )
    console.print(table)
    machine = result["machine"]
    console.print(f"machine: {machine['cpu_model']}, load {machine.get('load_average_1_5_15')}")
    if args.json:
        write_json_output(args.json, result)
        if not is_stdout(args.json):
            console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
