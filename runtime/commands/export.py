"""Export a model to a verified ONNX artifact directory: model.onnx, parity.json, manifest.json.

sge-deploy export --model sge_resnet50                      # → artifacts/sge_resnet50/
sge-deploy export --model se_resnet50 --checkpoint se.pth --output out/se --input-size 256 256
sge-deploy export --model my_models.resnext:sge_resnext26 --output out/resnext   # your own nn.Module factory
sge-deploy export --model sge_resnet50 --int8 [--calib-images DIR] [--calib-method minmax] [--calib-count 32]
                  [--int8-weight-bits 7]
"""

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from runtime.cli import (
    EXIT_INPUT,
    EXIT_NO_ENGINE,
    EXIT_PARITY,
    OutputPathError,
    check_output_dir,
    check_output_paths,
    check_outside_artifacts,
    is_stdout,
    make_console,
    make_parser,
    options_given,
    run_main,
    write_json_output,
)
from runtime.cli_flags import add_batch_sizes, add_input_size, add_json, add_output
from runtime.commands.export_follow_up import EngineNotBuiltError, follow_up_steps, interrupted_note


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from export.spec import EXPORTERS, MAX_INPUT_SIDE, SGE_FORMS, SIMPLIFIERS, ExportSpec
    from export.trt.cli import add_trt_arguments

    d = ExportSpec()
    p = make_parser(__doc__, prog=prog)
    p.add_argument(
        "--model",
        help="registry name, e.g. sge_resnet50 (see --list-models), or package.module:factory, a function that "
        "returns your own nn.Module (importable from the current directory or the installed packages)",
    )
    p.add_argument("--checkpoint", type=Path, help="weights (.pth/.pt/.pth.tar/.safetensors); default weights without")
    add_output(p, metavar="DIR", help="artifact directory (default: artifacts/<model>/)")
    add_input_size(p, default=d.input_size, help=f"example and parity input size, each side 1..{MAX_INPUT_SIDE}")
    p.add_argument("--dynamic-hw", action="store_true", help="make height and width symbolic too (batch always is)")
    p.add_argument("--opset", type=int, default=d.opset, help="ONNX opset (see the README)")
    p.add_argument("--exporter", choices=EXPORTERS, default=d.exporter)
    p.add_argument("--simplifier", choices=SIMPLIFIERS, default=d.simplifier)
    p.add_argument(
        "--sge-form",
        choices=SGE_FORMS,
        default=d.sge_form,
        help="SGE graph: official (default) or compact (same numerics, no Reshape; faster in OpenVINO; README)",
    )
    p.add_argument(
        "--no-fused-sge",
        dest="fused_sge",
        action="store_false",
        help="SGE models: skip model.sge_fused.onnx (SGE + residual as one compiled op for ONNX Runtime CPU; README)",
    )
    gates = "given explicitly, --atol/--rtol are enforced as given (no FP32 noise-floor pass; README: Export)"
    p.add_argument("--atol", type=float, help=f"max abs difference gate (default {d.atol:g}); {gates}")
    p.add_argument("--rtol", type=float, help=f"relative L2 gate (default {d.rtol:g}); {gates}")
    add_batch_sizes(p, default=d.batch_sizes, help="parity batch sizes, e.g. 1,3,8")
    p.add_argument("--images", nargs="+", type=Path, metavar="FILE", help="photographs for parity (default: bundled)")
    p.add_argument("--init", choices=("calibrated", "random"), default="calibrated", help="default-weights init")
    add_json(p, help="write the result (paths, op counts, parity) as JSON")
    p.add_argument("--fp16-onnx", action="store_true", help="also write model_fp16.onnx (FP32 islands around SGE)")
    add_trt_arguments(p)
    p.add_argument(
        "--trt-optional",
        action="store_true",
        help="without TensorRT, warn and exit 0 instead of exit 4 (no engine built)",
    )
    p.add_argument(
        "--triton-repo", type=Path, metavar="DIR", help="also write a Triton model repository (DIR/<model>/)"
    )
    p.add_argument("--int8", action="store_true", help="also write the calibrated INT8 Q/DQ graphs (README: INT8)")
    p.add_argument(
        "--calib-images",
        nargs="+",
        type=Path,
        metavar="DIR|FILE",
        help="INT8 calibration photographs (default: bundled)",
    )
    p.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax")
    p.add_argument("--calib-count", type=int, default=32, metavar="N", help="INT8 calibration samples")
    p.add_argument(
        "--int8-weight-bits",
        type=int,
        choices=(7, 8),
        default=7,
        help="the U8S8 CPU graphs' weight range: 7 runs the same on every x86 CPU; 8 keeps one more bit but "
        "saturates on CPUs without VNNI (AVX2 only)",
    )
    p.add_argument("--list-models", action="store_true", help="list the model names and exit")
    p.add_argument("-v", "--verbose", action="store_true", help="log the library's progress")
    return p


