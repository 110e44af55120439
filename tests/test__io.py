"""Atomic writes (fastloop._io): a failure at any step leaves the previous file intact and no temporary file."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

import fastloop._io
from fastloop._io import atomic_open, atomic_save, atomic_write_bytes, atomic_write_text


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and _listing(tmp_path) == ["f.txt"]


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_a_failure_before_the_replace_leaves_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "ck.bin"
    atomic_write_bytes(target, b"old contents")

    def boom(*args, **kwargs):
        raise OSError(f"crash at {fail_at}")

    if fail_at == "fsync":
        monkeypatch.setattr(fastloop._io.os, "fsync", boom)
    elif fail_at == "replace":
        monkeypatch.setattr(fastloop._io.os, "replace", boom)
    with pytest.raises(OSError, match=f"crash at {fail_at}"):
        with atomic_open(target, "wb") as f:
            f.write(b"new contents, half")
            if fail_at == "write":
                boom()
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert _listing(tmp_path) == ["ck.bin"]


def test_a_new_file_gets_the_permissions_a_plain_open_would_give_and_a_replaced_one_keeps_its_own(tmp_path):
    target = tmp_path / "f"
    atomic_write_bytes(target, b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    os.chmod(target, 0o600)
    atomic_write_bytes(target, b"y")
    assert target.stat().st_mode & 0o777 == 0o600


def test_atomic_open_refuses_modes_that_do_not_write_a_whole_file(tmp_path):
    for mode in ("r", "a", "r+b", "w+"):
        with pytest.raises(ValueError, match="atomic_open writes a whole new file"):
            with atomic_open(tmp_path / "f", mode):
                pass


def test_atomic_save_serialises_first_so_a_pickling_error_never_touches_the_disk(tmp_path):
    target = tmp_path / "m.pth"
    atomic_save({"w": torch.ones(2)}, target)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        atomic_save({"f": lambda x: x}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert _listing(tmp_path) == ["m.pth"]


def test_atomic_save_writes_file_objects_directly():
    buf = io.BytesIO()
    atomic_save({"a": 1}, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == {"a": 1}
