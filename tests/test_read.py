"""Reads through a real mount are byte-identical to the origin."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachefs.config import default_config

from .conftest import Mounted, MountFactory

CFG = default_config()
MEDIA_CHUNK = CFG.content_types["media"].chunk_size
DATA_CHUNK = CFG.content_types["user_data"].chunk_size


def write_random(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("empty.bin", 0),
        ("one.bin", 1),
        ("below.mkv", MEDIA_CHUNK - 1),
        ("exact.mkv", MEDIA_CHUNK),
        ("above.mkv", MEDIA_CHUNK + 1),
        ("several.mkv", 5 * MEDIA_CHUNK + 12345),
        ("several.bin", 7 * DATA_CHUNK + 1),
        ("small.nfo", 3000),
    ],
)
def test_whole_file_equals_origin(origin: Path, mounted: Mounted, name: str, size: int) -> None:
    data = write_random(origin / name, size, seed=size)
    assert (mounted.mnt / name).read_bytes() == data
    # a second read is served from the cache and is still identical
    assert (mounted.mnt / name).read_bytes() == data


def test_large_file_equals_origin(origin: Path, mounted: Mounted) -> None:
    size = 256 * 1024 * 1024
    block = random.Random(7).randbytes(1024 * 1024)
    with open(origin / "big.mkv", "wb") as f:
        for i in range(size // len(block)):
            f.write(i.to_bytes(8, "little") + block[8:])
    with open(origin / "big.mkv", "rb") as want, open(mounted.mnt / "big.mkv", "rb") as got:
        while True:
            a = want.read(4 * 1024 * 1024)
            b = got.read(4 * 1024 * 1024)
            assert a == b
            if not a:
                break
    assert mounted.stats()["origin_bytes_read"] >= size


def test_reading_twice_reads_origin_once(origin: Path, mounted: Mounted) -> None:
    data = write_random(origin / "twice.mkv", 3 * MEDIA_CHUNK)
    with open(mounted.mnt / "twice.mkv", "rb") as f:
        assert f.read() == data
    first = mounted.stats()["origin_bytes_read"]
    # O_DIRECT bypasses the kernel page cache, so this hits the RAM tier
    fd = os.open(mounted.mnt / "twice.mkv", os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    assert mounted.stats()["origin_bytes_read"] == first
    assert mounted.stats()["tiers"]["ram"]["hits"] > 0


@pytest.fixture(scope="module")
def random_read_mount(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("random")
    origin = tmp / "origin"
    origin.mkdir()
    data = write_random(origin / "file.mkv", 4 * MEDIA_CHUNK + 4097, seed=42)
    factory = MountFactory(tmp)
    mounted = factory(origin, ["tiers.ram.max_size=3MiB", "stats.backend=embedded"])
    fd = os.open(mounted.mnt / "file.mkv", os.O_RDONLY | os.O_DIRECT)
    try:
        yield fd, data
    finally:
        os.close(fd)
        factory.close()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(offset=st.integers(0, 4 * MEDIA_CHUNK + 8192), size=st.integers(0, 3 * MEDIA_CHUNK))
def test_random_reads_match_origin(random_read_mount, offset: int, size: int) -> None:
    fd, data = random_read_mount
    # O_DIRECT wants aligned buffers for the kernel, not for FUSE: any offset works
    assert os.pread(fd, size, offset) == data[offset : offset + size]
