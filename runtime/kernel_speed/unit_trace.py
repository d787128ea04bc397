"""Which of ORT's threads ran each SgeResidual unit, and for how long: sge_resnet50's fused graph with a trace build of
the kernel (export/ort_sge/kernels/sge_unit_trace.h), interleaved with resnet50 on ORT's global spinning pool as in
``kernel_speed.py --shared-pool``. Per fused node: how the units fell on the thread that called the op and the
pool's other thread, and each unit's median time relative to the node's. A diagnostic, not a timing.

    python -m runtime.kernel_speed.unit_trace --workdir /tmp/kspeed --rounds 200 [--floor x_only] [--json FILE]
    python -m runtime.kernel_speed.unit_trace --workdir /tmp/kspeed --rounds 200 --swap-halves  # halves swapped
    python -m runtime.kernel_speed.unit_trace --workdir /tmp/kspeed --rounds 400 --cpu-placement  # split by placement

``--cpu-placement`` also summarises the traced rounds by where the host had the VM's two CPUs while each ran (one L3
or two: runtime/kernel_speed/cpu_placement.py), beside the summary of them all.
"""

import argparse
import contextlib
import ctypes
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from runtime.kernel_speed.cpu_placement import (
    ONE_L3,
    TWO_L3S,
    PlacementError,
    PlacementMonitor,
    round_placements,
    split_by_placement,
)

# sge_trace::Record, 48 bytes
RECORD_DTYPE = np.dtype(
    [
        ("call", "<u4"),
        ("unit", "<u4"),
        ("on_caller", "<u4"),
        ("reserved", "<u4"),
        ("channels", "<i8"),
        ("positions", "<i8"),
        ("start", "<u8"),
        ("end", "<u8"),
    ]
)


def read_trace(library: Path) -> np.ndarray:
    """Every unit a loaded trace build of ``library`` has recorded since its last reset."""
    lib = ctypes.CDLL(str(library))  # the process's copy, as ORT loaded it
    lib.SgeTraceUnits.restype = ctypes.c_uint64
    lib.SgeTraceUnits.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    count = lib.SgeTraceUnits(None, 0)
    records = np.empty(count, dtype=RECORD_DTYPE)
    lib.SgeTraceUnits(records.ctypes.data, count)
    return records


def reset_trace(library: Path) -> None:
    ctypes.CDLL(str(library)).SgeTraceReset()


def ticks_per_us(library: Path, seconds: float = 0.2) -> float:
    """The trace's clock (the TSC), timed against perf_counter over a sleep."""
    import time

    lib = ctypes.CDLL(str(library))
    lib.SgeTraceTicks.restype = ctypes.c_uint64
    t0, c0 = time.perf_counter(), lib.SgeTraceTicks()
    time.sleep(seconds)
    t1, c1 = time.perf_counter(), lib.SgeTraceTicks()
    return (c1 - c0) / ((t1 - t0) * 1e6)


def node_names(shapes: list[tuple[int, int]]) -> list[str]:
    """ResNet-style names for the fused nodes of one run in order: a new stage wherever the positions change."""
    names, stage, block = [], 0, 0
    for k, (_, positions) in enumerate(shapes):
        if k == 0 or positions != shapes[k - 1][1]:
            stage, block = stage + 1, 0
        names.append(f"layer{stage}.{block}")
        block += 1
    return names


