"""What a non-editable install (a wheel, a Docker image) ships: every data file the packages read at run time."""

import fnmatch
import subprocess
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def shipped_patterns() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]


def test_every_tracked_data_file_in_a_package_is_in_package_data():
    tracked = subprocess.run(
        ["git", "ls-files", "models", "export", "runtime"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    data = [Path(f) for f in tracked if not f.endswith(".py") and not Path(f).name.startswith(".")]
    assert Path("runtime/imagenet_classes.txt") in data  # the check sees the files a wheel once lacked
    patterns = shipped_patterns()
    missing = [
        str(f) for f in data if not any(fnmatch.fnmatch(f.name, p) for p in patterns.get(".".join(f.parent.parts), []))
    ]
    assert not missing, f"not in [tool.setuptools.package-data], so absent from a wheel: {missing}"
