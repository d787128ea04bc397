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
