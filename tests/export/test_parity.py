"""Parity statistics are pure functions: exact values on constructed inputs, and every failure reported at once."""

import numpy as np
import pytest

from export.parity import ParityError, ParityReport, compare, evaluate_case, in_chunks


def test_identical_outputs_have_zero_error_and_full_agreement():
    ref = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    stats = compare(ref, ref.copy())
    assert stats.max_abs == 0 and stats.mean_abs == 0 and stats.rel_l2 == 0
    assert stats.cosine == pytest.approx(1.0) and stats.top1 == 1 and stats.top5 == 1


def test_statistics_on_a_known_perturbation():
    ref = np.array([[3.0, 4.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    cand = ref.copy()
    cand[1] = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # second sample: orthogonal, top-1 flips
    stats = compare(ref, cand)
    assert stats.max_abs == 1.0
    assert stats.mean_abs == pytest.approx(2 / 12)
    assert stats.rel_l2 == pytest.approx(np.sqrt(2))  # worst sample: ‖(-1, 1)‖ / ‖(1, 0)‖
    assert stats.cosine == pytest.approx(0.0)
    assert stats.top1 == 0.5


def test_every_failure_is_collected_and_raised_once():
    ref = np.ones((2, 10), np.float32)
    bad = ref + 0.5  # fails both gates
    report = ParityReport(backend="onnxruntime", atol=1e-4, rtol=1e-5)
    report.cases.append(evaluate_case("random", ref, ref.copy(), atol=1e-4, rtol=1e-5))
    report.cases.append(evaluate_case("photos", ref, bad, atol=1e-4, rtol=1e-5))
    report.cases.append(evaluate_case("random", ref, ref[:1], atol=1e-4, rtol=1e-5))
    nan = ref.copy()
    nan[0, 0] = np.nan
    report.cases.append(evaluate_case("photos", ref, nan, atol=1e-4, rtol=1e-5))
    assert not report.passed
    failures = report.failures()
    assert len(failures) == 4
    assert any("max abs" in f for f in failures) and any("relative L2" in f for f in failures)
    assert any("shape" in f for f in failures) and any("NaN" in f for f in failures)
    with pytest.raises(ParityError) as info:
        report.raise_for_failures()
    assert info.value.report is report and all(f in str(info.value) for f in failures)


@pytest.mark.parametrize(
    ("delta", "atol", "rtol", "failed"),
    [
        (1.5e-3, 1e-2, 1e-5, ["relative L2 1.5e-05 > rtol 1e-05"]),  # within atol, 1.5 × rtol
        (0.9e-3, 1e-2, 1e-5, []),  # both within
        (1.5e-4, 1e-4, 1e-5, ["max abs 0.00015 > atol 0.0001"]),  # within rtol, 1.5 × atol
        (0.9e-4, 1e-4, 1e-5, []),
    ],
)
def test_each_gate_at_its_boundary_fails_alone(delta, atol, rtol, failed):
    ref = np.full((1, 100), 10.0)  # ‖ref‖ = 100: one element off by delta gives max abs delta, rel L2 delta / 100
    cand = ref.copy()
    cand[0, 3] += delta
    case = evaluate_case("photos", ref, cand, atol=atol, rtol=rtol)
    assert [f.removeprefix("photos batch 1: ") for f in case.failures] == failed


def test_an_empty_report_does_not_pass():
    report = ParityReport(backend="onnxruntime", atol=1e-4, rtol=1e-5)
    assert not report.passed
    with pytest.raises(ParityError, match="no parity case"):
        report.raise_for_failures()


def test_noise_floor_passes_only_a_candidate_as_close_to_exact_as_eager_fp32():
    exact = np.linspace(-5, 5, 20).reshape(2, 10)
    eager = exact * (1 + 1e-3)  # eager FP32 itself is 1e-3 away from the exact result
    close = exact * (1 - 1.5e-3)  # fails rtol against eager, but is within 4× eager's own error of exact
    far = exact * (1 + 5e-3)
    assert evaluate_case("photos", eager, close, atol=1e-4, rtol=1e-5).failures  # without exact: fails
    case = evaluate_case("photos", eager, close, atol=1e-4, rtol=1e-5, exact=exact)
    assert case.passed and case.gate == "fp32-noise-floor"
    assert case.noise_floor["eager_fp32"] == pytest.approx(1e-3) and case.noise_floor["candidate"] == pytest.approx(
        1.5e-3
    )
    case = evaluate_case("photos", eager, far, atol=1e-4, rtol=1e-5, exact=exact)
    assert not case.passed and "float64" in case.failures[-1]


def test_a_nan_in_eager_pytorchs_output_fails_instead_of_passing_every_gate():
    reference = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    reference[0, 3] = np.nan
    case = evaluate_case("photos", reference, np.zeros_like(reference) + 0.5, atol=1e-4, rtol=1e-5)
    assert not case.passed and "eager PyTorch's output has NaN or Inf" in case.failures[0]


def test_a_nan_tolerance_fails_every_case_and_is_refused_by_the_spec():
    from export.spec import ExportSpec, SpecError

    reference = np.random.default_rng(1).standard_normal((2, 10)).astype(np.float32)
    assert not evaluate_case("random", reference, reference + 100, atol=float("nan"), rtol=float("nan")).passed
    for bad in (float("nan"), float("inf"), 0.0):
        with pytest.raises(SpecError, match="tolerances must be positive and finite"):
            ExportSpec(atol=bad)


def test_an_int8_graph_with_nan_output_fails_its_parity():
    from export.int8.parity import Int8Parity

    reference = np.random.default_rng(2).standard_normal((8, 10)).astype(np.float32)
    got = reference.copy()
    got[0] = np.nan  # one sample of eight: the clear top-1 agreement alone would still be 7/8
    report = Int8Parity(graph="model.int8.onnx", scheme="u8s8")
    report.add("eager", "photos", 8, compare(reference, got), clear_top1=0.875)
    assert not report.passed and "NaN or Inf" in report.failures[0]


def test_in_chunks_runs_at_most_size_rows_and_pads_a_chunk_below_the_minimum():
    x = np.arange(7.0, dtype=np.float32).reshape(7, 1)
    seen = []
    out = in_chunks(lambda batch: seen.append(batch.ravel().tolist()) or batch * 2, x, 3, minimum=2)
    assert seen == [[0, 1, 2], [3, 4, 5], [6, 0]]  # the last row padded with the first (an engine profile's MIN 2)
    np.testing.assert_array_equal(out, x * 2)  # the padding's outputs dropped
