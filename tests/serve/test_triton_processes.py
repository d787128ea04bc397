"""What Triton's processes leave, found and cleaned up (runtime/triton_processes.py), on stand-in processes named as
tritonserver and its Python backend stub name themselves: no Triton is started here."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runtime.triton_processes import SHM, clean_up_after, find_stubs, stub_died

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file() or not SHM.is_dir(), reason="needs Linux")


@pytest.fixture
def stand_in(tmp_path):
    """A "tritonserver" (a sleeping Python under that name, serving "gRPC" on 18765) whose child
    "triton_python_backend_stub" runs the model file of a /tmp/folderXXXX-like folder, with its shared-memory region's
    name as its second argument, as PyTriton's do."""
    model = tmp_path / "folderAbC123" / "1" / "model.py"
    model.parent.mkdir(parents=True)
    model.write_text("import time\ntime.sleep(300)\n")
    region = SHM / f"pytrtion{os.getpid()}-{uuid.uuid4().hex}"
    region.write_bytes(b"\0" * 64)
    stub = f"exec -a triton_python_backend_stub {sys.executable} {model} {region.name}"
    server = f"exec -a tritonserver {sys.executable} -c 'import time; time.sleep(300)' --grpc-port 18765"
    script = f"({stub}) & {server}"
    server = subprocess.Popen(["bash", "-c", script])
    deadline = time.monotonic() + 10
    while not find_stubs(grpc_port=18765) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield server, model.parents[1], region
    server.kill()
    server.wait()
    region.unlink(missing_ok=True)


def test_a_stub_is_found_with_its_server_folder_and_region(stand_in):
    server, folder, region = stand_in
    (stub,) = find_stubs(grpc_port=18765)
    assert (stub.server, stub.folder, stub.region) == (server.pid, folder, region.name)
    assert stub_died([stub]) is None
    assert find_stubs(grpc_port=18766) == []  # another server's port: never this server's stubs


def test_a_killed_stub_is_seen_as_died_even_as_an_unreaped_zombie(stand_in):
    (stub,) = find_stubs(grpc_port=18765)
    os.kill(stub.pid, 9)  # its "tritonserver" never reaps it: a zombie, as under a hung Triton
    deadline = time.monotonic() + 10
    while stub_died([stub]) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stub_died([stub]) == stub


def test_clean_up_after_kills_what_is_left_and_removes_the_region_and_folder(stand_in):
    server, folder, region = stand_in
    (stub,) = find_stubs(grpc_port=18765)
    done = clean_up_after([stub])
    assert server.wait(timeout=10) == -9  # the "tritonserver" still running was killed too
    assert done[0].startswith("killed 2 processes Triton left running") and len(done) == 3
    assert not region.exists() and not folder.exists()
    assert clean_up_after([stub]) == []  # nothing left: nothing said, and a reused pid is never killed
