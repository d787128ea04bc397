"""Each INT8 graph passes its export gate on its own: the runners open whichever CPU graph passed (the fused one
alone included), say which graphs failed when none did, refuse a bare float file for int8, and the photo gates
judge every photograph whatever the batch sizes."""

import os
import shutil

import numpy as np
import pytest

import export
import runtime
from export.artifacts import load_manifest, write_manifest
from export.int8.calibration import CalibrationOptions
from export.int8.parity import int8_parity
from export.int8.roles import INT8_FUSED_NAME, INT8_NAME, PrecisionError, missing_int8_graph
from export.ort_sge import session as ort_session
from tests.conftest import save_photos
from tests.int8.conftest import MODEL, SIZE, cosine

BACKENDS = ["onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def fused_only(tmp_path_factory):
    """An export whose model.int8.onnx failed its gate while model.int8.sge_fused.onnx passed."""
    import export.int8.stage as stage

    def plain_fails(graph, *args, **kwargs):
        report = int8_parity(graph, *args, **kwargs)
        if graph == INT8_NAME:
            report.failures.append("photos batch 8 vs eager: cosine 0.9000 < 0.99 (made to fail by this test)")
        return report

    directory = tmp_path_factory.mktemp("fused_only") / MODEL
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stage, "int8_parity", plain_fails)
        result = export.export_model(
            MODEL,
            directory,
            init="random",
            input_size=SIZE,
            int8=CalibrationOptions(count=8),  # as int8_artifact
        )
    assert [g.name for g in result.int8.graphs if not g.passed] == [INT8_NAME]
    files = load_manifest(directory).files
    assert INT8_NAME not in files and INT8_FUSED_NAME in files and not (directory / INT8_NAME).exists()
    return directory


@pytest.fixture(scope="module")
def no_cpu_int8(fused_only, tmp_path_factory):
    """The same artifact with the fused INT8 graph failed too (recorded as the export records a failure)."""
    directory = tmp_path_factory.mktemp("no_cpu_int8") / MODEL
    shutil.copytree(fused_only, directory, copy_function=os.link)
    manifest = load_manifest(directory)
    del manifest.files[INT8_FUSED_NAME], manifest.files["parity_model_int8_sge_fused.json"]
    (directory / INT8_FUSED_NAME).unlink()
    for graph in manifest.extra["int8"]["graphs"]:
        graph["passed"] = graph["passed"] and graph["file"] != INT8_FUSED_NAME
    write_manifest(directory, manifest)
    return directory


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each CPU backend; OpenVINO's tests skip where it is not installed."""
    if request.param == "openvino":
        pytest.importorskip("openvino")
    return request.param


def run(artifact, backend, batch, **options):
    with runtime.load(artifact, backend, threads=1, precision="int8", **options) as runner:
        return runner.infer(batch), runner.describe()


def test_the_fused_int8_graph_runs_when_it_alone_passed(fused_only, photos, backend):
    got, described = run(fused_only, backend, photos)
    assert described["model_path"].endswith(INT8_FUSED_NAME) and described["precision"] == "int8"
    with runtime.load(fused_only, "onnxruntime", threads=1) as fp32:
        assert cosine(got, fp32.infer(photos)).min() >= 0.99


def test_without_the_fused_path_the_error_names_the_failed_graph(fused_only, backend):
    with pytest.raises(PrecisionError) as err:  # the same error type on every backend
        runtime.load(fused_only, backend, precision="int8", sge_fused=False).activate()
    message = str(err.value)
    assert "model.int8.onnx (parity_model_int8.json) failed its INT8 parity gate" in message
    assert f"{INT8_FUSED_NAME}, which it has" in message and "sge_fused=True" in message and "\n" not in message
    assert "--int8-weight-bits 8 where every CPU it runs on has VNNI or AMX" in message  # its graphs have 7 bits


