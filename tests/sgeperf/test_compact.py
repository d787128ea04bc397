"""CompactSGE equals the official SpatialGroupEnhance: float64 and float32, random inputs and photographs."""

import copy

import numpy as np
import pytest
import torch

from export.sge_compact import (
    CompactSGE,
    FeatureSizeMismatchError,
    _group_sum_weights,
    compact_sge,
)
from models import FeatureTooSmallError, create_model
from models.layers import SpatialGroupEnhance
from models.transforms import photo_batch

F64_RTOL = 1e-10  # float64: only the summation order differs
F32_ATOL = 2e-5  # float32 layer outputs of unit-scale inputs


def official_layer(channels: int, groups: int, seed: int) -> SpatialGroupEnhance:
    layer = SpatialGroupEnhance(channels, groups=groups)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # γ, β away from their 0/1 init so that every term shows
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return layer.eval()


@pytest.mark.parametrize("static", [True, False], ids=["static-size", "any-size"])
@pytest.mark.parametrize(
    ("shape", "groups"),
    [((1, 256, 14, 14), 64), ((3, 512, 7, 9), 64), ((8, 64, 5, 6), 8), ((3, 48, 6, 4), 4), ((2, 32, 9, 5), 32)],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_matches_official(shape, groups, dtype, static):
    b, c, h, w = shape
    official = official_layer(c, groups, seed=c + groups).to(dtype)
    compact = CompactSGE.from_official(official, feature_size=(h, w) if static else None)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(b * h), dtype=dtype) * 2 + 0.5
    with torch.no_grad():
        want, got = official(x), compact(x)
    scale = want.abs().max().item()
    if dtype == torch.float64:
        assert (got - want).abs().max().item() <= F64_RTOL * scale
    else:
        assert (got - want).abs().max().item() <= F32_ATOL * max(scale, 1.0)


def test_channels_last_input():
    official = official_layer(128, 64, seed=3)
    x = torch.randn(3, 128, 6, 10, generator=torch.Generator().manual_seed(1)).to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = official(x.contiguous())
        got = CompactSGE.from_official(official, feature_size=(6, 10))(x)
    torch.testing.assert_close(got, want, atol=F32_ATOL, rtol=0)


def test_group_sum_weights_are_block_one_hot():
    reduce_w, expand_w, conv_groups = _group_sum_weights(256, 64, block=8)
    assert conv_groups == 8 and reduce_w.shape == (64, 32, 1, 1) and expand_w.shape == (256, 8, 1, 1)
    assert set(reduce_w.unique().tolist()) == {0.0, 1.0} and set(expand_w.unique().tolist()) == {0.0, 1.0}
    assert (reduce_w.sum(dim=(1, 2, 3)) == 4).all()  # each group sums its own C/G = 4 channels
    assert (expand_w.sum(dim=(1, 2, 3)) == 1).all()  # each channel copies exactly one group's gate
    # Unpacked to dense C→G and G→C matrices, reduce ∘ expand is "same group" (ones on the block diagonal).
    dense_reduce = torch.block_diag(*reduce_w[:, :, 0, 0].split(8, dim=0))
    dense_expand = torch.block_diag(*expand_w[:, :, 0, 0].split(32, dim=0))
    group = torch.arange(256) // 4
    torch.testing.assert_close(dense_expand @ dense_reduce, (group[:, None] == group[None, :]).float())


def model_pair(dtype: torch.dtype, size: tuple[int, int], *, static: bool):
    official = create_model("sge_resnet18", init="random").to(dtype)
    compact = compact_sge(copy.deepcopy(official), input_size=size if static else None)
    return official, compact


@pytest.mark.parametrize("static", [True, False], ids=["static-size", "any-size"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_model_on_photographs_and_random_inputs(dtype, static):
    size = (96, 128)  # non-square: 24×32 down to 3×4 feature maps
    official, compact = model_pair(dtype, size, static=static)
    photos = torch.from_numpy(photo_batch(size)).to(dtype)
    noise = torch.randn(8, 3, *size, generator=torch.Generator().manual_seed(0), dtype=dtype)
    with torch.no_grad():
        for x in (photos[:1], photos[:3], noise):
            want, got = official(x), compact(x)
            err = (got - want).abs().max().item()
            rel = (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)).item()
            if dtype == torch.float64:
                assert rel <= 1e-12, (err, rel)
            else:
                assert err <= 1e-4 and rel <= 1e-5, (err, rel)
            assert (got.argmax(1) == want.argmax(1)).all()


def test_state_dict_is_unchanged_and_loads_strictly():
    official = create_model("sge_resnet18", init="random")
    compact = compact_sge(copy.deepcopy(official), input_size=(64, 64))
    assert sum(isinstance(m, CompactSGE) for m in compact.modules()) == 8
    assert not any(isinstance(m, SpatialGroupEnhance) for m in compact.modules())
    assert list(compact.state_dict()) == list(official.state_dict())
    fresh = compact_sge(create_model("sge_resnet18", init="random"), input_size=(64, 64))
    with torch.no_grad():  # new SGE parameters in the official model, loaded into a compact one
        for name, p in official.named_parameters():
            if ".sge." in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    fresh.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = official(x), fresh(x)
    assert (torch.linalg.vector_norm(got - want) / torch.linalg.vector_norm(want)).item() <= 1e-5


def test_model_without_sge_is_returned_unchanged():
    model = create_model("resnet18", init="random")
    before = copy.deepcopy(model.state_dict())
    assert compact_sge(model, input_size=(64, 64)) is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_static_size_rejects_another_size():
    official = official_layer(64, 8, seed=0)
    compact = CompactSGE.from_official(official, feature_size=(7, 7))
    with pytest.raises(FeatureSizeMismatchError, match=r"built for 7×7 .* received 8×8"):
        compact(torch.randn(1, 64, 8, 8))
    any_size = CompactSGE.from_official(official)
    for hw in [(8, 8), (5, 11)]:
        x = torch.randn(2, 64, *hw)
        with torch.no_grad():
            np.testing.assert_allclose(any_size(x).numpy(), official(x).numpy(), atol=F32_ATOL)


def test_one_by_one_feature_map_is_refused():
    with pytest.raises(FeatureTooSmallError, match="1×1"):
        CompactSGE(64, groups=8)(torch.randn(1, 64, 1, 1))


def test_compacted_network_names_the_block_and_the_smallest_input():
    model = compact_sge(create_model("sge_resnet18", init="random"))
    with pytest.raises(FeatureTooSmallError, match=r"layer4\.0\.sge .*at least 33×33"), torch.no_grad():
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("kwargs", [{"groups": 7}, {"feature_size": (0, 4)}, {"block": 0}])
def test_bad_construction_is_refused(kwargs):
    with pytest.raises(ValueError):
        CompactSGE(64, **kwargs)
