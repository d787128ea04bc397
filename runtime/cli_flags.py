"""The command line's shared vocabulary: one spelling, type and meaning per concept, for every sub-command.

``--input-size H W``, ``--output PATH``, ``--batch-size N`` (one value), ``--batch-sizes 1,3,8`` (a list: commas,
spaces accepted too), ``--backends a,b`` (``--backend`` is the same flag), ``--threads N``, ``--json PATH|-``,
``--model-name NAME`` (a served model).
A command adds the ones it takes with the ``add_*`` functions below, each with its own default and help; the
spellings of earlier releases (``DEPRECATED``) still work for one release and print one line on stderr naming
the new flag. argparse only: importing this module costs nothing.
"""

import argparse
import sys
from pathlib import Path

# old spelling → the flag that replaces it (the old one works until the next release, with a warning)
DEPRECATED = {
    "--size": "--input-size",
    "--out": "--output",
    "--batch": "--batch-size",
    "--targets": "--backends",
}


def positive_int(text: str) -> int:
    """``8`` → 8; at least 1 (a batch of 0 images would fail deep inside, or never)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer such as 8; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {value}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """``1,3,8`` (or one number) → (1, 3, 8); each value at least 1."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected integers such as 1,3,8; got {text!r}") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers of at least 1 such as 1,3,8; got {text!r}")
    return values


def backend_name(text: str) -> str:
    """``ort:int8`` → "onnxruntime:int8": the backend by its own name (an alias such as ``ort`` then gets its
    backend's options and checks everywhere), a ``:precision`` kept."""
    from runtime import canonical_name

    backend, colon, precision = text.strip().partition(":")
    if colon and not precision.strip():  # "openvino:" ran fp32 without a word
        raise argparse.ArgumentTypeError(f"{text!r} names no precision after ':'; write {backend}:int8, or {backend}")
    return canonical_name(backend) + colon + precision.strip()


def backend_list(text: str) -> tuple[str, ...]:
    """``ort,openvino:int8,onnxruntime`` → ("onnxruntime", "openvino:int8"): ``backend_name`` of each, repeats
    dropped."""
    names = [backend_name(part) for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected names such as onnxruntime,openvino; got {text!r}")
    return tuple(dict.fromkeys(names))


class _Store(argparse.Action):
    """Store a flag's value; a list flag's words (``1,3 8``) become one flat tuple; an old spelling warns once."""

    def __init__(self, option_strings, dest, *, flatten=False, one=False, precision=True, replaced_by=None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.flatten, self.one, self.precision, self.replaced_by = flatten, one, precision, replaced_by

    def __call__(self, parser, namespace, values, option_string=None):
        if self.replaced_by is not None:
            print(
                f"warning: {option_string} is deprecated and goes in the next release; use {self.replaced_by}",
                file=sys.stderr,
            )
        if self.flatten:
            values = tuple(value for word in values for value in word)
        if self.one and len(values) != 1:
            parser.error(f"{option_string} takes one backend here; got {','.join(values)}")
        if not self.precision and any(":" in value for value in values):  # it would run fp32 under an int8 name
            named = next(value for value in values if ":" in value)
            where = "use --precision" if "--precision" in parser._option_string_actions else "this command runs fp32"
            parser.error(f"{option_string} {named}: give the backend alone; {where}")
        setattr(namespace, self.dest, values)


def _add(parser: argparse.ArgumentParser, flag: str, *aliases: str, **kwargs) -> argparse.Action:
    """``flag`` (and same-meaning ``aliases``), and each old spelling of ``flag`` as a hidden, warning alias."""
    action = parser.add_argument(flag, *aliases, action=_Store, **kwargs)
    for old, new in DEPRECATED.items():
        if new == flag:
            alias = {
                k: v for k, v in kwargs.items() if k in ("type", "nargs", "metavar", "flatten", "one", "precision")
            }
            parser.add_argument(
                old, dest=action.dest, action=_Store, replaced_by=flag, default=argparse.SUPPRESS,
                help=argparse.SUPPRESS, **alias,
            )  # fmt: skip
    return action


def precision_option(precision: str) -> dict[str, str]:
    """A runner's option for ``precision``: none for fp32 (every backend's default, and the only precision some
    take), else ``{"precision": canonical}`` ("f32" is fp32); an unknown one is a ValueError listing the choices."""
    from export.int8.roles import normalise_precision

    canonical = normalise_precision(precision)
    return {} if canonical == "fp32" else {"precision": canonical}


def add_input_size(parser: argparse.ArgumentParser, *, default=None, help: str) -> argparse.Action:
    return _add(parser, "--input-size", type=int, nargs=2, metavar=("H", "W"), default=default, help=help)


def add_output(parser: argparse.ArgumentParser, *, default=None, metavar: str = "PATH", help: str) -> argparse.Action:
    return _add(parser, "--output", type=Path, metavar=metavar, default=default, help=help)


def add_batch_size(parser: argparse.ArgumentParser, *, default=None, help: str) -> argparse.Action:
    return _add(parser, "--batch-size", type=positive_int, metavar="N", default=default, help=help)


def add_batch_sizes(parser: argparse.ArgumentParser, *, default=None, help: str) -> argparse.Action:
    """A list of batch sizes: ``--batch-sizes 1,3,8`` (the documented form; ``1 3 8`` is read the same)."""
    default = ",".join(map(str, default)) if isinstance(default, (tuple, list)) else default  # shown as 1,3,8
    return _add(
        parser, "--batch-sizes", type=int_list, nargs="+", flatten=True, metavar="N,N", default=default, help=help
    )


def add_backends(
    parser: argparse.ArgumentParser, *, default, one: bool = False, precision: bool = False, help: str
) -> argparse.Action:
    """``--backends a,b`` and its alias ``--backend``; with ``one`` a command that runs one backend refuses a list;
    ``backend:precision`` names only with ``precision`` (evaluate): elsewhere precision is a flag of its own."""
    default = ",".join(default) if isinstance(default, (tuple, list)) else default  # argparse applies the type
    metavar = "NAME" if one else "NAME[,NAME]"
    return _add(
        parser, "--backends", "--backend", type=backend_list, flatten=True, nargs=1, one=one, precision=precision,
        metavar=metavar, default=default, help=help,
    )  # fmt: skip


def add_model_name(parser: argparse.ArgumentParser, *, old_spelling: str | None = None, help: str) -> argparse.Action:
    """``--model-name NAME``: the name a server publishes a model under (serve and loadtest); ``old_spelling`` is this
    command's earlier flag for it, kept as a warning alias (``--model`` means the model to build elsewhere)."""
    action = _add(parser, "--model-name", metavar="NAME", default=None, help=help)
    if old_spelling is not None:
        parser.add_argument(
            old_spelling, dest=action.dest, action=_Store, replaced_by="--model-name", default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )  # fmt: skip
    return action


def add_threads(parser: argparse.ArgumentParser, *, default=None, help: str) -> argparse.Action:
    return _add(parser, "--threads", type=int, metavar="N", default=default, help=help)


def add_json(parser: argparse.ArgumentParser, *, default=None, help: str) -> argparse.Action:
    return _add(parser, "--json", type=Path, metavar="PATH|-", default=default, help=f"{help} (- for standard output)")


def artifact_directory(text: str) -> Path:
    """A positional artifact argument: the directory, or its manifest.json (as infer and runtime.load take it)."""
    from runtime.source import artifact_path

    return artifact_path(text)
