"""A module whose import runs a script (argparse, sys.exit): --model must refuse it, not exit with its code."""

import sys

sys.exit(0)
