"""Files changed directly at the origin are read back new after reopen."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .conftest import Mounted

OLD = b"o" * 300_000


@pytest.fixture
def read_once(origin: Path, mounted: Mounted) -> Path:
    (origin / "f.bin").write_bytes(OLD)
    assert (mounted.mnt / "f.bin").read_bytes() == OLD
    return mounted.mnt / "f.bin"


def test_same_size_new_mtime(origin: Path, read_once: Path) -> None:
    new = b"n" * len(OLD)
    (origin / "f.bin").write_bytes(new)
    os.utime(origin / "f.bin", ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert read_once.read_bytes() == new


def test_grown(origin: Path, read_once: Path) -> None:
    with open(origin / "f.bin", "ab") as f:
        f.write(b"more" * 100_000)
    assert read_once.read_bytes() == OLD + b"more" * 100_000


def test_shrunk(origin: Path, read_once: Path) -> None:
    (origin / "f.bin").write_bytes(b"tiny")
    assert read_once.read_bytes() == b"tiny"


def test_replaced_by_rename(origin: Path, read_once: Path) -> None:
    (origin / "tmp").write_bytes(b"r" * len(OLD))
    os.rename(origin / "tmp", origin / "f.bin")
    assert read_once.read_bytes() == b"r" * len(OLD)


def test_deleted(origin: Path, read_once: Path) -> None:
    os.unlink(origin / "f.bin")
    with pytest.raises(FileNotFoundError):
        read_once.read_bytes()


def test_open_file_sees_change_after_attr_timeout(origin: Path, read_once: Path) -> None:
    with open(read_once, "rb") as f:
        assert f.read() == OLD
        (origin / "f.bin").write_bytes(b"z" * (len(OLD) + 5))
        time.sleep(1.2)  # attr_timeout: the kernel asks again, cachefs revalidates
        os.fstat(f.fileno())
        f.seek(0)
        assert f.read() == b"z" * (len(OLD) + 5)
