"""Shared helpers: load a script by path (never ``import export``, which is the package), and small artifacts."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMALL = (96, 96)  # every stage of a ResNet still sees H·W > 1 (3×3 at layer4), and an export takes seconds


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def export_script() -> ModuleType:
    return load_script("export")


@pytest.fixture(scope="session")
def validate_script() -> ModuleType:
    return load_script("validate")


@pytest.fixture(scope="session")
def sge_artifact(tmp_path_factory, export_script) -> Path:
    """sge_resnet50 at 96×96 exported through the script (registry model, default calibrated weights)."""
    out = tmp_path_factory.mktemp("artifacts") / "sge_resnet50"
    code = export_script.main(["--model", "sge_resnet50", "--input-size", *map(str, SMALL), "--output", str(out)])
    assert code == 0
    return out
