"""The recorder captures exactly the tensors the forward pass computes, and leaves the model as it found it."""

import pytest
import torch

from models import create_model
from models.inspection import AttentionRecorder, HookPointError, NoSpatialAttentionError, attention_layers, capture


def _own_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each attention layer's output through a plain forward hook of the test's own, and the logits."""
    seen, handles = {}, []
    for name, layer in attention_layers(model):
        handles.append(layer.register_forward_hook(lambda _m, _a, out, name=name: seen.__setitem__(name, out.clone())))
    with torch.no_grad():
        logits = model(x)
    for h in handles:
        h.remove()
    return seen, logits


def test_sge_capture_is_what_the_forward_computed(sge_model, sge_captures, photos):
    captures, logits = sge_captures
    own, own_logits = _own_outputs(sge_model, photos)
    assert [c.name for c in captures] == list(own) and len(captures) == 8
    assert torch.equal(logits, own_logits)  # the hooks changed nothing
    for cap in captures:
        layer = dict(attention_layers(sge_model))[cap.name]
        b, c, h, w = cap.input.shape
        g = cap.groups
        assert (cap.kind, g) == ("sge", 8)
        assert cap.attention.shape == cap.normalized.shape == (b, g, h, w)
        assert torch.equal(cap.output, own[cap.name])
        # The output is the input times the captured gate, bit for bit: the gate is the tensor the block applied.
        gated = cap.input.reshape(b * g, c // g, h, w) * cap.attention.reshape(b * g, 1, h, w)
        assert torch.equal(cap.output, gated.reshape(b, c, h, w))
        # The gate is σ(γ·ĉ + β) of the captured ĉ (same ops as the layer, so exact).
        a = cap.normalized.reshape(b, g, h, w) * layer.weight + layer.bias
        assert torch.equal(cap.attention, torch.sigmoid(a))
        with torch.no_grad():
            assert torch.equal(layer(cap.input), cap.output)


def test_spatial_map_capture_is_what_the_forward_computed(map_model, photos):
    name, model = map_model
    captures, logits = capture(model, photos)
    own, own_logits = _own_outputs(model, photos)
    assert torch.equal(logits, own_logits)
    assert len(captures) == (6 if name.startswith("gc") else 8)  # GC sits in stages 2-4 only
    layers = dict(attention_layers(model))
    for cap in captures:
        b, _, h, w = cap.input.shape
        assert cap.attention.shape == (b, 1, h, w) and cap.normalized is None
        assert torch.equal(cap.output, own[cap.name])
        layer = layers[cap.name]
        with torch.no_grad():
            if cap.kind == "gc":
                expected = layer.attention(cap.input).reshape(b, 1, h, w)
                torch.testing.assert_close(cap.attention.sum(dim=(2, 3)), torch.ones(b, 1), rtol=0, atol=1e-5)
            elif cap.kind == "cbam":
                channel_gated = layer.channel_gate(cap.input)
                expected = layer.spatial_gate.gate(channel_gated)
                assert torch.equal(cap.output, channel_gated * cap.attention)
            else:
                expected = layer.gate(cap.input)
                assert torch.equal(cap.output, cap.input * cap.attention)
        assert torch.equal(cap.attention, expected)


def test_recorder_leaves_no_hook_or_tap_behind(map_model, sge_model):
    for model in (map_model[1], sge_model):
        with AttentionRecorder(model):
            pass
        for module in model.modules():
            assert not module._forward_hooks
            assert "gate" not in vars(module) and "attention" not in vars(module)


def test_model_without_spatial_attention_is_refused():
    for name in ("resnet18", "se_resnet18", "eca_resnet18"):
        with pytest.raises(NoSpatialAttentionError, match="sge_resnet50"):
            AttentionRecorder(create_model(name, init="random"))


def test_sge_layer_without_hook_point_is_refused_and_cleaned_up():
    model = create_model("sge_resnet18", init="random", groups=8)
    del model.layer2[0].sge.gate
    with pytest.raises(HookPointError, match=r"layer2\.0 has no `gate`"), AttentionRecorder(model):
        pass
    assert all(not m._forward_hooks for m in model.modules())


def test_results_before_a_forward_pass_is_an_error(sge_model):
    with AttentionRecorder(sge_model) as recorder, pytest.raises(HookPointError, match="run a forward pass"):
        recorder.results()


def test_sge_hook_points_keep_state_dict_keys(sge_model):
    layer = sge_model.layer1[0].sge
    assert sorted(layer.state_dict()) == ["bias", "weight"]
    assert isinstance(layer.gate, torch.nn.Sigmoid) and isinstance(layer.normalized, torch.nn.Identity)
