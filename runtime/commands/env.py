"""What this machine can run: the CPU and its vector extensions, each backend and optional part (found, its version,
what it is needed for), the fused SGE kernel and the build of it that runs here, and for anything missing or
unusable, why and what to install. Works without PyTorch.

sge-deploy env
sge-deploy env --json -
"""

import argparse
import sys
from pathlib import Path

from runtime.cli import (
    EXIT_INPUT,
    check_output_paths,
    make_console,
    make_parser,
    package_version,
    run_main,
    write_json_output,
)
from runtime.cli_flags import add_json

STATUS_STYLE = {"ok": "green", "missing": "yellow", "unavailable": "red"}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from export.ort_sge.kernels.build import KERNEL_DIR  # the standard library only: no backend is imported for --help

    p = make_parser(__doc__, prog=prog)
    p.add_argument(
        "--kernel-dir",
        type=Path,
        default=KERNEL_DIR,
        metavar="DIR",
        help="where the fused SGE kernel library and its build record are checked: another install's, or one "
        "copied into an image, to see whether it is intact and which build it runs on this CPU",
    )
    add_json(p, help="write the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="the traceback of an internal error")
    return p


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    return run_main(lambda a: _main(a, prog), argv)


def _main(argv: list[str] | None, prog: str | None) -> int:
    args = build_parser(prog).parse_args(argv)
    console = make_console(highlight=False, json_path=args.json)
    try:
        check_output_paths(json=args.json)  # before the work
        if not args.kernel_dir.is_dir():  # a typo would report "no fused kernel" and exit 0
            raise ValueError(f"--kernel-dir {args.kernel_dir} is not a folder; give the one holding libsge_ort_op.so")
    except ValueError as err:  # OutputPathError among them
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT

    from rich.table import Table
    from rich.text import Text

    from runtime.environment import environment_report

    report = environment_report(kernel_dir=args.kernel_dir)
    machine = report.machine
    console.print(
        f"sge-deploy {package_version()}, Python {machine['python']}, {machine['platform']}\n"
        f"CPU: {machine['cpu_model']}, {machine['physical_cores']} cores / {machine['logical_cpus']} threads "
        f"({machine['usable_cpus']} usable); {', '.join(report.isa) or 'no vector extensions listed'}",
        soft_wrap=True,
    )
    table = Table(title="components")
    for column in ("component", "status", "version", "detail", "needed for"):
        table.add_column(column, overflow="fold")
    for c in report.components:
        table.add_row(c.name, Text(c.status, style=STATUS_STYLE[c.status]), c.version or "", c.detail, c.needed_for)
    console.print(table)
    if args.json:
        write_json_output(args.json, {"sge_deploy": package_version(), **report.to_dict()})
    return 0
