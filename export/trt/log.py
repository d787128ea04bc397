"""TensorRT's log routed into Python logging (logger ``tensorrt``), and optionally kept for a build-log file.

TensorRT keeps one logger per process: while any Builder, Runtime or Refitter lives, the logger of the first one is
used for every later one, and a new logger is ignored (the ILogger documentation; NVIDIA/TensorRT#1475). A logger
made per build would stay silent beside a live runner, and its build log would be empty. So every builder, parser
and runtime here takes ``process_logger(trt)``, and a build points it at its own sink with ``capture``.
"""

import contextlib
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.artifacts import atomic_path

_python_log = logging.getLogger("tensorrt")
_loggers: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()  # tensorrt module → its one logger
NO_MESSAGES = (
    "TensorRT sent this process's sge-deploy logger no message during the build: another logger was registered "
    "first (TensorRT keeps the first one while any of its objects lives); build in a fresh process for a log"
)


@dataclass
class Sink:
    """Where messages go: Python logging from ``lowest`` up, and every message into ``lines`` when kept."""

    lowest: int = logging.WARNING
    lines: list[str] | None = None
    received: int = 0  # messages TensorRT sent while this sink was current


def process_logger(trt: Any) -> Any:
    """The one ``ILogger`` this process gives TensorRT (made on first use, per ``tensorrt`` module)."""
    if trt in _loggers:
        return _loggers[trt]
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }

    class ProcessLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.sink = Sink()

        def log(self, sev: Any, msg: str) -> None:
            sink = self.sink
            sink.received += 1
            level = levels.get(sev, logging.INFO)
            if level >= sink.lowest:
                _python_log.log(level, "%s", msg)
            if sink.lines is not None:
                sink.lines.append(f"[{getattr(sev, 'name', sev)}] {msg}")

    _loggers[trt] = logger = ProcessLogger()
    return logger


@contextlib.contextmanager
def capture(trt: Any, *, verbose: bool, log_file: Path | None) -> Iterator[Any]:
    """The process logger, sending this build's messages to Python logging (VERBOSE up when ``verbose``, else
    WARNING up) and, with ``log_file``, every message to that file, written when the build ends, failed or not."""
    logger = process_logger(trt)
    before = logger.sink
    logger.sink = Sink(lowest=logging.DEBUG if verbose else logging.WARNING, lines=[] if log_file else None)
    try:
        yield logger
    finally:
        sink, logger.sink = logger.sink, before
        if log_file is not None:
            write_log(sink.lines or [], log_file)


def check_heard(logger: Any) -> None:
    """After ``build_serialized_network``: a build that sent the process logger nothing was logged elsewhere (a build
    always logs); say so, in Python logging and in the build log."""
    if logger.sink.received == 0:
        _python_log.warning("%s", NO_MESSAGES)
        if logger.sink.lines is not None:
            logger.sink.lines.append(f"[sge-deploy] {NO_MESSAGES}")


def write_log(lines: list[str], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
