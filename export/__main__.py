"""``python -m export ARGS`` is ``sge-deploy export ARGS`` (runtime/commands/export.py)."""

import sys

from runtime.commands import run_command

sys.exit(run_command("export", prog="python -m export"))
