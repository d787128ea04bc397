"""The ONNX Runtime runner never goes down for the fused SGE graph: any failure to find, load or register the
kernel library, or to plan the fused session, is one warning, and the runner runs the portable model.onnx."""

import logging
from pathlib import Path

import numpy as np
import pytest

import runtime
from export.ort_sge import session as ort_session
from tests.conftest import expected_kernel_build

pytestmark = pytest.mark.timeout(120)


def plain_outputs(artifact, batch):
    with runtime.load(artifact, "onnxruntime", threads=1, sge_fused=False) as plain:
        return plain.infer(batch)


def assert_fell_back(artifact, batch, caplog, reason):
    opened = runtime.load(artifact, "onnxruntime", threads=1)
    with caplog.at_level(logging.WARNING, logger="runtime.backends.ort"), opened as runner:
        got = runner.infer(batch)
        described = runner.describe()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and reason in warnings[0] and "model.onnx" in warnings[0], warnings
    assert "\n" not in warnings[0]
    assert described["graph"] == "plain" and described["model_path"].endswith("model.onnx")
    np.testing.assert_array_equal(got, plain_outputs(artifact, batch))


def test_the_fused_graph_runs_when_nothing_fails(artifact, random_batch, caplog):
    opened = runtime.load(artifact, "onnxruntime", threads=1)
    with caplog.at_level(logging.WARNING, logger="runtime.backends.ort"), opened as runner:
        described = runner.describe()
        assert described["graph"] == "sge_fused"
        assert described["kernel_build"] == expected_kernel_build()  # which maths ran, for the reports
        assert np.isfinite(runner.infer(random_batch)).all()
    assert not caplog.records


def test_a_planning_failure_falls_back(artifact, random_batch, caplog, monkeypatch):
    def broken_drop_reorders(*args, **kwargs):
        raise RuntimeError("rewiring failed on this graph")

    monkeypatch.setattr(ort_session, "drop_reorders", broken_drop_reorders)
    assert_fell_back(artifact, random_batch, caplog, "rewiring failed on this graph")


def test_a_temporary_folder_too_small_for_the_plan_is_named(artifact, random_batch, caplog, monkeypatch):
    from collections import namedtuple

    import export.validate as validate

    def full_disk(*args, **kwargs):  # what ORT says when the scratch folder fills up: nothing about space
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : graph.cc ToGraphProtoWithExternalInitializers failed")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ort_session, "optimized_graph", full_disk)
    monkeypatch.setattr(ort_session.shutil, "disk_usage", lambda path: usage(10**7, 10**7 - 10**6, 10**6))
    assert_fell_back(artifact, random_batch, caplog, "MB free; free space there or set TMPDIR to a larger folder")
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # validate leaves the fused graph out, saying why, instead of crashing
        assert validate.validate_artifact(artifact, graphs=["model.sge_fused.onnx"]) == {}
    assert "set TMPDIR" in caplog.text and "model.sge_fused.onnx not checked" in caplog.text


def test_a_missing_kernel_library_falls_back(artifact, random_batch, caplog, monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("the fused SGE kernel library was not built in this install")

    monkeypatch.setattr(ort_session, "kernel_library", unavailable)
    assert_fell_back(artifact, random_batch, caplog, "was not built in this install")


def test_a_library_onnxruntime_cannot_load_falls_back(artifact, random_batch, caplog, monkeypatch, tmp_path):
    garbage = tmp_path / "libsge_ort_op.so"
    garbage.write_bytes(b"\x7fELF this is not a shared library" * 10)
    monkeypatch.setattr(ort_session, "kernel_library", lambda *args, **kwargs: garbage)
    monkeypatch.setattr(ort_session, "kernel_build", lambda library: "avx512")  # so ONNX Runtime is the one to load it
    assert_fell_back(artifact, random_batch, caplog, "libsge_ort_op.so")


def test_a_library_from_an_older_version_falls_back(artifact, random_batch, caplog, monkeypatch):
    import _ctypes

    stale = Path(_ctypes.__file__)  # loads, but cannot say which build it runs (no SgeKernelBuild)
    monkeypatch.setattr(ort_session, "kernel_library", lambda *args, **kwargs: stale)
    assert_fell_back(artifact, random_batch, caplog, "predates this version of the package")


def test_a_bare_fused_file_without_the_kernel_is_one_line_exit_2(artifact, monkeypatch, capsys, tmp_path):
    # no model.onnx to fall back to: a bad input (run the plain graph), not an internal error asking for a report
    from export.ort_sge.kernels.library import REBUILD, KernelUnavailableError
    from runtime.backends.base import BackendUnavailableError
    from tests.conftest import save_photos
    from tests.runtime.test_scripts import load_script

    def missing(*args, **kwargs):
        raise KernelUnavailableError(f"the fused SGE kernel library /x/libsge_ort_op.so is missing: {REBUILD}")

    monkeypatch.setattr(ort_session, "kernel_library", missing)
    bare = artifact / "model.sge_fused.onnx"
    with pytest.raises(BackendUnavailableError, match=r"model\.sge_fused\.onnx holds the fused SGE op"):
        runtime.load(bare, "onnxruntime", threads=1).activate()
    (photo,) = save_photos(tmp_path, ["chelsea"])
    assert load_script("infer").main([str(bare), str(photo)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model.sge_fused.onnx holds the fused SGE op") and "\n" not in err
    assert "is missing" in err and "run the plain graph instead (model.onnx" in err
