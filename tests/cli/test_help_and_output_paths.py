"""--help shows no default for a switch; an output path is refused before the work; `-` is only for --json."""

import importlib

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
    with pytest.raises(OutputPathError, match=r"cannot write into .*taken; give a folder in a writable directory"):
        check_output_dir(tmp_path / "taken" / "report", flag="--output")
