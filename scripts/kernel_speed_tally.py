"""Tally kept kernel_speed.py runs: sge_fused / resnet50 per round over every run of one timing mode, by CPU and
code paths (median, range, runs within the 1.02 target, and how the ratio moves with the machine's speed).

    python scripts/kernel_speed_tally.py scripts/reports/kernel_speed_scheduled_amd_zen4.json --min-rounds 2000
    python scripts/kernel_speed_tally.py scripts/reports/kernel_speed_scheduled_amd_zen4.json --mode isolated
    python scripts/kernel_speed_tally.py REPORT.json --runs 47-71 --json -
    python scripts/kernel_speed_tally.py scripts/reports/kernel_speed_cpu_placement_amd_zen4.json --by-placement

The study itself: runtime/kernel_speed/tally.py.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # repo root, not scripts/

from runtime.cli import EXIT_INPUT, check_output_paths, is_stdout, make_parser, write_json_output  # noqa: E402
from runtime.cli_flags import add_json  # noqa: E402
from runtime.kernel_speed.tally import MODES, Selection, TallyInputError, parse_runs, tally, tally_lines  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("reports", type=Path, nargs="+", help='kernel_speed.py reports (one run, or {"runs": [...]})')
    p.add_argument("--mode", choices=MODES, default="shared-pool", help="the timing mode counted")
    p.add_argument("--threads", type=int, default=2, metavar="N", help="only runs timed with N intra-op threads")
    p.add_argument("--min-rounds", type=int, default=0, metavar="N", help="only runs of at least N timed calls each")
    p.add_argument(
        "--extra-sessions",
        action="store_true",
        help="also runs that timed more than the two graphs (the native build, floors): their ratio sits higher",
    )
    p.add_argument(
        "--by-placement",
        action="store_true",
        help="the runs of kernel_speed.py --cpu-placement instead: each placement's per-round ratio over the runs, "
        "and how far two L3s put a run above one",
    )
    p.add_argument("--runs", metavar="A-B", help="only the runs numbered A to B in each report (A-: to the last)")
    add_json(p, help="the tally")
    args = p.parse_args(argv)
    try:
        first, last = parse_runs(args.runs) if args.runs else (1, None)
        if args.min_rounds < 0:
            raise ValueError(f"--min-rounds {args.min_rounds}: give 0 or more")
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads}: give 1 or more")
        check_output_paths(json=args.json, inputs=args.reports)
        selection = Selection(
            args.mode, args.min_rounds, args.extra_sessions, first, last, args.threads, args.by_placement
        )
        result = tally(args.reports, selection)
    except (TallyInputError, ValueError) as err:  # OutputPathError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    print("\n".join(tally_lines(result)), file=sys.stderr if is_stdout(args.json) else sys.stdout)
    if args.json:
        write_json_output(args.json, result)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    sys.exit(run_main(main, None))
