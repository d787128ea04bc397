"""Serving and load-testing where PyTorch is not installed: scripts/serve.py and scripts/loadtest.py each run in a
subprocess whose ``import torch`` fails, against each other on loopback."""

import json
import subprocess
import time
import urllib.request

import pytest
from PIL import Image

from models.transforms import sample_photos
from runtime.labels import imagenet_class_names
from tests.runtime.without_torch import REPO, run_script, script_command
from tests.serve.conftest import free_ports

pytestmark = [pytest.mark.serve, pytest.mark.timeout(240)]
pytest.importorskip("pytriton")
pytest.importorskip("tritonclient.http")


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"serve.py exited with {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout_s} s")


def test_serve_and_loadtest_without_torch(onnx_artifact, tmp_path):
    http, grpc, metrics = (str(port) for port in free_ports(3))
    serve_args = [str(onnx_artifact), "--model-name", "r18", "--threads", "1"]
    serve_args += ["--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics]
    server = subprocess.Popen(
        script_command("serve", *serve_args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{http}/v2/models/r18/ready", server)
        out, photo = tmp_path / "load.json", tmp_path / "chelsea.png"
        Image.fromarray(sample_photos(["chelsea"])["chelsea"]).save(photo)
        load_args = [f"127.0.0.1:{http}", "--model-name", "r18", "--concurrency", "1,2", "--duration", "1"]
        load_args += ["--max-requests", "8", "--images", str(photo), "--json", str(out)]
        result = run_script("loadtest", *load_args)
        assert result.returncode == 0, result.stderr
        report = json.loads(out.read_text())
        assert [level["concurrency"] for level in report["levels"]] == [1, 2]
        assert all(level["requests"] > 0 and level["errors"] == 0 for level in report["levels"])
        # the photograph's answer, named with the ImageNet-1k classes (resnet18 has 1000 outputs)
        (answer,) = report["predictions"]
        top5 = answer["top_k"]
        assert len(top5) == 5 and all(p["label"] == imagenet_class_names()[p["index"]] for p in top5)
        assert top5[0]["label"] in result.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    stderr = server.stderr.read()
    assert "torch" not in stderr.lower()
    assert server.returncode == 0, stderr[-2000:]  # SIGTERM once serving: a clean stop, the server's normal end
