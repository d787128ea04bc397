"""The timing helpers behind scripts/sge_cost.py (no timings are asserted: speed belongs to the script)."""

import numpy as np
import onnx
import pytest

from models import create_model
from runtime.sge_cost import (
    conv_linear_flops,
    gemm_model,
    gemm_runner,
    machine_description,
    ratio,
    time_interleaved,
)


def test_time_interleaved_runs_every_runner_each_round():
    calls = []
    timings = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=4, warmup=1)
    assert calls == ["a", "b"] * 5
    assert len(timings["a"].wall_ms) == 4 and timings["b"].wall_median >= 0
    assert set(ratio(timings, "a", "b")) == {"wall", "cpu"}
    with pytest.raises(ValueError, match="rounds"):
        time_interleaved({"a": lambda: None}, rounds=0)


def test_gemm_model_multiplies():
    model = onnx.load_from_string(gemm_model(16))
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    run = gemm_runner(n=16, threads=1)
    (y,) = run()
    assert y.shape == (16, 16) and np.isfinite(y).all()


def test_resnet50_flops_match_the_paper():
    # He et al. / the SGE paper: ResNet-50 is 4.1 GMAC at 224×224; conv+linear FLOPs count 2 per MAC.
    assert conv_linear_flops(create_model("resnet50", init="random"), (224, 224)) / 1e9 == pytest.approx(8.18, abs=0.05)


def test_machine_description_names_the_runtimes():
    d = machine_description(2)
    assert d["threads"] == 2 and d["cpu"] and set(d["versions"]) >= {"onnxruntime", "openvino", "torch"}
