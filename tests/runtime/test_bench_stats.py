"""The statistics against hand-computed cases, and the measuring loop's trtexec semantics."""

import math

import numpy as np
import pytest

from export.artifacts import TensorSpec
from runtime.backends.base import InputMismatchError, Runner
from runtime.bench import measure, measure_all
from runtime.bench_report import box_stats, comparison, parse_cpuinfo, plot_latencies
from runtime.latency import (
    BenchmarkConfig,
    LatencyStats,
    coefficient_of_variation,
    make_report,
    trtexec_median,
    trtexec_percentile,
)

TEN = [float(v) for v in range(1, 11)]  # 1..10 ms


@pytest.mark.parametrize(
    ("percentile", "expected"),
    [
        # n=10, trtexec: exclude = int(float32(1 - p/100) * 10), value at index max(9 - exclude, 0)
        (90, 9.0),  # (1 - 0.9f) = 0.100000024 → × 10 = 1.0000002 → exclude 1 → index 8 → 9 ms
        (95, 10.0),  # 0.5 → exclude 0 → index 9 → the maximum
        (99, 10.0),  # 0.1 → exclude 0 → the maximum
        (50, 5.0),  # exclude 5 → index 4 → 5 ms (not the median, 5.5)
        (0, 1.0),  # exclude 10 → index max(-1, 0) = 0 → the minimum
        (100, 10.0),
    ],
)
def test_trtexec_percentile_on_ten_values(percentile, expected):
    assert trtexec_percentile(TEN, percentile) == expected


def test_trtexec_percentile_on_a_hundred_values():
    values = [float(v) for v in range(1, 101)]
    assert trtexec_percentile(values, 90) == 90.0  # exclude int(10.000002) = 10 → index 89
    assert trtexec_percentile(values, 95) == 95.0  # exclude 5 → index 94
    assert trtexec_percentile(values, 99) == 100.0  # (1 - 0.99f) × 100 = 0.999999 → exclude 0 → the maximum
    assert trtexec_percentile([3.0], 99) == 3.0
    assert math.isinf(trtexec_percentile([], 90))
    with pytest.raises(ValueError, match="percentile"):
        trtexec_percentile(TEN, 101)


def test_median_odd_and_even():
    assert trtexec_median([1.0, 2.0, 7.0]) == 2.0
    assert trtexec_median(TEN) == 5.5
    assert trtexec_median([4.0]) == 4.0


def test_coefficient_of_variation_hand_computed():
    # mean 5, population variance ((3²+1²+1²+3²)/4) = 5 → std √5
    assert coefficient_of_variation([2.0, 4.0, 6.0, 8.0]) == pytest.approx(math.sqrt(5) / 5)
    assert coefficient_of_variation([3.0, 3.0, 3.0]) == 0.0


def test_latency_stats_from_unsorted_times():
    stats = LatencyStats.from_times([5.0, 1.0, 3.0, 2.0, 4.0], (50, 90))
    assert (stats.min, stats.max, stats.mean, stats.median) == (1.0, 5.0, 3.0, 3.0)
    # n=5: p50 exclude int(2.5)=2 → index 2 → 3; p90 exclude int(0.5)=0 → index 4 → 5
    assert stats.percentiles == {"50": 3.0, "90": 5.0}
    assert stats.std == pytest.approx(math.sqrt(2.0))


