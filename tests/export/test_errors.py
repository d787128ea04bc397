"""Bad inputs fail with one clear line on stderr, a non-zero exit, and no file written."""

import pytest


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "sge_resnet5"], "unknown model 'sge_resnet5'; did you mean"),
        (["--model", "sge_resnet18", "--input-size", "32", "32", "--init", "random"], "1×1 feature map"),
        (["--model", "resnet18", "--opset", "21"], "opset must be within"),
        (["--model", "resnet18", "--simplifier", "none", "--atol", "0"], "tolerances must be positive"),
    ],
    ids=["unknown-model", "sge-32x32", "opset-21", "atol-0"],
)
def test_bad_option_is_one_line_and_writes_nothing(export_script, tmp_path, capsys, argv, expected):
    out = tmp_path / "out"
    assert export_script.main([*argv, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b""], ids=["garbage", "empty"])
def test_unreadable_checkpoint_is_one_line_and_writes_nothing(export_script, tmp_path, capsys, content):
    checkpoint = tmp_path / "broken.pth"
    checkpoint.write_bytes(content)
    out = tmp_path / "out"
    assert export_script.main(["--model", "resnet18", "--checkpoint", str(checkpoint), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "broken.pth" in err and "\n" not in err
    assert not out.exists()


def test_missing_checkpoint_and_missing_image(export_script, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        export_script.main(["--model", "resnet18", "--checkpoint", str(tmp_path / "nope.pth"), "--output", str(out)])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    argv = ["--model", "resnet18", "--init", "random", "--images", str(tmp_path / "nope.jpg"), "--output", str(out)]
    assert export_script.main(argv) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert not out.exists()


def test_an_unreadable_photograph_is_refused_before_the_model_loads(export_script, tmp_path, capsys, monkeypatch):
    import models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the photographs were checked")

    monkeypatch.setattr(models, "create_model", no_load)
    argv = ["--model", "resnet18", "--init", "random", "--images", str(tmp_path), "--output", str(tmp_path / "out")]
    assert export_script.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read image") and err.count("\n") == 1


def test_dynamo_with_dynamic_hw_below_its_range_is_refused_by_the_spec():
    from export.spec import ExportSpec, SpecError

    with pytest.raises(SpecError, match="needs --input-size of at least 33; got \\[16, 16\\]"):
        ExportSpec(input_size=(16, 16), exporter="dynamo", opset=18, dynamic_hw=True)
    ExportSpec(input_size=(16, 16), exporter="dynamo", opset=18)  # a static size has no such range


def test_an_exporter_failure_is_its_exception_summary_in_one_line(tmp_path, monkeypatch):
    import torch
    from torch import nn

    from export.onnx_export import OnnxExportError, export_onnx
    from export.spec import ExportSpec

    def failing(*args, **kwargs):
        raise RuntimeError(
            "Failed to export the model with torch.export. \x1b[96mThis is step 1/3\x1b[0m of exporting.\n"
            "- Modify the model code.\n\n## Exception summary\n\n<class 'ConstraintViolationError'>: 16 not in range "
            "[33, 4096]\n\n(Refer to the full stack trace above for more information.)"
        )

    monkeypatch.setattr(torch.onnx, "export", failing)
    with pytest.raises(OnnxExportError) as caught:
        export_onnx(nn.Conv2d(3, 4, 1), tmp_path / "m.onnx", spec=ExportSpec(input_size=(8, 8)))
    message = str(caught.value)
    assert "\n" not in message and "16 not in range [33, 4096]" in message and "\x1b" not in message