def summarize(
    records: np.ndarray, nodes_per_run: int, ticks_per_us: float, *, swapped: bool = False, rounds: int = 0
) -> list[dict]:
    """Per fused node of a run (calls numbered from 0, ``nodes_per_run`` a run): units, runs, the share of units the
    calling thread ran, the share run by the thread whose half it was not (the caller's half is the first, as ORT's
    parallel-for shards it; the second in a ``swapped`` build), the node's median unit in µs, and each unit's median
    relative to it (in unit order). ``rounds``: the runs traced; a trace that holds fewer (the trace build's buffer
    full) is refused."""
    if nodes_per_run < 1 or len(records) == 0:
        raise ValueError("no traced unit: run the traced fused graph first")
    per_run = int((records["call"] < nodes_per_run).sum())  # the first run's units
    if rounds and len(records) != rounds * per_run:
        raise ValueError(f"the trace holds {len(records)} units, not {rounds} runs of {per_run}: trace fewer rounds")
    node = records["call"] % nodes_per_run
    ticks = records["end"].astype(np.int64) - records["start"].astype(np.int64)
    masks = [node == k for k in range(nodes_per_run)]
    shapes = [(int(records["channels"][m][0]), int(records["positions"][m][0])) if m.any() else (0, 0) for m in masks]
    out = []
    for mine, name, shape in zip(masks, node_names(shapes), shapes, strict=True):
        if not mine.any():
            continue
        unit, caller, node_ticks = records["unit"][mine], records["on_caller"][mine] == 1, ticks[mine]
        units = int(unit.max()) + 1
        half = units // 2
        in_first = unit < half
        off_half = np.where(caller, in_first == swapped, in_first != swapped)
        per_unit = [float(np.median(node_ticks[unit == u])) for u in range(units)]
        typical = statistics.median(per_unit)
        out.append(
            {
                "node": name,
                "channels": shape[0],
                "positions": shape[1],
                "units": units,
                "runs": len(np.unique(records["call"][mine])),
                "caller_share": round(float(caller.mean()), 3),
                "off_half_share": round(float(off_half.mean()), 3),
                "caller_half": "second" if swapped else "first",
                "median_unit_us": round(typical / ticks_per_us, 2),
                "unit_time_vs_median": [round(t / typical, 2) for t in per_unit],
            }
        )
    return out


def summarize_by_placement(
    records: np.ndarray, nodes_per_run: int, ticks_per_us: float, labels: list, *, swapped: bool = False
) -> dict:
    """``summarize`` over the traced rounds of each placement (``labels``: one per round, in order, as
    cpu_placement.round_placements gives them), and how many rounds no placement labels."""
    if len(records) and int(records["call"].max()) // nodes_per_run >= len(labels):
        raise ValueError(f"the trace holds more rounds than the {len(labels)} labelled")
    round_of = records["call"] // nodes_per_run

    def summary_of(rounds: list[int]) -> dict:
        mine = records[np.isin(round_of, rounds)]
        return {"rounds": len(rounds), "nodes": summarize(mine, nodes_per_run, ticks_per_us, swapped=swapped)}

    return split_by_placement(labels, summary_of)


def summary_lines(nodes: list[dict], *, only: str | None = "layer1") -> list[str]:
    lines = []
    for n in nodes:
        if only and not n["node"].startswith(only):
            continue
        shape = f"{n['channels']} channels, {n['positions']} positions, {n['units']} units, {n['runs']} runs"
        lines.append(
            f"  {n['node']} ({shape}): the calling thread ran {n['caller_share']:.2f} of the units, "
            f"{n['off_half_share']:.3f} ran off their half; median unit {n['median_unit_us']:.1f} µs"
        )
        profile = n["unit_time_vs_median"]
        half = len(profile) // 2
        owners = ("the caller's", "the other's")[:: -1 if n.get("caller_half") == "second" else 1]
        for which, owner, part in zip(("first", "second"), owners, (profile[:half], profile[half:]), strict=True):
            label = f"{which} half ({owner})"
            lines.append(f"    unit time / the node's median, {label:25s}: " + " ".join(f"{t:.1f}" for t in part))
    return lines


def placement_summary_lines(split: dict, *, only: str | None = "layer1") -> list[str]:
    """``summarize_by_placement``'s split for people: each placement's rounds and summary, then the rounds left out."""
    lines = []
    for place in (ONE_L3, TWO_L3S):
        if place in split:
            lines.append(f"the rounds with the two CPUs on {place} ({split[place]['rounds']}):")
            lines += summary_lines(split[place]["nodes"], only=only)
    samples = f" (beside one of {split['samples']} samples, or the placement unclear)" if "samples" in split else ""
    lines.append(f"{split['unlabelled_rounds']} rounds unlabelled{samples}")
    return lines


def child(spec: dict) -> dict:
    """In a fresh process: resnet50 and the traced fused graph interleaved on ORT's global pool. The trace's records
    go to ``spec["records"]`` (a .npy file); returned: the trace clock's ticks per µs and each traced fused call's
    wall-clock (start, end)."""
    import time

    from runtime.shared_pool_timing import shared_pool_runners

    resnet, fused = shared_pool_runners([spec["resnet"], spec["fused"]], threads=spec["threads"])
    library = Path(spec["fused"]["library"])
    for rounds in (10, spec["rounds"]):  # untraced warm-up rounds, then the traced ones
        reset_trace(library)
        spans = []
        for _ in range(rounds):
            resnet()
            start = time.time()
            fused()
            spans.append((start, time.time()))
    np.save(spec["records"], read_trace(library))
    return {"ticks_per_us": ticks_per_us(library), "spans": spans}


