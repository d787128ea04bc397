"""Serving and load-testing where PyTorch is not installed: scripts/serve.py and scripts/loadtest.py each run in a
subprocess whose ``import torch`` fails, against each other on loopback."""

import json
import subprocess
import time
import urllib.request

import pytest

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
        out = tmp_path / "load.json"
        load_args = [f"127.0.0.1:{http}", "--model", "r18", "--concurrency", "1,2", "--duration", "1"]
        result = run_script("loadtest", *load_args, "--max-requests", "8", "--json", str(out))
        assert result.returncode == 0, result.stderr
        levels = json.loads(out.read_text())["levels"]
        assert [level["concurrency"] for level in levels] == [1, 2]
        assert all(level["requests"] > 0 and level["errors"] == 0 for level in levels)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert "torch" not in server.stderr.read().lower()
