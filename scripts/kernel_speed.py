"""The fused SGE kernel's speed on this CPU: sge_resnet50 (fused graph) / resnet50 on ONNX Runtime, and the installed
(dispatched) library against a -march=native build of the same sources, in one interleaved loop.

    python scripts/kernel_speed.py --json scripts/reports/kernel_speed.json
    python scripts/kernel_speed.py --no-native --workdir /tmp/kspeed      # keep (and reuse) the exported graphs
    python scripts/kernel_speed.py --floors --json floors.json           # and the bounds of any unfused tail
    python scripts/kernel_speed.py --orders --no-native                  # and the worst node order beside the planned
    python scripts/kernel_speed.py --through-layer 1 --floors            # both networks cut after layer1: 5× faster
    python scripts/kernel_speed.py --through-layer 1 2 3 4 --shared-pool # all four cuts in one run: the extra by stage

Batch 1, 224×224, 2 threads, ORT allow_spinning "0"; every round runs each session once, so load from other
processes hits them alike, and round r starts with session r mod k, so no session always runs at the same place in
the round (`--fixed-order`: resnet50 first every round, as before); medians of wall time (CPU-time medians beside
them, and each session's median at each place in the round), and the median of each round's own ratio. Then
ORT's profiler, also interleaved, gives each SgeResidual node's time by shape (the profiler's own overhead included:
compare these between runs of one command, not with wall times). The native build is compiled into the work folder.
`--isolated ROUNDS` times each session in a process of its own instead, with ORT's threads spinning as deployed
(runtime/isolated_timing.py); the per-round ratio then pairs the processes' medians. `--shared-pool` interleaves the
sessions in one fresh process on ORT's global thread pool, whose threads spin as deployed and are shared, so no
session's threads compete with another's (runtime/shared_pool_timing.py).
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # repo root, not scripts/

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import replace  # noqa: E402

from runtime.cli import EXIT_INPUT, EXIT_INTERNAL, command_words, is_stdout, make_parser, write_json_output  # noqa: E402

# issue 12's target for sge_resnet50 (fused) / resnet50 at batch 1; each paired "/resnet50" ratio counts its rounds
# within it
TARGET = 1.02


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
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
        "--orders",
        action="store_true",
        help="also time the fused graph in the worst node order (each downsampling block's identity branch between "
        "its last convolution and SgeResidual), against the planned order that runs SgeResidual right after its x",
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
    p.add_argument("--json", type=Path, default=Path("kernel_speed.json"))
    return p


def timing_mode(args: argparse.Namespace) -> str:
    if args.isolated:
        return f"isolated: one process per session, {args.isolated} rounds of {args.rounds} runs, ORT allow_spinning 1"
    if args.shared_pool:
        return f"interleaved (rotated order) in one process, {args.threads} threads of ORT's global pool, spinning"
    if args.spinning:
        return "blocks of 4, ORT allow_spinning 1"
    return f"interleaved ({'fixed order' if args.fixed_order else 'rotated order'}), ORT allow_spinning 0"


def cut_after_layer(model, layer: int):
    """A ResNet through its stage ``layer`` (1–4): the later stages become identities and the classifier takes that
    stage's channels (as many classes; each stage doubles them). The graph up to there is the whole network's."""
    import torch.nn as nn

    if layer == 4:
        return model
    for later in range(layer + 1, 5):
        setattr(model, f"layer{later}", nn.Identity())
    model.fc = nn.Linear(model.fc.in_features >> (4 - layer), model.fc.out_features)
    return model


def through_suffix(layer: int, top: int) -> str:
    """How files and sessions of the cut after stage ``layer`` are named; the cut ``top`` goes unnamed."""
    return "" if layer == top else f"_through_layer{layer}"


def export_graphs(workdir: Path, *, through_layer: int = 4) -> dict[str, Path]:
    """resnet50 and sge_resnet50's fused graph at 224×224 (random weights: speed does not depend on them), cut after
    stage ``through_layer``."""
    suffix = through_suffix(through_layer, 4)
    paths = {"resnet50": workdir / f"resnet50{suffix}.onnx", "sge_fused": workdir / f"sge_fused{suffix}.onnx"}
    if all(p.exists() for p in paths.values()):
        return paths
    from export.onnx_export import export_onnx
    from export.ort_sge.graph import fuse_sge_residual
    from export.spec import ExportSpec
    from models import create_model

    spec = ExportSpec(input_size=(224, 224))
    export_onnx(cut_after_layer(create_model("resnet50", init="random"), through_layer), paths["resnet50"], spec=spec)
    fused, _ = fuse_sge_residual(cut_after_layer(create_model("sge_resnet50", init="random"), through_layer))
    export_onnx(fused, paths["sge_fused"], spec=spec)
    return paths


def node_profile(plans: dict, x, *, threads: int, runs: int, prefix: Path) -> dict[str, list[dict]]:
    """Each SgeResidual node's kernel ms per run (after one untimed run), interleaved across the sessions."""
    from export.ort_sge.nchwc import FUSED_OP
    from export.ort_sge.session import cpu_session

    sessions = {
        name: cpu_session(plan, threads=threads, spinning=False, profile_prefix=f"{prefix}_{name}")
        for name, plan in plans.items()
        if plan.library is not None and not name.startswith("floor_")  # the floors' timings say all there is
    }
    for _ in range(runs + 1):
        for session in sessions.values():
            session.run(None, {session.get_inputs()[0].name: x})
    out = {}
    for name, session in sessions.items():
        events = json.loads(Path(session.end_profiling()).read_text())
        starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
        nodes: dict[str, dict] = {}
        for e in events:
            args = e.get("args", {})
            if e.get("cat") != "Node" or args.get("op_name") != FUSED_OP or not e["name"].endswith("_kernel_time"):
                continue
            if len(starts) > 1 and e["ts"] < starts[1]:
                continue
            node = nodes.setdefault(e["name"], {"node": e["name"][: -len("_kernel_time")], "ms": 0.0})
            node["shape"] = next(iter(args.get("input_type_shape", [{}])[0].values()), None)
            node["ms"] += e["dur"] / 1e3 / runs
        out[name] = [{**n, "ms": round(n["ms"], 4)} for n in nodes.values()]
    return out


