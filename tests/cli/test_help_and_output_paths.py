"""--help shows no default for a switch; an output path is refused before the work; `-` is only for --json."""

import importlib
from pathlib import Path

import pytest

from runtime.cli import OutputPathError, check_output_dir, check_output_paths, make_parser
from runtime.commands import COMMANDS


def test_a_switch_shows_no_default():
    parser = make_parser()
    parser.add_argument("--no-gate", action="store_false", dest="gate", help="expose the port directly")
    # no help and an explicit default: the parser makes up "(default: …)" help for an option, never for a switch
    parser.add_argument("--no-color", action="store_false", dest="color", default=True)
    parser.add_argument("--rounds", type=int, default=3, help="how many")
    text = parser.format_help()
    assert "(default: True)" not in text and "(default: False)" not in text
    assert "how many (default: 3)" in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_shows_a_switch_default(name):
    module = importlib.import_module(f"runtime.commands.{COMMANDS[name].module}")
    text = module.build_parser().format_help()
    assert "(default: True)" not in text and "(default: False)" not in text


def test_only_json_writes_to_standard_output():
    check_output_paths(json="-")
    for flag in ("export_times", "plot", "auto_table"):
        with pytest.raises(OutputPathError, match=f"--{flag.replace('_', '-')} -: only --json writes to standard"):
            check_output_paths(**{flag: "-"})


def test_an_output_folder_must_be_a_writable_folder(tmp_path):
    check_output_dir(tmp_path / "new" / "report", flag="--output")  # created later, under a writable folder
    (tmp_path / "taken").write_text("a file\n")
    with pytest.raises(OutputPathError, match=r"--output .*taken is a file; give a folder"):
        check_output_dir(tmp_path / "taken", flag="--output")
    with pytest.raises(OutputPathError, match=r"cannot write into .*taken \(not a directory\); give a folder in a"):
        check_output_dir(tmp_path / "taken" / "report", flag="--output")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_where_no_file_can_be_made_is_refused_even_for_root(tmp_path, capsys):
    from runtime.commands import export

    with pytest.raises(OutputPathError, match=r"--json /proc/x\.json: cannot write into /proc \("):
        check_output_paths(json="/proc/x.json")  # os.access says yes to root here; creating a file says no
    out = tmp_path / "out"
    assert export.main(["--model", "resnet18", "--output", str(out), "--json", "/proc/x.json"]) == 2
    assert "cannot write into /proc" in capsys.readouterr().err and not out.exists()


def test_an_output_never_overwrites_an_input_or_another_output(tmp_path):
    artifact, image = tmp_path / "artifact", tmp_path / "cat.jpg"
    artifact.mkdir()
    (artifact / "manifest.json").write_text("{}\n")
    image.write_bytes(b"jpeg")
    inputs = [artifact, image, None]
    check_output_paths(json=tmp_path / "result.json", plot=tmp_path / "plot.png", inputs=inputs)
    with pytest.raises(OutputPathError, match=r"--json .*manifest.json would overwrite the input .*artifact; write"):
        check_output_paths(json=artifact / "manifest.json", inputs=inputs)
    with pytest.raises(OutputPathError, match=r"--json .*new.json lies in the artifact .*artifact, whose files are"):
        check_output_paths(json=artifact / "sub" / "new.json", inputs=inputs)  # anywhere in an artifact
    data = tmp_path / "photos"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "a.png").write_bytes(b"png")
    check_output_paths(json=data / "eval.json", inputs=[data])  # a new file beside the data overwrites nothing
    with pytest.raises(OutputPathError, match=r"--json .*a.png would overwrite the input .*photos; write"):
        check_output_paths(json=data / "cat" / "a.png", inputs=[data])
    with pytest.raises(OutputPathError, match=r"--auto-table .*cat.jpg would overwrite the input .*cat.jpg"):
        check_output_paths(auto_table=tmp_path / "." / "cat.jpg", inputs=inputs)
    with pytest.raises(OutputPathError, match=r"--json and --export-times both name .*same.json; give each its own"):
        check_output_paths(json=tmp_path / "same.json", export_times=tmp_path / "same.json")
    with pytest.raises(OutputPathError, match=r"--json .*j1 is the artifact folder this run writes; write it"):
        check_output_paths(json=tmp_path / "j1", artifacts=[tmp_path / "j1"])  # export --json j1 --output j1