def trace_units(
    workdir: Path,
    *,
    rounds: int,
    threads: int = 2,
    floor: str | None = None,
    swap_halves: bool = False,
    cpu_placement: bool = False,
) -> dict:
    """Export (or reuse) the two graphs in ``workdir``, build the trace library (with ``floor``'s pass instead of
    SGE, if given; with the threads' halves swapped, if ``swap_halves``), and trace ``rounds`` interleaved rounds in a
    child process: ``{"nodes": summary}``, and with ``cpu_placement`` (2 threads) ``"by_cpu_placement"``, the rounds
    summarised by where the host had the two CPUs."""
    from export.ort_sge.kernels.build import build_library
    from export.ort_sge.session import plan_session
    from runtime.isolated_timing import run_timing_child
    from runtime.kernel_speed.graphs import export_graphs
    from runtime.shared_pool_timing import check_rounds_and_threads, session_spec

    check_rounds_and_threads(rounds, threads)
    if cpu_placement and threads != 2:
        raise ValueError("--cpu-placement labels rounds run on the VM's two CPUs: --threads 2")
    paths = export_graphs(Path(workdir))
    fused, resnet = plan_session(paths["sge_fused"]), plan_session(paths["resnet50"])
    with tempfile.TemporaryDirectory() as build_dir:
        library = build_library(Path(build_dir), floor=floor, trace=True, swap_halves=swap_halves)
        records_file = Path(build_dir) / "records.npy"
        spec = {
            "resnet": session_spec(resnet),
            "fused": session_spec(fused) | {"library": str(library)},
            "nodes_per_run": fused.fused_blocks,
            "rounds": rounds,
            "threads": threads,
            "swapped": swap_halves,
            "records": str(records_file),
        }
        command = [sys.executable, "-m", "runtime.kernel_speed.unit_trace", "--child"]
        with PlacementMonitor() if cpu_placement else contextlib.nullcontext() as monitor:
            traced = run_timing_child(command, what="tracing the fused graph's units", stdin=json.dumps(spec))
        records = np.load(records_file)
    per_us, nodes_per_run = traced["ticks_per_us"], fused.fused_blocks
    out = {"nodes": summarize(records, nodes_per_run, per_us, swapped=swap_halves, rounds=rounds)}
    if cpu_placement:
        labels = round_placements([tuple(span) for span in traced["spans"]], monitor.samples)
        split = summarize_by_placement(records, nodes_per_run, per_us, labels, swapped=swap_halves)
        out["by_cpu_placement"] = {"samples": len(monitor.samples)} | split
    return out


def main(argv: list[str] | None = None) -> int:
    from export.ort_sge.kernels.build import FLOORS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=False, help="exported graphs kept (and reused) here")
    p.add_argument("--rounds", type=int, default=200, help="traced rounds of resnet50 and the fused graph")
    p.add_argument("--threads", type=int, default=2, help="ORT's global pool size")
    p.add_argument("--floor", choices=sorted(FLOORS), help="trace a floor build (kernel_speed.py --floors)")
    p.add_argument(
        "--swap-halves",
        action="store_true",
        help="trace a build that hands the calling thread the upper half of each node's units (same results)",
    )
    p.add_argument(
        "--cpu-placement",
        action="store_true",
        help="also summarise the rounds by where the host had the two CPUs (one L3 or two; cpu_placement.py)",
    )
    p.add_argument("--all", action="store_true", help="print every fused node, not layer1's only")
    p.add_argument("--json", type=Path, help="write the per-node summary here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return 0
    try:
        with tempfile.TemporaryDirectory() as scratch:
            traced = trace_units(
                args.workdir or Path(scratch),
                rounds=args.rounds,
                threads=args.threads,
                floor=args.floor,
                swap_halves=args.swap_halves,
                cpu_placement=args.cpu_placement,
            )
    except PlacementError as err:
        print(f"error: --cpu-placement: {err}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    only = None if args.all else "layer1"
    print("\n".join(summary_lines(traced["nodes"], only=only)))
    if args.cpu_placement:
        print("\n".join(placement_summary_lines(traced["by_cpu_placement"], only=only)))
    if args.json:
        report = {"floor": args.floor, "swap_halves": args.swap_halves, "rounds": args.rounds} | traced
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
