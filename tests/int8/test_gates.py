"""The INT8 gates at their values (README: INT8, gates): each side of every cosine gate, per scheme and input kind.

The other INT8 tests move the gates out of reach to force a failure; these pin where they stand, so loosening one
(a U8S8 graph at cosine 0.985, noise at 0.84) fails here."""

import pytest

from export.int8.parity import Int8Parity
from export.parity import ParityStats


def stats(cosine: float) -> ParityStats:
    return ParityStats(max_abs=0.1, mean_abs=0.01, rel_l2=0.1, cosine=cosine, top1=1.0, top5=1.0)


def judged(scheme: str, inputs: str, cosine: float, *, clear_top1: float = 1.0) -> list[str]:
    parity = Int8Parity(graph="model.int8.onnx", scheme=scheme)
    parity.add("eager", inputs, 8, stats(cosine), clear_top1=clear_top1)
    return parity.failures


@pytest.mark.parametrize(
    ("scheme", "inputs", "passes", "fails"),
    [
        ("u8s8", "photos", 0.9901, 0.985),  # U8S8 on photographs: 0.99
        ("s8s8", "photos", 0.985, 0.975),  # symmetric activations keep 7 bits after each ReLU: 0.98
        ("u8s8", "random", 0.86, 0.84),  # noise, far from the calibration photographs: 0.85 for either scheme
        ("s8s8", "random", 0.86, 0.84),
    ],
)
def test_each_cosine_gate_at_its_value(scheme, inputs, passes, fails):
    assert judged(scheme, inputs, passes) == []
    (failure,) = judged(scheme, inputs, fails)
    assert f"cosine {fails:.4f} <" in failure and f"{inputs} batch 8 vs eager" in failure


def test_clear_top1_gate_at_its_value_on_photographs_only():
    assert judged("u8s8", "photos", 0.999, clear_top1=0.75) == []
    (failure,) = judged("u8s8", "photos", 0.999, clear_top1=0.74)
    assert "clear top-1 agreement 74% < 75%" in failure
    assert judged("u8s8", "random", 0.999, clear_top1=0.0) == []  # noise has no classes to agree on


def test_a_nan_cosine_fails_whatever_the_gate():
    (failure,) = judged("u8s8", "random", float("nan"))
    assert "NaN or Inf" in failure
