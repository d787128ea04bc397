"""Every sub-command through the installed ``sge-deploy`` entry point, ``python -m`` and scripts/: the same code.

One small factory model (64×64) is exported through the entry point and then validated, classified, timed and
evaluated through it; the commands that need a server, TensorRT or minutes of timing run up to a checked refusal.
"""

import json
import socket
import subprocess
import sys

import pytest
from PIL import Image

from runtime.cli import EXIT_INPUT, EXIT_NO_ENGINE, package_version
from runtime.commands import COMMANDS
from tests.runtime.without_torch import REPO, run_entry_point

pytestmark = pytest.mark.timeout(300)

FACTORY = "tests.cli.tiny_resnext:sge_resnext_tiny"
SCRIPTS = {name: name.replace("-", "_") for name in COMMANDS}  # sub-command → scripts/<file>.py


def sge_deploy(*args: str, cwd=REPO):
    return run_entry_point(*args, blocked=(), cwd=cwd)


def test_help_lists_every_command_with_one_line():
    result = sge_deploy("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for command in COMMANDS.values():
        assert sum(line.split()[:1] == [command.name] for line in lines) == 1, command.name
        assert any(command.summary in line for line in lines)


def test_version_no_command_and_an_unknown_command():
    assert sge_deploy("--version").stdout.strip() == f"sge-deploy {package_version()}"
    bare = sge_deploy()
    assert bare.returncode == EXIT_INPUT and "usage: sge-deploy" in bare.stderr
    typo = sge_deploy("exprot", "--model", "resnet18")
    assert typo.returncode == EXIT_INPUT
    assert (
        typo.stderr.strip()
        == f"error: unknown command 'exprot'; did you mean export? choose from {', '.join(COMMANDS)}"
    )


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_sub_command_help(name):
    result = sge_deploy(name, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: sge-deploy {name} ")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_script_help(name):
    script = REPO / "scripts" / f"{SCRIPTS[name]}.py"
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script.name} ")


@pytest.mark.parametrize(
    ("module", "argv", "prog"), [("export", [], "python -m export"), ("runtime", ["infer"], "python -m runtime infer")]
)
def test_python_dash_m(module, argv, prog):
    result = subprocess.run(
        [sys.executable, "-m", module, *argv, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {prog} ")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The factory model exported through the entry point, its --json - output on stdout: (directory, result)."""
    out = tmp_path_factory.mktemp("entry") / "resnext"
    argv = ["--model", FACTORY, "--input-size", "64", "64", "--batch-sizes", "1,2", "--output", str(out), "--json", "-"]
    result = sge_deploy("export", *argv)
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from models.transforms import sample_photos

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (name, photo) in enumerate(sample_photos(("chelsea", "coffee", "astronaut")).items()):
        paths.append(folder / f"class_{i % 2}" / f"{name}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(photo).save(paths[-1])
    return folder, paths


def test_export_and_validate(exported):
    out, result = exported
    assert result["manifest"] == str(out / "manifest.json") and result["parity"]["passed"] is True
    validated = sge_deploy("validate", str(out), "--batch-sizes", "2")
    assert validated.returncode == 0, validated.stderr
    assert "hashes verified, parity passed on onnxruntime" in validated.stdout


def test_infer_in_batches(exported, photos, tmp_path):
    out = tmp_path / "p.json"
    images = [str(p) for p in photos[1]]
    result = sge_deploy("infer", str(exported[0]), *images, "--batch-size", "2", "--threads", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert [p["image"] for p in json.loads(out.read_text())["predictions"]] == images


def test_benchmark_records_the_command(exported, tmp_path):
    out = tmp_path / "b.json"
    argv = ["--backends", "onnxruntime,torch", "--batch-size", "2", "--threads", "1", "--iterations", "3"]
    argv += ["--duration", "0.1", "--warmup-ms", "10", "--json", str(out)]
    result = sge_deploy("benchmark", str(exported[0]), *argv)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["command"][:2] == ["sge-deploy", "benchmark"]
    assert [r["backend"] for r in report["reports"]] == ["onnxruntime", "torch"]
    assert all(r["batch"] == 2 for r in report["reports"])


def test_evaluate_with_an_old_spelling(exported, photos, tmp_path):
    out = tmp_path / "e.json"
    argv = [str(exported[0]), "--data", str(photos[0]), "--targets", "onnxruntime", "--threads", "1"]
    result = sge_deploy("evaluate", *argv, "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "warning: --targets is deprecated and goes in the next release; use --backends" in result.stderr
    report = json.loads(out.read_text())
    assert [row["target"] for row in report["results"]] == ["onnxruntime"]
    assert report["results"][0]["agreement"]["top1_agreement"] == 1.0  # FP32 ONNX Runtime vs the eager factory model


def test_inspect(tmp_path):
    out = tmp_path / "maps"
    argv = ["--model", "sa_resnet18", "--image", "camera", "--input-size", "64", "64", "--init", "random"]
    result = sge_deploy("inspect", *argv, "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "index.md").is_file() and (out / "stats.json").is_file()


def test_trt_build_without_tensorrt_is_exit_4(exported):
    result = sge_deploy("trt-build", str(exported[0]), "--trt", "fp16")
    assert result.returncode == EXIT_NO_ENGINE
    assert result.stderr.startswith("error: no engine built:")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_loadtest_and_sge_cost_refuse_bad_input_with_exit_2(exported, tmp_path):
    serve = sge_deploy("serve", str(exported[0]), "--http-port", "0", "--backend", "onnxruntime")
    assert serve.returncode == EXIT_INPUT and "http_port must lie in 1..65535; got 0" in serve.stderr
    loadtest = sge_deploy("loadtest", f"127.0.0.1:{free_port()}", "--model", "m", "--duration", "0.2")
    assert loadtest.returncode == EXIT_INPUT and "Connection refused" in loadtest.stderr
    assert "--model is deprecated" in loadtest.stderr and "use --model-name" in loadtest.stderr  # the old spelling
    out = tmp_path / "cost.json"
    cost = sge_deploy("sge-cost", "--threads", "0", "--json", str(out))
    assert cost.returncode == EXIT_INPUT and cost.stderr.startswith("error:") and not cost.stdout and not out.exists()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_usage_error_is_one_line(name, capsys):
    from runtime.commands import load_command

    with pytest.raises(SystemExit) as refused:
        load_command(name).main(["--no-such-flag"], prog=f"sge-deploy {name}")
    assert refused.value.code == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith(f"sge-deploy {name}: error: ") and err.endswith(f"(see sge-deploy {name} --help)\n")


def test_sigterm_mid_export_cleans_up_as_ctrl_c_does(tmp_path):
    """A container stop or `timeout` sends SIGTERM: the process died on the spot, leaving a 47 MB staging folder."""
    import signal
    import time

    out = tmp_path / "out"
    argv = [sys.executable, str(REPO / "scripts" / "export.py"), "--model", FACTORY, "--input-size", "64", "64"]
    child = subprocess.Popen([*argv, "--output", str(out)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.staging-*")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, "the export ended before it staged anything"
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143 and err.strip().endswith("terminated"), err
    assert list(tmp_path.iterdir()) in ([], [tmp_path / ".out.lock"])  # no staging folder, no artifact


GEVENT_WAIT = """
import os, signal, threading
import gevent, gevent.hub
from socket import gaierror
from runtime.cli import run_main

def main(argv):
    gevent.get_hub().NOT_ERROR += (gaierror,)  # as geventhttpclient does to the hub of its thread
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    gevent.sleep(30)  # as PyTriton's client waits for Triton, with gevent's hub running
    return 0

raise SystemExit(run_main(main, []))
"""


def test_sigterm_while_gevent_waits_is_one_line_not_a_traceback():
    """SIGTERM during serve's start-up printed gevent's traceback of Terminated before the exit."""
    child = subprocess.run([sys.executable, "-c", GEVENT_WAIT], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert child.returncode == 143 and child.stderr == "terminated\n", child.stderr


def test_validate_refuses_a_backend_it_does_not_check_before_any_work(tmp_path, capsys):
    from runtime.commands import validate

    with pytest.raises(SystemExit) as refused:  # it rebuilt the model, then called openvino an "unknown backend"
        validate.main([str(tmp_path), "--backend", "openvino"], prog="sge-deploy validate")
    assert refused.value.code == EXIT_INPUT
    assert "validate checks the artifact's graphs on onnxruntime only" in capsys.readouterr().err
