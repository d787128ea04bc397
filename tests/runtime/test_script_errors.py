"""infer and benchmark on bad input: one line on stderr, exit 2, checked before the work; user text is not markup."""

import json
import math
import os
import shutil

import pytest
from PIL import Image

import runtime
import runtime.auto
import runtime.commands.benchmark
import runtime.commands.infer
from export.artifacts import ArtifactError
from models.transforms import sample_photos
from runtime.latency import BenchmarkConfig
from runtime.preprocess import preprocessing_for

from .test_scripts import load_script

QUICK = ["--backends", "onnxruntime", "--threads", "1", "--iterations", "2", "--duration", "0", "--warmup-ms", "0"]


@pytest.fixture(scope="module")
def infer():
    return load_script("infer")


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmark")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A real photograph whose name looks like rich markup."""
    path = tmp_path_factory.mktemp("photos") / "cat[bold].png"
    Image.fromarray(sample_photos(("chelsea",))["chelsea"]).save(path)
    return path


def no_work(*args, **kwargs):
    raise AssertionError("the work started before the input was checked")


def assert_one_error_line(capsys, *fragments):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith("warning: ")]  # the untrained weights
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert all(fragment in lines[0] for fragment in fragments), captured.err
    assert "error" not in captured.out


def test_infer_warns_on_stderr_and_prints_file_names_as_they_are(artifact, photo, infer, capsys):
    assert infer.main([str(artifact), str(photo), "--top-k", "1"]) == 0
    captured = capsys.readouterr()
    assert "cat[bold].png" in captured.out and "warning" not in captured.out
    assert "warning:" in captured.err and "NOT trained" in captured.err


def test_a_path_with_a_closing_tag_is_named_in_the_error(artifact, infer, tmp_path, capsys):
    missing = tmp_path / "a[" / "b].png"  # the path reads "a[/b].png": a closing tag to rich
    assert infer.main([str(artifact), str(missing)]) == 2
    assert_one_error_line(capsys, "cannot read image", str(missing))


@pytest.mark.parametrize(
    ("kind", "message"),
    [("folder", "Is a directory"), ("missing", "No such file or directory"), ("binary", "not UTF-8 text")],
)
def test_infer_checks_the_labels_file_before_the_work(
    artifact, photo, infer, tmp_path, capsys, monkeypatch, kind, message
):
    labels = {"folder": tmp_path, "missing": tmp_path / "labels.txt", "binary": artifact / "model.onnx"}[kind]
    monkeypatch.setattr(runtime, "load", no_work)
    assert infer.main([str(artifact), str(photo), "--labels", str(labels)]) == 2
    assert_one_error_line(capsys, f"cannot read labels file {labels}: {message}", "one class name per line")


def test_infer_checks_the_auto_table_before_timing(artifact, photo, infer, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runtime.auto, "choose_backend", no_work)
    assert infer.main([str(artifact), str(photo), "--backend", "auto", "--auto-table", str(tmp_path)]) == 2
    assert_one_error_line(capsys, f"--auto-table {tmp_path} is a directory")


def failing_write(path, data):
    raise OSError(28, "No space left on device", str(path))


def test_a_late_json_write_failure_is_one_line(artifact, photo, infer, benchmark, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.json"
    monkeypatch.setattr(runtime.commands.infer, "write_json_output", failing_write)
    assert infer.main([str(artifact), str(photo), "--json", str(out)]) == 2
    assert_one_error_line(capsys, "No space left on device", str(out))
    monkeypatch.setattr(runtime.commands.benchmark, "write_json_output", failing_write)
    assert benchmark.main([str(artifact), *QUICK, "--json", str(out)]) == 2
    assert_one_error_line(capsys, "No space left on device", str(out))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "nan"], "must be finite numbers; got nan s"),
        (["--duration", "inf"], "must be finite numbers; got inf s"),
        (["--warmup-ms", "nan"], "must be finite numbers; got 0.0 s and nan ms"),
        (["--percentiles", "abc"], "--percentiles expects numbers such as 90,95,99; got 'abc'"),
        (
            ["--precision", "bf16"],
            "--precision bf16 is run by none of --backends onnxruntime (onnxruntime runs fp32/int8)",
        ),
        (["--export-times", "-"], "--export-times -: only --json writes to standard output"),
        (["--plot", "-"], "--plot -: only --json writes to standard output"),
    ],
)
def test_benchmark_refuses_before_the_work(artifact, benchmark, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runtime.commands.benchmark, "run_benchmark", no_work)
    assert benchmark.main([str(artifact), *QUICK, *args]) == 2
    assert_one_error_line(capsys, message)
    assert list(tmp_path.iterdir()) == []  # no file named "-"


