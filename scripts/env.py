"""``python scripts/env.py ARGS`` is ``sge-deploy env ARGS``: runtime/commands/env.py."""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo root, not scripts/ (inspect.py shadows the stdlib)

from runtime.commands.env import main  # noqa: E402, F401  (tests call main)

if __name__ == "__main__":
    from runtime.commands import run_command

    sys.exit(run_command("env"))