def input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean a bad input or a failed step: one line on stderr, exit 2."""
    import models
    from export.artifacts import ArtifactError
    from export.fp16 import Fp16ConversionError
    from export.int8.calibration import CalibrationImageError, Int8RequestError
    from export.int8.quantize import QuantizationError
    from export.onnx_export import OnnxExportError
    from export.simplify import SimplifyError
    from export.source import ModelOutputError
    from export.spec import SpecError
    from export.triton_config import TritonConfigError
    from export.trt.build import TrtBuildError, TrtRequestError
    from export.trt.calibrate import CalibrationDataError
    from models.factory import FactoryError
    from models.transforms import ImageReadError

    return (
        OutputPathError,
        FactoryError,
        ModelOutputError,
        models.UnknownModelError,
        models.CheckpointError,
        models.FeatureTooSmallError,
        models.InputShapeError,
        SpecError,
        ImageReadError,
        ArtifactError,
        OnnxExportError,
        SimplifyError,
        Fp16ConversionError,
        TrtRequestError,
        TrtBuildError,
        CalibrationDataError,
        CalibrationImageError,
        Int8RequestError,
        QuantizationError,
        TritonConfigError,
        ImportError,
        OSError,
        argparse.ArgumentTypeError,
    )


@contextmanager
def stage_progress(console: Console) -> Iterator[Callable[[str, float | None], None]]:
    """The export's progress callback: the rich display in a terminal, else one plain line per finished stage."""
    if not console.is_terminal:  # CI or a log file: each line as its stage ends, not all at the end

        def print_stage(stage: str, seconds: float | None) -> None:
            if seconds is not None:
                print(f"{stage}: {seconds:.1f} s", file=console.file, flush=True)

        yield print_stage
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        tasks: dict[str, int] = {}

        def on_stage(stage: str, seconds: float | None) -> None:
            if seconds is None:
                tasks[stage] = bar.add_task(f"{stage}…", total=1)
            else:
                bar.update(tasks[stage], completed=1, description=f"{stage} ({seconds:.1f} s)")

        yield on_stage


# options that mean something only beside another: given without it, they were ignored without a word
DEPENDENT_OPTIONS = {
    "int8": ("calib_images", "calib_count", "calib_method", "int8_weight_bits"),
    "trt": (
        "trt_batch",
        "trt_workspace",
        "trt_timing_cache",
        "trt_calib_dir",
        "trt_opt_level",
        "trt_log",
        "trt_validate",
    ),
}


