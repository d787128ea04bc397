"""Where the host had a VM's two CPUs while each round ran (runtime/kernel_speed/cpu_placement.py): the labels from
the samples around each round, the rounds a sample ran beside left out, the split of the per-round ratio, and the
monitor itself (the cache probe's placement mode)."""

import itertools
import os

import pytest

from runtime.kernel_speed.cpu_placement import (
    ONE_L3,
    TWO_L3S,
    PlacementError,
    PlacementMonitor,
    parse_samples,
    placement_lines,
    placement_of,
    placement_ratio,
    round_placements,
    round_spans,
    split_by_placement,
)
from runtime.sge_cost import Timing
from tests.conftest import needs_compiler


def test_a_sample_names_one_l3_two_or_neither():
    assert [placement_of(ns) for ns in (30.0, 80.0, 95.0, 110.0, 170.0)] == [ONE_L3, ONE_L3, None, TWO_L3S, TWO_L3S]


def test_each_round_takes_the_placement_the_samples_on_both_sides_agree_on():
    samples = [(10.0, 10.001, 40.0), (11.0, 11.001, 45.0), (12.0, 12.001, 170.0), (13.0, 13.001, 165.0)]
    spans = [
        (9.5, 9.6),  # no sample before it
        (10.2, 10.3),  # between two samples on one L3
        (10.95, 11.05),  # a sample ran during it
        (11.5, 11.6),  # one L3 before, two after: unclear
        (12.3, 12.4),  # two L3s on both sides
        (12.997, 12.9995),  # within 5 ms of the next sample
        (13.5, 13.6),  # no sample after it
    ]
    assert round_placements(spans, samples) == [None, ONE_L3, None, None, TWO_L3S, None, None]
    assert round_placements(spans, []) == [None] * len(spans)


def test_the_ratio_is_split_by_placement_and_the_unlabelled_rounds_counted():
    fused = Timing("sge_fused", [101.0, 103.0, 105.0, 110.0, 99.0], [1.0] * 5, places=[0, 1, 0, 1, 0])
    base = Timing("resnet50", [100.0] * 5, [1.0] * 5, places=[1, 0, 1, 0, 1])
    labels = [ONE_L3, TWO_L3S, TWO_L3S, None, ONE_L3]

    def ratio_of(rounds):
        return placement_ratio(fused, base, rounds, target=1.02)

    split = split_by_placement(labels, ratio_of)
    assert split[ONE_L3] == {"rounds": 2, "per_round_ratio": 1.0, "rounds_within_target": 2}
    assert split[TWO_L3S] == {"rounds": 2, "per_round_ratio": 1.04, "rounds_within_target": 0}
    assert split["unlabelled_rounds"] == 1
    assert TWO_L3S not in split_by_placement([ONE_L3] * 5, ratio_of)
    with pytest.raises(ValueError, match="one call a round"):
        round_spans(
            [Timing("a", [1.0] * 5, [1.0] * 5, starts=[0.0] * 5), Timing("b", [1.0] * 4, [1.0] * 4, starts=[0.0] * 4)]
        )
    lines = placement_lines(split | {"samples": 7}, target=1.02)
    assert "one L3" in lines[0] and "2 rounds, per-round ratio 1.000, 2 ≤ 1.02" in lines[0]
    assert "two L3s" in lines[1] and "per-round ratio 1.040, 0 ≤ 1.02" in lines[1]
    assert lines[2].split()[:2] == ["1", "rounds"] and "7 samples" in lines[2]


def test_a_line_cut_short_by_the_monitors_end_is_dropped():
    assert parse_samples("1.5 1.6 40.0\n2.5 2.6 170.5\n3.5 3.") == [(1.5, 1.6, 40.0), (2.5, 2.6, 170.5)]


@needs_compiler
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the monitor hands a line between two CPUs")
def test_the_monitor_samples_the_two_cpus_until_it_is_stopped():
    import time

    with PlacementMonitor(period_ms=50) as monitor:
        time.sleep(1.0)
    samples = monitor.samples
    assert 5 <= len(samples) <= 25, len(samples)
    assert all(start <= end and 0 < ns < 100_000 for start, end, ns in samples)
    assert all(a[0] < b[0] for a, b in itertools.pairwise(samples))


def test_a_monitor_that_cannot_watch_says_why_before_any_timing(tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    probe.write_text("#!/bin/sh\necho 'cache_probe: placement needs two CPUs' >&2\nexit 2\n")
    probe.chmod(0o755)
    monkeypatch.setattr("runtime.kernel_speed.cache_probe.build_probe", lambda folder: probe)
    stopped = pytest.raises(PlacementError, match="stopped at once: cache_probe: placement needs two CPUs")
    with stopped, PlacementMonitor():
        pytest.fail("the monitor let the timing start")
