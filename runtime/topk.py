"""Top-k decoding of classifier logits: softmax probabilities, class indices, and names from a labels file."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class LabelsError(ValueError):
    """A labels file cannot be read or does not fit the model's classes."""


class NonFiniteLogits(ValueError):
    """Logits holding NaN/Inf, which no ranking means anything for; ``rows`` are theirs."""

    def __init__(self, message: str, rows: list[int]) -> None:
        super().__init__(message)
        self.rows = rows


@dataclass(frozen=True)
class Prediction:
    index: int
    probability: float
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "probability": self.probability, "label": self.label}


def load_labels(path: str | Path, *, num_classes: int | None = None) -> list[str]:
    """One class name per line (blank lines kept as empty names so that line i is class i)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()  # a BOM is no part of label 0
    except (OSError, UnicodeDecodeError) as err:
        reason = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else err.strerror or type(err).__name__
        raise LabelsError(
            f"cannot read labels file {path}: {reason}; give a text file with one class name per line"
        ) from err
    while lines and not lines[-1].strip():
        lines.pop()
    if num_classes is not None and len(lines) != num_classes:
        raise LabelsError(
            f"{path} has {len(lines)} labels but the model has {num_classes} classes; give one label per line"
        )
    return [line.strip() for line in lines]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int = 5, *, labels: list[str] | None = None) -> list[list[Prediction]]:
    """For each row of an (N, C) logits array, the ``k`` most probable classes, most probable first."""
    if logits.ndim != 2:
        raise ValueError(f"expected (batch, classes) logits; got shape {logits.shape}")
    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}")
    if labels is not None and len(labels) != logits.shape[1]:
        raise LabelsError(f"{len(labels)} labels for {logits.shape[1]} classes; give one label per class")
    rows = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if rows.size:  # ORT and torch carry a NaN/Inf input through: no ranking of NaN means anything
        raise NonFiniteLogits(
            f"the logits of row(s) {', '.join(map(str, rows[:5]))} hold NaN/Inf: the input did (a runner loaded "
            "with check_finite=True refuses such input) or the model overflowed",
            rows=rows.tolist(),
        )
    probs = softmax(logits.astype(np.float64))
    k = min(k, logits.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [
            Prediction(index=int(i), probability=float(row[i]), label=labels[i] if labels else f"class {int(i)}")
            for i in idx
        ]
        for row, idx in zip(probs, order, strict=True)
    ]
