"""Checkpoint loading: official layouts, wrappers, prefixes, safetensors, and the errors for wrong files."""

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models import CheckpointError, build_model, create_model, load_checkpoint
from models.checkpoints import compare_keys, read_state_dict, remap_keys
from tests.models.official_sge_resnet import OfficialResNet50, randomised

INPUT = (2, 3, 64, 80)  # small, non-square; 64 > 32 keeps layer4 at 2×3


@pytest.fixture(scope="module")
def official_sge() -> torch.nn.Module:
    return randomised(OfficialResNet50(sge=True), seed=1)


def test_official_sge_checkpoint_loads_strictly_and_reproduces_outputs(tmp_path: Path, official_sge) -> None:
    # The official checkpoints are saved from DataParallel inside {'state_dict': ...}.
    state = {"module." + k: v for k, v in official_sge.state_dict().items()}
    path = tmp_path / "sge_resnet50.pth.tar"
    torch.save({"epoch": 100, "arch": "sge_resnet50", "state_dict": state}, path)

    model = create_model("sge_resnet50", checkpoint=path)
    x = torch.randn(INPUT)
    with torch.no_grad():
        assert torch.equal(model(x), official_sge(x))


def test_torchvision_layout_resnet50_loads(tmp_path: Path) -> None:
    source = randomised(OfficialResNet50(sge=False), seed=2)  # torchvision's key layout, no attention
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    model = create_model("resnet50", checkpoint=path)
    x = torch.randn(INPUT)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_safetensors_checkpoint_loads(tmp_path: Path, official_sge) -> None:
    path = tmp_path / "sge.safetensors"
    save_file({k: v.contiguous() for k, v in official_sge.state_dict().items()}, str(path))
    model = create_model("sge_resnet50", checkpoint=path)
    x = torch.randn(INPUT)
    with torch.no_grad():
        assert torch.equal(model(x), official_sge(x))


def test_official_cbam_layout_is_renamed(tmp_path: Path) -> None:
    source = build_model("cbam_resnet18").eval()
    official_names = {
        "channel_gate.fc1.": "ChannelGate.mlp.1.",
        "channel_gate.fc2.": "ChannelGate.mlp.3.",
        "spatial_gate.conv.": "SpatialGate.spatial.conv.",
        "spatial_gate.bn.": "SpatialGate.spatial.bn.",
    }
    state = {}
    for key, value in source.state_dict().items():
        for ours, theirs in official_names.items():
            key = key.replace(ours, theirs)
        state[key] = value
    assert any(".cbam.ChannelGate.mlp.1.weight" in k for k in state)
    path = tmp_path / "cbam.pth"
    torch.save({"state_dict": state}, path)
    model = create_model("cbam_resnet18", checkpoint=path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("se_resnet50", ["layer1.0.se.fc1.weight", "layer1.0.se.fc1.bias", "layer1.0.se.fc2.weight"]),  # timm
        (
            "gc_resnet50",
            ["layer2.0.context_block.conv_mask.weight", "layer2.0.context_block.channel_add_conv.1.weight"],
        ),
        ("eca_resnet50", ["layer1.0.eca.conv.weight"]),
        ("sge_resnet50", ["layer1.0.sge.weight", "layer1.0.sge.bias"]),
    ],
)
def test_official_key_layouts_are_ours(name: str, keys: list[str]) -> None:
    state = build_model(name).state_dict()
    assert all(k in state for k in keys)
    # GC sits in stages c3-c5 only, as in GCNet's ResNet-50 setting.
    if name == "gc_resnet50":
        assert not any(k.startswith("layer1.") and "context_block" in k for k in state)


