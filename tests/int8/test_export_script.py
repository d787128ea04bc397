"""scripts/export.py --int8: bad calibration images exit 2 before any file; a graph below its INT8 gate exits 1
and is neither on disk nor in the manifest, while the FP32 artifact stays complete."""

import json

import pytest

from export.artifacts import load_manifest
from models.transforms import photo_batch
from tests.export.conftest import load_script

TINY = ["--model", "sge_resnet18", "--input-size", "64", "64", "--init", "random", "--batch-sizes", "1,2"]


@pytest.fixture(scope="module")
def export_script():
    return load_script("export")


@pytest.mark.parametrize("case", ["empty", "unreadable"])
def test_bad_calibration_images_exit_2_with_one_line_and_no_file(export_script, tmp_path, capsys, case):
    calib = tmp_path / "calib"
    calib.mkdir()
    if case == "unreadable":
        (calib / "photo.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "artifact"
    code = export_script.main([*TINY, "--output", str(out), "--int8", "--calib-images", str(calib)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert ("no calibration images" if case == "empty" else "cannot read image") in err
    assert not out.exists()  # refused in the load stage, before the directory is made


def test_compact_sge_form_is_refused_for_int8(export_script, tmp_path, capsys):
    out = tmp_path / "artifact"
    assert export_script.main([*TINY, "--output", str(out), "--int8", "--sge-form", "compact"]) == 2
    assert "--sge-form official" in capsys.readouterr().err and not out.exists()


def test_calib_images_without_int8_is_refused(export_script, tmp_path, capsys):
    assert export_script.main([*TINY, "--output", str(tmp_path / "a"), "--calib-images", str(tmp_path)]) == 2
    assert "--int8" in capsys.readouterr().err


def test_a_7_bit_graph_below_its_gate_suggests_8_bit_weights(export_script, tmp_path, capsys, monkeypatch):
    import export.int8.parity as parity

    monkeypatch.setitem(parity.COSINE_GATES, "u8s8", 1.01)  # as sge_resnet18 at 64² with 7 bits: 0.986 < 0.99
    argv = [*TINY, "--output", str(tmp_path / "a"), "--int8", "--calib-count", "4", "--no-fused-sge"]
    assert export_script.main(argv) == 1
    assert "or --int8-weight-bits 8 where every CPU it runs on has VNNI or AMX" in capsys.readouterr().err


def test_int8_below_its_gate_exits_1_and_is_not_in_the_manifest(export_script, tmp_path, capsys, monkeypatch):
    import export.int8.parity as parity

    monkeypatch.setitem(parity.COSINE_GATES, "s8s8", 1.01)  # no INT8 graph reaches a cosine above 1
    out = tmp_path / "artifact"
    code = export_script.main([*TINY, "--output", str(out), "--int8", "--calib-count", "4", "--no-fused-sge"])
    assert code == 1
    err = capsys.readouterr().err
    assert "model.int8_s8s8.onnx" in err and "--int8-weight-bits 8" not in err  # the S8S8 graph has 8 bits already
    manifest = load_manifest(out)  # the FP32 artifact and the passing U8S8 graph are complete
    assert "model.int8.onnx" in manifest.files and "model.int8_s8s8.onnx" not in manifest.files
    assert not (out / "model.int8_s8s8.onnx").exists() and (out / "parity_model_int8_s8s8.json").exists()
    assert manifest.files["parity_model_int8_s8s8.json"].role == "report"  # recorded: validate warns of nothing
    # --batch-sizes 1,2 stops short of the 7 photographs: one more case judges them all (README: the full set)
    cases = json.loads((out / "parity_model_int8.json").read_text())["cases"]
    photos = len(photo_batch((64, 64)))
    assert {(c["inputs"], c["batch"]) for c in cases} == {
        *(("photos", b) for b in (1, 2, photos)),
        *(("random", b) for b in (1, 2)),
    }


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--calib-count", "64"], "--calib-count is for --int8; add --int8"),
        (["--calib-method", "entropy"], "--calib-method is for --int8; add --int8"),
        (["--trt-batch", "1", "2", "4"], "--trt-batch is for --trt; add --trt"),
        (["--trt-no-validate"], "--trt-no-validate is for --trt; add --trt"),
    ],
)
def test_an_option_without_the_one_it_belongs_to_is_refused(export_script, tmp_path, capsys, flags, says):
    assert export_script.main([*TINY, "--output", str(tmp_path / "a"), *flags]) == 2  # was ignored without a word
    assert capsys.readouterr().err == f"error: {says}\n" and not (tmp_path / "a").exists()


def test_a_failed_int8_gate_still_runs_the_steps_asked_for(export_script, tmp_path, capsys, monkeypatch):
    """It returned before them: the Triton repository asked for stayed the previous export's, beside a new artifact."""
    import export.int8.parity as parity

    monkeypatch.setitem(parity.COSINE_GATES, "s8s8", 1.01)
    repo = tmp_path / "triton"
    argv = [*TINY, "--output", str(tmp_path / "a"), "--int8", "--calib-count", "4", "--no-fused-sge"]
    assert export_script.main([*argv, "--triton-repo", str(repo)]) == 1
    assert "INT8 parity failed" in capsys.readouterr().err
    assert any(repo.glob("*/config.pbtxt"))  # written from the complete FP32 artifact


def test_a_re_export_whose_int8_gate_fails_leaves_the_artifact_as_it_was(export_script, tmp_path, capsys, monkeypatch):
    """It replaced an artifact whose INT8 graphs had passed with one holding none of them."""
    import hashlib

    import export.int8.parity as parity

    out = tmp_path / "a"
    argv = [*TINY, "--output", str(out), "--int8", "--calib-count", "4", "--no-fused-sge"]
    assert export_script.main(argv) == 0
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    assert any(name.startswith("model.int8") for name in before)
    capsys.readouterr()
    monkeypatch.setitem(parity.COSINE_GATES, "s8s8", 1.01)  # a gate no graph can pass
    assert export_script.main(argv) == 1
    err = capsys.readouterr().err
    assert "INT8 parity failed" in err and f"the artifact already in {out} was left as it was" in err
    assert "(every case: rerun with --json FILE)" in err and "(all in parity_" not in err  # the kept report passed
    report = tmp_path / "export.json"
    assert export_script.main([*argv, "--json", str(report)]) == 1
    assert f"(every case in {report})" in capsys.readouterr().err
    graphs = json.loads(report.read_text())["int8"]["graphs"]
    assert all(g["failures"] for g in graphs if not g["passed"]) and any(not g["passed"] for g in graphs)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".a.staging-*"))
