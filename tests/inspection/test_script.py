"""scripts/inspect.py: runs as a file despite its stdlib-shadowing name; bad inputs give one-line errors and exit 2."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "inspect.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("scripts_inspect", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_as_a_file_next_to_the_stdlib_name(tmp_path):
    # `python scripts/inspect.py` puts scripts/ first on sys.path, where this file would shadow the stdlib
    # `inspect` that torch imports; the script must replace that entry before importing anything else.
    out = tmp_path / "report"
    args = [
        "--model",
        "sa_resnet18",
        "--image",
        "camera",
        "--input-size",
        "64",
        "64",
        "--init",
        "random",
        "--output",
        str(out),
    ]
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "layer4" in done.stdout and (out / "index.md").is_file()
    assert sorted(p.name for p in out.glob("*.png")) == [f"layer{i}_sa_spatial_gate.png" for i in (1, 2, 3, 4)] + [
        "stats.png"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "sge_resnt18", "--image", "astronaut"], "unknown model 'sge_resnt18'; did you mean"),
        (["--model", "resnet18", "--image", "astronaut"], "no attention, which computes no spatial map"),
        (["--model", "se_resnet18", "--image", "astronaut"], "se attention, which computes no spatial map"),
        (["--model", "sge_resnet18", "--image", "no_such_photo"], "no such file; give a JPEG or PNG file or a bundled"),
        (
            ["--model", "sge_resnet18", "--image", "rocket", "--input-size", "32", "32", "--init", "random"],
            "at least 33×33",
        ),
        (
            ["--model", "sge_resnet18", "--image", "astronaut", "--groups-shown", "0"],
            "--groups-shown must be at least 1",
        ),
        (
            ["--model", "sge_resnet18", "--image", "astronaut", "--groups-shown", "-2"],
            "--groups-shown must be at least 1; got -2",
        ),
        (
            ["--model", "sge_resnet18", "--image", "astronaut", "--input-size", "0", "0"],
            "must be 1..1024 on each side; got 0 0",
        ),
        (
            ["--model", "sge_resnet18", "--image", "astronaut", "--input-size", "-5", "64"],
            "must be 1..1024 on each side; got -5 64",
        ),
        (
            ["--model", "sge_resnet18", "--image", "astronaut", "--input-size", "20000", "20000"],
            "must be 1..1024 on each side; got 20000 20000",
        ),
        (["--model", "sge_resnet18", "--image", "astronaut", "--checkpoint", "."], "--checkpoint . is a directory"),
        (["--model", "sge_resnet18", "--image", "."], "cannot read image .: it is a directory"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(script, tmp_path, capsys, args, message):
    assert script.main([*args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unreadable_image_and_broken_checkpoint(script, tmp_path, capsys):
    bad_image = tmp_path / "photo.jpg"
    bad_image.write_bytes(b"not a jpeg")
    assert script.main(["--model", "sge_resnet18", "--image", str(bad_image), "--output", str(tmp_path / "a")]) == 2
    assert f"cannot read image {bad_image}" in capsys.readouterr().err
    bad_ckpt = tmp_path / "weights.pth"
    bad_ckpt.write_bytes(b"\x00" * 64)
    argv = [
        "--model",
        "sge_resnet18",
        "--image",
        "astronaut",
        "--checkpoint",
        str(bad_ckpt),
        "--output",
        str(tmp_path / "b"),
    ]
    assert script.main(argv) == 2
    assert str(bad_ckpt.name) in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_unwritable_output_is_refused_before_the_forward_pass(script, tmp_path, capsys, monkeypatch, where):
    (tmp_path / "taken").write_text("a file\n")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "report"
    monkeypatch.setattr("models.inspection.inspect_model", lambda *a, **k: pytest.fail("the forward pass ran"))
    assert script.main(["--model", "sge_resnet18", "--image", "astronaut", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output ") and err.count("\n") == 1
    assert ("is a file; give a folder" if where == "file" else "cannot write into") in err


def test_non_finite_activations_are_one_line_and_no_figure(script, tmp_path, capsys):
    import torch

    from models import create_model

    weights = create_model("sge_resnet18", init="random").state_dict()
    nan_weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    checkpoint = tmp_path / "nan.pth"
    torch.save(nan_weights, checkpoint)
    out = tmp_path / "report"
    argv = ["--model", "sge_resnet18", "--image", "astronaut", "--input-size", "64", "64"]
    assert script.main([*argv, "--checkpoint", str(checkpoint), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "activations are not finite (NaN/Inf" in err and "check the checkpoint" in err and err.count("\n") == 1
    assert not out.exists()


def test_without_matplotlib_it_says_so_before_the_model_loads(script, tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else find_spec(name))
    assert script.main(["--model", "sge_resnet18", "--image", "astronaut", "--output", str(tmp_path / "out")]) == 2
    assert (
        capsys.readouterr().err == "error: inspect draws its figures with matplotlib: pip install 'sge-deploy[plot]'\n"
    )
