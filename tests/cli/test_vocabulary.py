"""One vocabulary: a shared flag has the same dest, type, nargs and action in every sub-command that takes it, and
each old spelling is a hidden alias of the same dest that warns once and names the new flag."""

import argparse

import pytest

from runtime import cli_flags
from runtime.commands import COMMANDS, load_command

SHARED = (
    "--input-size", "--output", "--batch-size", "--batch-sizes", "--backends", "--threads", "--json", "--model-name"
)  # fmt: skip
PARSERS = {name: load_command(name).build_parser() for name in COMMANDS}


def reference_actions() -> dict[str, argparse.Action]:
    """Each shared flag as runtime.cli_flags defines it (defaults and help are each command's own)."""
    parser = argparse.ArgumentParser()
    for add in (cli_flags.add_input_size, cli_flags.add_output, cli_flags.add_batch_size, cli_flags.add_batch_sizes):
        add(parser, help="x")
    cli_flags.add_backends(parser, default="onnxruntime", help="x")
    cli_flags.add_threads(parser, help="x")
    cli_flags.add_json(parser, help="x")
    cli_flags.add_model_name(parser, help="x")
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings and a.option_strings[0] in SHARED}


def meaning(action: argparse.Action) -> tuple:
    """What a flag means to the command (its metavar, default and help may say DIR or FILE, 8 or 1)."""
    return action.dest, action.type, action.nargs, type(action), getattr(action, "flatten", None)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def test_every_command_takes_some_of_the_shared_flags():
    taken = {name: sorted(set(options(parser)) & set(SHARED)) for name, parser in PARSERS.items()}
    assert all(taken[name] for name in COMMANDS if name != "trt-build"), taken
    assert {flag for flags in taken.values() for flag in flags} == set(SHARED)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_shared_flags_mean_the_same_in_every_command(name):
    reference = reference_actions()
    found = options(PARSERS[name])
    for flag in set(found) & set(SHARED):
        assert meaning(found[flag]) == meaning(reference[flag]), f"{name} {flag}"
        assert found[flag].option_strings == reference[flag].option_strings, f"{name} {flag}"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_old_spellings_are_hidden_aliases_of_the_new_flag(name):
    found = options(PARSERS[name])
    for old, new in cli_flags.DEPRECATED.items():
        if old not in found:
            continue  # a command that never took this concept
        alias = found[old]
        assert new in found, f"{name}: {old} without {new}"
        assert (alias.dest, alias.type, alias.nargs) == (found[new].dest, found[new].type, found[new].nargs)
        assert alias.replaced_by == new and alias.help == argparse.SUPPRESS


def test_no_command_spells_a_concept_its_own_way():
    """Every option named like a shared concept comes from runtime.cli_flags (no hand-made --out, --batch, ...)."""
    spellings = set(SHARED) | set(cli_flags.DEPRECATED) | {"--backend"}
    for name, parser in PARSERS.items():
        for flag, action in options(parser).items():
            if flag in spellings:
                assert isinstance(action, cli_flags._Store), f"{name} {flag} is not from runtime.cli_flags"


def test_an_old_spelling_parses_as_the_new_one_with_one_warning(capsys):
    parser = PARSERS["inspect"]
    old = parser.parse_args(["--image", "x", "--size", "64", "64", "--out", "o"])
    warnings = capsys.readouterr().err.strip().splitlines()
    new = parser.parse_args(["--image", "x", "--input-size", "64", "64", "--output", "o"])
    assert vars(old) == vars(new)
    assert warnings == [
        "warning: --size is deprecated and goes in the next release; use --input-size",
        "warning: --out is deprecated and goes in the next release; use --output",
    ]
    assert capsys.readouterr().err == ""  # the new spellings say nothing


@pytest.mark.parametrize("words", [["1,3,8"], ["1", "3", "8"], ["1,3", "8"]])
def test_batch_sizes_take_commas_or_spaces(words):
    for name in ("export", "sge-cost", "validate"):
        argv = ["artifacts/x"] if name == "validate" else []
        assert PARSERS[name].parse_args([*argv, "--batch-sizes", *words]).batch_sizes == (1, 3, 8)


def test_defaults_are_parsed_like_the_command_line():
    assert PARSERS["sge-cost"].parse_args([]).batch_sizes == (1, 8)
    assert PARSERS["benchmark"].parse_args(["a"]).backends is None  # resolved at run time: those installed
    assert PARSERS["infer"].parse_args(["a", "i.jpg"]).backends == ("onnxruntime",)


def test_backend_is_the_same_flag_as_backends():
    parser = PARSERS["benchmark"]
    assert parser.parse_args(["a", "--backend", "onnxruntime,openvino"]).backends == ("onnxruntime", "openvino")
    assert parser.parse_args(["a", "--backends", "openvino"]).backends == ("openvino",)


@pytest.mark.parametrize("name", ["infer", "serve", "validate"])
def test_a_one_backend_command_refuses_a_list(name, capsys):
    argv = ["a", "i.jpg"] if name == "infer" else ["a"]
    with pytest.raises(SystemExit) as exit_info:
        PARSERS[name].parse_args([*argv, "--backend", "onnxruntime,openvino"])
    assert exit_info.value.code == 2
    assert "takes one backend here; got onnxruntime,openvino" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["1,x", "0", ","])
def test_a_bad_batch_list_is_a_usage_error(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        PARSERS["export"].parse_args(["--batch-sizes", text])
    assert exit_info.value.code == 2
    assert "expected integers" in capsys.readouterr().err


def test_serve_and_loadtest_name_the_served_model_alike(capsys):
    """serve publishes under --model-name and loadtest drives that name; loadtest's old --model still works, warning."""
    assert options(PARSERS["serve"])["--model-name"].dest == options(PARSERS["loadtest"])["--model-name"].dest
    args = PARSERS["loadtest"].parse_args(["127.0.0.1:8000", "--model", "m"])
    assert args.model_name == "m" and "use --model-name" in capsys.readouterr().err
