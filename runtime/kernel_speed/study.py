"""The fused SGE kernel's speed on this CPU (scripts/kernel_speed.py): sge_resnet50's fused graph against resnet50 on
ONNX Runtime at batch 1, 224×224, and the installed (dispatched) library against a ``-march=native`` build of the
same sources, timed together; optionally the floors, the worst node order, the tail's stages in cache, and both
networks cut after a stage (runtime/kernel_speed/graphs.py).

Timing modes (``SpeedOptions.mode``): "interleaved" (every round runs each session once, round r starting with
session r mod k, ORT's threads asleep between calls), "fixed-order" (the same, resnet50 first every round),
"spinning" (repeated blocks, ORT's threads spinning), "isolated" (each session in a process of its own, threads
spinning as deployed: runtime/isolated_timing.py) and "shared-pool" (interleaved in one fresh process on ORT's global
spinning pool: runtime/shared_pool_timing.py).
"""

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.kernel_speed.cpu_placement import (
    PlacementError,
    PlacementMonitor,
    placement_ratio,
    round_placements,
    round_spans,
    rounds_of,
    split_by_placement,
)
from runtime.kernel_speed.graphs import WHOLE, diagnostic_plans, plan_cuts, stage_bench_for_this_cpu
from runtime.kernel_speed.profile import ms_by_side, node_profile
from runtime.kernel_speed.ratios import TARGET, extra_by_stage, ratio, ratio_pairs
from runtime.kernel_speed.text import counted

logger = logging.getLogger(__name__)

MODES = ("interleaved", "fixed-order", "spinning", "isolated", "shared-pool")


class StudyInputError(ValueError):
    """The study cannot run as asked on this machine (the reason named)."""


class TimingChildError(RuntimeError):
    """A timing child process (isolated or shared-pool mode) failed; its reason in one line."""


@dataclass(frozen=True)
class SpeedOptions:
    """What to time and how (scripts/kernel_speed.py's flags)."""

    threads: int = 2
    rounds: int = 40  # interleaved rounds; runs per process when isolated
    mode: str = "interleaved"
    isolated_rounds: int = 0  # processes per session when isolated
    profile_runs: int = 10
    native: bool = True
    floors: bool = False
    floor_layer: int = 0  # the floors in stage K's blocks only (0: every block)
    orders: bool = False
    swap_halves: bool = False  # also the build whose threads take each other's half of the units
    stages: bool = False
    cuts: tuple[int, ...] = (WHOLE,)  # kept sorted, each once
    cpu_placement: bool = False  # label each round by where the host had the two CPUs (cpu_placement.py)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown timing mode {self.mode!r}; choose one of {', '.join(MODES)}")
        object.__setattr__(self, "cuts", tuple(sorted(set(self.cuts))))

    def problems(self) -> list[str]:
        """Every reason these options cannot run (named by scripts/kernel_speed.py's flags), or none."""
        found = []
        if self.threads < 1 or self.rounds < 3:
            found.append("--threads must be ≥ 1 and --rounds ≥ 3")
        if self.mode == "isolated" and self.isolated_rounds < 1:
            found.append(f"--isolated needs ROUNDS ≥ 1; got {self.isolated_rounds}")
        if self.profile_runs < 0:
            found.append(f"--profile-runs must be 0 (no profile) or more; got {self.profile_runs}")
        if self.floor_layer and not self.floors:
            found.append("--floor-layer says where the floors go: add --floors")
        elif self.floor_layer and not 1 <= self.floor_layer <= self.cuts[-1]:
            found.append(f"--floor-layer must be a stage the graphs run (1 to {self.cuts[-1]}); got {self.floor_layer}")
        if not set(self.cuts) <= {1, 2, 3, WHOLE}:
            found.append(f"--through-layer takes stages 1 to {WHOLE}; got {' '.join(map(str, self.cuts))}")
        elif self.stages and not self.whole:
            found.append("--stages projects onto the whole network: drop --through-layer")
        if self.cpu_placement and (self.mode != "shared-pool" or self.threads != 2 or not self.whole):
            found.append("--cpu-placement labels the rounds of --shared-pool on 2 threads over the whole networks")
        return found

    @property
    def whole(self) -> bool:
        return self.cuts[-1] == WHOLE

    @property
    def paired(self) -> bool:
        """Whether every session's calls pair up by round (all modes but the spinning blocks)."""
        return self.mode != "spinning"

    def describe_mode(self) -> str:
        return {
            "isolated": f"isolated: one process per session, {self.isolated_rounds} rounds of {self.rounds} runs, "
            "ORT allow_spinning 1",
            "shared-pool": f"interleaved (rotated order) in one process, {counted(self.threads, 'thread')} of ORT's "
            "global pool, spinning",
            "spinning": "blocks of 4, ORT allow_spinning 1",
            "fixed-order": "interleaved (fixed order), ORT allow_spinning 0",
            "interleaved": "interleaved (rotated order), ORT allow_spinning 0",
        }[self.mode]


