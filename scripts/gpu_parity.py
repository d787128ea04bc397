"""An artifact on the GPU (eager PyTorch FP32/FP16, ONNX Runtime's CUDA provider with TF32 off and on) against FP32
eager PyTorch on the CPU, on seeded random inputs and the bundled photographs.

python scripts/gpu_parity.py artifacts/sge_resnet50 --batch-size 8 --json scripts/reports/gpu_parity_h200.json
(needs a CUDA torch and onnxruntime-gpu; a variant whose backend is missing is reported as skipped)
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # repo root, not scripts/

import shlex  # noqa: E402

from runtime.cli import command_words, is_stdout, make_parser, write_json_output  # noqa: E402
from runtime.cli_flags import add_batch_size, add_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("artifact", type=Path)
    add_batch_size(parser, default=8, help="random inputs per batch")
    add_json(parser, help="write the report here")
    args = parser.parse_args(argv)
    import numpy as np

    from export.artifacts import ArtifactError
    from models.transforms import photo_batch
    from runtime.bench_report import machine_info, versions
    from runtime.gpu_parity import gpu_parity
    from runtime.source import open_source

    try:
        size = open_source(args.artifact).input_spec.shape[-2:]
        batches = {
            "random": np.random.default_rng(0).standard_normal((args.batch_size, 3, *size)).astype(np.float32),
            "photos": photo_batch(tuple(size)),
        }
        results = gpu_parity(args.artifact, batches)
    except (ArtifactError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = sys.stderr if is_stdout(args.json) else sys.stdout  # `--json -`: stdout carries only the JSON
    print(f"{'variant':24s} {'input':7s} {'max|Δ|':>9s} {'rel L2':>9s} {'cosine':>9s} {'top-1':>6s}", file=out)
    for r in results:
        if r.skipped:
            print(f"{r.name:24s} skipped: {r.skipped}", file=out)
            continue
        for kind, s in (("random", r.random), ("photos", r.photos)):
            print(f"{r.name:24s} {kind:7s} {s.max_abs:9.2e} {s.rel_l2:9.2e} {s.cosine:9.6f} {s.top1:6.0%}", file=out)
    if args.json:
        command = shlex.join(command_words(None, "gpu_parity", argv))
        report = {
            "command": command,
            "machine": machine_info(),  # CPU, and the GPUs nvidia-smi lists
            "versions": versions(),
            "reference": "torch:cpu:fp32",
            "variants": [r.to_dict() for r in results],
        }
        write_json_output(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
