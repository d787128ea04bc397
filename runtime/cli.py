"""What every script shares: its exit codes, output paths checked before the work, one line for an unexpected error.

Exit codes: 0 ok, 1 parity (or a load test's requests) failed, 2 bad input (one line saying what to do), 3 an
internal error (one line; the traceback only with ``-v``), 130 interrupted. This is the command-line layer, so it
writes to stderr; library code only raises and logs.
"""

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK, EXIT_PARITY, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class OutputPathError(ValueError):
    """An output path cannot be written (checked before any work starts)."""


def check_output_path(path: str | Path | None, *, flag: str) -> None:
    """Refuse (OutputPathError) an output file that cannot be written: a directory, or no writable parent."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{flag} {path} exists and is not writable; give another file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the directory will be created under the nearest existing one
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: cannot write into {parent}; give a path in a writable directory")


def check_output_paths(**paths: str | Path | None) -> None:
    """``check_output_path`` for several flags, e.g. ``check_output_paths(json=args.json, plot=args.plot)``."""
    for flag, path in paths.items():
        check_output_path(path, flag="--" + flag.replace("_", "-"))


def run_main(main: Callable[[list[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run a script's ``main``; an exception it did not handle is an internal error: one line, exit 3."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args
    try:
        return main(None if argv is None else list(argv))
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
