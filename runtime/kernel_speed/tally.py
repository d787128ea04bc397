"""The kept kernel-speed runs tallied: sge_fused / resnet50 per round (the issue's ratio) over every run of one timing
mode in one or more reports, by CPU and ORT's NCHWc block (16: the AVX-512 paths, 8: the AVX2 paths), with how the
ratio moves with the machine's speed (resnet50's median) and how steady each run's rounds were (its per-round IQR).
With ``by_placement``, the runs of ``kernel_speed.py --cpu-placement`` instead, each placement's per-round ratios
over the runs and how far two L3s put a run above one. The medians and ranges README quotes come from here."""

import json
import re
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from runtime.kernel_speed.cpu_placement import ONE_L3, TWO_L3S, per_placement_lines
from runtime.kernel_speed.ratios import TARGET
from runtime.kernel_speed.text import counted

WHOLE_NETWORK = "the whole networks"
TWO_GRAPHS = {"resnet50", "sge_fused"}
MODES = ("shared-pool", "isolated", "interleaved", "spinning")
# a run's two placements compare only where each labelled at least this many rounds
PLACEMENT_MIN_ROUNDS = 100


class TallyInputError(ValueError):
    """A report that cannot be read or holds no kernel-speed run; the message is one line."""


@dataclass(frozen=True)
class Selection:
    """Which runs count: one timing mode, ``threads`` intra-op threads (the issue's target is for 2), the whole
    networks, at least ``min_rounds`` timed calls per session (an isolated run counts its processes' calls), the two
    graphs alone unless ``extra_sessions``, and optionally only the runs numbered ``first``..``last`` (1-based, in
    each report's order). ``by_placement``: only the runs split by where the host had the two CPUs (whose monitor
    shared the CPUs, so they never count otherwise)."""

    mode: str = "shared-pool"
    min_rounds: int = 0
    extra_sessions: bool = False
    first: int = 1
    last: int | None = None
    threads: int = 2
    by_placement: bool = False

    def describe(self) -> str:
        sessions = "any sessions" if self.extra_sessions else "the two graphs only"
        numbers = f", runs {self.first}–{self.last if self.last else 'last'}" if self.first > 1 or self.last else ""
        threads = counted(self.threads, "thread")
        placed = ", split by the two CPUs' placement" if self.by_placement else ""
        return f"{self.mode}, {threads}, {sessions}, the whole networks, ≥ {self.min_rounds} rounds{numbers}{placed}"


def parse_runs(text: str) -> tuple[int, int | None]:
    """``--runs`` as ``A-B``, ``A-`` or ``A``: the first and last run numbers kept (None: to the end)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([-–])\s*(\d*)\s*)?", text)
    if not match or int(match[1]) < 1:
        raise ValueError(f"--runs {text!r}: give run numbers as A-B, A- or A (from 1)")
    first = int(match[1])
    last = first if not match[2] else (int(match[3]) if match[3] else None)
    if last is not None and last < first:
        raise ValueError(f"--runs {text!r}: the last run comes before the first")
    return first, last


def load_runs(path: Path) -> list[dict]:
    """A report's runs in order: a ``{"runs": [...]}`` collection or one run as ``kernel_speed.py --json`` writes it."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TallyInputError(f"{path}: no such file; give a report that kernel_speed.py --json wrote") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TallyInputError(f"{path} cannot be read as JSON ({err}); give a kernel_speed.py report") from None
    runs = data.get("runs", [data]) if isinstance(data, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and "ratios" in r and "timings" in r for r in runs):
        raise TallyInputError(f"{path} holds no kernel_speed.py run (no ratios and timings); give one of its reports")
    return runs


def timing_mode(run: dict) -> str:
    """The run's timing mode, named as kernel_speed.py's flags name it, from the report's own description."""
    text = run.get("timing_mode", "")
    if "global pool" in text:
        return "shared-pool"
    for mode in ("isolated", "interleaved"):
        if text.startswith(mode):
            return mode
    return "spinning" if text.startswith("blocks") else text


