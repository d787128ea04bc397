"""TensorRT's log routed into Python logging (logger ``tensorrt``), and optionally kept for a build-log file."""

import logging
from pathlib import Path
from typing import Any

from export.artifacts import atomic_path


def make_logger(trt: Any, *, verbose: bool, log_file: Path | None) -> Any:
    """An ``ILogger`` that forwards TensorRT's messages to Python logging (logger ``tensorrt``) and, when asked,
    writes every message to ``log_file``; VERBOSE severity when verbose or logging to a file, else WARNING."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }
    python_log = logging.getLogger("tensorrt")
    lowest = logging.DEBUG if verbose else logging.WARNING

    class TrtLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, sev: Any, msg: str) -> None:
            level = levels.get(sev, logging.INFO)
            if level >= lowest:
                python_log.log(level, "%s", msg)
            if log_file is not None:
                self.lines.append(f"[{getattr(sev, 'name', sev)}] {msg}")

    return TrtLogger()


def write_log(trt_logger: Any, path: Path | None) -> Path | None:
    if path is None:
        return None
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in trt_logger.lines))
    return path
