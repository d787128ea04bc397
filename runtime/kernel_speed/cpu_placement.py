"""Where the host had put a VM's two CPUs while each timed round ran: on one L3 or on two.

A VM's CPUs are the host's to move. On the AMD EPYC VM here a cache line passed between the two in about 45 ns in
some minutes and about 170 ns in others (``cache_probe``), that is, one L3 or two. ``PlacementMonitor`` runs the
probe's placement mode beside a timing: every ``period_ms`` a short handoff between the two CPUs, stamped with the
wall clock. ``round_placements`` then labels each timed round by the samples around it, and leaves out the rounds a
sample ran inside (it took a CPU from them for a fraction of a millisecond).
"""

import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from runtime.kernel_speed.ratios import ratio

ONE_L3, TWO_L3S = "one L3", "two L3s"
# one-way handoff latencies, ns: at most ONE_L3_BELOW on one L3, at least TWO_L3S_ABOVE across two (45 against 170
# on the AMD EPYC VM); a sample between the two labels nothing
ONE_L3_BELOW, TWO_L3S_ABOVE = 80.0, 110.0
SAMPLE_MARGIN_S = 0.005  # a round this close to a sample counts as beside it


class PlacementError(RuntimeError):
    """The placement monitor recorded nothing (its reason in one line)."""


def placement_of(ns: float) -> str | None:
    if ns <= ONE_L3_BELOW:
        return ONE_L3
    return TWO_L3S if ns >= TWO_L3S_ABOVE else None


def round_spans(timings: Sequence) -> list[tuple[float, float]]:
    """Each round's wall-clock (start, end), for ``round_placements``: from its first session's start to its last
    session's end (``timings``: runtime/sge_cost.py's Timing of interleaved calls, one a round)."""
    calls = [list(zip(t.starts, t.wall_ms, strict=True)) for t in timings]
    if len({len(c) for c in calls}) > 1:
        raise ValueError("one call a round in every session")
    return [
        (min(start for start, _ in round_), max(start + ms / 1e3 for start, ms in round_))
        for round_ in zip(*calls, strict=True)
    ]


def round_placements(spans: Sequence[tuple[float, float]], samples: Sequence[tuple[float, float, float]]) -> list:
    """Each round's placement (``ONE_L3``, ``TWO_L3S``) from the samples (start, end, ns) before and after it, or
    None: no sample on one side, the two disagree or are unclear, or a sample ran during the round. ``spans``: each
    round's wall-clock (start, end); both in time order."""
    labels = []
    k = 0
    for start, end in spans:
        while k < len(samples) and samples[k][1] < start - SAMPLE_MARGIN_S:
            k += 1
        # samples[k-1] ended before the round; samples[k] is the first that did not
        before = samples[k - 1] if k > 0 else None
        after = samples[k] if k < len(samples) else None
        if before is None or after is None or after[0] <= end + SAMPLE_MARGIN_S:
            labels.append(None)
            continue
        here = {placement_of(before[2]), placement_of(after[2])}
        labels.append(here.pop() if len(here) == 1 else None)
    return labels


def placement_ratio(fused, base, rounds: list[int], *, target: float) -> dict:
    """``fused`` against ``base`` (runtime/sge_cost.py's Timing, paired by round) over ``rounds``, as
    runtime/kernel_speed/ratios.py's ``ratio`` gives it: the rounds, the median of their per-round ratios and how many
    are within ``target``."""
    r = ratio(rounds_of(fused, rounds), rounds_of(base, rounds), paired=True, target=target)
    return {
        "rounds": r["rounds"],
        "per_round_ratio": round(r["wall_paired"], 4),
        "rounds_within_target": r["rounds_within_target"],
    }


def split_by_placement(labels: Sequence, summarize: Callable[[list[int]], dict]) -> dict:
    """``summarize(rounds)`` for each placement that labels any round (``rounds``: their indices, in order, from
    ``round_placements``'s ``labels``), and how many rounds no placement labels."""
    split: dict = {}
    for place in (ONE_L3, TWO_L3S):
        rounds = [i for i, label in enumerate(labels) if label == place]
        if rounds:
            split[place] = summarize(rounds)
    split["unlabelled_rounds"] = sum(label is None for label in labels)
    return split


def rounds_of(timing, rounds: list[int]):
    """``timing`` (a Timing of interleaved calls) cut down to the calls of ``rounds``."""
    w, c = timing.wall_ms, timing.cpu_ms
    return replace(timing, wall_ms=[w[i] for i in rounds], cpu_ms=[c[i] for i in rounds], places=[], starts=[])


def per_placement_lines(split: dict, describe: Callable[[dict], str], *, indent: str = "  ") -> list[str]:
    """For each placement ``split`` holds, one L3 first: the line "the two CPUs on <placement>  <describe(entry)>"."""
    return [
        f"{indent}the two CPUs on {place:7s}  {describe(split[place])}" for place in (ONE_L3, TWO_L3S) if place in split
    ]


def placement_lines(by_placement: dict, *, target: float) -> list[str]:
    """The split for people: a line per placement, then the rounds left out."""

    def describe(p: dict) -> str:
        ratio_text = f"per-round ratio {p['per_round_ratio']:.3f}"
        return f"{p['rounds']:5d} rounds, {ratio_text}, {p['rounds_within_target']} ≤ {target}"

    lines = per_placement_lines(by_placement, describe)
    lines.append(
        f"  {by_placement['unlabelled_rounds']} rounds unlabelled (beside one of {by_placement['samples']} samples, "
        "or the two CPUs' placement unclear)"
    )
    return lines


def parse_samples(text: str) -> list[tuple[float, float, float]]:
    samples = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 3:  # a line cut short by the monitor's end has fewer
            samples.append((float(words[0]), float(words[1]), float(words[2])))
    return samples


class PlacementMonitor:
    """``with PlacementMonitor() as monitor: ...``; then ``monitor.samples``. Builds the probe on entry
    (KernelBuildError in one line if it cannot) and stops it on exit."""

    def __init__(self, *, period_ms: int = 1000) -> None:
        self.period_ms = period_ms
        self.samples: list[tuple[float, float, float]] = []

    def __enter__(self) -> "PlacementMonitor":
        from runtime.kernel_speed.cache_probe import build_probe

        self._scratch = tempfile.TemporaryDirectory(prefix="cpu-placement-")
        probe = build_probe(Path(self._scratch.name))
        self._process = subprocess.Popen(
            [str(probe), "placement", str(self.period_ms)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:  # a probe that cannot watch (one CPU, say) ends at once: say so before minutes of timing
            _, err = self._process.communicate(timeout=0.2)
        except subprocess.TimeoutExpired:
            return self
        self._scratch.cleanup()
        raise PlacementError(f"the placement monitor stopped at once: {err.strip() or 'no reason given'}")

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        out, err = self._process.communicate()
        self._scratch.cleanup()
        self.samples = parse_samples(out)
        if not self.samples and exc[0] is None:
            raise PlacementError(f"the placement monitor recorded nothing: {err.strip() or 'no sample'}")
