"""What Triton's processes leave, found and cleaned up (runtime/triton_processes.py), on stand-in processes named as
tritonserver and its Python backend stub name themselves: no Triton is started here."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

import runtime.triton_processes as triton_processes
from runtime.triton_processes import SHM, clean_up_after, find_stubs, read_process, stub_died

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file() or not os.access(SHM, os.W_OK), reason="needs Linux's /proc and /dev/shm"
)
PORT = 18765  # only this test's own child processes are searched: no server listens on it


def wait_for(condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


SLEEPING_MODEL = "import time\ntime.sleep(120)\n"
# a model whose stub starts a stand-in multiprocessing resource tracker: one that ends when the stub is gone (its
# stdin pipe closes), as the real one does, or one that does not
# (the interpreter named: under `exec -a`, the stub's own sys.executable is empty)
TRACKER_MODEL = """import subprocess, time
subprocess.Popen([{python!r}, "-c", {code!r}, "multiprocessing.resource_tracker"], stdin=subprocess.PIPE)
time.sleep(120)
"""
TRACKER_THAT_ENDS = TRACKER_MODEL.format(python=sys.executable, code="import sys; sys.stdin.read()")
TRACKER_THAT_STAYS = TRACKER_MODEL.format(python=sys.executable, code="import time; time.sleep(120)")


@pytest.fixture
def stand_in(tmp_path, request):
    """A "tritonserver" (a sleeping Python under that name, serving "gRPC" on PORT) whose child
    "triton_python_backend_stub" runs the model file of a /tmp/folderXXXX-like folder, with its shared-memory region's
    name as its second argument, as PyTriton's do. All live in a session of their own, killed whole at the end. The
    model's code: SLEEPING_MODEL, or the test's indirect parameter."""
    model = tmp_path / "folderAbC123" / "1" / "model.py"
    model.parent.mkdir(parents=True)
    model.write_text(getattr(request, "param", SLEEPING_MODEL))
    region = SHM / f"pytrtion{os.getpid()}-{uuid.uuid4().hex}"
    region.write_bytes(b"\0" * 64)
    stub = f"exec -a triton_python_backend_stub {sys.executable} {model} {region.name}"
    server = f"exec -a tritonserver {sys.executable} -c 'import time; time.sleep(120)' --grpc-port {PORT}"
    process = subprocess.Popen(
        ["bash", "-c", f"({stub}) & {server}"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert wait_for(lambda: find_stubs(grpc_port=PORT)), "the stand-in stub did not start"
    yield process, model.parents[1], region
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    region.unlink(missing_ok=True)


def test_a_stub_is_found_with_its_server_folder_and_region(stand_in):
    server, folder, region = stand_in
    (stub,) = find_stubs(grpc_port=PORT)
    assert (stub.server.pid, stub.folder, stub.region) == (server.pid, folder, region.name)
    assert stub_died([stub]) is None
    assert find_stubs(grpc_port=PORT + 1) == []  # another server's port: never this server's stubs


def test_a_killed_stub_is_seen_as_died_even_as_an_unreaped_zombie(stand_in):
    (stub,) = find_stubs(grpc_port=PORT)
    os.kill(stub.process.pid, signal.SIGKILL)  # its "tritonserver" never reaps it: a zombie, as under a hung Triton
    assert wait_for(lambda: stub_died([stub]) == stub)


def test_clean_up_after_kills_what_is_left_and_removes_the_region_and_folder(stand_in):
    server, folder, region = stand_in
    (stub,) = find_stubs(grpc_port=PORT)
    done = clean_up_after([stub])
    assert server.wait(timeout=20) == -signal.SIGKILL  # the "tritonserver" still running was killed too
    assert done[0].startswith("killed 2 processes Triton left running") and len(done) == 3
    assert not region.exists() and not folder.exists()
    assert clean_up_after([stub]) == []  # nothing left: nothing said


@pytest.mark.parametrize("wait_s", [5.0, 0.1])
def test_clean_up_after_returns_once_what_it_killed_has_ended(stand_in, monkeypatch, wait_s):
    """SIGKILL takes effect when the process next runs; each signal here lands 0.5 s late, as on a busy machine."""
    server, _, _ = stand_in
    (stub,) = find_stubs(grpc_port=PORT)
    send = os.kill
    monkeypatch.setattr(os, "kill", lambda pid, sig: threading.Timer(0.5, send, (pid, sig)).start())
    monkeypatch.setattr(triton_processes, "KILL_WAIT_S", wait_s)
    done = clean_up_after([stub])
    if wait_s > 0.5:  # waited long enough: both ended, and a second clean-up finds nothing to kill
        assert "had not ended" not in done[0]
        assert stub_died([stub]) == stub and server.poll() == -signal.SIGKILL
        assert clean_up_after([stub]) == []
    else:  # gave up first: says so, naming both
        pids = ", ".join(map(str, sorted((stub.server.pid, stub.process.pid))))
        assert done[0].endswith(f"pids {pids} had not ended after 0.1 s")
        assert wait_for(lambda: stub_died([stub]) == stub and server.poll() == -signal.SIGKILL)  # the late signals


@pytest.mark.parametrize(
    ("stand_in", "grace_s", "ends_itself"),
    [(TRACKER_THAT_ENDS, 10.0, True), (TRACKER_THAT_STAYS, 0.3, False)],
    ids=["tracker-ends", "tracker-stays"],
    indirect=["stand_in"],
)
def test_a_stubs_resource_tracker_is_left_to_end_and_killed_only_if_it_has_not(
    stand_in, monkeypatch, grace_s, ends_itself
):
    (stub,) = find_stubs(grpc_port=PORT)  # stand_in: the processes, started

    def tracker():
        below = triton_processes.descendants(stub.process.pid, triton_processes.process_table())
        return next((p for p in below if "multiprocessing.resource_tracker" in p.argv), None)

    assert wait_for(lambda: tracker() is not None), "the stand-in tracker did not start"
    found = tracker()
    monkeypatch.setattr(triton_processes, "TRACKER_GRACE_S", grace_s)
    done = clean_up_after([stub])
    pids = sorted([stub.server.pid, stub.process.pid] + ([] if ends_itself else [found.pid]))
    assert done[0] == f"killed {len(pids)} processes Triton left running (pids {', '.join(map(str, pids))})"
    assert not triton_processes._alive(found)  # ended by itself, or killed after the grace


def test_a_pid_now_held_by_another_process_is_never_signalled(stand_in):
    server, _, _ = stand_in
    (stub,) = find_stubs(grpc_port=PORT)
    reused = replace(stub, process=replace(stub.process, started=stub.process.started - 1))  # an earlier process
    assert stub_died([reused]) == reused  # the recorded one is gone, whatever runs under its pid now
    clean_up_after([replace(reused, server=replace(reused.server, started=reused.server.started - 1))])
    assert read_process(stub.process.pid) is not None and server.poll() is None  # both still running
