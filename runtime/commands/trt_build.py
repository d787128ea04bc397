"""Build a TensorRT engine into an existing artifact directory, without re-exporting (like trtexec --saveEngine).

sge-deploy trt-build artifacts/sge_resnet50 --trt fp16 --trt-batch 1 8 32 --trt-opt-level 3 \\
    --trt-timing-cache trt.cache --trt-log build.log -v

Writes model.plan, model.plan.json (build time, engine size, ...), model.plan.parity.json (engine vs ONNX Runtime
FP32 on the photographs) and model.plan.layers.json (engine inspector), all recorded in manifest.json.
Exit codes: 0 built and validated, 1 validation failed (the files stay for inspection), 2 bad input, 4 no TensorRT.
"""

import argparse
import logging
import sys

from runtime.cli import EXIT_INPUT, EXIT_NO_ENGINE, EXIT_PARITY, make_parser, run_main
from runtime.cli_flags import artifact_directory


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from export.trt.cli import add_trt_arguments

    p = make_parser(__doc__, prog=prog)
    p.add_argument("artifact", type=artifact_directory, help="artifact directory written by sge-deploy export")
    add_trt_arguments(p, required=True)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress, and TensorRT's log at VERBOSE")
    return p


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    from export.artifacts import ArtifactError
    from export.trt.artifact import add_engine
    from export.trt.build import TensorRTNotInstalledError, TrtBuildError, TrtRequestError
    from export.trt.calibrate import CalibrationDataError
    from export.trt.cli import trt_options
    from export.trt.inspect import EngineParityError

    try:
        engine, validation = add_engine(args.artifact, options=trt_options(args), validate=args.trt_validate)
    except TensorRTNotInstalledError as err:
        print(f"error: no engine built: {err}", file=sys.stderr)
        return EXIT_NO_ENGINE
    except (ArtifactError, TrtRequestError, TrtBuildError, CalibrationDataError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except EngineParityError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_PARITY
    info, build = engine.info, engine.info["build"]
    print(
        f"{engine.plan}: TensorRT {info['tensorrt_version']} {info['precision']} on {info['gpu']['name']}, "
        f"built in {build['seconds']:.1f} s, {build['engine_bytes'] / 1e6:.1f} MB"
    )
    if validation is not None:
        p = validation.parity
        print(
            f"vs ONNX Runtime FP32 on {p.cases} photographs: max |Δ| {p.max_rel:.3%} of the largest logit, top-1 "
            f"agreement {p.top1_agreement:.0%}; SGE normalisation in FP32: "
            f"{'proven' if validation.islands.proven else 'not proven (see model.plan.layers.json)'}"
        )
    return 0
