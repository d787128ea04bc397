"""Atomic file writes (a temporary name beside the target, renamed onto it only when writing succeeded) and file hashes.

An interrupted write never leaves a file that looks complete, and a rename is preceded by an fsync of what it
publishes and followed by one of its directory, so a power loss leaves the old file or the new one, not an empty or
torn one. Used by the artifact manifest (export and runtime) and the inspection report alike; torch-free, so a
deployment machine without PyTorch can verify artifacts.
"""

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class NotARegularFileError(OSError):
    """An output path names a pipe, a device or a socket: a rename would replace it with a file."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds. A symbolic link is
    written through (its target is replaced, the link stays); a pipe, device or socket is refused."""
    path = Path(path)
    if path.is_symlink():
        try:
            path = path.resolve(strict=False)
        except RuntimeError:  # Python 3.11: a loop of links
            raise NotARegularFileError(f"{path} is a loop of symbolic links; give a file name") from None
    problem = not_a_regular_file(path)
    if problem:
        raise NotARegularFileError(f"{path} is {problem}, not a regular file; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp creates 0600; artifacts and reports are read by other users
        sync_file(tmp_path)
        os.replace(tmp_path, path)
        sync_directory(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def not_a_regular_file(path: str | Path) -> str | None:
    """What ``path`` is when it exists and is no regular file or directory ("a pipe", "a device", "a socket")."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def sync_file(path: str | Path) -> None:
    """fsync one file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_directory(path: str | Path) -> None:
    """fsync a directory, so that the names created or renamed in it reach the disk. Where the system cannot (no
    O_DIRECTORY, as on Windows; a file system that refuses directory fsync with EINVAL or ENOTSUP), nothing is done."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def sync_tree(root: str | Path) -> None:
    """fsync every regular file under ``root``, then each directory, deepest first (symlinks are not followed)."""
    directories = []
    for directory, _, names in os.walk(root):
        for name in names:
            file = os.path.join(directory, name)
            if not os.path.islink(file):
                sync_file(file)
        directories.append(directory)
    for directory in reversed(directories):
        sync_directory(directory)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