def timed_rounds(run: dict) -> int:
    return int(run["timings"].get("resnet50", {}).get("rounds", 0))


def kept(run: dict, number: int, selection: Selection) -> bool:
    """Whether ``run`` (the ``number``-th in its report) counts under ``selection``."""
    ratio = run["ratios"].get("sge_fused/resnet50", {})
    return (
        "wall_paired" in ratio
        and timing_mode(run) == selection.mode
        and run["machine"].get("threads") == selection.threads
        and run.get("graphs", WHOLE_NETWORK) == WHOLE_NETWORK  # reports from before the cuts timed whole networks
        and (selection.extra_sessions or set(run["timings"]) == TWO_GRAPHS)
        and timed_rounds(run) >= selection.min_rounds
        and ("by_cpu_placement" in run) == selection.by_placement
        and selection.first <= number <= (selection.last or number)
    )


def group_of(run: dict) -> tuple[str, int, str]:
    """(CPU, NCHWc block, the code paths in words): runs compare only within one group."""
    block = int(run["nchwc_block"])
    paths = "AVX-512 paths" if block == 16 else "AVX2 paths" if block == 8 else f"{block}-lane paths"
    view = run["machine"].get("cpu_view")  # e.g. "AVX2 view: AVX-512, AMX and AVX-VNNI hidden from CPUID"
    if view:
        paths += f", {view.split(':')[0]}"
    return run["machine"].get("cpu", "?"), block, paths


def ratio_figures(ratios: list[float]) -> dict:
    """How many runs, their median, range and how many are within the target."""
    return {
        "count": len(ratios),
        "median": round(statistics.median(ratios), 4),
        "min": round(min(ratios), 4),
        "max": round(max(ratios), 4),
        "runs_within_target": sum(r <= TARGET for r in ratios),
    }


def run_names(entries: list[tuple[str, int, dict]]) -> list[str]:
    """Each entry as "report.json#N"."""
    return [f"{Path(report).name}#{number}" for report, number, _ in entries]


def summarize(entries: list[tuple[str, int, dict]]) -> dict:
    """One group's figures from its (report, run number, run) entries."""
    ratios = [run["ratios"]["sge_fused/resnet50"]["wall_paired"] for _, _, run in entries]
    resnet_ms = [run["timings"]["resnet50"]["wall_ms_median"] for _, _, run in entries]
    out = {"runs": run_names(entries)} | ratio_figures(ratios)
    out["resnet50_ms"] = [round(min(resnet_ms), 2), round(max(resnet_ms), 2)]
    spreads = [r["ratios"]["sge_fused/resnet50"].get("wall_paired_iqr") for _, _, r in entries]
    spreads = [s for s in spreads if s is not None]  # reports from before it was kept have none
    if spreads:  # how steady a run's rounds are in this mode: the spread of each run's per-round ratio
        out["per_round_iqr"] = [round(min(spreads), 4), round(statistics.median(spreads), 4), round(max(spreads), 4)]
    if len(ratios) >= 3 and len(set(ratios)) > 1 and len(set(resnet_ms)) > 1:
        # positive: the fused graph's share grows as the machine slows (likely: its tail waits on memory)
        out["correlation_with_resnet50_ms"] = round(statistics.correlation(resnet_ms, ratios), 2)
    return out


def summarize_by_placement(entries: list[tuple[str, int, dict]]) -> dict:
    """One group's runs split by placement: per placement, its runs' per-round ratios (median, range, runs within the
    target); and, over the runs with ``PLACEMENT_MIN_ROUNDS`` rounds on each, two L3s' ratio minus one L3's, in
    points of resnet50 (per run, paired by run)."""
    out: dict = {"runs": run_names(entries), "count": len(entries)}
    splits = [run["by_cpu_placement"] for _, _, run in entries]
    for place in (ONE_L3, TWO_L3S):
        ratios = [split[place]["per_round_ratio"] for split in splits if place in split]
        if ratios:
            out[place] = ratio_figures(ratios)
    points = [
        100 * (split[TWO_L3S]["per_round_ratio"] - split[ONE_L3]["per_round_ratio"])
        for split in splits
        if all(split.get(place, {}).get("rounds", 0) >= PLACEMENT_MIN_ROUNDS for place in (ONE_L3, TWO_L3S))
    ]
    if points:
        out["two_minus_one_points"] = {
            "runs": len(points),
            "higher_on_two": sum(p > 0 for p in points),
            "min": round(min(points), 2),
            "max": round(max(points), 2),
        }
    return out


