"""The serving ports: a lock per port while a server lives, and a check that each is free to bind, so a taken port
fails before Triton starts, naming the flag to change."""

import contextlib
import errno
import logging
import os
import socket
from pathlib import Path

from runtime.serve_config import ServeConfig, ServeError

logger = logging.getLogger(__name__)


def free_loopback_port() -> int:
    """A loopback port free right now, for Triton's HTTP endpoint behind the gate."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PORT_FLAGS = {"http_port": "--http-port", "grpc_port": "--grpc-port", "metrics_port": "--metrics-port"}


def reserve_ports(config: ServeConfig) -> contextlib.ExitStack:
    """A lock per port (a file under the temp directory), held while the server lives; closing the stack frees them.

    Two servers started at the same moment on the same ports both passed ``check_ports_free``; the loser's Triton
    exited at once, and PyTriton waited 120 s for it before an internal error. Servers of this project now take the
    locks first and the second one fails at once. (Other programs can still take a port in the moment before Triton
    binds it.)"""
    import fcntl
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"sge-deploy-ports-{os.getuid()}"  # one user's servers: no permissions
    stack, held = contextlib.ExitStack(), []
    try:
        for key in PORT_FLAGS:
            port = getattr(config, key)
            try:
                folder.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(folder / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as err:  # an unwritable temp directory: the bind check alone, as before the locks
                logger.debug("no port lock for %s (%s)", port, err)
                continue
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(key)
        if held:
            ports = "; ".join(f"{key} {getattr(config, key)}" for key in held)
            flags = ", ".join(PORT_FLAGS[key] for key in held)
            raise ServeError(
                f"another sge-deploy server is starting or serving on {ports}; choose free ports with {flags}"
            )
    except BaseException:
        stack.close()
        raise
    return stack


def check_ports_free(config: ServeConfig) -> None:
    """Fail before Triton starts, naming the flag to change, when a port is taken."""
    taken = []
    for key in PORT_FLAGS:
        port = getattr(config, key)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as Triton and the gate bind: a closing connection's TIME_WAIT does not make the port taken
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((config.host, port))
            except OSError as err:
                if err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):  # the address, not the port
                    raise ServeError(
                        f"--host {config.host} is not an address of this machine ({err.strerror}); give one of its "
                        "own, 127.0.0.1 for this machine only or 0.0.0.0 for every interface"
                    ) from None
                taken.append((key, f"{key} {port} ({err.strerror})"))
    if taken:
        flags = ", ".join(PORT_FLAGS[key] for key, _ in taken)
        raise ServeError(f"cannot bind {config.host}: {'; '.join(t for _, t in taken)}; choose free ports with {flags}")
