"""The processes Triton runs for a served model, read from Linux's /proc: found, watched, and cleaned up after.

PyTriton serves each model instance through a ``triton_python_backend_stub`` process that tritonserver starts (with
multiprocessing helpers of its own), given its model folder (``/tmp/folderXXXX``) and a shared-memory region
(``/dev/shm/pytrtion<pid>-…``). Two ways they go wrong, both seen here:

- a stub killed alone (the OOM killer, a stray ``kill``) leaves Triton answering "ready" while every request fails:
  ``stub_died`` tells the server's watch loop, which then stops;
- a tritonserver that crashes while stopping leaves its stubs running as orphans, ignoring SIGTERM, with their
  region and folder: ``clean_up_after`` removes exactly what this server's stubs held (other servers in the same
  process or on the machine are left alone).

Elsewhere than Linux nothing is found, so nothing is watched or cleaned.
"""

import contextlib
import itertools
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
SHM = Path("/dev/shm")
STUB_NAME = "triton_python_backend_stub"
TRACKER_GRACE_S = 3.0  # how long a killed stub's resource tracker gets to clean up after it


@dataclass(frozen=True)
class Stub:
    """One model instance's Python backend process: its pid, its tritonserver's, its model folder and its region."""

    pid: int
    server: int
    folder: Path | None
    region: str | None


def process_table() -> dict[int, tuple[int, str, list[str]]]:
    """pid → (parent pid, state, command line) of every process /proc shows."""
    table = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # ended while being read
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
        table[int(entry.name)] = (int(fields[1]), fields[0], [a.decode(errors="replace") for a in argv if a])
    return table


def descendants(pid: int, table: dict[int, tuple[int, str, list[str]]]) -> list[int]:
    """Every process below ``pid``, parents before their children."""
    found: list[int] = []
    frontier = {pid}
    while frontier:
        children = [p for p, (parent, _, _) in table.items() if parent in frontier and p not in found]
        found += children
        frontier = set(children)
    return found


def find_stubs(*, grpc_port: int, root: int | None = None) -> list[Stub]:
    """The Python backend stubs of the tritonserver below ``root`` (this process by default) that serves gRPC on
    ``grpc_port``: one server's, where a process runs several."""
    table = process_table()
    below = descendants(os.getpid() if root is None else root, table)
    servers = {pid for pid in below if _serves(table[pid][2], grpc_port)}
    stubs = []
    for pid in below:
        parent, _, argv = table[pid]
        if parent in servers and argv and Path(argv[0]).name == STUB_NAME:
            model = Path(argv[1]) if len(argv) > 1 else None  # /tmp/folderXXXX/<version>/model.py
            folder = model.parents[1] if model is not None and len(model.parents) > 2 else None
            region = argv[2] if len(argv) > 2 and argv[2].startswith("pytrtion") else None
            stubs.append(Stub(pid=pid, server=parent, folder=folder, region=region))
    return stubs


def _serves(argv: list[str], grpc_port: int) -> bool:
    """Whether a command line is tritonserver's, serving gRPC on ``grpc_port`` (ports are one server's at a time)."""
    if not argv or Path(argv[0]).name != "tritonserver":
        return False
    pairs = itertools.pairwise(argv)
    return any(a == "--grpc-port" and b == str(grpc_port) for a, b in pairs) or f"--grpc-port={grpc_port}" in argv


def _state(pid: int) -> str | None:
    """A process's state letter (Z: a zombie), None once it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def stub_died(stubs: list[Stub]) -> Stub | None:
    """The first of ``stubs`` that is gone (or a zombie its tritonserver has not reaped), else None."""
    return next((s for s in stubs if _state(s.pid) in (None, "Z", "X")), None)


def clean_up_after(stubs: list[Stub]) -> list[str]:
    """After Triton stopped: kill these stubs, their helpers and their tritonserver where still running (SIGKILL:
    orphaned stubs ignore SIGTERM), and remove the stubs' shared-memory regions and model folders. A pid is killed
    only while its command line is still Triton's (pids are reused). Returns what was done, one phrase each."""
    table = process_table()
    doomed: set[int] = set()
    for stub in stubs:
        for pid, name in ((stub.pid, STUB_NAME), (stub.server, "tritonserver")):
            argv = table.get(pid, (0, "", []))[2]
            if argv and Path(argv[0]).name == name:
                doomed |= {pid, *descendants(pid, table)}
    # a stub's multiprocessing resource tracker unlinks the shared memory its processes leaked once they are gone:
    # it is left to do so, and killed only if it has not ended by then
    trackers = {pid for pid in doomed if any("multiprocessing.resource_tracker" in a for a in table[pid][2])}
    for pid in sorted(doomed - trackers):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + TRACKER_GRACE_S
    while any(_state(pid) not in (None, "Z", "X") for pid in trackers) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in trackers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    done = [f"killed {len(doomed)} processes Triton left running (pids {', '.join(map(str, sorted(doomed)))})"]
    regions = [SHM / s.region for s in stubs if s.region and (SHM / s.region).exists()]
    for region in regions:
        region.unlink(missing_ok=True)
    done.append(f"removed the shared-memory regions {', '.join(map(str, regions))}")
    folders = sorted({s.folder for s in stubs if s.folder is not None and s.folder.is_dir()})
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    done.append(f"removed the model folders {', '.join(map(str, folders))}")
    return [phrase for phrase, did in zip(done, (doomed, regions, folders), strict=True) if did]
