"""Look at what a model's attention does on a photograph: SGE group gates, CBAM spatial gate, GC softmax map.

    python scripts/inspect.py --model sge_resnet50 --image astronaut
    python scripts/inspect.py --model cbam_resnet50 --image photo.jpg --checkpoint cbam.pth --out report/

Writes per-stage PNGs, stats.png, stats.json and index.md (written last) into --out.
"""

import sys
from pathlib import Path

# The repo root, not scripts/, first on the path: this file's name would otherwise shadow the stdlib `inspect`.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import logging  # noqa: E402

from models import CheckpointError, FeatureTooSmallError, InputShapeError, UnknownModelError  # noqa: E402
from models.inspection import InspectionResult, NoSpatialAttentionError, inspect_model  # noqa: E402
from models.transforms import PHOTO_NAMES, ImageReadError  # noqa: E402
from runtime.cli import make_console, make_parser, run_main  # noqa: E402

USER_ERRORS = (
    UnknownModelError,
    NoSpatialAttentionError,
    ImageReadError,
    CheckpointError,
    FeatureTooSmallError,
    InputShapeError,
    IndexError,
    ImportError,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="sge_resnet50", help="model name with SGE, CBAM, SA or GC attention")
    p.add_argument("--checkpoint", type=Path, help="weights (.pth/.pth.tar/.safetensors); default weights otherwise")
    p.add_argument("--image", required=True, help=f"image file, or a bundled photograph: {', '.join(PHOTO_NAMES)}")
    p.add_argument("--out", type=Path, help="output folder (default: artifacts/inspect/<model>_<image>)")
    p.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the model's)")
    p.add_argument("--block", type=int, default=-1, help="which block of each stage to draw (default: the last)")
    p.add_argument("--groups-shown", type=int, default=4, help="SGE groups drawn before/after (most selective)")
    p.add_argument("--init", choices=("calibrated", "random"), default="calibrated", help="default-weights init")
    return p.parse_args(argv)


def print_summary(result: InspectionResult) -> None:
    from rich.table import Table

    kind = "/".join(dict.fromkeys(s.kind for s in result.stages))
    table = Table(title=f"{result.model} ({kind}) on {result.image}", caption=result.weights)
    for col in ("stage", "map", "var in", "var out", "spread in", "spread out", "ĉ var", "enhanced"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in result.stages:
        table.add_row(
            s.stage,
            f"{s.height}×{s.width}",
            f"{s.var_before:.4g}",
            f"{s.var_after:.4g}",
            f"{s.spread_before:.3f}",
            f"{s.spread_after:.3f}",
            "—" if s.similarity_var is None else f"{s.similarity_var:.3f}",
            f"{s.enhanced_share:.1%}",
        )
    console = make_console()
    console.print(table)
    console.print(f"report: {result.out_dir / 'index.md'} ({len(result.files)} files)")


def main(argv: list[str] | None = None) -> int:
    return run_main(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or Path("artifacts") / "inspect" / f"{args.model}_{Path(args.image).stem}"
    try:
        result = inspect_model(
            args.model,
            image=args.image,
            out_dir=out,
            checkpoint=args.checkpoint,
            size=tuple(args.size) if args.size else None,
            init=args.init,
            block=args.block,
            groups_shown=args.groups_shown,
        )
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