def orphan_option(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The refusal for an option given without the one it belongs to (``--calib-count`` without ``--int8``)."""
    for owner, dests in DEPENDENT_OPTIONS.items():
        given = options_given(parser, args, dests) if not getattr(args, owner) else []
        if given:
            return f"{given[0]} is for --{owner}; add --{owner}"
    return None


def int8_options(args: argparse.Namespace) -> Any:
    if not args.int8:
        return None
    from export.int8.calibration import CalibrationOptions

    return CalibrationOptions(
        images=tuple(args.calib_images or ()),
        method=args.calib_method,
        count=args.calib_count,
        cpu_weight_bits=args.int8_weight_bits,
    )


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    orphan = orphan_option(parser, args)
    if orphan:
        print(f"error: {orphan}", file=sys.stderr)
        return EXIT_INPUT
    console = make_console(highlight=False, min_width=110, json_path=args.json)  # the parity table needs ~105 columns
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.list_models:
        import models

        console.print("\n".join(models.list_models()))
        return 0
    if not args.model:
        print("error: give --model NAME (see --list-models) or --model package.module:factory", file=sys.stderr)
        return EXIT_INPUT

    import models
    from export.int8.roles import EIGHT_BIT_WEIGHTS
    from export.pipeline import export_model
    from export.spec import ExportSpec
    from export.tables import ops_table, parity_table, stage_table
    from export.triton_repo import triton_batch_problem
    from export.trt.errors import TrtRequestError
    from export.trt.route import batch_order_problem

    try:
        # before the work; nothing inside the artifact, which would hold a file its manifest does not record
        from export.pipeline import default_output_dir

        output = args.output or default_output_dir(args.model)  # a factory's name is known only once it loads
        check_output_paths(json=args.json, inputs=[args.checkpoint, *(args.images or ())], artifacts=[output])
        check_outside_artifacts(output=args.output)
        check_outside_artifacts(triton_repo=args.triton_repo, artifacts=[output])
        both = output is not None and args.triton_repo is not None  # a factory's default is known after its load
        if both and Path(output).resolve().is_relative_to(args.triton_repo.resolve()):
            raise OutputPathError(  # the repository's model folder replaced the artifact just reported
                f"--output {output} lies in --triton-repo {args.triton_repo}, whose model folders are replaced whole; "
                "give an --output outside the repository"
            )
        for flag in ("json", "triton_repo"):  # absolute now: --output . swaps the working directory out at the commit
            value = getattr(args, flag)
            if value is not None and not is_stdout(value):
                setattr(args, flag, Path(value).absolute())
        if args.output is not None:  # a read-only parent would fail at the lock file, naming it rather than --output
            check_output_dir(args.output, flag="--output")
        if args.triton_repo is not None:
            check_output_dir(args.triton_repo, flag="--triton-repo")
        batch_problem = batch_order_problem(args.trt_batch) if args.trt else None
        if batch_problem:  # derive_profile's own check; it failed after every stage, with the artifact replaced
            raise TrtRequestError(batch_problem)
        served = triton_batch_problem(args.trt_batch[0]) if args.trt and args.triton_repo is not None else None
        if served:  # engine_max_batch's refusal, before the work
            lo, opt, hi = args.trt_batch
            raise TrtRequestError(
                f"--trt-batch {lo} {opt} {hi} for --triton-repo: {served}; give --trt-batch 1 {opt} {hi}"
            )
    except input_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT

    fp16_follows = bool(args.fp16_onnx or args.trt in ("fp16", "int8"))  # an FP16 graph or engine comes after
    try:
        int8 = int8_options(args)
        with stage_progress(console) as on_stage:
            result = export_model(
                args.model,
                args.output,
                checkpoint=args.checkpoint,
                init=args.init,
                images=args.images,
                check=False,
                progress=on_stage,
                input_size=tuple(args.input_size),
                dynamic_hw=args.dynamic_hw,
                opset=args.opset,
                exporter=args.exporter,
                simplifier=args.simplifier,
                sge_form=args.sge_form,
                fused_sge=args.fused_sge,
                atol=ExportSpec.atol if args.atol is None else args.atol,
                rtol=ExportSpec.rtol if args.rtol is None else args.rtol,
                noise_floor=args.atol is None and args.rtol is None,  # explicit gates are enforced as given
                batch_sizes=args.batch_sizes,
                int8=int8,
                fp16_follows=fp16_follows,  # an unsafe FP16 graph is refused once the model loads, before any file
            )
    except input_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT

    console.print(ops_table(result.ops_before, result.ops_after, simplifier=result.spec.simplifier))
    console.print(parity_table(result.parity))
    if result.fused_parity is not None:
        console.print(parity_table(result.fused_parity))
    console.print(stage_table(result.stage_seconds))
    if args.json:
        write_json_output(args.json, result.to_dict())
    if not result.passed:
        failures = [*result.parity.failures(), *(result.fused_parity.failures() if result.fused_parity else [])]
        print(f"error: parity failed ({'; '.join(failures)}); no manifest written", file=sys.stderr)
        return EXIT_PARITY
    int8_failure = None  # the FP32 artifact is complete: the steps asked for still run (a --triton-repo was left stale)
    if result.int8 is not None:
        from export.int8.stage import every_case_phrase
        from export.tables import int8_table

        every_case = every_case_phrase(args.json)
        console.print(int8_table(result.int8))
        if not result.int8.passed:
            # 7-bit CPU weights cost small or low-resolution models most (sge_resnet18 at 64²: cosine 0.986 with 7
            # bits, 0.993 with 8), and the user may know their CPUs sum in 32 bits
            seven_bit = any(g.passed is False and g.weight_bits == 7 for g in result.int8.graphs)
            hint = f", or {EIGHT_BIT_WEIGHTS} (README: INT8, weight range)" if seven_bit else ""
            where = (
                f"the artifact already in {result.output_dir} was left as it was (nothing written)"
                if result.kept_previous
                else "those graphs are not in the manifest"
            )
            int8_failure = (
                f"error: INT8 parity failed ({'; '.join(result.int8.failure_summary(every_case=every_case))}); "
                f"{where} (re-calibrate: "
                f"--calib-images with more photographs, or --calib-method{hint})"
            )
    if result.kept_previous:  # no new artifact: nothing for the follow-up steps to work on
        print(int8_failure, file=sys.stderr)
        return EXIT_PARITY
    from export.trt.inspect import EngineParityError

    missing_engine = None
    steps = follow_up_steps(args)
    try:
        for index, step in enumerate(steps):
            try:
                step(args, result, console)
            except EngineNotBuiltError as err:
                missing_engine = err  # the later steps (Triton repository) still run
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the new artifact is in place already, whole
                print(interrupted_note(args, result.output_dir, steps[index:]), file=sys.stderr)
                raise
    except input_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except EngineParityError as err:  # the engine is kept, with its parity and layer JSON, for inspection
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PARITY
    fused = f"; ONNX Runtime CPU: {result.fused_path.name}" if result.fused_path else ""
    files = f"deploy {result.onnx_path.name}{fused}; manifest {result.manifest_path.name}"
    console.print(f"artifact: {result.output_dir} ({files})")
    if int8_failure is not None:
        print(int8_failure, file=sys.stderr)
        return EXIT_PARITY
    if missing_engine is not None:
        print(
            f"error: no TensorRT engine was built: {missing_engine}; the ONNX artifacts are complete "
            "(add --trt-optional to accept an artifact without the engine)",
            file=sys.stderr,
        )
        return EXIT_NO_ENGINE
    return 0
