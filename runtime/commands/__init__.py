"""``sge-deploy <command>``: one installed command whose sub-commands are the project's scripts.

Each sub-command is a module here with ``main(argv=None, *, prog=None) -> int``; ``scripts/<name>.py`` and
``python -m runtime <command>`` run the same function. A module without ``main`` holds one command's helpers
(export_follow_up.py). Modules are imported only when their command runs, so the deploy-side commands (infer,
benchmark, serve, loadtest, env) work where PyTorch is not installed.
"""

import importlib
import os
import sys
from dataclasses import dataclass
from difflib import get_close_matches
from types import ModuleType

from runtime.cli import EXIT_INPUT, PACKAGE, package_version


@dataclass(frozen=True)
class Command:
    name: str
    module: str  # under runtime.commands
    summary: str
    needs_torch: bool


COMMANDS = {
    c.name: c
    for c in (
        Command(
            "export", "export", "export a model (registry name or module:factory) to a verified ONNX artifact", True
        ),
        Command("validate", "validate", "re-run parity on an artifact: eager PyTorch vs a backend", True),
        Command("infer", "infer", "classify image files with an artifact and print the top classes", False),
        Command("benchmark", "benchmark", "time an artifact on several backends in one run", False),
        Command("evaluate", "evaluate", "top-1/top-5 accuracy and agreement on a folder of images", False),
        Command("serve", "serve", "serve an artifact with Triton Inference Server (HTTP, gRPC, metrics)", False),
        Command("loadtest", "loadtest", "throughput and latency percentiles of a served model", False),
        Command("inspect", "inspect_maps", "draw what the attention layers do on one image", True),
        Command("sge-cost", "sge_cost", "what SGE costs on this CPU: sge_resnet50 vs resnet50 vs the FP32 floor", True),
        Command("trt-build", "trt_build", "build a TensorRT engine into an existing artifact", True),
        Command("env", "env", "what this machine can run: backends, versions, the fused SGE kernel's build", False),
    )
}


def load_command(name: str) -> ModuleType:
    return importlib.import_module(f"runtime.commands.{COMMANDS[name].module}")


def usage(program: str = PACKAGE) -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {program} [--version] [-h] COMMAND [options]", "", "commands:"]
    lines += [f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS.values()]
    lines += ["", f"'{program} COMMAND --help' shows a command's options; exit codes: README, Command line."]
    return "\n".join(lines)


def torch_installed() -> bool:
    from runtime.environment import importable  # the standard library only

    return importable("torch")


def run_command(name: str, argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run a sub-command as a process entry point: its process settings (``PROCESS_ENV``), then its ``main``."""
    command = COMMANDS[name]
    help_only = bool({"-h", "--help", "--version"} & set(argv if argv is not None else sys.argv[1:]))
    if command.needs_torch and not help_only and not torch_installed():
        print(f"error: {command.name} needs PyTorch; install it with pip install 'sge-deploy[export]'", file=sys.stderr)
        return EXIT_INPUT
    module = load_command(name)
    for key, value in getattr(module, "PROCESS_ENV", {}).items():
        os.environ.setdefault(key, value)  # before the command imports torch; a value already set wins
    return module.main(argv, prog=prog)


def main(argv: list[str] | None = None, *, program: str = PACKAGE) -> int:
    """``sge-deploy``: the command name, then that command's own arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(program), file=sys.stderr)
        return EXIT_INPUT
    if args[0] in ("-h", "--help"):
        print(usage(program))
        return 0
    if args[0] == "--version":
        print(f"{PACKAGE} {package_version()}")
        return 0
    name = args[0].replace("_", "-")
    if name not in COMMANDS:
        close = get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        print(f"error: unknown command {args[0]!r}; {hint}choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_INPUT
    return run_command(name, args[1:], prog=f"{program} {name}")