def tally(reports: list[Path], selection: Selection) -> dict:
    """Every kept run of ``reports`` grouped by CPU and code paths; TallyInputError when none is kept."""
    groups: dict[tuple, list] = {}
    modes_seen, total, with_extra = set(), 0, 0
    wider = replace(selection, extra_sessions=True)
    for report in reports:
        runs = load_runs(report)
        total += len(runs)
        for number, run in enumerate(runs, 1):
            modes_seen.add(timing_mode(run))
            if kept(run, number, selection):
                groups.setdefault(group_of(run), []).append((str(report), number, run))
            with_extra += kept(run, number, wider)
    if not groups:
        hint = f"; {with_extra} with --extra-sessions" if with_extra else ""
        raise TallyInputError(
            f"no run of {total} matches ({selection.describe()}); the reports hold: "
            f"{', '.join(sorted(modes_seen))}{hint}"
        )
    return {
        "reports": [str(r) for r in reports],
        "selection": selection.describe(),
        "target": TARGET,
        "by_placement": selection.by_placement,
        "groups": [
            {"cpu": cpu, "nchwc_block": block, "paths": paths}
            | (summarize_by_placement(entries) if selection.by_placement else summarize(entries))
            for (cpu, block, paths), entries in sorted(groups.items(), key=lambda item: (item[0][0], -item[0][1]))
        ],
    }


def tally_lines(result: dict) -> list[str]:
    """The tally for people: one line per group (split by placement: a line per placement and one for the gap)."""
    lines = [f"{', '.join(result['reports'])}: {result['selection']}; sge_fused/resnet50, per-round medians"]
    for g in result["groups"]:
        if result["by_placement"]:
            lines += placement_group_lines(g, result["target"])
            continue
        corr = g.get("correlation_with_resnet50_ms")
        moves = f", correlation with resnet50's ms {corr:+.2f}" if corr is not None else ""
        iqr = g.get("per_round_iqr")
        steady = f"; per-round IQR {iqr[0]:.3f}–{iqr[2]:.3f}, median {iqr[1]:.3f}" if iqr else ""
        lines.append(
            f"  {g['cpu']}, NCHWc {g['nchwc_block']} ({g['paths']}): {counted(g['count'], 'run')}, "
            f"median {g['median']:.4f}, "
            f"{g['min']:.4f}–{g['max']:.4f}, {g['runs_within_target']} of {g['count']} ≤ {result['target']}; "
            f"resnet50 {g['resnet50_ms'][0]:.2f}–{g['resnet50_ms'][1]:.2f} ms{moves}{steady}"
        )
    return lines


def placement_group_lines(group: dict, target: float) -> list[str]:
    """A group of the tally by placement for people: its runs, a line per placement, then the gap between them."""

    def describe(p: dict) -> str:
        return (
            f"{counted(p['count'], 'run')}, median {p['median']:.4f}, {p['min']:.4f}–{p['max']:.4f}, "
            f"{p['runs_within_target']} of {p['count']} ≤ {target}"
        )

    lines = [f"  {group['cpu']}, NCHWc {group['nchwc_block']} ({group['paths']}): {counted(group['count'], 'run')}"]
    lines += per_placement_lines(group, describe, indent="    ")
    gap = group.get("two_minus_one_points")
    if gap:
        lines.append(
            f"    two L3s - one L3, in the {counted(gap['runs'], 'run')} with ≥ {PLACEMENT_MIN_ROUNDS} rounds on each: "
            f"{gap['min']:+.2f} to {gap['max']:+.2f} points, higher on two in {gap['higher_on_two']}"
        )
    return lines