def time_plans(plans: dict, x, options: SpeedOptions) -> dict:
    """Every plan's Timing (runtime/sge_cost.py) in the options' mode; TimingChildError in one line where a timing
    child process fails."""
    from export.ort_sge.session import cpu_session
    from runtime.isolated_timing import time_isolated
    from runtime.sge_cost import time_blocked, time_interleaved
    from runtime.shared_pool_timing import time_shared_pool

    try:
        if options.mode == "isolated":
            return time_isolated(plans, rounds=options.isolated_rounds, runs=options.rounds, threads=options.threads)
        if options.mode == "shared-pool":
            return time_shared_pool(plans, rounds=options.rounds, threads=options.threads)
    except RuntimeError as err:
        raise TimingChildError(str(err)) from err
    spin = options.mode == "spinning"
    sessions = {name: cpu_session(plan, threads=options.threads, spinning=spin) for name, plan in plans.items()}
    runners = {name: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for name, s in sessions.items()}
    if spin:
        return time_blocked(runners, rounds=max(1, options.rounds // 4), blocks=4)
    return time_interleaved(runners, rounds=options.rounds, rotate=options.mode != "fixed-order")


def run_study(
    options: SpeedOptions,
    *,
    command: str,
    workdir: Path | None = None,
    progress: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """The report (JSON-ready) of one run; ``progress`` gets one line per step. ``workdir`` keeps the exported graphs
    for the next run. Raises KernelUnavailableError (no usable installed library), KernelBuildError (a diagnostic
    build failed: before any timing), StudyInputError, or TimingChildError, each in one line."""
    from export.ort_sge.kernels import kernel_library
    from export.ort_sge.kernels.stage_bench import resnet50_stage_cost
    from runtime.isolated_timing import timed_input
    from runtime.sge_cost import machine_description

    installed = kernel_library()
    cuts = list(options.cuts)
    with tempfile.TemporaryDirectory(prefix="kernel-speed-") as tmp:
        graphs = workdir or Path(tmp)
        graphs.mkdir(parents=True, exist_ok=True)
        through = ", ".join(f"layer{k}" for k in cuts)
        progress(f"exporting (or reusing, in {graphs}) and planning resnet50 and the fused graph through {through}…")
        plans = plan_cuts(graphs, cuts)
        fused = plans["sge_fused"]
        if options.orders and fused.optimize:  # ORT would reorder an unplanned graph itself
            raise StudyInputError("--orders reorders the planned NCHWc graph, and ONNX Runtime runs no NCHWc here")
        # every build before any timing: a missing compiler fails in one line, not after minutes
        builds = {
            "the -march=native build": options.native,
            "the floors": options.floors,
            "the swapped-halves build": options.swap_halves,
            "the stage bench": options.stages,
        }
        if any(builds.values()):
            progress(f"building {', '.join(name for name, wanted in builds.items() if wanted)}…")
        plans |= diagnostic_plans(
            fused,
            Path(tmp),
            orders=options.orders,
            swap_halves=options.swap_halves,
            native=options.native,
            floors=options.floors,
            floor_layer=options.floor_layer,
        )
        bench = stage_bench_for_this_cpu(Path(tmp), fused) if options.stages else None
        x = timed_input()
        runs = options.rounds * (options.isolated_rounds if options.mode == "isolated" else 1)
        progress(f"timing {len(plans)} sessions, {runs} calls each: {options.describe_mode()}…")
        try:
            with PlacementMonitor() if options.cpu_placement else contextlib.nullcontext() as monitor:
                timings = time_plans(plans, x, options)
        except PlacementError as err:
            raise StudyInputError(f"--cpu-placement: {err}") from err
        profile = {}
        if options.profile_runs > 0:
            progress(f"profiling the fused op: {options.profile_runs} runs of each fused session…")
            profile = node_profile(plans, x, threads=options.threads, runs=options.profile_runs, prefix=Path(tmp) / "p")
        if bench:
            progress("timing the tail's stages in cache…")
        stages = bench and resnet50_stage_cost(bench, block=fused.nchwc_block, threads=options.threads)
    ratios = {
        label: ratio(
            timings[a], timings[b], paired=options.paired, target=TARGET if b == "resnet50" and options.whole else None
        )
        for label, (a, b) in ratio_pairs(list(timings), cuts).items()
    }
    report = {
        "command": command,
        "machine": machine_description(options.threads),
        "library": {
            "installed": str(installed),
            "build": json.loads(installed.with_suffix(".json").read_text()),
            "runs": fused.kernel_build,  # the build its dispatcher picked on this CPU
        },
        "nchwc_block": fused.nchwc_block,
        "graphs": ("the whole networks" if options.whole else f"both networks through layer{cuts[-1]} only")
        + "".join(f", and through layer{layer}" for layer in cuts[:-1]),
        "timing_mode": options.describe_mode(),
        "floors_in": (f"layer{options.floor_layer}'s blocks only" if options.floor_layer else "every block")
        if options.floors
        else None,
        "timings": {name: t.to_dict() for name, t in timings.items()},
        "ratios": {k: {m: round(v, 4) for m, v in r.items()} for k, r in ratios.items()},
        "sge_residual_ms_per_run": {n: round(sum(e["ms"] for e in nodes), 3) for n, nodes in profile.items()},
        "sge_residual_ms_by_side": {n: ms_by_side(nodes) for n, nodes in profile.items()},
        "sge_residual_nodes": profile,
    }
    if options.cpu_placement:
        report["by_cpu_placement"] = by_cpu_placement(timings, monitor.samples, cuts)
    if len(cuts) > 1 and options.paired:
        report["extra_ms_by_stage"] = extra_by_stage(timings, cuts)
    if stages:
        report["stages"] = stages
    return report


def by_cpu_placement(timings: dict, samples: list, cuts: list[int]) -> dict:
    """The fused graph against resnet50, round by round, split by where the host had the two CPUs; with several
    cuts, each placement's extra by stage too (ratios.py's ``extra_by_stage`` over that placement's rounds)."""
    fused, base = timings["sge_fused"], timings["resnet50"]

    def summarize(rounds: list[int]) -> dict:
        entry = placement_ratio(fused, base, rounds, target=TARGET)
        if len(cuts) > 1:
            entry["extra_ms_by_stage"] = extra_by_stage({n: rounds_of(t, rounds) for n, t in timings.items()}, cuts)
        return entry

    labels = round_placements(round_spans(timings.values()), samples)
    return {"samples": len(samples)} | split_by_placement(labels, summarize)
