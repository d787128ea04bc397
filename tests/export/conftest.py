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
def full_artifact(tmp_path_factory, export_script) -> tuple[Path, str, Path]:
    """The README's main command at full size (224×224, default weights): (directory, stdout, --json file).

    Shared by the full-size test and the validate/tamper tests, so the suite exports a 224 ResNet-50 once.
    """
    import contextlib
    import io

    root = tmp_path_factory.mktemp("full")
    out, json_path = root / "sge_resnet50", root / "result.json"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_script.main(["--model", "sge_resnet50", "--output", str(out), "--json", str(json_path)])
    assert code == 0, stdout.getvalue()
    return out, stdout.getvalue(), json_path


TINY = {"input_size": (64, 64), "simplifier": "none", "batch_sizes": (1, 3), "init": "random"}


def export_tiny(directory: Path, **options) -> "ExportResult":  # noqa: F821
    """resnet18 at 64×64 with seeded random weights, no simplifier: a real artifact in about a second."""
    from export.pipeline import export_model

    return export_model("resnet18", directory, **{**TINY, **options})


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A finished tiny artifact; tests that alter it work on a copy."""
    directory = tmp_path_factory.mktemp("tiny") / "resnet18"
    assert export_tiny(directory).manifest_path is not None
    return directory
