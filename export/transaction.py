"""An export as a transaction: build the artifact in a staging directory beside the target, swap it in at the end.

``artifact_transaction(target)`` takes the target's lock (``.<name>.lock`` beside it; a second export to the same
directory fails at once with one line naming the lock), cleans what an earlier killed export left, and yields an
empty staging directory ``.<name>.staging-XXXX`` beside the target. ``commit()`` swaps the staging directory in:
one ``renameat2(RENAME_EXCHANGE)`` on Linux, so readers see the old artifact or the new one and never a mix;
elsewhere two renames, with the old artifact kept as ``.<name>.old-XXXX`` until the new one is in place (the next
export restores it if the process died in between). Leaving the block without ``commit()`` (a failed check, an
exception, Ctrl+C) deletes the staging directory: the previous artifact stays exactly as it was. Before the swap
every staged file and directory is fsync'd, and the parent directory after it, so a power loss too leaves the old
artifact or the complete new one.
"""

import ctypes
import ctypes.util
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from export.artifacts import MANIFEST_NAME, ArtifactError, load_manifest, unrecorded_files
from models.atomic import sync_directory, sync_tree

logger = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2  # linux/fs.h


class ExportLockedError(ArtifactError):
    """Another export is writing the same artifact directory."""


@dataclass
class Transaction:
    target: Path
    staging: Path
    committed: bool = False

    def commit(self) -> Path:
        """Swap the staging directory in as ``target`` (its contents on the disk first); returns ``target``."""
        publish_directory(self.staging, self.target)
        self.committed = True
        return self.target


def staging_directory(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A new empty directory in ``parent`` to fill and then publish, readable by other users (a Triton server, a
    deploy account): mkdtemp makes it 0700."""
    staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(staging, 0o755)
    return staging


def publish_directory(staging: Path, target: Path) -> None:
    """Put the directory ``staging`` in place as ``target`` (a sibling): its files fsync'd first, then one atomic
    exchange with an existing ``target`` (two renames where the system has none, the old one kept as
    ``.<name>.old-XXXX/artifact`` until the new one is in), the parent fsync'd, the old one removed."""
    sync_tree(staging)
    if not target.exists():
        os.rename(staging, target)
        sync_directory(target.parent)
    elif _exchange(staging, target):
        sync_directory(target.parent)
        shutil.rmtree(staging, ignore_errors=True)  # now holds the previous directory
    else:
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, old / "artifact")
        os.rename(staging, target)
        sync_directory(target.parent)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def artifact_transaction(target: str | Path, *, replaceable: frozenset[str] = frozenset()) -> Iterator[Transaction]:
    """Lock ``target``, yield a Transaction with an empty staging directory; discard it unless committed.

    ``target`` may be absent, empty, or an artifact directory (it holds our ``manifest.json``, which records every
    other file but names in ``replaceable``, an earlier export's own); anything else is refused, so a user's folder
    is never replaced (a folder of files named like an export's, without a manifest, is the user's).
    """
    target = Path(target)
    target = target.parent.resolve() / target.name if not target.is_symlink() else target.resolve()
    _check_name_length(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        _clean_leftovers(target)
        _check_replaceable(target, replaceable)
        staging = staging_directory(target.parent, f".{target.name}.staging-")
        transaction = Transaction(target=target, staging=staging)
        try:
            yield transaction
        finally:
            if not transaction.committed:
                shutil.rmtree(staging, ignore_errors=True)


STAGING_EXTRA = len(".") + len(".staging-") + 8  # mkdtemp's 8 random characters: the longest name made beside it


def _check_name_length(target: Path) -> None:
    """ArtifactError when the staging folder beside ``target`` would be a name too long for the file system."""
    existing = next((p for p in (target.parent, *target.parent.parents) if p.is_dir()), Path("/"))
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    longest = len(target.name.encode()) + STAGING_EXTRA
    if longest > limit:
        raise ArtifactError(
            f"--output's folder name is {len(target.name.encode())} bytes; the export stages it beside under a name "
            f"{STAGING_EXTRA} bytes longer, and this file system takes names of at most {limit}: give a name of at "
            f"most {limit - STAGING_EXTRA} bytes"
        )


def _check_replaceable(target: Path, replaceable: frozenset[str]) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise ArtifactError(f"{target} exists and is not a directory; choose another --output")
    if os.path.ismount(target):  # a volume: the exchange that replaces the folder cannot move it
        raise ArtifactError(
            f"{target} is a mount point, which an export cannot replace (it swaps in a whole new folder); give a "
            f"folder inside it, e.g. --output {target / 'artifact'}"
        )
    names = {p.name for p in target.iterdir()}
    if MANIFEST_NAME in names:  # an artifact only if the manifest is ours and records every other file
        try:
            manifest = load_manifest(target, verify=False)
        except ArtifactError:
            raise ArtifactError(
                f"{target} holds a {MANIFEST_NAME} that is not an sge-deploy manifest; an export replaces the whole "
                "directory: choose a new or empty --output"
            ) from None
        strays = [name for name in unrecorded_files(target, manifest) if name.split("/")[0] not in replaceable]
        if strays:
            raise ArtifactError(
                f"{target} holds files its manifest does not record ({', '.join(strays[:3])}"
                f"{', ...' if len(strays) > 3 else ''}); an export replaces the whole directory: move them or choose "
                "another --output"
            )
        return
    if names:  # even files named like an export's (a model.onnx of the user's own): without a manifest, not ours
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise ArtifactError(
            f"{target} is neither empty nor an artifact directory (it holds {shown}, and no {MANIFEST_NAME}); an "
            "export replaces the whole directory: choose a new or empty --output"
        )


@contextmanager
def _locked(target: Path) -> Iterator[Path]:
    import fcntl

    lock = target.parent / f".{target.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportLockedError(
                f"another export is writing {target} (it holds the lock {lock}); wait for it to finish or choose "
                "another --output"
            ) from None
        yield lock
    finally:
        os.close(fd)  # releases the lock; the lock file stays (removing it would race with the next export)


def _clean_leftovers(target: Path) -> None:
    """Remove what a killed export left beside ``target``; restore the old artifact if it was moved aside."""
    for staging in target.parent.glob(f".{glob.escape(target.name)}.staging-*"):  # "x[12]" must not match x1
        shutil.rmtree(staging, ignore_errors=True)
    for old in sorted(target.parent.glob(f".{glob.escape(target.name)}.old-*")):
        if not target.exists() and (old / "artifact").is_dir():
            os.rename(old / "artifact", target)
            sync_directory(target.parent)
            logger.warning("restored %s, which an interrupted export had moved aside", target)
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where the system cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd = -100
    result = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        logger.info("renameat2 exchange unavailable (%s); swapping with two renames", os.strerror(ctypes.get_errno()))
        return False
    return True