def test_onnxruntime_kernel_failure_with_no_plain_graph_says_both(fused_only, photos, monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("the fused SGE kernel library was not built in this install")

    monkeypatch.setattr(ort_session, "kernel_library", unavailable)
    pattern = rf"onnxruntime cannot run {INT8_FUSED_NAME} here \(the fused SGE kernel .*\), and .*failed its INT8"
    with pytest.raises(PrecisionError, match=pattern) as err:
        run(fused_only, "onnxruntime", photos)
    assert "which it has" not in str(err.value)  # the fused graph was just tried: never pointed back at


def test_no_usable_int8_graph_names_the_failed_gates_not_a_missing_flag(no_cpu_int8, backend, tmp_path, capsys):
    from tests.export.conftest import load_script

    save_photos(tmp_path, ["coffee"])
    argv = [str(no_cpu_int8), str(tmp_path / "coffee.png"), "--backend", backend, "--precision", "int8"]
    assert load_script("infer").main(argv) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "exported with --int8 but" in error and "re-export it with `sge-deploy export" not in error
    assert "model.int8.onnx (parity_model_int8.json)" in error
    assert "model.int8.sge_fused.onnx (parity_model_int8_sge_fused.json) failed their INT8 parity gate" in error


def test_an_artifact_exported_without_int8_still_says_to_add_it(fused_only):
    manifest = load_manifest(fused_only)
    manifest.extra.pop("int8")
    assert "--int8`" in missing_int8_graph(manifest, fused=True)


def test_a_bare_int8_file_is_parsed_once_before_onnxruntime_reads_it(int8_artifact, monkeypatch):
    import onnx

    directory, _ = int8_artifact
    parsed, load = [], onnx.load
    monkeypatch.setattr(onnx, "load", lambda path, *args, **kwargs: parsed.append(path) or load(path, *args, **kwargs))
    with runtime.load(directory / INT8_NAME, "onnxruntime", precision="int8") as runner:
        runner.activate()
    assert parsed == [str(directory / INT8_NAME)]  # the specs and the quantised-layer check share one read


def test_onnxruntime_refuses_a_bare_float_file_for_int8(int8_artifact, photos):
    directory, _ = int8_artifact
    runner = runtime.load(directory / "model.onnx", "onnxruntime", precision="int8")
    with pytest.raises(PrecisionError, match="holds no quantised layer"):
        runner.activate()
    assert not runner.is_active
    got, described = run(directory / INT8_NAME, "onnxruntime", photos)  # a bare Q/DQ file runs, as in its artifact
    assert described["precision"] == "int8"
    np.testing.assert_allclose(got, run(directory, "onnxruntime", photos, sge_fused=False)[0], atol=1e-5)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_float_graph_under_the_int8_role_is_refused_by_every_backend(int8_artifact, tmp_path, backend):
    """Replaced and re-hashed (out of the manifest's scope), it ran FP32 under the int8 name on onnxruntime, while
    OpenVINO refused it."""
    import hashlib
    import json
    import shutil

    directory, _ = int8_artifact
    copy = tmp_path / "artifact"
    shutil.copytree(directory, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for name in [n for n in manifest["files"] if n.startswith("model.int8") and n.endswith(".onnx")]:
        (copy / name).write_bytes((copy / "model.onnx").read_bytes())
        data = (copy / name).read_bytes()
        manifest["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    (copy / "manifest.json").write_text(json.dumps(manifest))
    runner = runtime.load(copy, backend, precision="int8", threads=1)
    with pytest.raises(PrecisionError, match="holds no quantised layer"):
        runner.activate()
    assert not runner.is_active


def test_the_photo_gates_judge_every_photograph_whatever_the_batch_sizes(photos):
    """With batch sizes 1 and 2, wrong top-1 classes on the photographs past the second must still fail the gate."""
    n = len(photos)
    assert n > 4
    reference = np.random.default_rng(0).standard_normal((n, 100)).astype(np.float32)
    reference[:, 0] = 10.0  # a clear top-1 class on every photograph

    def runner(x):
        assert len(x) <= 2, "the full photo set must run in batches of the largest batch size, never as one"
        rows = [int(np.flatnonzero((photos == image).all(axis=(1, 2, 3)))[0]) for image in x]  # which photographs
        out = reference[rows].copy()
        swap = np.array(rows) >= 2  # every photograph after the first two: a clear swap
        out[np.ix_(swap, [0, 1])] = out[np.ix_(swap, [1, 0])]
        return out

    report = int8_parity(
        "g.onnx", "u8s8", runner, inputs={"photos": photos}, references={"eager": {"photos": reference}},
        batch_sizes=(1, 2),
    )  # fmt: skip
    assert [c["batch"] for c in report.cases] == [1, 2, n]  # the existing cases, and one holding every photograph
    assert report.worst("eager", "photos")["top1"] == pytest.approx(2 / n)
    assert any(f"photos batch {n} vs eager: clear top-1 agreement" in failure for failure in report.failures)
    assert not any("batch 2 " in failure or "batch 1 " in failure for failure in report.failures)


def test_a_largest_batch_that_repeats_a_photograph_is_not_the_top1_gate(photos):
    """Batch sizes 1, 3, 8 and 7 photographs: the 8-row batch repeats the first one, so 6 clear of 8 passed the 75 %
    gate where 5 of the 7 photographs fail it. The gate judges the 7."""
    n = len(photos)
    cycled = photos[np.arange(n + 1) % n]
    reference = np.random.default_rng(0).standard_normal((n + 1, 100)).astype(np.float32)
    reference[:, 0] = 10.0  # a clear top-1 class on every photograph
    swapped = {1, 2}  # two photographs (not the repeated first) swap their top two classes

    def runner(x):
        out = reference[: len(x)].copy()
        for row in range(len(x)):
            if row % n in swapped:
                out[row, [0, 1]] = out[row, [1, 0]]
        return out

    kwargs = {
        "inputs": {"photos": cycled},
        "references": {"eager": {"photos": reference}},
        "batch_sizes": (1, 3, n + 1),
    }
    assert not any("top-1" in f for f in int8_parity("g.onnx", "u8s8", runner, **kwargs).failures)  # 6/8 = 75 %
    report = int8_parity("g.onnx", "u8s8", runner, **kwargs, photo_set=n)
    assert [c["batch"] for c in report.cases] == [1, 3, n + 1, n]
    top1 = [f for f in report.failures if "top-1" in f]  # (the swaps fail the cosine gates too)
    assert top1 == [f"photos batch {n} vs eager: clear top-1 agreement {(n - 2) / n:.0%} < 75%"]
    worst = report.summary()["worst"]["eager / photos"]  # what the manifest and the export print: the judged set
    assert worst["clear_top1"] == worst["top1"] == (n - 2) / n
    kwargs["batch_sizes"] = (1, n, n + 1)  # the set is a batch size already: judged there, not twice
    report = int8_parity("g.onnx", "u8s8", runner, **kwargs, photo_set=n)
    assert [c["batch"] for c in report.cases] == [1, n, n + 1]
    assert [f for f in report.failures if "top-1" in f] == top1
