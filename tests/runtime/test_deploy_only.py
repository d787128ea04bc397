"""The deploy side works where PyTorch is not installed: each entry point (scripts/ and the installed sge-deploy)
runs in a subprocess whose ``import torch`` fails (the serving pair is in tests/serve/test_serve_without_torch.py)."""

import json

import numpy as np
import pytest

from tests.conftest import expected_kernel_build, save_photos
from tests.runtime.without_torch import run_code, run_entry_point, run_script

pytestmark = pytest.mark.timeout(180)


def test_the_block_is_real():
    result = run_code("import torch")
    assert result.returncode != 0 and "torch" in result.stderr


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_runtime_load_and_infer(artifact, backend):
    code = (
        "import numpy as np, runtime\n"
        f"with runtime.load({str(artifact)!r}, backend={backend!r}, threads=1) as runner:\n"
        "    logits = runner.infer(np.zeros((2, 3, 96, 96), np.float32))\n"
        "print(logits.shape, 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    result = run_code(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "(2, 1000) False"


def test_the_torch_backend_says_what_to_install(artifact):
    code = f"import runtime\nrunner = runtime.load({str(artifact)!r}, backend='torch')\nrunner.activate()\n"
    result = run_code(code)
    assert result.returncode != 0
    assert "sge-deploy[export]" in result.stderr.strip().splitlines()[-1]


def test_infer_script_prints_imagenet_class_names(artifact, tmp_path):
    (photo,) = save_photos(tmp_path, ["chelsea"])
    out = tmp_path / "predictions.json"
    result = run_script("infer", str(artifact), str(photo), "--threads", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    written = json.loads(out.read_text())
    labels = [p["label"] for p in written["predictions"][0]["top_k"]]
    assert all(label and not label.startswith("class ") for label in labels), labels
    assert labels[0] in result.stdout
    # the kernel built at install ran, with the build this CPU supports
    assert written["runner"]["graph"] == "sge_fused" and written["runner"]["kernel_build"] == expected_kernel_build()


def test_benchmark_script_without_torch_or_scikit_image(artifact, tmp_path):
    out = tmp_path / "bench.json"
    args = [str(artifact), "--backends", "onnxruntime,openvino", "--iterations", "5", "--duration", "0.2"]
    args += ["--warmup-ms", "20", "--threads", "1", "--json", str(out)]
    result = run_script("benchmark", *args, blocked=("torch", "skimage"))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert {r["backend"] for r in report["reports"]} == {"onnxruntime", "openvino"}
    assert all(np.isfinite(r["latency"]["median_ms"]) and r["queries"] >= 5 for r in report["reports"])


def test_every_sub_command_module_imports_without_torch():
    """Heavy imports are inside the commands' functions: listing or dispatching never pulls in the export side."""
    code = (
        "from runtime.commands import COMMANDS, load_command\n"
        "for name in COMMANDS:\n    load_command(name).build_parser()\n"
        "print(sorted(m for m in sys.modules if m in ('onnxsim', 'export.pipeline', 'models.registry')))\n"
    )
    result = run_code(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_installed_command_infers_without_torch(artifact, tmp_path):
    images = save_photos(tmp_path, ["chelsea", "coffee", "astronaut"])
    out = tmp_path / "predictions.json"
    args = ["infer", str(artifact), *map(str, images), "--batch-size", "2", "--threads", "1", "--json", str(out)]
    result = run_entry_point(*args)
    assert result.returncode == 0, result.stderr
    predictions = json.loads(out.read_text())["predictions"]
    assert [p["image"] for p in predictions] == list(map(str, images))
    assert predictions[0]["top_k"][0]["label"] in result.stdout


def test_installed_command_says_what_a_torch_command_needs():
    result = run_entry_point("export", "--model", "resnet18")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: export needs PyTorch; install it with pip install 'sge-deploy[export]'"
    assert run_entry_point("export", "--help").returncode == 0  # its help does not need torch
