"""--backend auto: candidates within the allowed precision, a measured choice, a stored table, the script."""

import json
from pathlib import Path

import pytest

from export.int8.roles import PrecisionError
from runtime.auto import Candidate, candidates, choose_backend, openvino_capabilities, table_key
from runtime.source import open_source
from tests.runtime.test_scripts import load_script

VNNI_CPU = {"avx2", "fma", "avx512f", "avx512_vnni"}  # INT8 runs as exported here whatever its weight range


def labels(found):
    return [c.label for c in found]


def test_fp32_allows_no_precision_loss(int8_artifact):
    source = open_source(int8_artifact)
    found = candidates(source, min_precision="fp32", capabilities=["FP32", "BF16", "INT8"])
    assert labels(found) == ["onnxruntime fp32", "openvino fp32"]


def test_lower_precisions_join_where_the_cpu_and_artifact_have_them(artifact, int8_artifact):
    full = ["FP32", "BF16", "INT8"]
    int8_here = candidates(open_source(int8_artifact), min_precision="int8", capabilities=full, cpu_flags=VNNI_CPU)
    assert labels(int8_here)[-2:] == [
        "openvino bf16",
        "openvino int8",
    ]
    # no native bf16: OpenVINO would run f32 under the bf16 name, so it is not a candidate
    assert "openvino bf16" not in labels(candidates(open_source(artifact), min_precision="bf16", capabilities=["FP32"]))
    # no INT8 model in the artifact
    assert "openvino int8" not in labels(candidates(open_source(artifact), min_precision="int8", capabilities=full))


def test_an_artifact_with_only_the_fused_int8_graph_offers_openvino_int8():
    from types import SimpleNamespace

    from export.int8.roles import INT8_FUSED_ROLE

    manifest = SimpleNamespace(files={"m": SimpleNamespace(role=INT8_FUSED_ROLE)}, extra={}, model="sge_resnet18")
    fused_only = SimpleNamespace(manifest=manifest)
    found = candidates(fused_only, min_precision="int8", capabilities=["FP32", "INT8"], cpu_flags=VNNI_CPU)
    assert "openvino int8" in labels(found)


def test_int8_is_no_candidate_where_its_8_bit_weights_would_saturate(int8_artifact, monkeypatch):
    """The artifact's INT8 graphs run as exported only with 7-bit weights or VNNI (tests/int8/test_weight_range.py)."""
    from export.int8 import roles

    source, full = open_source(int8_artifact), ["FP32", "BF16", "INT8"]
    avx2 = {"avx2", "fma"}
    monkeypatch.setattr(roles, "int8_weight_bits", lambda manifest, graph_file: 7)  # the export's default
    assert "openvino int8" in labels(candidates(source, min_precision="int8", capabilities=full, cpu_flags=avx2))
    monkeypatch.setattr(roles, "int8_weight_bits", lambda manifest, graph_file: 8)  # as --int8-weight-bits 8 writes
    assert "openvino int8" not in labels(candidates(source, min_precision="int8", capabilities=full, cpu_flags=avx2))
    assert "openvino int8" in labels(candidates(source, min_precision="int8", capabilities=full, cpu_flags=VNNI_CPU))


def test_unknown_min_precision_lists_the_choices(artifact):
    with pytest.raises(PrecisionError, match="choose from"):
        choose_backend(artifact, min_precision="int4")


def test_measured_choice_is_the_fastest_allowed_and_is_stored(artifact, tmp_path):
    table = tmp_path / "auto.json"
    choice = choose_backend(artifact, min_precision="fp32", threads=1, table=table)
    assert choice.source == "measured" and choice.precision == "fp32"
    assert set(choice.medians_ms) == {"onnxruntime fp32", "openvino fp32"}
    assert choice.medians_ms[f"{choice.backend} {choice.precision}"] == min(choice.medians_ms.values())
    assert choice.reason.startswith(f"{choice.backend} fp32: fastest of") and "measured" in choice.reason
    stored = json.loads(table.read_text())
    assert list(stored.values()) == [choice.medians_ms]


