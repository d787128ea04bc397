"""The fused SGE kernel's speed on this CPU: sge_resnet50 (fused graph) / resnet50 on ONNX Runtime, and the installed
(dispatched) library against a -march=native build of the same sources, in one interleaved loop.

    python scripts/kernel_speed.py --json scripts/reports/kernel_speed.json
    python scripts/kernel_speed.py --no-native --workdir /tmp/kspeed      # keep (and reuse) the exported graphs
    python scripts/kernel_speed.py --floors --json floors.json           # and the bounds of any unfused tail
    python scripts/kernel_speed.py --floors --floor-layer 1 --shared-pool # those bounds in layer1's tails only
    python scripts/kernel_speed.py --orders --no-native                  # and the worst node order beside the planned
    python scripts/kernel_speed.py --swap-halves --no-native --shared-pool # and the threads' halves of units swapped
    python scripts/kernel_speed.py --through-layer 1 --floors            # both networks cut after layer1: 5× faster
    python scripts/kernel_speed.py --through-layer 1 2 3 4 --shared-pool # all four cuts in one run: the extra by stage
    python scripts/kernel_speed.py --shared-pool --cpu-placement --no-native # per round: the CPUs on one L3, on two

Batch 1, 224×224, 2 threads, ORT allow_spinning "0"; every round runs each session once, so load from other
processes hits them alike, and round r starts with session r mod k, so no session always runs at the same place in
the round (`--fixed-order`: resnet50 first every round, as before); medians of wall time (CPU-time medians beside
them, and each session's median at each place in the round), and the median of each round's own ratio. Then
ORT's profiler, also interleaved, gives each SgeResidual node's time by shape (the profiler's own overhead included:
compare these between runs of one command, not with wall times). The native build is compiled into the work folder.
`--isolated ROUNDS` times each session in a process of its own instead, with ORT's threads spinning as deployed
(runtime/isolated_timing.py); the per-round ratio then pairs the processes' medians. `--shared-pool` interleaves the
sessions in one fresh process on ORT's global thread pool, whose threads spin as deployed and are shared, so no
session's threads compete with another's (runtime/shared_pool_timing.py). `--cpu-placement` samples once a second
where the host has the VM's two CPUs, on one L3 or on two, and splits that mode's per-round ratio by it, and with
several `--through-layer` cuts the extra by stage too (runtime/kernel_speed/cpu_placement.py). The study itself:
runtime/kernel_speed/.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # repo root, not scripts/

import argparse  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402

from runtime.cli import (  # noqa: E402
    EXIT_INPUT,
    EXIT_INTERNAL,
    check_output_dir,
    check_output_paths,
    command_words,
    is_stdout,
    make_console,
    make_parser,
    write_json_output,
)
from runtime.cli_flags import add_json, add_threads  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__.split("\n\n")[0])
    add_threads(p, default=2, help="intra-op threads of every session")
    p.add_argument("--rounds", type=int, default=40, help="interleaved timed rounds")
    p.add_argument("--profile-runs", type=int, default=10, help="ORT profiler runs per session (0: skip)")
    p.add_argument("--no-native", action="store_true", help="skip the -march=native build")
    p.add_argument(
        "--floors",
        action="store_true",
        help="also time diagnostic builds that compute no SGE: the tail's one unavoidable pass "
        "(relu(x/2 + identity)), no work at all, and that pass reading x only or the identity only; bounds for the "
        "fused/resnet50 ratio",
    )
    p.add_argument(
        "--floor-layer",
        type=int,
        choices=(1, 2, 3, 4),
        metavar="K",
        help="with --floors: the floors replace the tail in ResNet stage K's blocks only, the other blocks compute SGE "
        "in full; sge_fused/floor_none is then stage K's whole tail, sge_fused/floor_apply its SGE statistics",
    )
    p.add_argument(
        "--orders",
        action="store_true",
        help="also time the fused graph in the worst node order (each downsampling block's identity branch between "
        "its last convolution and SgeResidual), against the planned order that runs SgeResidual right after its x",
    )
    p.add_argument(
        "--swap-halves",
        action="store_true",
        help="also time a build of the kernel that hands the thread calling each SgeResidual the upper half of its "
        "units and the pool's other thread the lower (the same results): does moving which core reads which "
        "channels change the time",
    )
    p.add_argument(
        "--stages",
        action="store_true",
        help="also time each stage of the tail's maths on one warm unit (its data in cache, one thread; "
        "sge_stage_bench.cc), projected onto one network run: a lower bound for any tail that makes these passes",
    )
    p.add_argument(
        "--spinning",
        action="store_true",
        help="ORT threads spin between calls (its deployment default); timed in repeated blocks, not interleaved",
    )
    p.add_argument(
        "--isolated",
        type=int,
        metavar="ROUNDS",
        help="time each session in a process of its own, ORT's threads spinning as deployed: ROUNDS rounds of one "
        "process per session (rotated order), --rounds runs each; the per-round ratio pairs the processes' medians",
    )
    p.add_argument(
        "--shared-pool",
        action="store_true",
        help="interleave the sessions in one fresh process on ORT's global thread pool, its threads spinning as "
        "deployed (runtime/shared_pool_timing.py): --rounds rotated rounds, each pairing every session's call",
    )
    p.add_argument(
        "--cpu-placement",
        action="store_true",
        help="with --shared-pool: sample once a second where the host has the two CPUs (one L3 or two; "
        "runtime/kernel_speed/cpu_placement.py) and give the per-round ratio for each, and with several "
        "--through-layer cuts the extra by stage for each",
    )
    p.add_argument(
        "--fixed-order",
        action="store_true",
        help="every round in the same order, resnet50 first (the reports before rotation); default: round r starts "
        "with runner r mod k",
    )
    p.add_argument(
        "--through-layer",
        type=int,
        nargs="+",
        choices=(1, 2, 3, 4),
        default=[4],
        metavar="K",
        help="time both networks cut after ResNet stage K (then pooled into a new classifier), so the ratio "
        "isolates the stages kept: a run through layer 1 takes a fifth of the time; several K time every cut in the "
        "same rounds and give the extra over resnet50 stage by stage, paired per round; default 4, the whole network "
        "(the only one the issue's target and --stages apply to; the floors, --orders and the native build use the "
        "largest K)",
    )
    p.add_argument("--workdir", type=Path, help="exported graphs kept (and reused) here; default: a temporary folder")
    add_json(p, default=Path("kernel_speed.json"), help="the report")
    return p


def options_from(args: argparse.Namespace):
    """The study's options from the flags; ValueError in one line with every reason they cannot run."""
    from runtime.kernel_speed.study import SpeedOptions

    # the timing modes, each its flag's name; --fixed-order is the default interleaved mode in its older order
    modes = {
        "isolated": args.isolated is not None,
        "shared-pool": args.shared_pool,
        "spinning": args.spinning,
        "fixed-order": args.fixed_order,
    }
    chosen = [mode for mode, on in modes.items() if on]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join('--' + mode for mode in chosen)} time in different ways: choose one")
    options = SpeedOptions(
        threads=args.threads,
        rounds=args.rounds,
        mode=chosen[0] if chosen else "interleaved",
        isolated_rounds=args.isolated or 0,
        profile_runs=args.profile_runs,
        native=not args.no_native,
        floors=args.floors,
        floor_layer=args.floor_layer or 0,
        orders=args.orders,
        swap_halves=args.swap_halves,
        stages=args.stages,
        cuts=tuple(args.through_layer),
        cpu_placement=args.cpu_placement,
    )
    if options.problems():
        raise ValueError("; ".join(options.problems()))
    return options


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = options_from(args)
        check_output_paths(json=args.json)  # before minutes of work
        if args.workdir is not None:
            check_output_dir(args.workdir, flag="--workdir")
    except ValueError as err:  # OutputPathError is one
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    console = make_console(json_path=args.json)  # progress on stderr when --json - takes stdout
    from export.ort_sge.kernels import KernelUnavailableError
    from export.ort_sge.kernels.build import KernelBuildError
    from runtime.kernel_speed.study import StudyInputError, TimingChildError, run_study
    from runtime.kernel_speed.text import report_lines

    command = shlex.join(command_words(None, "kernel_speed", argv))
    try:
        report = run_study(options, command=command, workdir=args.workdir, progress=console.print)
    except (KernelUnavailableError, KernelBuildError, StudyInputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except TimingChildError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INTERNAL
    out = sys.stderr if is_stdout(args.json) else sys.stdout  # `--json -`: stdout carries only the JSON
    print("\n".join(report_lines(report)), file=out)
    write_json_output(args.json, report)
    if not is_stdout(args.json):
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from runtime.cli import run_main

    sys.exit(run_main(main, None))  # Ctrl-C and SIGTERM in one line; any other failure one line, exit 3
