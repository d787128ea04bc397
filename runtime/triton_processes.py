"""The processes Triton runs for a served model, read from Linux's /proc: found, watched, and cleaned up after.

PyTriton serves each model instance through a ``triton_python_backend_stub`` process that tritonserver starts (with
multiprocessing helpers of its own), given its model folder (``/tmp/folderXXXX``) and a shared-memory region
(``/dev/shm/pytrtion<pid>-…``). Two ways they go wrong, both seen here:

- a stub killed alone (the OOM killer, a stray ``kill``) leaves Triton answering "ready" while every request fails:
  ``stub_died`` tells the server's watch loop, which then stops;
- a tritonserver that crashes while stopping leaves its stubs running as orphans, ignoring SIGTERM, with their
  region and folder: ``clean_up_after`` removes exactly what this server's stubs held.

A process is known by its pid and its start time (a pid is reused once its process is gone), so nothing of another
server, in this process or on the machine, is ever signalled. Elsewhere than Linux nothing is found.
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
KILL_WAIT_S = 5.0  # how long a SIGKILLed process gets to end (the signal is delivered when it next runs)


@dataclass(frozen=True)
class Process:
    """One process as /proc shows it; ``started`` (clock ticks after boot) tells it from a later one with its pid."""

    pid: int
    parent: int
    started: int
    argv: tuple[str, ...]

    @property
    def name(self) -> str:
        return Path(self.argv[0]).name if self.argv else ""


@dataclass(frozen=True)
class Stub:
    """One model instance's Python backend process, its tritonserver, its model folder and its region."""

    process: Process
    server: Process
    folder: Path | None
    region: str | None


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid`` from /proc/PID/stat, or None once it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return int(fields[1]), fields[0], int(fields[19])


def read_process(pid: int) -> Process | None:
    """The process ``pid`` is now, or None once it is gone."""
    stat = _stat(pid)
    if stat is None:  # gone: no second read
        return None
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    decoded = tuple(a.decode(errors="replace") for a in argv if a)
    return Process(pid=pid, parent=stat[0], started=stat[2], argv=decoded)


def process_table() -> dict[int, Process]:
    """Every process /proc shows, by pid."""
    entries = PROC.iterdir() if PROC.is_dir() else ()
    found = (read_process(int(entry.name)) for entry in entries if entry.name.isdigit())
    return {p.pid: p for p in found if p is not None}


def descendants(pid: int, table: dict[int, Process]) -> list[Process]:
    """Every process below ``pid``, parents before their children."""
    children: dict[int, list[Process]] = {}
    for process in table.values():
        children.setdefault(process.parent, []).append(process)
    found: list[Process] = []
    frontier = [pid]
    while frontier:
        below = [child for parent in frontier for child in children.get(parent, ())]
        found += below
        frontier = [child.pid for child in below]
    return found


def serves(process: Process, grpc_port: int) -> bool:
    """Whether ``process`` is a tritonserver serving gRPC on ``grpc_port`` (ports are one server's at a time)."""
    argv = process.argv
    if process.name != "tritonserver":
        return False
    return f"--grpc-port={grpc_port}" in argv or any(
        a == "--grpc-port" and b == str(grpc_port) for a, b in itertools.pairwise(argv)
    )


def find_stubs(*, grpc_port: int, root: int | None = None) -> list[Stub]:
    """The Python backend stubs of the tritonserver below ``root`` (this process by default) that serves gRPC on
    ``grpc_port``: one server's, where a process runs several."""
    table = process_table()
    below = descendants(os.getpid() if root is None else root, table)
    servers = {p.pid: p for p in below if serves(p, grpc_port)}
    stubs = []
    for process in below:
        if process.parent in servers and process.name == STUB_NAME:
            argv = process.argv
            model = Path(argv[1]) if len(argv) > 1 else None  # /tmp/folderXXXX/<version>/model.py
            folder = model.parents[1] if model is not None and len(model.parents) > 2 else None
            region = argv[2] if len(argv) > 2 and argv[2].startswith("pytrtion") else None
            stubs.append(Stub(process=process, server=servers[process.parent], folder=folder, region=region))
    return stubs


def _alive(process: Process) -> bool:
    """Whether ``process`` itself (not a later one with its pid) still runs: not gone, not a zombie."""
    now = _stat(process.pid)
    return now is not None and now[2] == process.started and now[1] not in ("Z", "X")


def stub_died(stubs: list[Stub]) -> Stub | None:
    """The first of ``stubs`` that is gone (or a zombie its tritonserver has not reaped), else None."""
    return next((s for s in stubs if not _alive(s.process)), None)


def _kill(process: Process) -> bool:
    """SIGKILL ``process`` if it is still itself; whether a signal went."""
    if not _alive(process):
        return False
    with contextlib.suppress(OSError):  # gone in between, or no longer ours to signal
        os.kill(process.pid, signal.SIGKILL)
        return True
    return False


def _still_running(processes: list[Process], *, within_s: float) -> list[Process]:
    """Those of ``processes`` still running (not gone, not zombies) after up to ``within_s`` seconds of waiting for
    them to end."""
    deadline = time.monotonic() + within_s
    while (running := [p for p in processes if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return running


def clean_up_after(stubs: list[Stub]) -> list[str]:
    """After Triton stopped: kill these stubs, their helpers and their tritonserver where still running (SIGKILL:
    orphaned stubs ignore SIGTERM), and remove the stubs' shared-memory regions and model folders. Returns what was
    done, one phrase each."""
    roots = {p.pid: p for stub in stubs for p in (stub.server, stub.process) if _alive(p)}
    table = process_table() if roots else {}  # a clean stop left nothing running: no scan of the machine
    doomed: dict[int, Process] = {}
    for root in roots.values():
        if root.pid not in doomed:  # a stub lies below its server: one walk covers both
            doomed |= {p.pid: p for p in (root, *descendants(root.pid, table))}
    # a stub's multiprocessing resource tracker unlinks the shared memory its processes leaked once they are gone:
    # it is left to do so, and killed only if it has not ended by then
    trackers = [p for p in doomed.values() if any("multiprocessing.resource_tracker" in a for a in p.argv)]
    killed = [p.pid for p in doomed.values() if p not in trackers and _kill(p)]
    killed += [p.pid for p in _still_running(trackers, within_s=TRACKER_GRACE_S) if _kill(p)]
    # SIGKILL is acted on when the process next runs: on a busy machine it may still run for a moment, so this
    # returns once what it killed has ended, and says which, if any, had not by the deadline
    ending = [p.pid for p in _still_running([doomed[pid] for pid in killed], within_s=KILL_WAIT_S)]
    regions = [SHM / s.region for s in stubs if s.region and (SHM / s.region).exists()]
    for region in regions:
        region.unlink(missing_ok=True)
    folders = sorted({s.folder for s in stubs if s.folder is not None and s.folder.is_dir()})
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    done = [
        f"killed {len(killed)} processes Triton left running (pids {', '.join(map(str, sorted(killed)))})"
        + (f"; pids {', '.join(map(str, sorted(ending)))} had not ended after {KILL_WAIT_S:g} s" if ending else ""),
        f"removed the shared-memory regions {', '.join(map(str, regions))}",
        f"removed the model folders {', '.join(map(str, folders))}",
    ]
    return [phrase for phrase, did in zip(done, (killed, regions, folders), strict=True) if did]
