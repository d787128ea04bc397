"""Exports are transactions: a failed, interrupted or concurrent re-export leaves the previous artifact as it was."""

import shutil
from pathlib import Path

import pytest

import export.transaction
from export.artifacts import ArtifactError, load_manifest
from export.transaction import ExportLockedError, artifact_transaction, publish_directory
from tests.export.conftest import export_tiny


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def siblings(directory):
    return sorted(p.name for p in directory.parent.iterdir() if not p.name.endswith(".lock"))


@pytest.fixture
def artifact(tmp_path):
    out = tmp_path / "resnet18"
    assert export_tiny(out).manifest_path is not None
    return out


def test_interrupted_re_export_leaves_the_previous_artifact_exactly(artifact, monkeypatch):
    from export import pipeline

    before = snapshot(artifact)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_parity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_tiny(artifact, input_size=(96, 96))
    assert snapshot(artifact) == before and siblings(artifact) == ["resnet18"]  # no staging directory left
    assert load_manifest(artifact).inputs[0].shape == ("batch", 3, 64, 64)


def test_failed_re_export_leaves_the_previous_artifact_exactly(artifact):
    before = snapshot(artifact)
    # Explicit gates no ONNX graph can meet: parity fails, and nothing of this export may reach the directory.
    result = export_tiny(artifact, input_size=(96, 96), atol=1e-12, rtol=1e-12, noise_floor=False, check=False)
    assert not result.passed and result.manifest_path is None and result.onnx_path is None
    assert snapshot(artifact) == before and siblings(artifact) == ["resnet18"]


