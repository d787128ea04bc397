"""The OpenVINO study's variant list and ratios (runtime/ov_study.py); the timing itself is the benchmark's."""

from runtime.ov_study import ratios, variants


def test_variants_put_both_fused_forms_beside_the_plain_graphs(artifact):
    chosen = variants(artifact, artifact, ["fp32", "bf16"], onnxruntime=True)
    labels = [v.label for v in chosen]
    assert labels[:2] == [f"{artifact.name} onnxruntime fp32"] * 2  # same artifact as base and SGE model here
    forms = {(v.precision, v.sge_form) for v in chosen if v.sge_fused and v.backend == "openvino"}
    assert forms == {(p, f) for p in ("fp32", "bf16") for f in ("native", "extension")}
    ort = [v for v in chosen if v.backend == "onnxruntime"]
    assert all(v.options(2) == {"threads": 2, "allow_spinning": False} for v in ort)


def test_variants_skip_int8_without_its_fused_graph(artifact):
    chosen = variants(artifact, artifact, ["int8"])
    assert [v.sge_fused for v in chosen] == [False, False]  # the test artifact has no model.int8.sge_fused.onnx


def test_ratios_compare_within_backend_and_precision(artifact, tmp_path):
    (tmp_path / "base").symlink_to(artifact)  # a second name, so that base and SGE labels differ
    chosen = variants(tmp_path / "base", artifact, ["bf16"], onnxruntime=True)
    assert len({v.label for v in chosen}) == len(chosen)
    timings = {v.label: {"median_ms": 10.0 if v.role == "base" else 12.0} for v in chosen}
    timings[chosen[0].label]["median_ms"] = 40.0  # ONNX Runtime's base: its own denominator
    got = ratios(chosen, timings)
    assert got[chosen[1].label] == 12.0 / 40.0
    assert all(got[v.label] == 1.2 for v in chosen[2:] if v.role == "sge")


def test_reference_models_are_timed_at_each_precision_they_can_run(artifact, tmp_path):
    (tmp_path / "se").symlink_to(artifact)
    chosen = variants(artifact, artifact, ["fp32", "int8"], references=[tmp_path / "se"])
    refs = [v for v in chosen if v.label.startswith("se ")]
    assert [(v.precision, v.sge_fused, v.role) for v in refs] == [("fp32", False, "sge")]  # no Q/DQ model: no int8
    assert refs[0].label == "se fp32 (reference)"
