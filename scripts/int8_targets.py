"""The INT8 targets on this CPU: sge_resnet50 and resnet50, FP32 and INT8, one interleaved run, with ORT's profile.

python scripts/int8_targets.py artifacts/sge_resnet50 artifacts/resnet50 --threads 2 --batch-sizes 1,8 \
    --rounds 40 --json scripts/reports/int8_targets.json
(both artifacts exported with --int8; README: INT8)
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # repo root, not scripts/

import json  # noqa: E402
import shlex  # noqa: E402

from runtime.cli import EXIT_INPUT, command_words, is_stdout, make_parser, write_json_output  # noqa: E402
from runtime.cli_flags import add_batch_sizes, add_json, add_threads  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("sge_artifact", type=Path)
    parser.add_argument("resnet_artifact", type=Path)
    add_threads(parser, default=2, help="inference threads")
    add_batch_sizes(parser, default=(1, 8), help="batch sizes to time")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--profile-runs", type=int, default=20)
    parser.add_argument("--no-openvino", dest="openvino", action="store_false")
    add_json(parser, help="write the report here")
    args = parser.parse_args(argv)
    from export.artifacts import ArtifactError
    from runtime.int8_study import run_study

    try:
        study = run_study(
            args.sge_artifact,
            args.resnet_artifact,
            threads=args.threads,
            batch_sizes=tuple(args.batch_sizes),
            rounds=args.rounds,
            profile_runs=args.profile_runs,
            openvino=args.openvino,
            command=shlex.join(command_words(None, "int8_targets", argv)),
        )
    except (ArtifactError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    report = study.to_dict()
    out = sys.stderr if is_stdout(args.json) else sys.stdout  # `--json -`: stdout carries only the JSON
    print(json.dumps({k: report[k] for k in ("machine", "ratios", "targets", "accuracy")}, indent=1), file=out)
    for name, prof in study.profile.items():
        print(name, prof["kernel_ms_per_run"], "ms kernel;", json.dumps(prof["by_op_ms_per_run"]), file=out)
    if args.json:
        write_json_output(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
