"""Exit codes and gates mean what they say: 0 ok, 1 parity failed, 2 bad input (checked before the work),
3 an internal error (one line; the traceback only with -v); explicit --atol/--rtol are enforced as given."""

import pytest

TINY_ARGS = ["--model", "resnet18", "--init", "random", "--input-size", "64", "64", "--simplifier", "none"]


def one_line_error(capsys, prefix="error: "):
    err = capsys.readouterr().err.strip()
    assert err.startswith(prefix) and "\n" not in err and "Traceback" not in err, err
    return err


def test_huge_input_size_is_refused_before_any_work(export_script, tmp_path, capsys, monkeypatch):
    from export import pipeline

    out = tmp_path / "out"
    monkeypatch.setattr(pipeline, "load_source", lambda *a, **k: pytest.fail("the model was loaded"))
    assert export_script.main(["--model", "resnet18", "--input-size", "100000", "100000", "--output", str(out)]) == 2
    # refused from the numbers alone, not by the OOM killer after a 100000² forward pass
    assert "1..1024" in one_line_error(capsys) and not out.exists()


def test_explicit_gates_are_enforced_as_given(export_script, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*TINY_ARGS, "--batch-sizes", "1", "--atol", "1e-12", "--rtol", "1e-12", "--output", str(out)]
    assert export_script.main(argv) == 1  # float rounding alone exceeds 1e-12: the noise floor may not rescue it
    assert "parity failed" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_unwritable_json_path_is_refused_before_the_export(export_script, tmp_path, capsys, where):
    (tmp_path / "file.txt").write_text("x")
    json_path = tmp_path if where == "directory" else tmp_path / "file.txt" / "result.json"
    out = tmp_path / "out"
    assert export_script.main([*TINY_ARGS, "--output", str(out), "--json", str(json_path)]) == 2
    assert "--json" in one_line_error(capsys) and not out.exists()


def test_unwritable_plot_path_and_huge_batch_are_refused_before_the_benchmark(tiny_artifact, tmp_path, capsys):
    from tests.export.conftest import load_script

    benchmark = load_script("benchmark")
    (tmp_path / "file.txt").write_text("x")
    argv = [str(tiny_artifact), "--backends", "onnxruntime", "--plot", str(tmp_path / "file.txt" / "p.png")]
    assert benchmark.main(argv) == 2
    assert "--plot" in capsys.readouterr().err
    assert benchmark.main([str(tiny_artifact), "--backends", "onnxruntime", "--batch-size", "100000"]) == 2
    assert "--batch-size must lie in 1..256" in capsys.readouterr().err


@pytest.mark.parametrize("verbose", [False, True])
def test_an_unexpected_error_is_exit_3_with_the_traceback_only_with_v(export_script, monkeypatch, capsys, verbose):
    from export import pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody expected\nsecond line")

    monkeypatch.setattr(pipeline, "export_model", broken)
    assert export_script.main([*TINY_ARGS, *(["-v"] if verbose else [])]) == 3
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("internal error: RuntimeError: something nobody expected") and "second line" not in last
    assert ("Traceback" in err) == verbose and (len(err.strip().splitlines()) == 1) != verbose
