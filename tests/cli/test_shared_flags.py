"""The shared flags mean the same in every script: --version, no abbreviations, defaults in --help."""

import importlib
import importlib.util
from pathlib import Path

import pytest

from runtime.cli import package_version

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("*.py"))


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"scripts_{path.stem}_shared", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_script_has_version_no_abbreviations_and_shows_defaults(path, capsys):
    script = load(path)
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"sge-deploy {package_version()}"
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--vers"])  # an abbreviation of --version: refused (missing arguments or unrecognized)
    assert exit_info.value.code == 2
    assert "sge-deploy" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        script.main(["--help"])
    assert "(default: " in " ".join(capsys.readouterr().out.split())  # argparse may wrap a long default path


def test_version_matches_pyproject():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'version = "{package_version()}"' in text


@pytest.mark.parametrize(
    ("command", "extra"), [("benchmark", []), ("infer", ["x.png"]), ("serve", []), ("validate", [])]
)
def test_backend_aliases_become_their_backends_for_every_command(command, extra):
    """An alias is its backend everywhere: benchmark looks options up by name, validate compares the name with
    "onnxruntime" to check the fused graph too."""
    import importlib

    parser = importlib.import_module(f"runtime.commands.{command}").build_parser()
    assert parser.parse_args(["artifacts/x", *extra, "--backend", "ort"]).backends == ("onnxruntime",)


def test_evaluate_keeps_the_precision_and_maps_its_reference():
    from runtime.commands import evaluate

    argv = ["artifacts/x", "--data", "d", "--backends", "ort,onnxruntime:int8,ov,ort:int8", "--reference", "pt"]
    parsed = evaluate.build_parser().parse_args(argv)
    assert parsed.backends == ("onnxruntime", "onnxruntime:int8", "openvino") and parsed.reference == "torch"


@pytest.mark.parametrize("command", ["benchmark", "infer", "serve"])
def test_backend_with_precision_is_refused_where_precision_is_its_own_flag(command, capsys):
    """``benchmark --backends ort:int8`` used to time FP32 ONNX Runtime under an int8 label (its options looked up by
    the whole name); commands with --precision refuse the form, evaluate (above) keeps it."""
    import importlib

    parser = importlib.import_module(f"runtime.commands.{command}").build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["artifacts/x", "--backends", "ort:int8"])
    assert exit_info.value.code == 2
    assert "--backends onnxruntime:int8: give the backend alone" in capsys.readouterr().err


def test_benchmark_openvino_errors_go_to_stderr(capsys):
    """Its error was printed on the console (standard output, unless --json -) instead of stderr like every script."""
    script = load(next(path for path in SCRIPTS if path.stem == "benchmark_openvino"))
    assert script.main(["--base", "/nonexistent/base", "--sge", "/nonexistent/sge"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: /nonexistent/") and "manifest.json" in captured.err


@pytest.mark.parametrize("command", ["serve", "validate", "evaluate", "trt_build"])
def test_an_artifact_may_be_named_by_its_manifest(command, tmp_path):
    """infer and runtime.load took ART/manifest.json; serve and validate said it had no manifest.json."""
    module = importlib.import_module(f"runtime.commands.{command}")
    (tmp_path / "manifest.json").write_text("{}")
    extra = {"evaluate": ["--data", str(tmp_path)], "trt_build": ["--trt", "fp16"]}.get(command, [])
    for given in (tmp_path / "manifest.json", tmp_path):
        args = module.build_parser().parse_args([str(given), *extra])
        assert vars(args)["directory" if command == "validate" else "artifact"] == tmp_path


def test_a_backend_with_an_empty_precision_is_refused(capsys):
    """``evaluate --backends openvino:`` ran fp32 under that label without a word."""
    from runtime.commands import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.build_parser().parse_args(["artifacts/x", "--data", "photos", "--backends", "openvino:"])
    assert exit_info.value.code == 2
    assert "'openvino:' names no precision after ':'; write openvino:int8, or openvino" in capsys.readouterr().err
