"""scripts/validate.py --int8: the artifact's INT8 graphs re-checked with their export gates on this machine's kernels;
on the export machine it gives the export's own figures, and an artifact without INT8 graphs is one line, exit 2."""

import json

import pytest

from export.validate import check_int8_graphs, open_reference
from tests.export.conftest import export_tiny, load_script


@pytest.fixture(scope="module")
def validate_script():
    return load_script("validate")


@pytest.fixture(scope="module")
def fp32_artifact(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fp32") / "resnet18"
    assert export_tiny(directory).manifest_path is not None
    return directory


S8S8 = "model.int8_s8s8.onnx"


def s8s8_judged_here(directory) -> bool:
    """Whether this CPU judges TensorRT's S8S8 graph: not where its integer kernels saturate it (x86 without VNNI or
    AMX, as an AVX2-only CI machine; the suite under the AVX2 view found these tests assuming VNNI)."""
    from export.artifacts import load_manifest
    from export.int8.roles import int8_saturates

    return not int8_saturates(load_manifest(directory), S8S8)


def test_on_the_export_machine_it_repeats_the_export_gates(int8_artifact):
    directory, exported = int8_artifact
    checked = check_int8_graphs(open_reference(directory))
    judged = [("model.int8.onnx", 7), ("model.int8.sge_fused.onnx", 7)] + [(S8S8, 8)] * s8s8_judged_here(directory)
    assert [(g.name, g.weight_bits) for g in checked.graphs] == judged
    at_export = {g.name: g for g in exported.int8.graphs}
    for graph in checked.graphs:
        assert graph.passed
        for reference in ("eager", "fp32_onnx"):  # same inputs, same kernels: the same worst photograph
            got, want = graph.parity.worst(reference, "photos"), at_export[graph.name].parity.worst(reference, "photos")
            assert got["cosine"] == pytest.approx(want["cosine"], abs=1e-6)


def test_the_command_line_prints_and_writes_them(int8_artifact, validate_script, tmp_path, capsys):
    directory, _ = int8_artifact
    out = tmp_path / "v.json"
    assert validate_script.main([str(directory), "--int8", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "INT8 graphs" in printed and "7-bit" in printed
    closing, judged = printed.splitlines()[-1] + printed.splitlines()[-2], s8s8_judged_here(directory)
    assert "model.int8.sge_fused.onnx" in closing and (S8S8 in closing) == judged
    reports = json.loads(out.read_text())
    assert {"model.onnx", "model.int8.onnx", "model.int8.sge_fused.onnx"} <= reports.keys()
    assert (S8S8 in reports) == judged
    assert reports["model.int8.onnx"]["passed"] is True


def test_an_artifact_without_int8_graphs_is_one_line_and_exit_2(fp32_artifact, validate_script, capsys, monkeypatch):
    import export.validate

    def rebuilt(*args, **kwargs):
        raise AssertionError("the eager model was rebuilt before the refusal")  # it took 37 s at 224²

    monkeypatch.setattr(export.validate, "open_reference", rebuilt)
    assert validate_script.main([str(fp32_artifact), "--int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no INT8 graph to check" in err[0] and "--int8" in err[0]
    assert f"--output {fp32_artifact} --int8`" in err[0]  # the command re-exports this artifact, not a default one


def test_tensorrts_s8s8_graph_is_not_judged_on_a_cpu_that_saturates_it(int8_artifact, monkeypatch, caplog):
    """No CPU deploys the S8S8 graph; under the AVX2 view sge_resnet18 at 64² scored 0.9773 there and failed
    validate --int8 on an AVX2 deployment CPU."""
    import export.int8.roles as roles
    from export.validate import check_int8_graphs, open_reference

    directory, _ = int8_artifact
    monkeypatch.setattr(roles, "int8_saturates", lambda manifest, graph, cpu_flags=None: graph.endswith("s8s8.onnx"))
    result = check_int8_graphs(open_reference(directory))
    assert "model.int8_s8s8.onnx" not in {graph.name for graph in result.graphs}
    assert "model.int8_s8s8.onnx (TensorRT's S8S8 graph, 8-bit weights) not judged here" in caplog.text


def test_a_graph_below_its_gate_here_exits_1(int8_artifact, validate_script, monkeypatch, capsys):
    """What an 8-bit graph on a CPU without VNNI shows (tests/int8/test_weight_range.py): the gate fails here."""
    import export.int8.parity as parity

    directory, _ = int8_artifact
    monkeypatch.setitem(parity.COSINE_GATES, "u8s8", 0.99999)
    assert validate_script.main([str(directory), "--int8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: parity failed: model.int8.onnx: ") and "case(s) failed, first photos" in err
    # the graph's report in the artifact is the export's, which passed: the message points at what has every case
    assert "< 0.99999" in err and "(every case: rerun with --json FILE)" in err and err.count("\n") == 1
    assert len(err) < 600 and "re-export with other calibration: `sge-deploy export" in err  # it ran to 872 chars
    assert f"--output {directory} --int8 --calib-images DIR`" in err
    report = directory.parent / "validate.json"
    assert validate_script.main([str(directory), "--int8", "--json", str(report)]) == 1
    assert f"(every case in {report})" in capsys.readouterr().err
    assert not json.loads(report.read_text())["model.int8.onnx"]["passed"]
    monkeypatch.setattr("export.int8.roles.int8_saturates", lambda manifest, graph, cpu_flags=None: True)
    assert validate_script.main([str(directory), "--int8"]) == 1
    err = capsys.readouterr().err
    assert "; validate: model.int8.onnx has 8-bit weights and this CPU has no VNNI" in err
    assert "re-export with `sge-deploy export" in err  # with the calibration the artifact recorded:
    assert f"--output {directory} --int8 --calib-count 8` (7-bit weights" in err


def test_cpu_int8_graphs_the_export_dropped_fail_validate(int8_artifact, tmp_path):
    """sge_resnet18 at 64² with 7-bit weights: both U8S8 graphs failed at export; validate --int8 checked only the
    S8S8 graph and said "parity passed", while every CPU INT8 runner refused the artifact."""
    import json

    from export.artifacts import load_manifest
    from runtime.commands.validate import export_failed_cpu_graphs

    directory, _ = int8_artifact
    assert export_failed_cpu_graphs(load_manifest(directory, verify=False)) == []
    manifest = json.loads((directory / "manifest.json").read_text())
    for graph in manifest["extra"]["int8"]["graphs"]:
        graph["passed"] = graph["file"] != "model.int8.onnx"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (failure,) = export_failed_cpu_graphs(load_manifest(tmp_path, verify=False))
    assert failure.startswith("model.int8.onnx failed its INT8 gate at export (parity_model_int8.json)")
    graph = next(g for g in manifest["extra"]["int8"]["graphs"] if g["file"] == "model.int8.onnx")
    for bits, says in ((7, "--int8-weight-bits 8"), (8, "other calibration (--calib-images DIR")):
        graph["weight_bits"] = bits  # 8 bits already: suggesting them again was no way out
        (tmp_path / "manifest.json").write_text(json.dumps(manifest))
        (failure,) = export_failed_cpu_graphs(load_manifest(tmp_path, verify=False))
        assert says in failure and (bits == 7 or "--int8-weight-bits" not in failure)
