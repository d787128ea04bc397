"""Run a script, the installed command or a code snippet in a fresh interpreter where ``import torch`` fails, as on
a deploy-only machine."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def blocker(blocked: tuple[str, ...]) -> str:
    """Python source that makes importing each of ``blocked`` raise ImportError (a None entry in sys.modules)."""
    return "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)


def script_command(script: str, *args: str, blocked: tuple[str, ...] = ("torch",)) -> list[str]:
    """``python scripts/<script>.py ARGS`` with ``blocked`` unimportable."""
    path = REPO / "scripts" / f"{script}.py"
    code = blocker(blocked) + f"import runpy\nsys.argv = [{str(path)!r}, *{list(args)!r}]\n"
    code += f"runpy.run_path({str(path)!r}, run_name='__main__')\n"
    return [sys.executable, "-c", code]


def entry_point() -> Path:
    """The installed ``sge-deploy`` command (pyproject's [project.scripts]) beside this interpreter."""
    path = Path(sys.executable).parent / "sge-deploy"
    if not path.is_file():
        import pytest

        pytest.fail(f"{path} is missing: register the entry point with pip install --no-deps -e {REPO}")
    return path


def run_entry_point(*args: str, blocked: tuple[str, ...] = ("torch",), timeout: float = 300, cwd: Path = REPO):
    """``sge-deploy ARGS`` with ``blocked`` unimportable; this checkout's packages first on the path (whichever
    checkout the editable install points at)."""
    command = [str(entry_point()), *args]  # the console script itself
    if blocked:
        code = blocker(blocked) + f"import runpy\nsys.argv = ['sge-deploy', *{list(args)!r}]\n"
        command = [sys.executable, "-c", code + f"runpy.run_path({str(entry_point())!r}, run_name='__main__')\n"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def run_script(script: str, *args: str, blocked: tuple[str, ...] = ("torch",), timeout: float = 120):
    return subprocess.run(
        script_command(script, *args, blocked=blocked), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def run_code(code: str, *, blocked: tuple[str, ...] = ("torch",), timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-c", blocker(blocked) + code], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
