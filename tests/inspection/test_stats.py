"""Statistics match a direct NumPy computation on the captured tensors."""

import numpy as np
import pytest
import torch

from models.inspection import block_stats, capture, stage_stats
from models.inspection.stats import group_spread, group_variance


def _numpy_block(cap) -> dict[str, float]:
    x, y, att = (t.numpy().astype(np.float64) for t in (cap.input, cap.output, cap.attention))
    b, _, h, w = x.shape
    g = cap.groups
    var_in = np.var(x.reshape(b, g, -1), axis=2)
    var_out = np.var(y.reshape(b, g, -1), axis=2)
    threshold = 1 / (h * w) if cap.kind == "gc" else 0.5
    spread_in = np.std(x.reshape(b, g, -1), axis=2) / np.mean(np.abs(x.reshape(b, g, -1)), axis=2)
    spread_out = np.std(y.reshape(b, g, -1), axis=2) / np.mean(np.abs(y.reshape(b, g, -1)), axis=2)
    ref = {
        "var_before": var_in.mean(),
        "var_after": var_out.mean(),
        "spread_before": spread_in.mean(),
        "spread_after": spread_out.mean(),
        "attention_mean": att.mean(),
        "attention_var": att.var(),
        "enhanced_share": np.count_nonzero(att > threshold) / att.size,
        "enhanced_threshold": threshold,
        "group_var_before": var_in.mean(axis=0),
        "group_var_after": var_out.mean(axis=0),
    }
    if cap.normalized is not None:
        c_hat = cap.normalized.numpy().astype(np.float64)
        ref["similarity_mean"], ref["similarity_var"] = c_hat.mean(), c_hat.var()
    return ref


def _check(captures) -> None:
    for cap in captures:
        stats = block_stats(cap)
        for key, expected in _numpy_block(cap).items():
            np.testing.assert_allclose(getattr(stats, key), expected, rtol=1e-9, atol=1e-12, err_msg=key)
        assert stats.var_ratio == pytest.approx(stats.var_after / stats.var_before)


def test_sge_block_stats_match_numpy(sge_captures):
    captures, _ = sge_captures
    _check(captures)
    # ĉ = (c − mean) / (σ + eps) with σ the unbiased std of c over m positions: its population variance is
    # (m−1)/m · (σ / (σ + eps))², averaged over the groups; mean 0. σ from the captured input, in float64.
    for cap in captures:
        stats = block_stats(cap)
        x = cap.input.numpy().astype(np.float64)
        b, c, h, w = x.shape
        xg = x.reshape(b, cap.groups, c // cap.groups, h * w)
        similarity = (xg * xg.mean(axis=3, keepdims=True)).sum(axis=2)
        m = h * w
        sigma = similarity.std(axis=2, ddof=1)
        expected = ((m - 1) / m * (sigma / (sigma + 1e-5)) ** 2).mean()
        assert stats.similarity_mean == pytest.approx(0, abs=1e-6)
        assert stats.similarity_var == pytest.approx(expected, rel=1e-4)
        assert 0 < stats.enhanced_share < 1


def test_spatial_map_block_stats_match_numpy(map_model, photos):
    captures, _ = capture(map_model[1], photos)
    _check(captures)
    assert all(block_stats(c).similarity_mean is None for c in captures)


def test_stage_stats_average_the_blocks(sge_captures):
    captures, _ = sge_captures
    blocks = [block_stats(c) for c in captures]
    stages = stage_stats(blocks)
    assert [s.stage for s in stages] == ["layer1", "layer2", "layer3", "layer4"]
    for s in stages:
        members = [b for b in blocks if b.stage == s.stage]
        assert s.blocks == len(members) == 2
        for key in ("var_before", "var_after", "spread_after", "attention_mean", "enhanced_share", "similarity_var"):
            assert getattr(s, key) == pytest.approx(np.mean([getattr(b, key) for b in members]), rel=1e-12)


def test_group_variance_refuses_uneven_groups():
    with pytest.raises(ValueError, match="do not split into 3 groups"):
        group_variance(torch.zeros(1, 8, 2, 2), 3)


def test_group_spread_is_scale_free_and_zero_for_zeros():
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(group_spread(3.0 * x, 4), group_spread(x, 4))
    assert group_spread(torch.zeros(1, 4, 2, 2), 2).tolist() == [[0.0, 0.0]]
