"""The steps ``sge-deploy export`` runs on a finished ONNX artifact: the FP16 ONNX and TensorRT engine, then the
Triton model repository. Each is ``step(args, result, console)``; the artifact is complete before the first runs."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console


def follow_up_steps(args: argparse.Namespace) -> list[Callable]:
    """Steps that run on a finished ONNX artifact, each ``step(args, result, console)``; TensorRT/Triton go here."""
    steps: list[Callable] = [tensorrt_step] if args.fp16_onnx or args.trt else []
    if args.triton_repo is not None:
        steps.append(triton_repo_step)  # last: the repository takes the engine when one was built
    return steps


def interrupted_note(args: argparse.Namespace, directory: Path, left: list[Callable]) -> str:
    """What an interrupt during the follow-up steps leaves: the new artifact whole, and the steps not finished."""
    names = {tensorrt_step: "the FP16 ONNX" + (" and the TensorRT engine" if args.trt else ""),
             triton_repo_step: "the Triton repository"}  # fmt: skip
    again = [f"`sge-deploy trt-build {directory}`" if step is tensorrt_step else "the export again" for step in left]
    return (
        f"note: the new artifact in {directory} is complete and in place; {' and '.join(names[s] for s in left)} "
        f"{'was' if len(left) == 1 else 'were'} not made (run {' or '.join(dict.fromkeys(again))})"
    )


def triton_repo_step(args: argparse.Namespace, result: Any, console: Console) -> None:
    from export.triton_repo import write_triton_repository

    repo = write_triton_repository(result.output_dir, args.triton_repo, overwrite=True)
    console.print(f"Triton model repository: {repo.root} ({', '.join(repo.models)})")


class EngineNotBuiltError(Exception):
    """``--trt`` asked for an engine that could not be built here (TensorRT missing): exit 4 after the other steps."""


def tensorrt_step(args: argparse.Namespace, result: Any, console: Console) -> None:
    """The FP16-islands ONNX, then the engine; without TensorRT, EngineNotBuiltError (a warning with --trt-optional)."""
    from export.trt.artifact import add_engine, add_fp16_onnx
    from export.trt.cli import trt_options
    from export.trt.errors import TensorRTNotInstalledError

    if args.fp16_onnx or args.trt == "fp16":
        path, parity = add_fp16_onnx(result.output_dir)
        console.print(
            f"{path.name}: vs model.onnx on {parity.cases} photographs, top-1 agreement {parity.top1_agreement:.0%}, "
            f"max |Δlogit| {parity.max_abs:.3g} ({parity.max_rel:.2%} of the largest logit)"
        )
    if not args.trt:
        return
    try:
        engine, _ = add_engine(result.output_dir, options=trt_options(args), validate=args.trt_validate)
    except TensorRTNotInstalledError as err:
        if not args.trt_optional:
            raise EngineNotBuiltError(str(err)) from err
        print(f"warning: {err}; the ONNX artifacts are complete, no engine was built", file=sys.stderr)
        return
    info = engine.info
    console.print(f"{engine.plan.name}: TensorRT {info['tensorrt_version']} {args.trt}, {info['gpu']['name']}")