def test_report_throughput_walltime_and_cv_warning():
    times = [10.0, 10.0, 10.0, 10.0]
    report = make_report("x", batch=8, times_ms=times, walltime_s=0.05, percentiles=(99,))
    assert report.throughput_qps == pytest.approx(4 / 0.05)  # queries over Total Host Walltime: 80 qps
    assert report.throughput_ips == pytest.approx(8 * 80)
    assert not report.cv_warning
    noisy = make_report("y", batch=1, times_ms=[10.0, 10.0, 10.0, 11.0], walltime_s=0.041, percentiles=(99,))
    # mean 10.25, std √(3·0.0625 + 0.5625)/2 = 0.4330 → CV 4.2 % > 2.5 %
    assert noisy.latency.cv == pytest.approx(0.4330127 / 10.25, rel=1e-6)
    assert noisy.cv_warning
    assert any("coefficient of variation is 4.22 %" in line for line in noisy.summary_lines())
    assert any(line.startswith("Total Host Walltime: 0.041 s") for line in noisy.summary_lines())
    d = noisy.to_dict(include_times=True)
    assert d["times_ms"] == [10.0, 10.0, 10.0, 11.0] and d["latency"]["percentiles_ms"] == {"99": 11.0}
    assert "times_ms" not in noisy.to_dict()


def test_comparison_ratios_to_first():
    a = make_report("a", batch=1, times_ms=[2.0, 2.0, 2.0], walltime_s=0.006, percentiles=(90,))
    b = make_report("b", batch=1, times_ms=[1.0, 1.0, 1.0], walltime_s=0.003, percentiles=(90,))
    rows = comparison([a, b])
    assert rows[0]["latency_ratio"] == 1.0 and rows[0]["speedup"] == 1.0
    assert rows[1]["latency_ratio"] == 0.5 and rows[1]["speedup"] == 2.0
    assert rows[1]["throughput_ratio"] == pytest.approx(2.0)


def test_plot_writes_a_png(tmp_path):
    a = make_report("a", batch=1, times_ms=[2.0, 2.1, 1.9, 2.0], walltime_s=0.008, percentiles=(90,))
    b = make_report("b", batch=1, times_ms=[1.0, 1.2, 0.9, 1.1], walltime_s=0.0042, percentiles=(90,))
    path = plot_latencies([a, b], tmp_path / "lat.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))


def test_plot_boxes_are_the_tables_nearest_rank_statistics():
    times = [float(t) for t in range(1, 200)] + [1000.0]  # 200 queries, one far outlier
    box = box_stats(times)
    # observed latencies, as the tables quote (numpy would draw 2.99, 50.75, 150.25 and 198.01: never observed)
    assert (box["whislo"], box["q1"], box["q3"], box["whishi"]) == (2.0, 50.0, 150.0, 199.0)
    assert box["med"] == 100.5 and box["fliers"] == [1.0, 1000.0]
    assert box["mean"] == pytest.approx((199 * 200 / 2 + 1000) / 200)


class MatmulRunner(Runner):
    """A real (numpy) runner for the loop's semantics: counts its calls."""

    name = "matmul"

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.weight = np.ones((4, 2), np.float32)

    @property
    def input_spec(self):
        return TensorSpec("x", ("batch", 4), layout="NC")

    @property
    def output_spec(self):
        return TensorSpec("y", ("batch", 2), layout="NC")

    def _activate_impl(self):
        self.calls = 0

    def _infer_impl(self, batch):
        self.calls += 1
        return batch @ self.weight


def test_measure_runs_at_least_n_iterations_after_one_warmup():
    with MatmulRunner() as runner:
        report = measure(runner, np.ones((3, 4), np.float32), BenchmarkConfig(warmup_ms=0, duration_s=0, iterations=7))
    assert report.queries == 7 and report.warmup_queries == 1 and runner.calls == 8
    assert report.batch == 3 and report.walltime_s >= sum(report.times_ms) / 1e3 * 0.999


def test_measure_runs_at_least_the_duration():
    with MatmulRunner() as runner:
        report = measure(
            runner, np.ones((1, 4), np.float32), BenchmarkConfig(warmup_ms=0, duration_s=0.05, iterations=1)
        )
    assert report.walltime_s >= 0.05 and report.queries > 1


def test_interleaved_mode_times_every_runner():
    runners = {"a": MatmulRunner().activate(), "b": MatmulRunner().activate()}
    config = BenchmarkConfig(warmup_ms=0, duration_s=0, iterations=5, mode="interleave")
    reports = measure_all(runners, np.ones((2, 4), np.float32), config)
    assert [r.backend for r in reports] == ["a", "b"]
    assert all(r.queries == 5 and r.mode == "interleave" for r in reports)
    # each backend's walltime is its own queries' time, not the rounds' (which hold the other backend's too)
    assert all(r.walltime_s == pytest.approx(sum(r.times_ms) / 1e3) for r in reports)


def test_measure_checks_the_batch_before_timing():
    with MatmulRunner() as runner, pytest.raises(InputMismatchError, match="float32"):
        measure(runner, np.ones((1, 4), np.float64), BenchmarkConfig(warmup_ms=0, duration_s=0, iterations=1))
    assert runner.calls == 0


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="mode"):
        BenchmarkConfig(mode="parallel")
    with pytest.raises(ValueError, match="percentiles"):
        BenchmarkConfig(percentiles=(101,))


