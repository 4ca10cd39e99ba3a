"""A media-library scan through a real mount must not flush the hot set from RAM."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from .conftest import MountFactory

MiB = 1024 * 1024
SCAN_FILES = 10_000
CHUNK = 512 * 1024  # user_data chunk size: hot.bin is 4 chunks


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 small .nfo files in 100 folders, and one hot 2 MiB file."""
    origin = tmp_path_factory.mktemp("library") / "origin"
    rng = random.Random(11)
    for folder in range(100):
        directory = origin / "Shows" / f"show{folder:03d}"
        directory.mkdir(parents=True)
        for episode in range(SCAN_FILES // 100):
            (directory / f"e{episode:03d}.nfo").write_bytes(rng.randbytes(6000))
    (origin / "hot.bin").write_bytes(rng.randbytes(2 * MiB))
    return origin


def ram_hit_ratio(mounted, reads: int) -> float:
    """Read the hot file *reads* times, a second apart; RAM hits / lookups."""
    ram = mounted.stats()["tiers"]["ram"]
    before = (ram["hits"], ram["misses"])
    for _ in range(reads):
        read_backwards(mounted.mnt / "hot.bin")
        time.sleep(1.05)  # a second access, not the same read
    ram = mounted.stats()["tiers"]["ram"]
    hits, misses = ram["hits"] - before[0], ram["misses"] - before[1]
    return hits / (hits + misses)


def read_backwards(path: Path) -> None:
    """Chunk by chunk from the end: no read-ahead can hide a flushed hot set."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        for offset in range(2 * MiB - CHUNK, -1, -CHUNK):
            assert len(os.pread(fd, CHUNK, offset)) == CHUNK
    finally:
        os.close(fd)


def scan(mnt: Path) -> int:
    """What a media server does: walk, stat, open and read the start of each file."""
    count = 0
    for directory, _, names in os.walk(mnt / "Shows"):
        for name in names:
            path = os.path.join(directory, name)
            os.lstat(path)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            try:
                os.read(fd, 64 * 1024)
            finally:
                os.close(fd)
            count += 1
    return count


def hot_set_drop(library: Path, mount_factory: MountFactory, scan_resistant: bool) -> tuple:
    mounted = mount_factory(
        library,
        [
            "stats.backend=embedded",
            "tiers.ram.max_size=4MiB",
            f"tiers.ram.scan_resistant={str(scan_resistant).lower()}",
        ],
    )
    ram_hit_ratio(mounted, reads=3)  # warm: the hot chunks earn their place
    before = ram_hit_ratio(mounted, reads=1)
    assert scan(mounted.mnt) == SCAN_FILES
    after = ram_hit_ratio(mounted, reads=1)
    mount_factory.unmount(mounted)
    return before, after


def test_scan_resistant_ram_keeps_the_hot_set(library: Path, mount_factory: MountFactory) -> None:
    before, after = hot_set_drop(library, mount_factory, scan_resistant=True)
    print(f"scan-resistant RAM: hot-set hit ratio {before:.0%} -> {after:.0%}")
    assert before == 1.0
    assert before - after < 0.10


def test_plain_lru_loses_the_hot_set(library: Path, mount_factory: MountFactory) -> None:
    before, after = hot_set_drop(library, mount_factory, scan_resistant=False)
    print(f"plain LRU RAM: hot-set hit ratio {before:.0%} -> {after:.0%}")
    assert before == 1.0
    assert after < 0.5
