"""Look at what a model's attention does on a photograph: SGE group gates, CBAM spatial gate, GC softmax map.

    sge-deploy inspect --model sge_resnet50 --image astronaut
    sge-deploy inspect --model cbam_resnet50 --image photo.jpg --checkpoint cbam.pth --output report/

Writes per-stage PNGs, stats.png, stats.json and index.md (written last) into --output.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from models.transforms import PHOTO_NAMES
from runtime.cli import EXIT_INPUT, check_output_dir, make_console, make_parser, run_main
from runtime.cli_flags import add_input_size, add_output


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean a bad input: one line, exit 2 (imported here: the models need torch)."""
    from models import CheckpointError, FeatureTooSmallError, InputShapeError, UnknownModelError
    from models.inspection import NonFiniteActivationError, NoSpatialAttentionError
    from models.transforms import ImageReadError

    return (
        UnknownModelError,
        NoSpatialAttentionError,
        ImageReadError,
        CheckpointError,
        FeatureTooSmallError,
        InputShapeError,
        IndexError,
        ImportError,
        NonFiniteActivationError,
    )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = make_parser(__doc__.splitlines()[0], prog=prog)
    p.add_argument("--model", default="sge_resnet50", help="model name with SGE, CBAM, SA or GC attention")
    p.add_argument("--checkpoint", type=Path, help="weights (.pth/.pth.tar/.safetensors); default weights otherwise")
    p.add_argument("--image", required=True, help=f"image file, or a bundled photograph: {', '.join(PHOTO_NAMES)}")
    add_output(p, metavar="DIR", help="output folder (default: artifacts/inspect/<model>_<image>)")
    p.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    add_input_size(p, help="input size (default: the model's)")
    p.add_argument("--block", type=int, default=-1, help="which block of each stage to draw (default: the last)")
    p.add_argument("--groups-shown", type=int, default=4, help="SGE groups drawn before/after (most selective)")
    p.add_argument("--init", choices=("calibrated", "random"), default="calibrated", help="default-weights init")
    return p


def check_args(args: argparse.Namespace, out: Path) -> None:
    """Refuse (ValueError) what would fail only after the forward pass, or say the wrong thing there."""
    import importlib.util

    from export.spec import MAX_INPUT_SIDE, fits_input_side

    if importlib.util.find_spec("matplotlib") is None:  # the figures are the output: say so before the model loads
        raise ValueError("inspect draws its figures with matplotlib: pip install 'sge-deploy[plot]'")
    check_output_dir(out, flag="--output")
    if args.groups_shown < 1:
        raise ValueError(f"--groups-shown must be at least 1; got {args.groups_shown}")
    if args.input_size and not fits_input_side(*args.input_size):
        raise ValueError(
            f"--input-size must be 1..{MAX_INPUT_SIDE} on each side; got {args.input_size[0]} {args.input_size[1]}"
        )
    if args.checkpoint is not None and args.checkpoint.is_dir():  # the loader would say "does not exist"
        raise ValueError(f"--checkpoint {args.checkpoint} is a directory; give a .pth, .pt or .safetensors file")


def print_summary(result: Any) -> None:
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


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.output or Path("artifacts") / "inspect" / f"{args.model}_{Path(args.image).stem}"
    try:
        check_args(args, out)  # before the forward pass
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    try:
        from models.inspection import inspect_model

        result = inspect_model(
            args.model,
            image=args.image,
            out_dir=out,
            checkpoint=args.checkpoint,
            size=tuple(args.input_size) if args.input_size else None,
            init=args.init,
            block=args.block,
            groups_shown=args.groups_shown,
        )
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    print_summary(result)
    return 0