def test_second_export_to_a_locked_directory_fails_naming_the_lock(artifact, export_script, capsys):
    before = snapshot(artifact)
    with artifact_transaction(artifact):  # an export in progress holds the lock
        with pytest.raises(ExportLockedError, match=r"\.resnet18\.lock"):
            export_tiny(artifact, input_size=(96, 96))
        argv = ["--model", "resnet18", "--init", "random", "--input-size", "96", "96", "--output", str(artifact)]
        assert export_script.main([*argv, "--simplifier", "none", "--batch-sizes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: another export is writing") and ".resnet18.lock" in err and "\n" not in err
    assert snapshot(artifact) == before


def test_a_locked_output_is_refused_before_the_model_loads(artifact, monkeypatch):
    from export import pipeline

    loads = []
    monkeypatch.setattr(pipeline, "load_source", lambda *args, **kwargs: loads.append(args) or 1 / 0)
    with artifact_transaction(artifact), pytest.raises(ExportLockedError):
        export_tiny(artifact, input_size=(96, 96))
    assert loads == []  # refused at once, not after the model (seconds to minutes) loaded


def test_a_failed_load_leaves_no_folder_where_the_output_would_go(tmp_path, monkeypatch):
    from export import pipeline

    def broken(*args, **kwargs):
        raise ValueError("unreadable checkpoint")

    monkeypatch.setattr(pipeline, "load_source", broken)
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        export_tiny(tmp_path / "new" / "deep" / "art")
    assert list(tmp_path.iterdir()) == []  # the lock waits for the load where its folder is still to be made


def test_the_default_output_of_a_registry_model_is_locked_before_the_load(tmp_path, monkeypatch):
    from export import pipeline

    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifacts").mkdir()
    monkeypatch.setattr(pipeline, "load_source", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    with artifact_transaction(tmp_path / "artifacts" / "resnet18"), pytest.raises(ExportLockedError):
        pipeline.export_model("resnet18", init="random", input_size=(64, 64))


def test_an_artifact_moved_aside_by_a_killed_export_is_restored_by_the_next(artifact, caplog):
    """A kill between the swap's two renames (no renameat2) leaves the previous artifact under .NAME.old-*: the next
    export must put it back before anything else, never delete it."""
    before = snapshot(artifact)
    aside = artifact.parent / f".{artifact.name}.old-killed"
    aside.mkdir()
    artifact.rename(aside / "artifact")
    with artifact_transaction(artifact):  # the next export, before it writes anything
        assert snapshot(artifact) == before
    assert not aside.exists() and "restored" in caplog.text


def test_successful_re_export_swaps_in_a_consistent_artifact_and_cleans_leftovers(artifact):
    (artifact.parent / ".resnet18.staging-killed").mkdir()  # what a SIGKILLed export leaves
    result = export_tiny(artifact, input_size=(96, 96))
    assert result.manifest_path == artifact / "manifest.json" and siblings(artifact) == ["resnet18"]
    manifest = load_manifest(artifact, verify=True)
    assert manifest.inputs[0].shape == ("batch", 3, 96, 96) and set(manifest.files) == {"model.onnx", "parity.json"}


def test_export_refuses_to_replace_a_directory_that_is_not_an_artifact(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match=r"neither empty nor an artifact directory \(it holds notes\.txt, and no"):
        export_tiny(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    (folder / "notes.txt").unlink()
    (folder / "model.onnx").write_text("my own model")  # named like an export's file, but no manifest: the user's
    with pytest.raises(ArtifactError, match=r"it holds model\.onnx, and no manifest\.json"):
        export_tiny(folder)
    assert (folder / "model.onnx").read_text() == "my own model"


def test_a_folder_with_someone_elses_manifest_json_is_not_an_artifact(tmp_path):
    folder = tmp_path / "webapp"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"name": "my-extension", "version": "1.0"}')
    (folder / "thesis.tex").write_text("keep me")
    with pytest.raises(ArtifactError, match="is not an sge-deploy manifest"):
        export_tiny(folder)
    assert (folder / "thesis.tex").read_text() == "keep me" and (folder / "manifest.json").exists()


def test_an_artifact_holding_a_file_its_manifest_does_not_record_is_not_replaced(artifact):
    (artifact / "notes.txt").write_text("keep me")
    before = snapshot(artifact)
    with pytest.raises(ArtifactError, match=r"holds files its manifest does not record \(notes\.txt\)"):
        export_tiny(artifact, input_size=(96, 96))
    assert snapshot(artifact) == before


def test_commit_puts_every_staged_file_on_the_disk_before_the_swap_and_the_swap_after(tmp_path, fsync_log):
    target = tmp_path / "artifact"
    for case in ("new", "replaced"):
        fsync_log.clear()
        if case == "replaced":  # an empty folder: replaceable, and swapped by the same exchange as an artifact
            shutil.rmtree(target)
            target.mkdir()
        with artifact_transaction(target) as transaction:
            staging = transaction.staging.resolve()
            (staging / "sub").mkdir()
            (staging / "model.onnx").write_bytes(b"graph")
            (staging / "sub" / "weights.bin").write_bytes(b"weights")
            transaction.commit()
        staged = {staging / "model.onnx", staging / "sub" / "weights.bin", staging / "sub", staging}
        assert set(fsync_log[:-1]) == staged and fsync_log[-1] == tmp_path.resolve()
        assert (target / "sub" / "weights.bin").read_bytes() == b"weights"


def test_a_re_export_from_inside_the_artifact_names_the_new_files(artifact, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(artifact)  # --output . : the commit swaps the working directory out
    result = export_tiny(Path("."), input_size=(96, 96))
    for path in (result.output_dir, result.onnx_path, result.parity_path, result.manifest_path):
        assert path.is_absolute() and path.exists(), path  # not paths into the swapped-out directory
    assert load_manifest(result.output_dir).inputs[0].shape == ("batch", 3, 96, 96)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_published_folder_replaces_the_old_one_whole_and_leaves_nothing_beside_it(tmp_path, monkeypatch, exchange):
    real = export.transaction._exchange
    results = []
    monkeypatch.setattr(
        export.transaction, "_exchange", lambda a, b: results.append(real(a, b) if exchange else False) or results[-1]
    )
    target, staging = tmp_path / "m", tmp_path / ".m.staging"
    for folder, name in ((target, "old.txt"), (staging, "new.txt")):
        folder.mkdir()
        (folder / name).write_text(name)
    publish_directory(staging, target)
    if exchange and results[:1] == [False]:
        pytest.skip("this file system has no renameat2 exchange")
    assert results == [exchange]
    assert siblings(target) == ["m"] and [p.name for p in target.iterdir()] == ["new.txt"]


def test_an_output_name_with_glob_characters_leaves_other_exports_leftovers_alone(tmp_path):
    """``--output 'g/x[12]'`` cleaned up x1's staging folder and took x2's moved-aside artifact as its own."""
    (tmp_path / ".x1.staging-run").mkdir()
    (tmp_path / ".x2.old-a" / "artifact").mkdir(parents=True)
    export.transaction._clean_leftovers(tmp_path / "x[12]")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x1.staging-run", ".x2.old-a"]
    (tmp_path / ".x[12].staging-run").mkdir()  # its own leftovers still go
    export.transaction._clean_leftovers(tmp_path / "x[12]")
    assert not (tmp_path / ".x[12].staging-run").exists()


def test_a_mount_point_is_refused_before_the_work(tmp_path, monkeypatch):
    # a container volume: the exchange failed with EBUSY after every stage, leaving a .NAME.old-* folder
    volume = tmp_path / "volume"
    volume.mkdir()
    monkeypatch.setattr(export.transaction.os.path, "ismount", lambda path: Path(path) == volume)
    refused = pytest.raises(ArtifactError, match=r"is a mount point, .*give a folder inside it, e\.g\. --output ")
    with refused, artifact_transaction(volume):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".volume.lock", "volume"]


def test_a_folder_name_too_long_for_its_staging_name_is_refused_before_the_work(tmp_path):
    # a 245-character --output: [Errno 36] File name too long on the staging folder, after the model loaded
    refused = pytest.raises(ArtifactError, match=r"folder name is 245 bytes; .*give a name of at most 23\d bytes")
    with refused, artifact_transaction(tmp_path / ("a" * 245)):
        pass
    assert list(tmp_path.iterdir()) == []
    with artifact_transaction(tmp_path / ("a" * 230)) as transaction:  # fits: ".<230>.staging-XXXXXXXX" is 248
        assert transaction.staging.is_dir()
