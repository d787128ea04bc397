"""The ``--trt-*`` command-line options, shared by scripts/export.py and scripts/trt_build.py (argparse only)."""

import argparse
from pathlib import Path

from export.trt import PRECISIONS
from export.trt.route import TrtBuildOptions


def add_trt_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument(
        "--trt", choices=PRECISIONS, required=required, help="build a TensorRT engine (see README: TensorRT)"
    )
    parser.add_argument("--trt-batch", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"), default=(1, 8, 32))
    parser.add_argument("--trt-workspace", type=float, default=4.0, metavar="GB", help="TensorRT workspace limit")
    parser.add_argument(
        "--trt-timing-cache",
        type=Path,
        metavar="FILE",
        help="TensorRT timing cache: used if TensorRT accepts it for this GPU, saved after the build",
    )
    parser.add_argument("--trt-calib-dir", type=Path, metavar="DIR", help="INT8 calibration images (TensorRT 10.x)")
    parser.add_argument(
        "--trt-opt-level",
        type=int,
        choices=range(6),  # refused at parsing, before an export or TensorRT's import
        metavar="0-5",
        help="builder optimisation level (TensorRT's default: 3)",
    )
    parser.add_argument("--trt-log", type=Path, metavar="FILE", help="write TensorRT's VERBOSE build log here")
    parser.add_argument(
        "--trt-no-validate",
        dest="trt_validate",
        action="store_false",
        help="skip the engine's parity and FP32-layer checks after the build",
    )


def trt_options(args: argparse.Namespace) -> TrtBuildOptions:
    """The build options from parsed ``--trt-*`` arguments (``-v`` also raises TensorRT's log to VERBOSE)."""
    return TrtBuildOptions(
        precision=args.trt,
        batch=tuple(args.trt_batch),
        workspace_gb=args.trt_workspace,
        timing_cache=args.trt_timing_cache,
        calib_dir=args.trt_calib_dir,
        opt_level=args.trt_opt_level,
        verbose=bool(getattr(args, "verbose", False)),
        log_file=args.trt_log,
    )
