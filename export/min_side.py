"""The smallest input side a --dynamic-hw export takes, found on the eager model and recorded in the manifest.

Below it the model's last feature map is too small: an SGE block's std over one position is undefined (the eager
model raises FeatureTooSmallError), and the exported graph gave NaN on ONNX Runtime, a raw error in the fused graph,
and finite but meaningless logits on OpenVINO. Runners and the serving gate refuse such an input in one line.
"""

import torch
from torch import nn


def accepts_side(model: nn.Module, side: int) -> bool:
    """Whether ``model`` maps one side×side image to finite logits without an error."""
    with torch.no_grad():
        try:
            out = model(torch.zeros(1, 3, side, side))
        except (ValueError, RuntimeError):  # FeatureTooSmallError, or a kernel larger than its padded input
            return False
    return bool(torch.isfinite(out).all())


def smallest_input_side(model: nn.Module, largest: int) -> int:
    """The smallest side in 1..``largest`` (the export's own, which the model must take) that works, by bisection:
    the sides that work are all those from some side up (a feature map only grows with the input). A few forwards
    of tiny inputs."""
    if not accepts_side(model, largest):
        raise ValueError(f"the model refuses its own input size {largest}×{largest}")
    low, high = 0, largest  # low fails (or is 0), high works
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if accepts_side(model, middle) else (middle, high)
    return high
