"""Tiny models and captures shared by the inspection tests (ResNet-18, random init, 64×64 photographs)."""

import pytest
import torch

from models import create_model
from models.inspection import capture
from models.transforms import photo_batch

SIZE = (64, 64)


@pytest.fixture(scope="session")
def photos() -> torch.Tensor:
    """Two real photographs (astronaut, chelsea), eval-transformed to 64×64."""
    return torch.from_numpy(photo_batch(SIZE, names=("astronaut", "chelsea")))


@pytest.fixture(scope="session")
def sge_model() -> torch.nn.Module:
    return create_model("sge_resnet18", init="random", groups=8)


@pytest.fixture(scope="session")
def sge_captures(sge_model, photos):
    captures, logits = capture(sge_model, photos)
    return captures, logits


@pytest.fixture(scope="session", params=["cbam_resnet18", "sa_resnet18", "gc_resnet18"])
def map_model(request) -> tuple[str, torch.nn.Module]:
    return request.param, create_model(request.param, init="random")