def test_infer_refuses_to_write_its_json_into_the_artifact(tmp_path, capsys):
    from runtime.commands import infer

    (tmp_path / "art").mkdir()
    manifest = tmp_path / "art" / "manifest.json"
    manifest.write_text("{}\n")
    code = infer.main([str(tmp_path / "art"), str(tmp_path / "x.jpg"), "--json", str(manifest)])
    assert code == 2 and "would overwrite the input" in capsys.readouterr().err
    assert manifest.read_text() == "{}\n"


def test_an_export_never_writes_its_json_into_the_artifact_it_makes(tmp_path, capsys):
    from runtime.commands import export

    out = tmp_path / "out"  # does not exist yet: the run that made it left r.json unrecorded, and the next refused
    assert export.main(["--model", "resnet18", "--output", str(out), "--json", str(out / "r.json")]) == 2
    assert "lies in the artifact" in capsys.readouterr().err and not out.exists()


def test_an_export_into_a_read_only_folder_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import os
    from pathlib import Path

    from runtime.commands import export

    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access  # as root every folder is writable: the folder is made read-only in os.access's eyes
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and access(path, mode))
    assert export.main(["--model", "resnet18", "--output", str(locked / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--output {locked / 'out'}: cannot write into {locked}" in err and list(locked.iterdir()) == []


def test_an_existing_output_that_cannot_be_written_is_refused_before_the_work(tmp_path, monkeypatch):
    import os

    from runtime.cli import check_output_path

    report = tmp_path / "report.json"
    report.write_text("{}")
    real_access = os.access
    # a read-only file (root writes any file, so the check is driven through os.access)
    monkeypatch.setattr(os, "access", lambda path, mode: False if path == report else real_access(path, mode))
    with pytest.raises(OutputPathError, match=r"--json .*report\.json exists and is not writable; give another file"):
        check_output_path(report, flag="--json")


def test_an_exports_json_inside_its_default_output_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    """Only --output was known as the artifact to be: without it, artifacts/NAME took the JSON as a stray file."""
    from runtime.commands import export

    monkeypatch.chdir(tmp_path)
    assert export.main(["--model", "resnet18", "--json", "artifacts/resnet18/x.json"]) == 2
    assert "--json artifacts/resnet18/x.json lies in the artifact" in capsys.readouterr().err
    assert not (tmp_path / "artifacts").exists()


def test_a_pipe_or_device_is_refused_and_a_symlink_is_written_through(tmp_path):
    import os

    from models.atomic import NotARegularFileError
    from runtime.cli import write_json_output

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    for special, what in ((pipe, "a pipe"), (Path("/dev/null"), "a device")):  # the rename replaced /dev/full here
        with pytest.raises(OutputPathError, match=rf"--json {special} is {what}, not a regular file; .*--json -"):
            check_output_paths(json=special)
    with pytest.raises(NotARegularFileError, match="is a pipe"):  # the writer's own check (never tried on /dev)
        write_json_output(pipe, {"a": 1})
    assert pipe.exists() and not pipe.is_file()
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("old")
    link.symlink_to(real.name)
    check_output_paths(json=link)
    write_json_output(link, {"a": 1})
    assert link.is_symlink() and '"a": 1' in real.read_text()  # the link stays, its target holds the result
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop.name)
    with pytest.raises(OutputPathError, match="is a loop of symbolic links"):
        check_output_paths(json=loop)
    with pytest.raises(NotARegularFileError, match="is a loop of symbolic links"):
        write_json_output(loop, {"a": 1})


def test_an_export_into_the_working_directory_writes_its_json_where_it_was_asked(tmp_path, monkeypatch, capsys):
    # --output . swaps the working directory out: a relative --json was resolved after it, and failed (exit 3)
    from runtime.commands import export as export_command

    work = tmp_path / "art"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = ["--model", "resnet18", "--init", "random", "--input-size", "32", "32", "--batch-sizes", "1"]
    assert export_command.main([*argv, "--output", ".", "--json", "../result.json"]) == 0
    assert (tmp_path / "result.json").is_file() and (work / "manifest.json").is_file()
