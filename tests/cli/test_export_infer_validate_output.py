"""Script output: ``--json -`` writes only the JSON to stdout (export, validate, infer); export progress in a log."""

import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from models.transforms import sample_photos

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
TINY = ["--model", "resnet18", "--input-size", "64", "64", "--init", "random", "--simplifier", "none"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"scripts_{name}_json", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny export through scripts/export.py with ``--json -`` (capsys is per test): (directory, stdout, stderr)."""
    directory = tmp_path_factory.mktemp("cli") / "resnet18"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory.parent)  # a file named "-" would land here
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = load("export").main([*TINY, "--output", str(directory), "--json", "-"])
    assert code == 0, err.getvalue()
    assert not (directory.parent / "-").exists()
    return directory, out.getvalue(), err.getvalue()


def test_export_json_dash_is_only_json_on_stdout(exported):
    directory, out, err = exported
    result = json.loads(out)  # nothing but the JSON
    assert Path(result["output_dir"]).resolve() == directory.resolve()
    assert "parity" in err.lower()  # the tables went to stderr


def test_validate_json_dash(exported, capsys):
    directory, _, _ = exported
    assert load("validate").main([str(directory), "--json", "-"]) == 0
    captured = capsys.readouterr()
    reports = json.loads(captured.out)
    assert reports.get("model.onnx")


def test_infer_json_dash(exported, tmp_path, capsys, monkeypatch):
    directory, _, _ = exported
    image = tmp_path / "chelsea.jpg"
    Image.fromarray(sample_photos(("chelsea",))["chelsea"]).save(image, quality=95)
    monkeypatch.chdir(tmp_path)
    args = [str(directory), str(image), "--backend", "onnxruntime", "--top-k", "3", "--json", "-"]
    assert load("infer").main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert [Path(p["image"]).name for p in result["predictions"]] == ["chelsea.jpg"]
    assert len(result["predictions"][0]["top_k"]) == 3
    assert not (tmp_path / "-").exists()


def test_export_progress_is_one_plain_line_per_stage_when_not_a_terminal(exported):
    _, out, err = exported  # captured: not a terminal
    stages = list(json.loads(out)["stage_seconds"])
    assert len(stages) >= 3
    lines = err.splitlines()
    progress = [line for line in lines if re.fullmatch(r"[\w .-]+: \d+\.\d s", line)]
    assert [line.rsplit(":", 1)[0] for line in progress] == stages  # one line per stage, in order
    first_table = next(i for i, line in enumerate(lines) if line.startswith(("┏", "┌", "╭")) or "━" in line)
    assert lines.index(progress[-1]) < first_table  # printed as the stages ended, before the summary tables
    assert "⠋" not in err and "\r" not in err  # no spinner frames in a log


def test_infer_refuses_non_finite_logits_in_one_line(exported, tmp_path, capsys, monkeypatch):
    """A graph that turns a photograph into NaN (an FP16 overflow, a broken kernel) must not print a ranking."""
    import numpy as np

    from runtime.backends.ort import OnnxRuntimeRunner

    directory, _, _ = exported
    image = tmp_path / "chelsea.jpg"
    Image.fromarray(sample_photos(("chelsea",))["chelsea"]).save(image, quality=95)
    real = OnnxRuntimeRunner._infer_impl

    def one_nan(self, batch):
        out = real(self, batch)
        out[0, 7] = np.nan
        return out

    monkeypatch.setattr(OnnxRuntimeRunner, "_infer_impl", one_nan)
    assert load("infer").main([str(directory), str(image), "--backend", "onnxruntime"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "produced 1 non-finite values (NaN/Inf) for a batch of 1" in captured.err
    assert "probability" not in captured.out  # no table of meaningless classes
