"""Every attention layer against an independent float64 NumPy implementation of its equations."""

import zlib

import numpy as np
import pytest
import torch

from models.layers import (
    CBAM,
    ContextBlock,
    EfficientChannelAttention,
    FeatureTooSmallError,
    SpatialAttention,
    SpatialGroupEnhance,
    SqueezeExcite,
    get_attention,
)
from models.layers.eca import eca_kernel_size
from tests.models import numpy_reference as ref

REL_TOL = 1e-6  # float64, relative to the output's largest magnitude

# (batch, channels, height, width): batch > 1 and non-square maps, as the issue asks.
SHAPES = [(2, 64, 7, 9), (3, 128, 5, 4)]


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fresh random values for every parameter and buffer (no init left at 0/1 to hide a term)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + [b for n, b in module.named_buffers() if "num_batches" not in n]:
            tensor.copy_(torch.randn(tensor.shape, generator=gen, dtype=torch.float64) * 0.5)
        for name, buf in module.named_buffers():
            if name.endswith("running_var"):
                buf.abs_().add_(0.5)
    return module.double().eval()


def run(module: torch.nn.Module, x: np.ndarray, channels_last: bool) -> np.ndarray:
    t = torch.from_numpy(x)
    if channels_last:
        t = t.to(memory_format=torch.channels_last)
    with torch.no_grad():
        return module(t).numpy()


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= REL_TOL, f"relative error {err:.3g} > {REL_TOL}"


def numpy_params(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def se_params(p: dict[str, np.ndarray], prefix: str = "") -> dict[str, np.ndarray]:
    return {
        "w1": p[f"{prefix}fc1.weight"][:, :, 0, 0],
        "b1": p[f"{prefix}fc1.bias"],
        "w2": p[f"{prefix}fc2.weight"][:, :, 0, 0],
        "b2": p[f"{prefix}fc2.bias"],
    }


def reference(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    p = numpy_params(module)
    if isinstance(module, SpatialGroupEnhance):
        return ref.sge(x, p["weight"].ravel(), p["bias"].ravel(), module.groups)
    if isinstance(module, SqueezeExcite):
        return ref.se(x, **se_params(p))
    if isinstance(module, ContextBlock):
        gc = {
            "mask_w": p["conv_mask.weight"].ravel(),
            "mask_b": p["conv_mask.bias"][0],
            "w1": p["channel_add_conv.0.weight"][:, :, 0, 0],
            "b1": p["channel_add_conv.0.bias"],
            "ln_w": p["channel_add_conv.1.weight"][:, 0, 0],
            "ln_b": p["channel_add_conv.1.bias"][:, 0, 0],
            "w2": p["channel_add_conv.3.weight"][:, :, 0, 0],
            "b2": p["channel_add_conv.3.bias"],
        }
        return ref.gc(x, gc, se_params(p, "se.") if module.se is not None else None)
    if isinstance(module, SpatialAttention):
        return ref.spatial_attention(x, p["conv.weight"])
    if isinstance(module, CBAM):
        cbam = {
            "w1": p["channel_gate.fc1.weight"],
            "b1": p["channel_gate.fc1.bias"],
            "w2": p["channel_gate.fc2.weight"],
            "b2": p["channel_gate.fc2.bias"],
            "conv_w": p["spatial_gate.conv.weight"],
            "bn": {k: p[f"spatial_gate.bn.{k}"] for k in ("weight", "bias")}
            | {"mean": p["spatial_gate.bn.running_mean"], "var": p["spatial_gate.bn.running_var"]},
        }
        return ref.cbam(x, cbam)
    if isinstance(module, EfficientChannelAttention):
        return ref.eca(x, p["conv.weight"].ravel())
    raise AssertionError(f"no reference for {type(module).__name__}")


LAYERS = {
    "sge": lambda c: SpatialGroupEnhance(c, groups=16),
    "sge_g64": lambda c: SpatialGroupEnhance(c, groups=64),
    "se": lambda c: SqueezeExcite(c),
    "gc": lambda c: ContextBlock(c),
    "gc_se_refine": lambda c: ContextBlock(c, se_refine=True),
    "sa": lambda c: SpatialAttention(c),
    "cbam": lambda c: CBAM(c),
    "eca": lambda c: EfficientChannelAttention(c),
    "eca_k5": lambda c: EfficientChannelAttention(c, kernel_size=5),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_numpy_float64(name: str, shape: tuple[int, ...], channels_last: bool) -> None:
    channels = shape[1]
    seed = zlib.crc32(f"{name}{shape}".encode())
    module = randomise(LAYERS[name](channels), seed=seed)
    x = np.random.default_rng(seed).standard_normal(shape) * 2.0
    got = run(module, x, channels_last)
    assert got.shape == x.shape
    assert_close(got, reference(module, x))


def test_sge_official_init_and_parameter_shapes() -> None:
    sge = SpatialGroupEnhance(256)
    assert sge.weight.shape == sge.bias.shape == (1, 64, 1, 1)
    assert torch.equal(sge.weight, torch.zeros(1, 64, 1, 1)) and torch.equal(sge.bias, torch.ones(1, 64, 1, 1))


def test_gc_is_identity_at_init() -> None:
    block = ContextBlock(64).eval()
    x = torch.randn(2, 64, 5, 6)
    assert torch.equal(block(x), x)


def test_eca_kernel_from_channel_count() -> None:
    # k = |(log2 C + 1) / 2| rounded up to odd: 64 → 3, 256 → 5, 512 → 5, 2048 → 7 (ECA-Net, eq. 12)
    assert [eca_kernel_size(c) for c in (64, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 7]


def test_sge_rejects_a_one_by_one_map() -> None:
    with pytest.raises(FeatureTooSmallError, match="1×1 feature map"):
        SpatialGroupEnhance(64)(torch.randn(1, 64, 1, 1))


def test_sge_rejects_channels_not_divisible_by_groups() -> None:
    with pytest.raises(ValueError, match="positive groups that divides channels"):
        SpatialGroupEnhance(96, groups=64)


def test_unknown_attention_lists_close_matches() -> None:
    with pytest.raises(KeyError, match="did you mean sge"):
        get_attention("sgee")
