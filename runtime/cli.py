"""What every script shares: its exit codes, output paths checked before the work, one line for an unexpected error.

Exit codes: 0 ok, 1 parity (or a load test's requests) failed, 2 bad input (one line saying what to do), 3 an
internal error (one line; the traceback only with ``-v``), 4 a requested TensorRT engine was not built (unless
``--trt-optional``), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). ``make_parser`` gives every script the
same parser: ``--version``, no abbreviations, defaults shown in ``--help``. This is the command-line layer, so it
writes to stderr; library code only raises and logs.
"""

import argparse
import json
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from models.atomic import not_a_regular_file

EXIT_OK, EXIT_PARITY, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_FAILED = EXIT_PARITY  # a run that went wrong: load-test requests failed, a server that did not stop cleanly
EXIT_NO_ENGINE = 4  # a requested TensorRT engine was not built (e.g. TensorRT not installed)
EXIT_TERMINATED = 128 + 15  # SIGTERM, as a shell reports it
PACKAGE = "sge-deploy"


def package_version() -> str:
    """The installed sge-deploy version, else the one in the checkout's pyproject.toml."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        return found.group(1) if found else "unknown"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help (not None or False, nor a switch's: nothing to show); description's
    line breaks kept."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.nargs == 0:  # --no-gate's True says nothing
            return action.help
        return super()._get_help_string(action)


class RawTextHelpFormatter(HelpFormatter, argparse.RawTextHelpFormatter):
    """As ``HelpFormatter``, and the options' help keeps its line breaks too."""


LOG_WIDTH = 200  # columns of a console that is not a terminal: tables in a log or CI are never cut


def make_console(*, stderr: bool = False, min_width: int = 0, json_path: str | Path | None = None, **kwargs):
    """Every script's rich Console: ``LOG_WIDTH`` columns when not a terminal, at least ``min_width`` in one; on
    stderr when ``json_path`` is ``-`` (standard output then carries only the JSON). Markup is off, in printed
    strings, table titles and cells alike: paths, labels and model names print as they are ("cat[bold].png"); colour
    comes from ``style=`` and ``rich.text.Text``. A Panel's str title is read as markup regardless: give it a Text."""
    from rich.console import Console

    stderr = stderr or is_stdout(json_path)
    probe = Console(stderr=stderr)
    width = max(probe.width, min_width) if probe.is_terminal else max(LOG_WIDTH, min_width)
    return Console(stderr=stderr, width=width, markup=False, **kwargs)