def test_stored_table_is_reused_when_machine_model_batch_and_threads_match(artifact, tmp_path):
    cpu, _ = openvino_capabilities()
    source = open_source(artifact)
    table = tmp_path / "auto.json"
    medians = {"onnxruntime fp32": 9.0, "openvino fp32": 4.0}
    table.write_text(json.dumps({table_key(cpu, source, 1, 2): medians}))
    choice = choose_backend(artifact, threads=2, table=table)
    assert (choice.backend, choice.precision, choice.source) == ("openvino", "fp32", "table")
    assert "openvino fp32 4.0 ms, onnxruntime fp32 9.0 ms" in choice.reason
    assert choice.load_options() == {"precision": "fp32"}
    assert Candidate("onnxruntime", "fp32").options(2, timing=True) == {"threads": 2, "allow_spinning": False}


def test_a_stored_timing_holds_for_its_batch_only(artifact, tmp_path, monkeypatch):
    """Medians measured at batch 1 say nothing of batch 8: choose_backend at batch 8 measures again."""
    import runtime.auto as auto

    cpu, _ = openvino_capabilities()
    source = open_source(artifact)
    assert table_key(cpu, source, 1, 2) != table_key(cpu, source, 8, 2)
    table = tmp_path / "auto.json"
    table.write_text(json.dumps({table_key(cpu, source, 1, 2): {"onnxruntime fp32": 9.0, "openvino fp32": 4.0}}))
    timed = []
    monkeypatch.setattr(auto, "measure", lambda *args, batch, **kwargs: timed.append(batch) or {"onnxruntime fp32": 5})
    assert choose_backend(artifact, batch=8, threads=2, table=table).source != "table" and timed == [8]


def test_infer_script_says_what_auto_chose(artifact, tmp_path, capsys):
    from PIL import Image

    from models.transforms import sample_photos

    image = tmp_path / "photo.png"
    Image.fromarray(next(iter(sample_photos().values()))).save(image)
    assert load_script("infer").main([str(artifact), str(image), "--backend", "auto", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "auto: " in out and "fastest of" in out


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--backend", "auto", "--precision", "int8"], "give --min-precision (the lowest it may choose) instead"),
        (["--backend", "onnxruntime", "--min-precision", "int8"], "--min-precision goes with --backend auto"),
        (["--backend", "onnxruntime", "--auto-table", "t.json"], "--auto-table goes with --backend auto"),
    ],
)
def test_a_precision_flag_the_backend_would_ignore_is_refused(artifact, tmp_path, capsys, flags, says):
    # --backend auto --precision int8 ran fp32 without a word
    image = tmp_path / "photo.png"
    image.write_bytes(b"not read: refused before")
    assert load_script("infer").main([str(artifact), str(image), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and err.count("\n") == 1


def test_dynamic_height_and_width_are_timed_at_the_artifacts_own_size(artifact):
    from dataclasses import replace

    from runtime.auto import timing_shape

    source = open_source(artifact)
    size = list(source.manifest.preprocessing["input_size"])
    dynamic = replace(source, input_spec=replace(source.input_spec, shape=("batch", 3, "height", "width")))
    assert timing_shape(dynamic, 4) == [4, 3, *size]  # never the batch in place of H and W
    assert timing_shape(source, 2) == [2, 3, *size]


def test_a_fixed_batch_graph_is_stored_under_the_batch_it_runs(artifact, tmp_path, monkeypatch):
    from dataclasses import replace

    import runtime.auto as auto

    source = open_source(artifact)
    fixed = replace(source, input_spec=replace(source.input_spec, shape=(1, *source.input_spec.shape[1:])))
    timed = []  # the batch each measurement ran: the graph's own, as infer pads to it
    monkeypatch.setattr(auto, "measure", lambda *args, batch, **kwargs: timed.append(batch) or {"onnxruntime fp32": 5})
    table = tmp_path / "auto.json"
    for batch in (1, 4, 8):
        assert auto.choose_backend(fixed, batch=batch, table=table).backend == "onnxruntime"
    assert list(json.loads(table.read_text())) == [table_key(openvino_capabilities()[0], source, 1, None)]
    assert timed == [1, 1, 1]  # every call timed batch 1 (the fake leaves OpenVINO unmeasured: each call measures)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '{"k": {"onnxruntime fp32": "fast"}}',
        '{"k": {"onnxruntime fp32": 7.8, "openvino fp32": -1}}',  # would be "fastest" at -1 ms
        '{"k": {"onnxruntime fp32": NaN}}',
        '{"k": {"onnxruntime fp32": true}}',
    ],
)
def test_a_damaged_auto_table_is_one_line_naming_the_file(artifact, tmp_path, content):
    table = tmp_path / "auto.json"
    table.write_text(content)
    with pytest.raises(ValueError, match=r"--auto-table .*auto\.json .*delete it or pass another file") as caught:
        choose_backend(artifact, table=table)
    assert "\n" not in str(caught.value)