def ms_by_side(nodes: list[dict]) -> dict[str, float]:
    """The op's ms per run summed by its feature map's side (H of [N, C/B, H, W, B], or of NCHW), largest first: one
    entry per ResNet stage, so the profiles of the two NCHWc widths compare stage by stage."""
    sides: dict[int, float] = {}
    for node in nodes:
        shape = node.get("shape") or []
        side = int(shape[2]) if len(shape) >= 4 else 0
        sides[side] = sides.get(side, 0.0) + node["ms"]
    return {str(side): round(ms, 3) for side, ms in sorted(sides.items(), reverse=True)}


def cut_names(layer: int, top: int) -> tuple[str, str]:
    """The sessions of one cut: the largest cut asked for is the plain "resnet50" and "sge_fused"."""
    suffix = through_suffix(layer, top)
    return f"resnet50{suffix}", f"sge_fused{suffix}"


def extra_by_stage(timings: dict, cuts: list[int]) -> dict[str, float]:
    """The fused graph's extra ms over resnet50 added by each run of stages between consecutive cuts ("layer1",
    "layer2–3", …): per round, the extra through one cut minus the extra through the cut before, then the median
    over the rounds (all cuts run in the same rounds, so each difference pairs calls milliseconds apart)."""
    out, before, previous = {}, None, 0
    for layer in sorted(cuts):
        resnet, fused = (timings[n].paired_wall_ms for n in cut_names(layer, max(cuts)))
        extra = [f - r for f, r in zip(fused, resnet, strict=True)]
        added = extra if before is None else [e - b for e, b in zip(extra, before, strict=True)]
        label = f"layer{layer}" if layer == previous + 1 else f"layer{previous + 1}–{layer}"
        out[label] = round(statistics.median(added), 3)
        before, previous = extra, layer
    return out