def test_remap_keys_is_pure_and_strips_nested_prefixes() -> None:
    state = {"module.module.layer1.0.cbam.ChannelGate.mlp.1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}
    out = remap_keys(state)
    assert set(out) == {"layer1.0.cbam.channel_gate.fc1.weight", "fc.bias"}
    assert "module.module.layer1.0.cbam.ChannelGate.mlp.1.weight" in state  # input untouched


def test_wrong_checkpoint_lists_every_key_difference(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(build_model("resnet50").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"32 missing: layer1\.0\.sge\.bias"):
        create_model("sge_resnet50", checkpoint=path)


def test_shape_mismatch_is_reported_with_the_checkpoint_class_count(tmp_path: Path) -> None:
    path = tmp_path / "resnet50_10cls.pth"
    torch.save(build_model("resnet50", num_classes=10).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"2 shape: fc\.bias: checkpoint \(10,\) vs model \(1000,\)") as err:
        create_model("resnet50", num_classes=1000, checkpoint=path)
    assert "pass num_classes=10" in str(err.value) and "strict=False" not in str(err.value)  # it would not help


def test_a_wider_classifier_input_gets_no_class_count_hint(tmp_path: Path) -> None:
    """resnet18's fc (1000 × 512) into resnet50 (1000 × 2048): the class counts agree, so 'pass num_classes=1000'
    would be wrong advice (it was given for any fc mismatch)."""
    path = tmp_path / "resnet18.pth"
    torch.save(build_model("resnet18").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"fc\.weight: checkpoint \(1000, 512\) vs model \(1000, 2048\)") as err:
        create_model("resnet50", checkpoint=path)
    assert "num_classes" not in str(err.value) and "check that the checkpoint is of this model" in str(err.value)


def test_a_fine_tuned_classifier_sets_the_class_count(tmp_path: Path) -> None:
    trained = build_model("sge_resnet18", num_classes=10).eval()
    path = tmp_path / "sge_resnet18_10cls.pth"
    torch.save(trained.state_dict(), path)
    model = create_model("sge_resnet18", checkpoint=path)
    x = torch.randn(2, 3, 64, 64)
    assert model.fc.out_features == 10 and torch.equal(model(x), trained(x))


def test_official_eca_kernel_sizes_are_read_from_the_checkpoint(tmp_path: Path) -> None:
    # BangguWu/ECANet's ImageNet ResNet-50 is eca_resnet50_k3557: per-stage sizes, not the channel-count rule's 5557
    trained = build_model("eca_resnet50", kernel_size=(3, 5, 5, 7)).eval()
    path = tmp_path / "eca_resnet50_k3557.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    model = create_model("eca_resnet50", checkpoint=path)
    sizes = [getattr(model, f"layer{i}")[0].eca.conv.kernel_size[0] for i in range(1, 5)]
    x = torch.randn(1, 3, 64, 64)
    assert sizes == [3, 5, 5, 7] and torch.equal(model(x), trained(x))


@pytest.mark.parametrize(
    ("stages", "ratio"), [((True,) * 4, 1 / 16), ((False, True, True, True), 1 / 4)], ids=["c2-c5 r16", "c3-c5 r4"]
)
def test_gcnet_stages_and_ratio_are_read_from_the_checkpoint(tmp_path: Path, stages, ratio) -> None:
    # GCNet's classification networks have a block after every residual block (c2-c5); its detection configs
    # GC(c3-c5, r16) and GC(c3-c5, r4); this project's default gc_resnet50 is c3-c5, r16
    trained = build_model("gc_resnet50", attn_stages=stages, ratio=ratio).eval()
    for module in trained.modules():  # the last conv starts at zero: make the blocks do something
        if hasattr(module, "channel_add_conv"):
            torch.nn.init.normal_(module.channel_add_conv[3].weight, std=0.05)
    path = tmp_path / "gc_resnet50.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    model = create_model("gc_resnet50", checkpoint=path)
    x = torch.randn(1, 3, 64, 64)
    found = [getattr(getattr(model, f"layer{i}")[0], "context_block", None) is not None for i in range(1, 5)]
    assert tuple(found) == stages and torch.equal(model(x), trained(x))


def test_sge_groups_are_read_from_the_checkpoint(tmp_path: Path) -> None:
    # an SGE ResNet trained with SpatialGroupEnhance(32): 16 shape errors and a hint naming options the CLI lacks
    trained = build_model("sge_resnet18", groups=32).eval()
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if ".sge." in name:
                p.normal_(1.0, 0.5)  # gates that depend on γ and β
    path = tmp_path / "sge32.pth"
    torch.save(trained.state_dict(), path)
    model = create_model("sge_resnet18", checkpoint=path)
    x = torch.randn(1, 3, 64, 64)
    assert model.layer1[0].sge.groups == 32 and torch.equal(model(x), trained(x))


@pytest.mark.parametrize("bias", [True, False], ids=["PytorchInsight", "bias-free"])
def test_linear_se_layout_loads(tmp_path: Path, bias: bool) -> None:
    # implus/PytorchInsight's SELayer: fc = Sequential(Linear(C, C/16), ReLU, Linear(C/16, C), Sigmoid)
    ours = build_model("se_resnet18").eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if ".se.fc" in name and name.endswith("bias") and not bias:
                p.zero_()
    state = {}
    for key, value in ours.state_dict().items():
        linear = key.replace(".se.fc1.", ".se.fc.0.").replace(".se.fc2.", ".se.fc.2.")
        if linear != key:
            if key.endswith("bias") and not bias:
                continue
            value = value.flatten(1) if value.ndim == 4 else value
        state[linear] = value
    assert any(".se.fc.0." in key for key in state)  # the checkpoint is in the Linear layout
    path = tmp_path / "se_resnet18.pth"
    torch.save(state, path)
    model = create_model("se_resnet18", checkpoint=path)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), ours(x))


