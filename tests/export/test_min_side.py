"""The smallest side a --dynamic-hw export takes: the bisection lands exactly on the first side that works."""

import pytest
import torch
from torch import nn

from export.min_side import accepts_side, smallest_input_side


class RefusesBelow(nn.Module):
    """Logits for a side of at least ``smallest``; below it, the error a too-small SGE map raises."""

    def __init__(self, smallest: int) -> None:
        super().__init__()
        self.smallest = smallest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.smallest:
            raise ValueError("feature map too small")
        return x.mean(dim=(2, 3))


@pytest.mark.parametrize("smallest", [1, 2, 33, 37, 64])
def test_bisection_finds_the_first_side_that_works(smallest):
    model = RefusesBelow(smallest)
    found = smallest_input_side(model, 64)
    assert found == smallest and accepts_side(model, found) and (found == 1 or not accepts_side(model, found - 1))


def test_a_model_that_refuses_its_own_size_is_an_error():
    with pytest.raises(ValueError, match="refuses its own input size 32×32"):
        smallest_input_side(RefusesBelow(33), 32)


def test_nan_logits_count_as_refused():
    class NanBelow(RefusesBelow):
        def forward(self, x):
            out = x.mean(dim=(2, 3))
            return out * float("nan") if min(x.shape[-2:]) < self.smallest else out

    assert smallest_input_side(NanBelow(20), 64) == 20