class _Parser(argparse.ArgumentParser):
    def add_argument(self, *args, **kwargs):  # an option without help shows its default too
        switch = kwargs.get("action") in ("store_true", "store_false")
        if "help" not in kwargs and not switch and kwargs.get("default") not in (None, False, argparse.SUPPRESS):
            kwargs["help"] = "(default: %(default)s)"
        return super().add_argument(*args, **kwargs)

    def error(self, message: str):  # one line, as every other refusal: the usage block is what --help is for
        self.exit(EXIT_INPUT, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def make_parser(description: str | None = None, *, raw_help: bool = False, **kwargs) -> argparse.ArgumentParser:
    """Every script's parser: ``--version``, ``allow_abbrev=False``, defaults shown in ``--help``."""
    formatter = RawTextHelpFormatter if raw_help else HelpFormatter
    parser = _Parser(allow_abbrev=False, description=description, formatter_class=formatter, **kwargs)
    parser.add_argument("--version", action="version", version=f"{PACKAGE} {package_version()}")
    return parser


def options_given(parser: argparse.ArgumentParser, args: argparse.Namespace, dests: Sequence[str]) -> list[str]:
    """The option strings of ``dests`` whose parsed value is not the parser's default: what the user gave."""
    given = []
    for action in parser._actions:
        if action.dest in dests and getattr(args, action.dest) != action.default:
            given.append(max(action.option_strings, key=len))
    return given


class OutputPathError(ValueError):
    """An output path cannot be written (checked before any work starts)."""


def check_output_path(path: str | Path | None, *, flag: str) -> None:
    """Refuse (OutputPathError) an output file that cannot be written: a directory, or no writable parent; ``-``
    (standard output) is for ``--json`` only."""
    if path is None or (is_stdout(path) and flag == "--json"):
        return
    if is_stdout(path):
        raise OutputPathError(f"{flag} -: only --json writes to standard output; give a file name")
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a directory; give a file name")
    special = not_a_regular_file(path)
    if special:  # the atomic rename would replace it (/dev/stdout, a named pipe) with a file
        stdout = ", or --json - for standard output" if flag == "--json" else ""
        raise OutputPathError(f"{flag} {path} is {special}, not a regular file; give a file name{stdout}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{flag} {path} exists and is not writable; give another file")
    _check_writable_under(path.parent, path, flag=flag, kind="a path")


def check_output_dir(path: str | Path, *, flag: str) -> None:
    """Refuse (OutputPathError) an output folder that cannot be written: a file, or no writable parent."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path} is a file; give a folder")
    _check_writable_under(path, path, flag=flag, kind="a folder")


def _check_writable_under(start: Path, path: Path, *, flag: str, kind: str) -> None:
    """``path`` will be created under the nearest existing directory from ``start`` up: it must be writable."""
    existing = start
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    why = "not a directory" if not existing.is_dir() else _cannot_create_in(existing)
    if why:
        raise OutputPathError(
            f"{flag} {path}: cannot write into {existing} ({why}); give {kind} in a writable directory"
        )


def _cannot_create_in(directory: Path) -> str | None:
    """Why no file can be created in ``directory``, found by creating (and removing) one: ``os.access`` says yes to
    root everywhere, also on /proc and read-only mounts."""
    if not os.access(directory, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".sge-deploy-probe-"):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def check_output_paths(
    *, inputs: Sequence[str | Path | None] = (), artifacts: Sequence[str | Path | None] = (), **paths: str | Path | None
) -> None:
    """``check_output_path`` for several flags, e.g. ``check_output_paths(json=args.json, plot=args.plot)``; and no
    two outputs the same file, none of them one of ``inputs`` or a file in an input folder, and none in an artifact
    folder, any that exists or ``artifacts`` still to be written (``infer ART img.jpg --json ART/manifest.json``
    destroyed what it read)."""
    from export.artifacts import MANIFEST_NAME

    written: dict[Path, str] = {}
    artifacts = [Path(a).resolve() for a in artifacts if a is not None]
    for key, path in paths.items():
        flag = "--" + key.replace("_", "-")
        if path is not None and not is_stdout(path):  # first: the probe below must not make a file in an artifact
            try:
                target = Path(path).resolve()
            except RuntimeError:  # Python 3.11: a loop of symbolic links
                raise OutputPathError(f"{flag} {path} is a loop of symbolic links; give a file name") from None
            if target in written:
                raise OutputPathError(f"{written[target]} and {flag} both name {path}; give each its own file")
            written[target] = flag
            sources = [Path(source).resolve() for source in [*filter(None, inputs), *artifacts]]
            for source in sources:
                if target == source and source in artifacts:
                    raise OutputPathError(f"{flag} {path} is the artifact folder this run writes; write it elsewhere")
                if target == source or (source in target.parents and target.exists()):
                    raise OutputPathError(f"{flag} {path} would overwrite the input {source}; write it elsewhere")
            listed = (s for s in sources if s in target.parents and (s in artifacts or (s / MANIFEST_NAME).is_file()))
            artifact = next(listed, None) or enclosing_artifact(target)
            if artifact is not None:
                raise OutputPathError(
                    f"{flag} {path} lies in the artifact {artifact}, whose files are hashed; write it elsewhere"
                )
        check_output_path(path, flag=flag)


def check_outside_artifacts(*, artifacts: Sequence[str | Path | None] = (), **folders: str | Path | None) -> None:
    """Refuse an output folder inside an existing artifact, or at or inside one of ``artifacts`` still to be written
    (``check_output_paths`` does so for files): its files would be strays there, warned about on every load and
    refused by the next export."""
    future = [Path(a).resolve() for a in artifacts if a is not None]
    for key, folder in folders.items():
        if folder is None:
            continue
        target = Path(folder).resolve()
        artifact = next((a for a in future if target.is_relative_to(a)), None) or enclosing_artifact(folder)
        if artifact is not None:
            raise OutputPathError(
                f"--{key.replace('_', '-')} {folder} lies in the artifact {artifact}, whose files are hashed; give a "
                "folder outside it"
            )


def enclosing_artifact(path: str | Path) -> Path | None:
    """The nearest folder above ``path`` that is an artifact (its manifest.json loads as an sge-deploy manifest)."""
    from export.artifacts import MANIFEST_NAME, ArtifactError, load_manifest

    for parent in Path(path).resolve().parents:
        if (parent / MANIFEST_NAME).is_file():
            try:
                load_manifest(parent, verify=False)
            except ArtifactError:
                continue  # another tool's manifest.json: not an artifact
            return parent
    return None


def is_stdout(path: str | Path | None) -> bool:
    """``-`` as an output path (``--json -``) means standard output."""
    return path is not None and str(path) == "-"


def write_json_output(path: str | Path, data) -> None:
    """``--json PATH``: the file (written atomically), or standard output for ``-``."""
    if is_stdout(path):
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        sys.stdout.flush()
        return
    from export.artifacts import write_json

    write_json(path, data)


def command_words(prog: str | None, script: str, argv: Sequence[str] | None) -> list[str]:
    """The whole command line a report records: how the user ran it, ``sge-deploy NAME`` (``prog``) or ``python
    scripts/SCRIPT.py``, and the arguments (``sys.argv`` when None)."""
    ran = prog.split() if prog else ["python", f"scripts/{script}.py"]
    return [*ran, *(sys.argv[1:] if argv is None else argv)]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a container stop, ``timeout``, ``kill``), unwound like Ctrl-C: an export in progress cleans up its
    staging folder and keeps the previous artifact (by default the process died on the spot, leaving both)."""


def _raise_terminated(signum: int, frame: object) -> None:
    _quiet_in_gevent(Terminated)
    raise Terminated


def _quiet_in_gevent(error: type[BaseException]) -> None:
    """Raised while gevent's hub runs (tritonclient's HTTP client, also inside PyTriton's start-up), ``error`` was
    printed as a traceback before being passed on: add it to the hub's errors that are not printed, the class's and
    this thread's hub's own (in serve's process an instance list that also holds socket.gaierror and herror)."""
    module = sys.modules.get("gevent.hub")
    if module is None:
        return
    hub = getattr(module, "_get_hub", lambda: None)()  # None where this thread runs no hub
    for holder in (module.Hub, hub):
        if holder is not None and not issubclass(error, holder.NOT_ERROR):
            holder.NOT_ERROR = (*holder.NOT_ERROR, error)


def run_main(main: Callable[[list[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run a script's ``main``; an exception it did not handle is an internal error: one line, exit 3. SIGTERM is
    handled as Ctrl-C is (exit 143), unless someone installed a handler of their own."""
    import signal
    import threading

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args
    if os.getcwd() not in sys.path:  # as with python -m: --model my_models:factory is found in the current folder;
        sys.path.append(os.getcwd())  # last on the path, so that it never shadows an installed package
    handles_term = threading.current_thread() is threading.main_thread()
    handles_term = handles_term and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if handles_term:
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return main(None if argv is None else list(argv))
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # the last line of defence: everything expected was handled inside main
        if verbose:
            traceback.print_exc()
        lines = str(err).strip().splitlines()
        message = lines[0][:300] if lines else "(no message)"
        hint = "" if verbose else "; rerun with -v for the traceback"
        print(f"internal error: {type(err).__name__}: {message}{hint}, and report it", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if handles_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
