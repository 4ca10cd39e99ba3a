"""The control xattrs do what they say: evict leaves nothing behind, directories
count, a ram pin brings a file into memory, byte counts are bytes served."""

from __future__ import annotations

import os
import random
from pathlib import Path

from cachefs.config import default_config

from .conftest import DEFAULT_TEST_OPTIONS, Mounted, MountFactory, read_direct, wait_until_on_disk

MiB = 1024 * 1024
MEDIA_CHUNK = default_config().content_types["media"].chunk_size


def library(origin: Path) -> dict[str, bytes]:
    rng = random.Random(5)
    files = {
        "Show/S01E01.mkv": rng.randbytes(4 * MiB),
        "Show/S01E02.mkv": rng.randbytes(3 * MiB + 1),
        "Show/extras/poster.jpg": rng.randbytes(200_000),
        "other.mkv": rng.randbytes(2 * MiB),
    }
    for rel, data in files.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(data)
    return files


def chunk_files(m: Mounted) -> int:
    return sum(len(list(m.tier_dir(t).glob("chunks/*/*"))) for t in ("ssd", "hdd"))


def test_evict_right_after_a_read_leaves_no_chunk_on_any_tier(
    origin: Path, mount_factory: MountFactory
) -> None:
    """The read's chunks are still queued for their disk tier when evict comes."""
    files = library(origin)
    m = mount_factory(origin)
    for _ in range(3):
        assert read_direct(m.mnt / "Show/S01E01.mkv") == files["Show/S01E01.mkv"]
        os.setxattr(m.mnt / "Show/S01E01.mkv", "user.cachefs.evict", b"1")
        assert m.residency("Show/S01E01.mkv")["uncached"] == 4
    # Whatever was queued has been written (or dropped) by now; nothing may remain.
    assert read_direct(m.mnt / "other.mkv") == files["other.mkv"]
    wait_until_on_disk(m, "other.mkv")
    assert m.residency("Show/S01E01.mkv") == {
        "chunks": 4,
        "chunk_size": MEDIA_CHUNK,
        "ram": 0,
        "ssd": 0,
        "hdd": 0,
        "uncached": 4,
    }
    assert chunk_files(m) == 2  # other.mkv's


def test_evict_of_a_directory_drops_every_file_below(
    origin: Path, mount_factory: MountFactory
) -> None:
    files = library(origin)
    m = mount_factory(origin)
    for rel in files:
        assert read_direct(m.mnt / rel) == files[rel]
        wait_until_on_disk(m, rel)
    os.setxattr(m.mnt / "Show", "user.cachefs.evict", b"1")
    for rel in files:
        residency = m.residency(rel)
        if rel.startswith("Show/"):
            assert residency["uncached"] == residency["chunks"], rel
        else:
            assert residency["uncached"] == 0, rel
    assert chunk_files(m) == 2  # other.mkv's two chunks
    for rel in files:  # and everything still reads right
        assert read_direct(m.mnt / rel) == files[rel]


def test_a_ram_pin_brings_the_cached_file_into_memory(
    origin: Path, mount_factory: MountFactory
) -> None:
    files = library(origin)
    m = mount_factory(origin)
    assert read_direct(m.mnt / "Show/S01E02.mkv") == files["Show/S01E02.mkv"]
    wait_until_on_disk(m, "Show/S01E02.mkv")
    mount_factory.unmount(m)
    m = mount_factory(origin)  # RAM is empty again; the chunks are on the HDD tier
    os.stat(m.mnt / "Show/S01E02.mkv")
    assert m.residency("Show/S01E02.mkv")["ram"] == 0
    os.setxattr(m.mnt / "Show/S01E02.mkv", "user.cachefs.pin", b"ram")
    assert m.residency("Show/S01E02.mkv")["ram"] == 4
    reads = m.stats()["origin_reads"]
    assert read_direct(m.mnt / "Show/S01E02.mkv") == files["Show/S01E02.mkv"]
    assert m.stats()["origin_reads"] == reads


def test_byte_counters_count_the_bytes_served(origin: Path, mount_factory: MountFactory) -> None:
    files = library(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "monitoring.stats_interval=1h"])
    assert read_direct(m.mnt / "other.mkv") == files["other.mkv"]  # both chunks now in RAM
    before = m.stats()["tier_bytes"].get("ram:media", 0)
    fd = os.open(m.mnt / "other.mkv", os.O_RDONLY | os.O_DIRECT)
    try:
        got = os.pread(fd, 4096, MEDIA_CHUNK)
    finally:
        os.close(fd)
    assert got == files["other.mkv"][MEDIA_CHUNK : MEDIA_CHUNK + 4096]
    assert m.stats()["tier_bytes"]["ram:media"] - before == 4096