def test_benchmark_config_refuses_non_finite_times():
    for bad in ({"duration_s": math.nan}, {"duration_s": math.inf}, {"warmup_ms": math.nan}):
        with pytest.raises(ValueError, match="finite"):
            BenchmarkConfig(**bad)


@pytest.fixture
def tampered(artifact, tmp_path):
    """A copy of the artifact (hard links: the files are shared, so the manifest is replaced, never written into)
    whose manifest records ``size`` as the input size."""

    def make(size):
        copy = tmp_path / f"artifact_{len(list(tmp_path.iterdir()))}"
        shutil.copytree(artifact, copy, copy_function=os.link)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["preprocessing"]["input_size"] = size
        (copy / "manifest.json").unlink()
        (copy / "manifest.json").write_text(json.dumps(manifest))
        return copy

    return make


@pytest.mark.parametrize("size", [[20000, 20000], [0, 0], [96, -1]])
def test_an_out_of_range_manifest_input_size_names_the_manifest(tampered, photo, infer, benchmark, capsys, size):
    copy = tampered(size)
    with pytest.raises(
        ArtifactError, match=r"manifest\.json: preprocessing\.input_size .* must be two sides of 1\.\.1024"
    ):
        preprocessing_for(runtime.open_source(copy))
    assert infer.main([str(copy), str(photo)]) == 2
    assert_one_error_line(capsys, str(copy / "manifest.json"), "re-export the artifact")
    assert benchmark.main([str(copy), *QUICK]) == 2
    assert_one_error_line(capsys, str(copy / "manifest.json"), "re-export the artifact")


@pytest.mark.parametrize("top_k", ["0", "-2"])
def test_infer_refuses_top_k_below_1_before_loading_a_backend(artifact, photo, infer, capsys, monkeypatch, top_k):
    monkeypatch.setattr(runtime, "load", no_work)
    assert infer.main([str(artifact), str(photo), "--top-k", top_k]) == 2
    assert_one_error_line(capsys, "--top-k must be at least 1")


def test_benchmark_plot_without_matplotlib_is_refused_before_timing(artifact, benchmark, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.setattr(runtime.commands.benchmark, "run_benchmark", no_work)
    assert benchmark.main([str(artifact), *QUICK, "--plot", str(tmp_path / "p.png")]) == 2
    assert_one_error_line(capsys, "--plot needs matplotlib")


def test_benchmark_backend_aliases_get_their_backends_options(artifact, benchmark, monkeypatch):
    seen = {}

    def capture(artifact, names, *, options, **kwargs):
        seen.update(options)
        raise ArtifactError("captured")  # stop before timing: one line, exit 2

    monkeypatch.setattr(runtime.commands.benchmark, "run_benchmark", capture)
    assert benchmark.main([str(artifact), "--backends", "ort,ov", "--precision", "fp32,int8", "--threads", "1"]) == 2
    # ort's idle threads must sleep while the next backend is timed, as onnxruntime's do; ov runs int8 as openvino
    assert set(seen) == {"onnxruntime", "onnxruntime:int8", "openvino", "openvino:int8"}
    assert seen["onnxruntime"]["allow_spinning"] is False


@pytest.mark.parametrize("damage", ["missing", "cut"])
def test_a_bare_graph_without_its_whole_weights_file_is_one_line(artifact, photo, infer, tmp_path, capsys, damage):
    graph = tmp_path / "model.sge_fused.onnx"  # copied out of the artifact, as users do, with or without its data
    shutil.copy(artifact / graph.name, graph)
    data = artifact / f"{graph.name}.data"
    if damage == "cut":
        (tmp_path / data.name).write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    expected = "which is missing; copy it together with" if damage == "missing" else "short of the"
    for backend in ("onnxruntime", "openvino"):
        assert infer.main([str(graph), str(photo), "--backend", backend]) == 2
        assert_one_error_line(capsys, f"{data.name}", expected)
    with pytest.raises(ArtifactError, match=expected):
        runtime.load(graph, "onnxruntime")


def test_the_default_backends_are_those_installed(benchmark, artifact, tmp_path, monkeypatch, capsys):
    # a deploy-only install has no torch: `sge-deploy benchmark ARTIFACT` failed on the torch backend by default
    import runtime.environment

    real = runtime.environment.importable
    monkeypatch.setattr(runtime.environment, "importable", lambda module: module != "torch" and real(module))
    out = tmp_path / "bench.json"
    quick = [a for a in QUICK if a not in ("--backends", "onnxruntime")]
    assert benchmark.main([str(artifact), *quick, "--json", str(out)]) == 0
    assert "note: torch not installed: timing onnxruntime,openvino (--backends chooses)" in capsys.readouterr().err
    assert [r["backend"] for r in json.loads(out.read_text())["reports"]] == ["onnxruntime", "openvino"]