def ratio(a, b, *, paired: bool, target: float | None = None) -> dict[str, float]:
    """a / b: of the wall and CPU medians; interleaved, also the median of the rounds' own wall ratios (each round
    runs both sessions back to back, so load that hits a round hits both: a steadier estimate) and its IQR; with
    ``target``, how many of those rounds are within it."""
    out = {"wall": a.wall_median / b.wall_median, "cpu": a.cpu_median / b.cpu_median}
    if paired:
        per_round = [x / y for x, y in zip(a.paired_wall_ms, b.paired_wall_ms, strict=True)]
        if len(per_round) == 1:  # one isolated round
            out |= {"wall_paired": per_round[0], "wall_paired_iqr": 0.0}
        else:
            q1, median, q3 = statistics.quantiles(per_round, n=4, method="inclusive")
            out |= {"wall_paired": median, "wall_paired_iqr": q3 - q1}
        if target is not None:
            out |= {"rounds_within_target": sum(r <= target for r in per_round), "rounds": len(per_round)}
    return out


def identity_last_plan(fused):
    """The fused graph's plan rescheduled in the worst order (export/ort_sge/schedule.py), in the plan's scratch
    folder beside the weights its initializers name."""
    import onnx

    from export.ort_sge.schedule import schedule_blocks

    model = onnx.load(fused.model, load_external_data=False)
    schedule_blocks(model.graph, identity_last=True)
    path = Path(fused.model).with_name("identity_last.onnx")
    onnx.save(model, str(path))
    return replace(fused, model=str(path), scratch=None)


def diagnostic_builds(args: argparse.Namespace, fused, tmp: Path) -> dict:
    """The fused graph's plan with each extra library asked for (the -march=native build and the floors), and in the
    worst node order."""
    from export.ort_sge.kernels import kernel_build
    from export.ort_sge.kernels.build import FLOORS, build_library

    def with_library(library: Path):
        return replace(fused, library=library, kernel_build=kernel_build(library))

    plans = {"sge_fused_identity_last": identity_last_plan(fused)} if args.orders else {}
    if not args.no_native:
        plans["sge_fused_native"] = with_library(build_library(tmp / "native", native=True))
    if args.floors:
        for floor in FLOORS:
            plans[f"floor_{floor}"] = with_library(build_library(tmp / f"floor_{floor}", floor=floor))
    return plans


def stage_bench_for_this_cpu(tmp: Path, fused) -> Path:
    """The stage bench, built for the ISA build the installed library runs here (the fused graph's plan says which);
    it times NCHWc units only."""
    from export.ort_sge.kernels.build import KernelBuildError
    from export.ort_sge.kernels.stage_bench import build_stage_bench

    if fused.nchwc_block not in (8, 16):
        raise KernelBuildError("--stages times the NCHWc path, and ONNX Runtime runs no NCHWc on this CPU")
    (tmp / "bench").mkdir()
    return build_stage_bench(tmp / "bench", isa=fused.kernel_build)