def test_without_openvino_only_onnx_runtime_is_a_candidate_and_the_table_is_reused(artifact, tmp_path, monkeypatch):
    import runtime.auto as auto

    monkeypatch.setattr(auto, "openvino_available", lambda: False)
    cpu, capabilities = auto.openvino_capabilities()
    assert cpu and capabilities == []  # the table's key still names the machine
    table = tmp_path / "auto.json"
    first = choose_backend(artifact, min_precision="bf16", threads=1, table=table)
    assert set(first.medians_ms) == {"onnxruntime fp32"} and first.source == "measured"
    assert "openvino not installed" in first.reason
    assert choose_backend(artifact, min_precision="bf16", threads=1, table=table).source == "table"


@pytest.mark.parametrize("loaded", ["no-candidate", "all-null"])
def test_no_loadable_candidate_is_one_line_and_nothing_is_stored(artifact, tmp_path, monkeypatch, loaded):
    import runtime.auto as auto
    from runtime.backends.base import BackendUnavailableError

    measured = (lambda chosen: {}) if loaded == "no-candidate" else (lambda chosen: {c.label: None for c in chosen})
    monkeypatch.setattr(auto, "measure", lambda source, chosen, **kwargs: measured(chosen))
    table = tmp_path / "auto.json"
    with pytest.raises(BackendUnavailableError, match="no candidate backend could be loaded here"):
        choose_backend(artifact, threads=1, table=table)
    assert not table.exists()


def test_a_candidate_that_cannot_load_is_stored_as_null_and_the_table_reused(artifact, tmp_path, monkeypatch):
    import runtime

    load = runtime.load

    def openvino_broken(source, backend, **options):
        if backend == "openvino":
            raise RuntimeError("Exception from src/core.cpp:1:\nmade to fail")
        return load(source, backend, **options)

    monkeypatch.setattr(runtime, "load", openvino_broken)
    table = tmp_path / "auto.json"
    first = choose_backend(artifact, threads=1, table=table)
    assert first.source == "measured" and set(first.medians_ms) == {"onnxruntime fp32"}
    (stored,) = json.loads(table.read_text()).values()
    assert stored == {"onnxruntime fp32": first.medians_ms["onnxruntime fp32"], "openvino fp32": None}
    assert choose_backend(artifact, threads=1, table=table).source == "table"


def test_an_all_null_row_stored_before_that_fix_is_measured_again(artifact, tmp_path, monkeypatch):
    import runtime.auto as auto

    table = tmp_path / "auto.json"
    key = table_key(openvino_capabilities()[0], open_source(artifact), 1, 1)
    table.write_text(json.dumps({key: {"onnxruntime fp32": None, "openvino fp32": None}}))
    calls = []
    monkeypatch.setattr(auto, "measure", lambda source, chosen, **kwargs: calls.append(1) or {"onnxruntime fp32": 5.0})
    choice = choose_backend(artifact, threads=1, table=table)
    assert (choice.source, choice.backend, calls) == ("measured", "onnxruntime", [1])
    assert json.loads(table.read_text()) == {key: {"onnxruntime fp32": 5.0}}


def test_a_timing_table_never_serves_another_input_size_or_graph():
    from types import SimpleNamespace

    from export.artifacts import TensorSpec

    def source(size, digest):
        files = {"model.onnx": SimpleNamespace(sha256=digest)}
        return SimpleNamespace(
            manifest=SimpleNamespace(files=files, deploy="model.onnx"),
            input_spec=TensorSpec("input", ("batch", 3, size, size)),
            model_name="sge_resnet18",
            model_path=Path("model.onnx"),
        )

    keys = {table_key("cpu", source(96, "a" * 64), 1, 2), table_key("cpu", source(160, "a" * 64), 1, 2)}
    keys.add(table_key("cpu", source(96, "b" * 64), 1, 2))  # re-exported: other weights, other timings
    assert len(keys) == 3  # a 160² export reused the 96² medians
