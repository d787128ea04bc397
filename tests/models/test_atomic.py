"""Atomic writes reach the disk: the data is fsync'd before its rename publishes it, the directory after."""

import errno
import os

import pytest

from models.atomic import atomic_path, sync_directory, sync_tree


def test_atomic_path_syncs_the_file_before_publishing_it_and_the_directory_after(tmp_path, fsync_log):
    target = tmp_path / "report.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
        scratch = tmp
    assert fsync_log == [scratch.parent.resolve() / scratch.name, tmp_path.resolve()] and target.read_text() == "{}"


def test_sync_tree_syncs_every_file_then_each_directory_deepest_first_without_following_links(tmp_path, fsync_log):
    tree = tmp_path / "tree"
    (tree / "1" / "2").mkdir(parents=True)
    for name in ("a.onnx", "1/b.txt", "1/2/c.bin"):
        (tree / name).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.write_bytes(b"y")
    (tree / "link").symlink_to(outside)
    sync_tree(tree)
    root = tree.resolve()
    files = {root / "a.onnx", root / "1" / "b.txt", root / "1" / "2" / "c.bin"}
    assert set(fsync_log[:3]) == files and outside.resolve() not in fsync_log
    assert fsync_log[3:] == [root / "1" / "2", root / "1", root]


def test_a_file_system_without_directory_fsync_is_not_an_error_but_other_failures_are(tmp_path, monkeypatch):
    def refuse(code):
        def fsync(fd):
            raise OSError(code, os.strerror(code))

        return fsync

    monkeypatch.setattr(os, "fsync", refuse(errno.EINVAL))
    sync_directory(tmp_path)  # e.g. some FUSE and network file systems
    monkeypatch.setattr(os, "fsync", refuse(errno.EIO))
    with pytest.raises(OSError, match="Input/output"):
        sync_directory(tmp_path)