def test_numpy_scalars_beside_the_weights_load_and_other_objects_are_named(tmp_path: Path) -> None:
    import argparse

    import numpy as np

    weights = build_model("resnet18").state_dict()
    path = tmp_path / "train.pth.tar"
    torch.save({"state_dict": weights, "best_prec1": np.float64(71.2), "epoch": np.int64(90)}, path)
    assert torch.equal(create_model("resnet18", checkpoint=path).fc.weight, weights["fc.weight"])
    torch.save({"state_dict": weights, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError) as err:
        create_model("resnet18", checkpoint=path)
    message = str(err.value)
    assert "argparse.Namespace" in message and "model.state_dict()" in message and "\x1b" not in message


def test_non_strict_load_reports_what_it_skipped(tmp_path: Path, caplog) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(build_model("resnet50").state_dict(), path)
    report = load_checkpoint(build_model("sge_resnet50"), path, strict=False)
    assert not report.ok and len(report.missing) == 32 and not report.unexpected
    caplog.clear()
    create_model("sge_resnet50", checkpoint=path, strict=False)  # the report is not thrown away unseen
    assert "loaded partly" in caplog.text and "32 missing" in caplog.text


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"this is not a checkpoint", "cannot read checkpoint"),
        (pickle.dumps(_Payload()), "cannot read checkpoint"),  # refused by weights_only, never executed
    ],
    ids=["garbage", "pickled-code"],
)
def test_unreadable_checkpoint_is_refused(tmp_path: Path, content: bytes, match: str, capsys) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        create_model("resnet18", checkpoint=path)
    assert "code ran" not in capsys.readouterr().out


def test_missing_and_non_state_dict_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("resnet18", checkpoint=tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="is a directory"):
        create_model("resnet18", checkpoint=tmp_path)
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="no state dict"):
        create_model("resnet18", checkpoint=path)


def test_compare_keys_on_matching_state_is_clean() -> None:
    model = build_model("resnet18")
    assert compare_keys(model, model.state_dict()).ok


class _System:
    def __reduce__(self):
        import os

        return (os.system, ("echo code ran while loading",))


def test_a_torch_save_holding_a_call_names_it_and_never_suggests_an_unsafe_load(tmp_path: Path, capsys) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": build_model("resnet18").state_dict(), "x": _System()}, path)
    with pytest.raises(CheckpointError) as err:
        create_model("resnet18", checkpoint=path)
    message = str(err.value)
    assert "holds a Python object (posix.system)" in message and "weights_only" not in message, message
    assert "code ran" not in capsys.readouterr().out
    path.write_bytes(path.read_bytes()[:200])  # truncated: torch's own cause, not its weights_only=False advice
    with pytest.raises(CheckpointError) as err:
        create_model("resnet18", checkpoint=path)
    assert "weights_only" not in str(err.value) and str(err.value).startswith(f"cannot read checkpoint {path} (")


def test_integer_weights_are_refused_not_cast(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    weights = {k: v.to(torch.int32).contiguous() for k, v in build_model("resnet18").state_dict().items()}
    save_file(weights, tmp_path / "int.safetensors")
    with pytest.raises(
        CheckpointError, match=r"holds 102 weights that are not floating point \(\S+: int32\); give the float"
    ):
        create_model("resnet18", checkpoint=tmp_path / "int.safetensors")  # it exported an all-zero model that passed


def test_a_timm_se_checkpoint_with_its_rounded_hidden_widths_loads(tmp_path: Path) -> None:
    """timm's SEModule rounds C/16 up to a multiple of 8: 8 hidden units for ResNet-18's 64 channels, where the
    paper's C/16 gives 4; its seresnet18/34 checkpoints failed at layer1 with a shape mismatch."""
    from safetensors.torch import save_file

    timm_like = build_model("se_resnet18", hidden=(8, 8, 16, 32))  # make_divisible(C/16, 8) per stage
    save_file({k: v.contiguous() for k, v in timm_like.state_dict().items()}, tmp_path / "seresnet18.safetensors")
    loaded = create_model("se_resnet18", checkpoint=tmp_path / "seresnet18.safetensors")
    assert loaded.layer1[0].se.fc1.out_channels == 8 and loaded.layer4[1].se.fc1.out_channels == 32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), timm_like.eval()(x))
    assert build_model("se_resnet18").layer1[0].se.fc1.out_channels == 4  # without a checkpoint: the paper's C/16


def test_a_long_cause_is_cut_at_a_word_not_mid_sentence():
    from models.checkpoints import clip

    text = "PytorchStreamReader failed " + "reading zip archive " * 20
    cut = clip(text)
    assert len(cut) <= 202 and cut.endswith(" …") and text.startswith(cut[:-2]) and text[len(cut) - 2] == " "
    assert clip("short cause") == "short cause"


def test_a_plain_pickle_is_one_error_without_torchs_protocol_warning(tmp_path: Path) -> None:
    import pickle
    import warnings

    path = tmp_path / "plain.pth"
    path.write_bytes(pickle.dumps({"fc.weight": torch.zeros(2, 2)}, protocol=4))  # pickle.dump, not torch.save
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's two-line UserWarning went to stderr before the one-line error
        with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*plain\.pth \(UnpicklingError"):
            read_state_dict(path)