def print_stages(stages: dict, resnet50_ms: float, out) -> None:
    """The warm stage costs per network run, in µs and as a share of this run's resnet50 wall median."""
    cost = stages["us_per_network"]
    share = {k: 100 * us / (resnet50_ms * 1000) for k, us in cost.items()}
    print(
        f"  tail stages warm in cache ({stages['isa']} build, one unit on one thread, projected over "
        f"{stages['threads']} threads), per network run and share of resnet50's wall median:",
        file=out,
    )
    for name, us in cost.items():
        print(f"    {name:10s} {us:7.1f} us  {share[name]:5.2f} %", file=out)
    rest = sum(share[k] for k in ("similarity", "sigmoid", "apply"))
    print(f"    without the channel means (a convolution that sums its own output): {rest:.2f} %", file=out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1 or args.rounds < 3:
        print("error: --threads must be ≥ 1 and --rounds ≥ 3", file=sys.stderr)
        return EXIT_INPUT
    if args.isolated is not None and args.isolated < 1:
        print(f"error: --isolated needs ROUNDS ≥ 1; got {args.isolated}", file=sys.stderr)
        return EXIT_INPUT
    cuts = sorted(set(args.through_layer))
    whole = cuts[-1] == 4
    if args.stages and not whole:
        print("error: --stages projects onto the whole network: drop --through-layer", file=sys.stderr)
        return EXIT_INPUT
    # the timing modes; --fixed-order is the default interleaved mode in its older order
    modes = {
        "--isolated": args.isolated is not None,
        "--shared-pool": args.shared_pool,
        "--spinning": args.spinning,
        "--fixed-order": args.fixed_order,
    }
    chosen = [flag for flag, on in modes.items() if on]
    if len(chosen) > 1:
        print(f"error: {' and '.join(chosen)} time in different ways: choose one", file=sys.stderr)
        return EXIT_INPUT
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    from export.ort_sge.kernels import KernelUnavailableError, kernel_library
    from export.ort_sge.kernels.build import KernelBuildError
    from export.ort_sge.kernels.stage_bench import resnet50_stage_cost
    from export.ort_sge.session import cpu_session, plan_session
    from runtime.isolated_timing import time_isolated, timed_input
    from runtime.sge_cost import machine_description, time_blocked, time_interleaved
    from runtime.shared_pool_timing import time_shared_pool

    try:
        installed = kernel_library()
    except KernelUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    command = shlex.join(command_words(None, "kernel_speed", argv))
    with tempfile.TemporaryDirectory(prefix="kernel-speed-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        plans = {}
        for layer in reversed(cuts):  # the largest first: "resnet50" and "sge_fused" lead the rounds as before
            paths = export_graphs(workdir, through_layer=layer)
            resnet, fused = cut_names(layer, cuts[-1])
            plans |= {resnet: plan_session(paths["resnet50"]), fused: plan_session(paths["sge_fused"])}
        if args.orders and plans["sge_fused"].optimize:  # ORT would reorder an unplanned graph itself
            print(
                "error: --orders reorders the planned NCHWc graph, and ONNX Runtime runs no NCHWc here", file=sys.stderr
            )
            return EXIT_INPUT
        try:  # every build before any timing: a missing compiler fails in one line, not after minutes
            plans.update(diagnostic_builds(args, plans["sge_fused"], Path(tmp)))
            bench = stage_bench_for_this_cpu(Path(tmp), plans["sge_fused"]) if args.stages else None
        except KernelBuildError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_INPUT
        x = timed_input()
        spin = args.spinning
        if args.isolated or args.shared_pool:
            try:  # a child process that fails says why in one line
                timings = (
                    time_isolated(plans, rounds=args.isolated, runs=args.rounds, threads=args.threads)
                    if args.isolated
                    else time_shared_pool(plans, rounds=args.rounds, threads=args.threads)
                )
            except RuntimeError as err:
                print(f"error: {err}", file=sys.stderr)
                return EXIT_INTERNAL
        else:
            sessions = {name: cpu_session(plan, threads=args.threads, spinning=spin) for name, plan in plans.items()}
            runners = {name: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for name, s in sessions.items()}
            if spin:
                timings = time_blocked(runners, rounds=max(1, args.rounds // 4), blocks=4)
            else:
                timings = time_interleaved(runners, rounds=args.rounds, rotate=not args.fixed_order)
            del sessions, runners  # spinning threads would disturb the profile
        profile = {}
        if args.profile_runs > 0:
            profile = node_profile(plans, x, threads=args.threads, runs=args.profile_runs, prefix=Path(tmp) / "p")
        try:
            stages = bench and resnet50_stage_cost(bench, block=plans["sge_fused"].nchwc_block, threads=args.threads)
        except KernelBuildError as err:
            print(f"error: --stages: {err}", file=sys.stderr)
            return EXIT_INPUT
    pairs = {"sge_fused/resnet50": ("sge_fused", "resnet50")}
    for layer in cuts[:-1]:
        resnet, fused = cut_names(layer, cuts[-1])
        pairs[f"{fused}/{resnet}"] = (fused, resnet)
    if "sge_fused_native" in timings:
        pairs["sge_fused_native/resnet50"] = ("sge_fused_native", "resnet50")
        pairs["dispatched/native"] = ("sge_fused", "sge_fused_native")
    for name in [n for n in timings if n.startswith("floor_")]:
        pairs[f"{name}/resnet50"] = (name, "resnet50")
    if "floor_apply" in timings:
        pairs["sge_fused/floor_apply"] = ("sge_fused", "floor_apply")
    if "sge_fused_identity_last" in timings:
        pairs["identity_last/planned"] = ("sge_fused_identity_last", "sge_fused")
    ratios = {
        label: ratio(timings[a], timings[b], paired=not spin, target=TARGET if b == "resnet50" and whole else None)
        for label, (a, b) in pairs.items()
    }
    report = {
        "command": command,
        "machine": machine_description(args.threads),
        "library": {
            "installed": str(installed),
            "build": json.loads(installed.with_suffix(".json").read_text()),
            "runs": plans["sge_fused"].kernel_build,  # the build its dispatcher picked on this CPU
        },
        "nchwc_block": plans["sge_fused"].nchwc_block,
        "graphs": ("the whole networks" if whole else f"both networks through layer{cuts[-1]} only")
        + "".join(f", and through layer{layer}" for layer in cuts[:-1]),
        "timing_mode": timing_mode(args),
        "timings": {name: t.to_dict() for name, t in timings.items()},
        "ratios": {k: {m: round(v, 4) for m, v in r.items()} for k, r in ratios.items()},
        "sge_residual_ms_per_run": {n: round(sum(e["ms"] for e in nodes), 3) for n, nodes in profile.items()},
        "sge_residual_ms_by_side": {n: ms_by_side(nodes) for n, nodes in profile.items()},
        "sge_residual_nodes": profile,
    }
    if len(cuts) > 1 and not spin:
        report["extra_ms_by_stage"] = extra_by_stage(timings, cuts)
    if stages:
        report["stages"] = stages
    out = sys.stderr if is_stdout(args.json) else sys.stdout  # `--json -`: stdout carries only the JSON
    m = report["machine"]
    view = f" ({m['cpu_view']})" if m["cpu_view"] else ""
    print(command, file=out)
    print(
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, {'/'.join(m['isa'])}{view}; {args.threads} threads; "
        f"NCHWc block {report['nchwc_block']}; {report['graphs']}; "
        f"the installed library runs its {report['library']['runs']} build; "
        f"{report['timing_mode']}; load average {m['load_average']}",
        file=out,
    )
    for name, t in report["timings"].items():
        places = t.get("wall_ms_median_by_place", [])  # rotated rounds only
        by_place = f"  by place in the round {' '.join(f'{m:.2f}' for m in places)}" if places else ""
        print(
            f"  {name:24s} wall median {t['wall_ms_median']:8.2f} ms  CPU {t['cpu_ms_median']:8.2f} ms  "
            f"IQR/median {t['wall_spread_iqr']:.3f}{by_place}",
            file=out,
        )
    for name, r in report["ratios"].items():
        paired = ""
        if "wall_paired" in r:
            paired = f"  per-round wall ratio {r['wall_paired']:.3f} (IQR {r['wall_paired_iqr']:.3f})"
        if "rounds_within_target" in r:
            paired += f", {r['rounds_within_target']} of {r['rounds']} rounds ≤ {TARGET}"
        print(f"  {name:28s} wall {r['wall']:.3f}  CPU {r['cpu']:.3f}{paired}", file=out)
    if "extra_ms_by_stage" in report:
        stages_text = ", ".join(f"{label} {ms:+.3f} ms" for label, ms in report["extra_ms_by_stage"].items())
        print(f"  fused - resnet50 added by each stage (per-round medians): {stages_text}", file=out)
    for name, ms in report["sge_residual_ms_per_run"].items():
        sides = ", ".join(f"{s}×{s} {v:.2f}" for s, v in report["sge_residual_ms_by_side"][name].items())
        print(f"  SgeResidual kernel time, {name}: {ms:.2f} ms per run ({sides})", file=out)
    if stages:
        print_stages(stages, report["timings"]["resnet50"]["wall_ms_median"], out)
    write_json_output(args.json, report)
    if not is_stdout(args.json):
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
