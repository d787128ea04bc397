"""``python -m runtime COMMAND ARGS`` is ``sge-deploy COMMAND ARGS``."""

import sys

from runtime.commands import main

sys.exit(main(program="python -m runtime"))
