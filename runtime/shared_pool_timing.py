"""Time ONNX Runtime CPU sessions interleaved in one process, all on ORT's global intra-op thread pool, spinning.

Two in-process modes each distort a comparison in their own way: per-session pools that spin steal the CPU from the
next session, and pools that sleep (allow_spinning "0", runtime/sge_cost.py) wake late at every short node, which
ORT as deployed never does. ORT's own answer for several sessions in one process is one global pool that they share
(``onnxruntime.set_global_thread_pool_sizes`` before the first session, ``use_per_session_threads = False``): its
threads spin as deployed and no session's threads compete with another's. Here a fresh process sets that pool up,
opens every planned session on it and runs rotated interleaved rounds (round r starts with session r mod k), so each
round pairs the sessions within milliseconds of each other on the same threads.

The global pool's spinning is ORT's default (the per-session ``allow_spinning`` entry does not apply to it, and the
Python API cannot change it); the CPU time beside the wall time shows it: about ``threads`` × wall when threads spin.

    echo '[{"model": "A.onnx", "library": null, "optimize": true}, ...]' | \
        python -m runtime.shared_pool_timing --rounds 400 --threads 2
"""

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from runtime.isolated_timing import run_timing_child, timed_input
from runtime.sge_cost import Timing, time_interleaved


def check_rounds_and_threads(rounds: int, threads: int) -> None:
    if rounds < 1 or threads < 1:
        raise ValueError(f"rounds and threads must be ≥ 1; got rounds={rounds}, threads={threads}")


def session_spec(plan) -> dict:
    """A plan (export/ort_sge/session.py's SessionPlan) as the child process reopens it: model, library, optimize."""
    return {"model": str(plan.model), "library": str(plan.library) if plan.library else None, "optimize": plan.optimize}


def shared_pool_runners(sessions: list[dict], *, threads: int) -> list:
    """One call per session spec, each running its session once on the timed input, every session on one global pool
    of ``threads`` threads. Must run before any other ORT session of the process (the global pool is set when ORT's
    environment is created)."""
    import onnxruntime as ort

    from export.ort_sge.session import SessionPlan, cpu_session

    ort.set_global_thread_pool_sizes(threads, 1)
    x = timed_input()
    runners = []
    for spec in sessions:
        library = Path(spec["library"]) if spec["library"] else None
        session = cpu_session(SessionPlan(model=spec["model"], library=library, optimize=spec["optimize"]), shared=True)
        feed = {session.get_inputs()[0].name: x}
        runners.append(lambda s=session, f=feed: s.run(None, f))
    return runners


def time_in_shared_pool(sessions: list[dict], *, rounds: int, threads: int) -> list[dict]:
    """Interleaved rounds of every session (``model``, ``library``, ``optimize``) in this process, on one global pool
    of ``threads`` threads (``shared_pool_runners``); one dict of wall and CPU milliseconds, places and wall-clock
    starts per session, in order."""
    runners = {str(k): run for k, run in enumerate(shared_pool_runners(sessions, threads=threads))}
    timed = time_interleaved(runners, rounds=rounds, warmup=10, rotate=True)
    to_wall_clock = time.time() - time.perf_counter()  # the starts as wall-clock time, as other processes see it
    return [
        {"wall_ms": t.wall_ms, "cpu_ms": t.cpu_ms, "places": t.places, "starts": [to_wall_clock + s for s in t.starts]}
        for t in timed.values()
    ]


def time_shared_pool(plans: Mapping[str, object], *, rounds: int, threads: int) -> dict[str, Timing]:
    """Every plan (export/ort_sge/session.py's SessionPlan) timed interleaved in one fresh process on ORT's global
    spinning pool of ``threads`` threads, ``rounds`` rotated rounds; a Timing per plan, each call paired by round."""
    check_rounds_and_threads(rounds, threads)
    command = [sys.executable, "-m", "runtime.shared_pool_timing", "--rounds", str(rounds), "--threads", str(threads)]
    specs = [session_spec(p) for p in plans.values()]
    what = f"timing {', '.join(plans)} on a shared thread pool"
    timed = run_timing_child(command, what=what, stdin=json.dumps(specs))
    return {
        name: Timing(name, t["wall_ms"], t["cpu_ms"], t["places"], starts=t["starts"])
        for name, t in zip(plans, timed, strict=True)
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    specs = json.load(sys.stdin)
    print(json.dumps(time_in_shared_pool(specs, rounds=args.rounds, threads=args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
