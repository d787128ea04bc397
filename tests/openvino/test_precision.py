"""OpenVINO precisions: parity gates per precision against eager FP32 PyTorch, the INT8 file, what runs, errors."""

import logging
import re

import numpy as np
import pytest

import runtime
from export.int8.roles import PrecisionError, not_quantised
from export.parity import compare
from runtime.backends.ov_precision import GATES, precision_note
from tests.openvino.conftest import eager


@pytest.fixture(scope="module")
def outputs(artifact, int8_artifact, reference_model, photos, random_inputs):
    """Each precision's logits on both input kinds, with the runner's description."""
    results = {}
    for precision, directory in (("fp32", artifact), ("bf16", artifact), ("int8", int8_artifact)):
        with runtime.load(directory, "openvino", threads=1, precision=precision, sge_fused=False) as runner:
            results[precision] = {
                "photos": runner.infer(photos),
                "random": runner.infer(random_inputs),
                "describe": runner.describe(),
            }
    results["eager"] = {"photos": eager(reference_model, photos), "random": eager(reference_model, random_inputs)}
    return results


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("inputs", ["photos", "random"])
def test_precision_meets_its_parity_gate(outputs, precision, inputs):
    stats = compare(outputs["eager"][inputs], outputs[precision][inputs])
    assert GATES[precision].failures(cosine=stats.cosine, rel_l2=stats.rel_l2, max_abs=stats.max_abs) == []
    assert np.abs(outputs["eager"][inputs][0] - outputs["eager"][inputs][1]).max() > 1e-2  # not a constant map


def test_bf16_really_runs_where_the_cpu_has_it(outputs):
    described = outputs["bf16"]["describe"]
    if "BF16" not in described["capabilities"]:
        assert described["precision"] == "fp32" and "lacks native bf16" in described["note"]
        return
    assert described["precision"] == "bf16" and described["note"] is None
    # bf16 rounding is visible: far above the f32 run's distance from eager, yet within the bf16 gate
    fp32_gap = compare(outputs["eager"]["photos"], outputs["fp32"]["photos"]).rel_l2
    bf16_gap = compare(outputs["eager"]["photos"], outputs["bf16"]["photos"]).rel_l2
    assert bf16_gap > 100 * fp32_gap


def test_int8_runs_the_model_int8_file(outputs):
    described = outputs["int8"]["describe"]
    assert described["model_path"].endswith("model.int8.onnx")
    assert described["precision"] == ("int8" if "INT8" in described["capabilities"] else "fp32 (int8 emulated)")
    assert outputs["fp32"]["describe"]["model_path"].endswith("model.onnx")


def test_f32_is_an_alias_of_fp32(artifact, photos, outputs):
    with runtime.load(artifact, "openvino", threads=1, precision="f32", sge_fused=False) as runner:
        assert runner.describe()["precision"] == "fp32"
        assert runner.describe()["config"]["INFERENCE_PRECISION_HINT"] == "f32"
        np.testing.assert_array_equal(runner.infer(photos[:2]), outputs["fp32"]["photos"][:2])


def test_unknown_precision_lists_the_choices(artifact):
    with pytest.raises(PrecisionError, match="choose from fp32, bf16, fp16, int8"):
        runtime.load(artifact, "openvino", precision="int4")


def test_int8_without_an_int8_model_says_what_to_do(artifact):
    with pytest.raises(
        PrecisionError, match=r"has no INT8 graph \(role 'model-int8'\); re-export it with `sge-deploy .*--int8`"
    ):
        runtime.load(artifact, "openvino", precision="int8")  # as onnxruntime says it


def test_int8_refuses_a_bare_float_model(artifact):
    runner = runtime.load(artifact / "model.onnx", "openvino", precision="int8")
    with pytest.raises(PrecisionError, match="no quantised layer") as raised:
        runner.activate()
    assert str(raised.value) == str(not_quantised(artifact / "model.onnx"))  # onnxruntime's words


def test_int8_accepts_a_bare_qdq_model(int8_artifact, photos, outputs):
    with runtime.load(int8_artifact / "model.int8.onnx", "openvino", threads=1, precision="int8") as runner:
        np.testing.assert_allclose(runner.infer(photos), outputs["int8"]["photos"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("precision", "hint", "capabilities", "expected"),
    [
        ("bf16", "bf16", ["FP32", "BF16", "INT8"], None),
        ("fp32", "f32", ["FP32", "INT8"], None),
        ("bf16", "f32", ["FP32", "INT8"], r"bf16 requested but this CPU \(Old CPU\) lacks native bf16"),
        ("fp16", "f32", ["FP32", "BF16"], "lacks native fp16 .* it runs fp32"),
        ("int8", "f32", ["FP32"], "it runs fp32 \\(int8 emulated\\)"),
        ("bf16", "f32", ["FP32", "BF16"], "OpenVINO compiled it as f32; it runs fp32"),
    ],
)
def test_precision_note_says_what_runs(precision, hint, capabilities, expected):
    note = precision_note(precision, compiled_hint=hint, capabilities=capabilities, cpu="Old CPU")
    if expected is None:
        assert note is None
    else:
        assert "\n" not in note
        assert re.search(expected, note), note


def test_precision_fallback_warns_once(artifact, caplog):
    """A user hint that overrides the precision is read back: one warning says what runs."""
    runner = runtime.load(
        artifact, "openvino", threads=1, precision="bf16", sge_fused=False, config={"INFERENCE_PRECISION_HINT": "f32"}
    )
    with caplog.at_level(logging.WARNING, logger="runtime.backends.ov"), runner:
        assert runner.describe()["precision"] == "fp32"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bf16 requested" in warnings[0].getMessage()


def test_tables_name_the_precision_that_ran_where_the_cpu_lacks_the_asked_one(artifact, monkeypatch, capsys):
    # a CPU without native bf16: OpenVINO compiles f32; the table must not present those figures as bf16
    from runtime.backends import ov as ov_backend
    from tests.runtime.test_scripts import load_script

    monkeypatch.setattr(ov_backend, "runs_as", lambda precision, hint, capabilities: "fp32")
    quick = ["--threads", "1", "--iterations", "2", "--duration", "0", "--warmup-ms", "0"]
    assert (
        load_script("benchmark").main([str(artifact), "--backends", "openvino", "--precision", "bf16,fp32", *quick])
        == 0
    )
    table = capsys.readouterr().out
    assert "openvino:bf16 (runs fp32)" in table
    assert "│ openvino " in table and "openvino (runs" not in table  # fp32 ran as asked: the plain label
