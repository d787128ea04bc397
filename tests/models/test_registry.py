"""The model family: names, parameter counts of the published architectures, options, bad inputs, default weights."""

import pytest
import torch

from models import (
    FeatureTooSmallError,
    InputShapeError,
    UnknownModelError,
    build_model,
    create_model,
    get_config,
    list_models,
)
from models.default_weights import calibration_batch
from models.layers import ATTENTION_LAYERS
from models.transforms import photo_batch


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# The official architectures' parameter counts (torchvision resnet50; the SGE, SENet and CBAM papers' models).
@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("resnet50", 25_557_032),
        ("sge_resnet50", 25_559_080),
        ("se_resnet50", 28_088_024),
        ("cbam_resnet50", 28_089_624),
        ("resnet18", 11_689_512),
        # GCNet's r16 blocks on c3-c5: resnet50 + Σ(2C + 1 + 2C·C/16 + 3·C/16) over 4×512, 6×1024 and 3×2048 channels
        # (conv_mask, the two 1×1 convs with biases, LayerNorm): 25,557,032 + 2,521,741; the paper's 28.08 M
        ("gc_resnet50", 28_078_773),
    ],
)
def test_parameter_counts_equal_the_official_architectures(name: str, count: int) -> None:
    assert n_params(build_model(name)) == count


def test_every_attention_on_every_depth_is_registered() -> None:
    names = list_models()
    assert len(names) == 5 * (1 + len(ATTENTION_LAYERS)) == len(set(names))
    for depth in (18, 34, 50, 101, 152):
        assert f"resnet{depth}" in names
        assert all(f"{attn}_resnet{depth}" in names for attn in ATTENTION_LAYERS)


@pytest.mark.parametrize("name", ["sge_resnet18", "se_resnet34", "gc_resnet18", "sa_resnet18", "cbam_resnet18",
                                  "eca_resnet18"])  # fmt: skip
def test_basic_block_models_run_and_place_attention_after_bn2(name: str) -> None:
    model = build_model(name).eval()
    block = model.layer2[0]
    child = get_config(name).attention
    attn = getattr(block, block.attn_name)
    assert type(attn) is ATTENTION_LAYERS[child]
    assert (
        list(dict(block.named_children())).index(block.attn_name) == list(dict(block.named_children())).index("bn2") + 1
    )
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 96)).shape == (2, 1000)


@pytest.mark.parametrize("stage", ["layer1", "layer2"])  # identity x, then downsample(x)
def test_basic_block_applies_attention_before_the_residual_add(stage: str) -> None:
    """relu(attn(bn2(conv2(relu(bn1(conv1 x))))) + identity), written out here op by op (SENet, CBAM: the attention
    rescales the residual branch only; after the add it would rescale the identity too)."""
    block = getattr(build_model("se_resnet18").eval().double(), stage)[0]
    x = torch.randn(2, block.conv1.in_channels, 14, 18, dtype=torch.float64)
    with torch.no_grad():
        identity = x if block.downsample is None else block.downsample(x)
        branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        expected = torch.relu(getattr(block, block.attn_name)(branch) + identity)
        torch.testing.assert_close(block(x), expected, rtol=0, atol=1e-12)


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="did you mean sge_resnet50"):
        create_model("sge_resnet05")
    with pytest.raises(UnknownModelError, match="'SGE_ResNet50'; did you mean sge_resnet50,"):  # as the paper spells it
        create_model("SGE_ResNet50")


