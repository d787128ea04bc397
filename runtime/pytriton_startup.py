"""What PyTriton (0.7) needs to start Triton reliably here: the environment of ``tritonserver`` and its Python backend
stubs, and which failed start is its instances' start-up race (to start again) rather than a real load failure."""

import contextlib
import logging
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

LOAD_ATTEMPTS = 3  # starts of Triton when its model load is lost to PyTriton's handshake race (handshake_race)


def handshake_race(err: BaseException) -> bool:
    """Whether a failed start is PyTriton's (0.7) start-up race between model instances, not a real load failure.

    Instance 0's stub serves the model's config on a handshake socket; the other instances read it as soon as the
    socket file exists, within one second. The file exists from ``bind`` and accepts from ``listen``: an instance that
    connects in between is refused, and one that waits past the second times out; Triton then fails the load. Seen on
    a 2-core machine running the test suite beside the server. Starting again loads the model."""
    text = str(err)
    refused_or_late = "Connection refused" in text or "Timeout occurred while waiting for config file" in text
    return "get_config_from_handshake_server" in text and refused_or_late


def library_path_with_libpython(current: str | None) -> str:
    """``LD_LIBRARY_PATH`` with this interpreter's library directory first (pure; ``current`` may be None)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    rest = [p for p in (current or "").split(os.pathsep) if p and p != libdir]
    return os.pathsep.join([libdir, *rest]) if libdir else os.pathsep.join(rest)


@contextlib.contextmanager
def triton_child_environment(*, instances: int) -> Iterator[dict[str, str]]:
    """The environment PyTriton hands to ``tritonserver`` and its Python backend stubs, set while the server starts.

    PyTriton builds the child's environment from this process's environment (and reads the transport switch at
    bind time), so this is the one place where the project writes environment variables; the previous values are
    restored once the server is up.

    - ``LD_LIBRARY_PATH``: this interpreter's libpython first. The stub links the system libpython; when this
      interpreter is another build, model load fails with
      ``'_thread.RLock' object has no attribute '_recursion_count'``.
    - ``PYTRITON_NO_TENSORSTORE=1`` when ``instances > 1``: requests and responses travel between the stubs and
      this process over PyTriton's socket transport instead of its shared-memory tensor store. With the tensor
      store, instance 0 spawns a store process before it opens the handshake socket that the other instances wait
      on for only one second, so on a busy machine model load fails with ``Timeout occurred while waiting for config
      file``. A single instance keeps the tensor store, which the load test measured as the faster of the two
      (README: Serving).
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not any(Path(libdir).glob("libpython3*.so*")):
        logger.warning("no shared libpython in %s; Triton's Python backend stub may fail to load the model", libdir)
    wanted = {"LD_LIBRARY_PATH": library_path_with_libpython(os.environ.get("LD_LIBRARY_PATH"))}
    if instances > 1:
        wanted["PYTRITON_NO_TENSORSTORE"] = "1"
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield wanted
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
