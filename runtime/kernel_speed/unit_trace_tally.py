"""The kept unit traces tallied: how slow the calling thread's first units were, by placement and width.

``unit_trace --cpu-placement`` prints, per traced run and placement, each unit's median time as a multiple of its
node's median unit. README's account of the far units quotes the range of the caller's first ``first`` units over
the runs of one width (8 or 16 lanes), per placement: this computes it from the runs' JSON. Only the plain traces
count: a floor build or swapped halves reads other data in other units.

    python -m runtime.kernel_speed.unit_trace_tally scripts/reports/kernel_unit_trace_cpu_placement_amd_zen4.json
    python -m runtime.kernel_speed.unit_trace_tally REPORT.json --lanes 16 --first 3
"""

import argparse
import json
import sys
from pathlib import Path

from runtime.kernel_speed.cpu_placement import ONE_L3, TWO_L3S, per_placement_lines

FAR_NODES = ("layer1.0", "layer1.2")


def first_units_by_placement(runs: list[dict], *, lanes: int, first: int, nodes=FAR_NODES) -> dict:
    """Per placement, over the plain traces at ``lanes`` lanes: the runs with rounds there, and the lowest and highest
    multiple among the caller's first ``first`` units of ``nodes``."""
    found: dict = {}
    for run in runs:
        if run.get("floor") or run.get("swap_halves"):
            continue
        for place, split in run.get("by_cpu_placement", {}).items():
            if place not in (ONE_L3, TWO_L3S):
                continue
            picked = [n for n in split["nodes"] if n["node"] in nodes and n["channels"] // n["units"] == lanes]
            times = [t for n in picked for t in n["unit_time_vs_median"][:first]]  # the caller's half is the first
            if times:
                run_numbers, all_times = found.setdefault(place, ([], []))
                run_numbers.append(run.get("run"))
                all_times += times
    return {place: {"runs": r, "min": min(t), "max": max(t)} for place, (r, t) in found.items()}


def tally_lines(result: dict, *, lanes: int, first: int, nodes=FAR_NODES) -> list[str]:
    head = f"{' and '.join(nodes)}, {lanes} lanes, the caller's first {first} units (× the node's median unit):"

    def describe(p: dict) -> str:
        return f"{p['min']:.2f}–{p['max']:.2f}× over runs {', '.join(str(r) for r in p['runs'])}"

    return [head, *per_placement_lines(result, describe)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("report", type=Path, help="a kept unit-trace report (its 'runs') or one unit_trace --json file")
    p.add_argument("--lanes", type=int, default=8, choices=(8, 16), help="the runs of this NCHWc block")
    p.add_argument("--first", type=int, default=7, help="how many of the caller's units, from its first")
    args = p.parse_args(argv)
    try:
        data = json.loads(args.report.read_text())
    except (OSError, ValueError) as err:
        print(f"error: {args.report}: {err}; give a unit-trace report's JSON", file=sys.stderr)
        return 2
    runs = data["runs"] if isinstance(data, dict) and "runs" in data else [data]
    result = first_units_by_placement(runs, lanes=args.lanes, first=args.first)
    if not result:
        print(f"error: no plain --cpu-placement trace at {args.lanes} lanes in {args.report}", file=sys.stderr)
        return 2
    print("\n".join(tally_lines(result, lanes=args.lanes, first=args.first)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
