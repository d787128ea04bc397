"""Time ONNX Runtime CPU sessions each in a process of its own, with ORT's default spinning threads.

In one process, a session's spinning intra-op threads steal the CPU from the next session, so in-process
comparisons let idle threads sleep (runtime/sge_cost.py). That is not how ORT runs when deployed: there its threads
spin between runs. Here each timing runs in a fresh process that holds one session, so spinning disturbs nothing,
and the processes alternate (round p starts with session p mod k), so a slow period of the machine hits every
session alike. Each process warms up, then times ``runs`` calls; the figures are the processes' medians.

The parent passes a planned graph (export/ort_sge/session.py's SessionPlan: a graph already rewritten and optimised
is opened as it is), so a child only opens a session and times it:

    python -m runtime.isolated_timing --model PLANNED.onnx [--library LIB.so] [--no-optimize] --runs 200
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from runtime.sge_cost import Timing, round_order

WARMUP_RUNS = 20
INPUT_SEED = 0


def timed_input() -> "np.ndarray":  # noqa: F821
    """The one image every session is timed on, here and in the parent (scripts/kernel_speed.py)."""
    import numpy as np

    return np.random.default_rng(INPUT_SEED).standard_normal((1, 3, 224, 224), dtype=np.float32)


def time_session(model: str, *, library: str | None, optimize: bool, threads: int, runs: int) -> dict[str, list]:
    """Wall and CPU milliseconds of ``runs`` calls of one session in this process (ORT defaults: threads spin)."""
    from export.ort_sge.session import SessionPlan, cpu_session

    plan = SessionPlan(model=model, library=Path(library) if library else None, optimize=optimize)
    session = cpu_session(plan, threads=threads, spinning=True)
    feed = {session.get_inputs()[0].name: timed_input()}
    for _ in range(WARMUP_RUNS):
        session.run(None, feed)
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        session.run(None, feed)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return {"wall_ms": wall, "cpu_ms": cpu}


def time_isolated(plans: Mapping[str, object], *, rounds: int, runs: int, threads: int) -> dict[str, Timing]:
    """Each plan timed in ``rounds`` processes of its own, alternating; a Timing per plan with every call's time and
    each process's median (``process_medians``, one per round: the per-round ratios pair them)."""
    if rounds < 1 or runs < 1:
        raise ValueError(f"rounds and runs must be ≥ 1; got rounds={rounds}, runs={runs}")
    names = list(plans)
    samples: dict[str, dict[str, list]] = {name: {"wall_ms": [], "cpu_ms": [], "medians": []} for name in names}
    for r in range(rounds):
        for name in round_order(names, r):
            timed = _child(plans[name], runs=runs, threads=threads)
            samples[name]["wall_ms"] += timed["wall_ms"]
            samples[name]["cpu_ms"] += timed["cpu_ms"]
            samples[name]["medians"].append(statistics.median_high(timed["wall_ms"]))
    return {name: Timing(name, s["wall_ms"], s["cpu_ms"], process_medians=s["medians"]) for name, s in samples.items()}


def _child(plan, *, runs: int, threads: int) -> dict[str, list]:
    command = [sys.executable, "-m", "runtime.isolated_timing", "--model", str(plan.model), "--runs", str(runs)]
    command += ["--threads", str(threads)]
    if plan.library is not None:
        command += ["--library", str(plan.library)]
    if not plan.optimize:
        command.append("--no-optimize")
    return run_timing_child(command, what=f"timing {plan.model} in its own process")


def run_timing_child(command: list[str], *, what: str, stdin: str | None = None) -> object:
    """The JSON a timing child process prints (run from the repository root); RuntimeError with its last stderr line
    (``what`` failed: …) if it fails."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False, cwd=root)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise RuntimeError(f"{what} failed: {last}")
    return json.loads(result.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--library", help="custom-op library the graph needs")
    parser.add_argument("--no-optimize", action="store_true", help="the graph is optimised already: open it as it is")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    timed = time_session(
        args.model, library=args.library, optimize=not args.no_optimize, threads=args.threads, runs=args.runs
    )
    print(json.dumps(timed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