class StagedRunner(MatmulRunner):
    """A runner with the GPU runners' three stages (run on numpy here) to exercise the device-time plumbing."""

    device = "cuda"

    def to_device(self, batch):
        return batch.copy()

    def compute(self, batch):
        self.calls += 1
        return batch @ self.weight

    def to_host(self, out):
        return np.asarray(out)

    def synchronize(self):
        return None


def test_staged_runner_reports_h2d_compute_d2h():
    with StagedRunner() as runner:
        report = measure(runner, np.ones((2, 4), np.float32), BenchmarkConfig(warmup_ms=0, duration_s=0, iterations=6))
    assert set(report.device_stats) == {"h2d", "compute", "d2h"}
    assert all(len(v) == 6 for v in report.device_times_ms.values())
    for i in range(6):  # the stages lie inside the host latency of the same query
        assert sum(report.device_times_ms[k][i] for k in ("h2d", "compute", "d2h")) <= report.times_ms[i] * 1.001
    lines = report.summary_lines()
    assert any(line.startswith("GPU Compute Time: min = ") for line in lines)
    assert any(line.startswith("Total GPU Compute Time: ") for line in lines)
    assert report.description["stage_timing"] in ("cuda events", "host clock after device sync")


def test_gpu_names_come_from_nvidia_smi(monkeypatch):
    import shutil
    import subprocess

    from runtime import bench_report

    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert bench_report.gpu_names() == []
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    listed = subprocess.CompletedProcess([], 0, stdout="NVIDIA H200\nNVIDIA H200\n\n", stderr="")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: listed)
    assert bench_report.gpu_names() == ["NVIDIA H200", "NVIDIA H200"]
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess([], 9, stdout="", stderr="x"))
    assert bench_report.gpu_names() == []


def test_versions_name_the_onnxruntime_this_process_imported():
    import onnxruntime

    from runtime.bench_report import versions

    assert versions()["onnxruntime_imported"] == onnxruntime.__version__


def cpuinfo(*processors):
    """/proc/cpuinfo text, one stanza per logical CPU (physical id, core id)."""
    stanza = "processor\t: {n}\nmodel name\t: Xeon Test {socket}\nphysical id\t: {socket}\ncore id\t\t: {core}\n"
    return "\n".join(stanza.format(n=n, socket=s, core=c) for n, (s, c) in enumerate(processors))


def test_physical_cores_count_each_socket_and_not_hyperthreads():
    two_sockets_with_threads = [(s, c) for s in (0, 1) for c in (0, 1, 2, 3) for _ in range(2)]  # 16 logical
    assert parse_cpuinfo(cpuinfo(*two_sockets_with_threads)) == ("Xeon Test 0", 8)
    assert parse_cpuinfo(cpuinfo((0, 0), (0, 1))) == ("Xeon Test 0", 2)
    assert parse_cpuinfo("processor\t: 0\nmodel name\t: VM\n") == ("VM", None)  # a VM that hides its cores