def test_block_overrides_reach_every_stage_or_each_stage() -> None:
    sge32 = build_model("sge_resnet50", groups=32)
    assert sge32.layer1[0].sge.groups == 32 and n_params(sge32) == 25_557_032 + 16 * 2 * 32
    eca = build_model("eca_resnet50", kernel_size=(3, 5, 5, 7))
    assert [s[0].eca.conv.kernel_size[0] for s in (eca.layer1, eca.layer2, eca.layer3, eca.layer4)] == [3, 5, 5, 7]
    gc_all = build_model("gc_resnet50", attn_stages=(True, True, True, True), se_refine=True)
    assert gc_all.layer1[0].context_block.se is not None
    with pytest.raises(TypeError, match="no attention layer"):
        build_model("resnet50", groups=32)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"groups": [32, 64]}, r"groups per stage needs 4 values .*got 2"),
        ({"groups": [64, 64, 64, 64, 64]}, r"groups per stage needs 4 values .*got 5"),  # was cut to 4
        ({"groups": 0}, r"positive groups that divides channels"),
        ({"attn_stages": (True, False)}, r"attn_stages per stage needs 4 values"),
    ],
)
def test_bad_attention_options_are_one_clear_error(overrides, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("sge_resnet50", **overrides)


@pytest.mark.parametrize(
    ("shape", "error", "match"),
    [
        ((3, 64, 64), InputShapeError, r"add a batch dimension"),
        ((1, 4, 64, 64), InputShapeError, r"\(N, 3, H, W\)"),
        ((1, 3, 32, 32), FeatureTooSmallError, r"layer4\.0\.sge .*at least 33×33"),
        # layer1 fails first at 4×4, but the advice is the whole network's minimum, not layer1's 5×5
        ((1, 3, 4, 4), FeatureTooSmallError, r"layer1\.0\.sge .*at least 33×33"),
    ],
)
def test_bad_input_gives_one_clear_error(shape: tuple[int, ...], error: type, match: str) -> None:
    model = build_model("sge_resnet50").eval()
    with pytest.raises(error, match=match), torch.no_grad():
        model(torch.randn(shape))


@pytest.mark.parametrize(
    ("dtype", "match"),
    [(torch.uint8, r"got torch\.uint8: scale it to floats first"), (torch.float64, r"x\.to\(torch\.float32\)")],
)
def test_an_input_of_another_dtype_gives_one_clear_error(dtype: torch.dtype, match: str) -> None:
    model = build_model("resnet18").eval()
    with pytest.raises(InputShapeError, match=match), torch.no_grad():
        model(torch.zeros(1, 3, 64, 64, dtype=dtype))


def test_channels_last_input_gives_the_same_output() -> None:
    model = build_model("sge_resnet18").eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), model(x), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def default_sge() -> torch.nn.Module:
    return create_model("sge_resnet50")


def test_default_weights_are_deterministic_and_exercise_attention(default_sge) -> None:
    again = create_model("sge_resnet50")
    for (k, a), b in zip(default_sge.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert all(m.sge.weight.abs().min() > 0 for m in default_sge.layer3)  # γ ≠ 0: the similarity map matters
    gc = create_model("gc_resnet18", init="random")
    assert gc.layer2[0].context_block.channel_add_conv[3].weight.abs().sum() > 0  # GC is not the identity


def batchnorm_output_stats(model: torch.nn.Module) -> tuple[list[tuple[float, float]], torch.Tensor]:
    """Per BatchNorm: the largest |mean| and |variance − 1| of its standardised output (affine undone) per channel."""

    batch = torch.from_numpy(calibration_batch((224, 224)))
    stats = []

    def hook(module, inputs, output):
        standardised = (output - module.bias[:, None, None]) / module.weight[:, None, None]
        mean = standardised.mean(dim=(0, 2, 3))
        var = standardised.var(dim=(0, 2, 3))
        stats.append((mean.abs().max().item(), (var - 1).abs().max().item()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        logits = model(batch)
    for h in handles:
        h.remove()
    return stats, logits


def test_default_weights_normalise_every_layer_on_real_photographs(default_sge) -> None:
    stats, logits = batchnorm_output_stats(default_sge)
    assert torch.isfinite(logits).all() and len(set(logits.argmax(1).tolist())) > 1  # not a constant network
    assert len(stats) == 53  # every BatchNorm of the network
    # BatchNorm statistics re-estimated on the photographs: each layer's output is standardised on them (measured:
    # mean <= 0.007, |var - 1| <= 0.012; the running variance is the unbiased one, a 1/(2N) drift per layer).
    assert max(m for m, _ in stats) < 0.02
    assert max(v for _, v in stats) < 0.05
    # ...which a random init's running statistics (0 and 1) are far from.
    random_stats, _ = batchnorm_output_stats(create_model("sge_resnet50", init="random"))
    assert max(m for m, _ in random_stats) > 0.5  # measured: 5.7


def test_create_model_leaves_the_callers_random_state_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_model("resnet18", init="random")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", ["sge_resnet50", "gc_resnet50"])  # gc: the worst-conditioned variant
def test_default_weights_are_well_conditioned_in_float32(name: str) -> None:
    # The export's parity gates (rel. L2 1e-5) must measure the export, not the weights' own rounding noise:
    # float32 logits stay within 1e-5 rel. L2 of float64 on the photographs (measured: sge 9.8e-7, gc 3.3e-6).
    model = create_model(name)
    photos = torch.from_numpy(photo_batch((224, 224)))
    with torch.no_grad():
        got = model(photos).double()
        exact = model.double()(photos.double())
    assert ((got - exact).norm() / exact.norm()).item() < 1e-5
