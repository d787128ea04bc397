"""Atomic file writes: a temporary name beside the target, renamed onto it only when writing succeeded.

An interrupted write never leaves a file that looks complete. Used by the artifact manifest (export) and the
inspection report alike.
"""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; artifacts and reports are read by other users
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
