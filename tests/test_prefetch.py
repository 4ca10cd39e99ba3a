"""Prediction and prefetch through a real mount: the kernel's opens feed the predictor."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from .conftest import DEFAULT_TEST_OPTIONS, Mounted, MountFactory, read_direct

MiB = 1024 * 1024
HEAD = 8 * MiB


def residency(path: Path) -> dict[str, int]:
    return json.loads(os.getxattr(path, "user.cachefs.residency"))


def settle(mounted: Mounted) -> dict[str, Any]:
    """The mount's stats once the prefetcher has fetched something and has nothing queued."""
    deadline = time.monotonic() + 20
    stats = mounted.stats()
    while time.monotonic() < deadline:
        if stats["prefetch_queued"] == 0 and stats["prefetch_bytes"] > 0:
            break
        time.sleep(0.05)
        stats = mounted.stats()
    return stats


def test_opening_an_episode_prefetches_the_head_of_the_next(
    origin: Path, mount_factory: MountFactory
) -> None:
    show = origin / "TV" / "Show"
    show.mkdir(parents=True)
    rng = random.Random(1)
    episodes = []
    for n in range(1, 4):
        episode = show / f"Show S01E{n:02d}.mkv"
        episode.write_bytes(rng.randbytes(12 * MiB))
        episodes.append(episode.name)
    mounted = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "stats.backend=embedded"])
    mnt_show = mounted.mnt / "TV" / "Show"
    assert sorted(os.listdir(mnt_show)) == episodes  # a player lists the season first
    with open(mnt_show / episodes[0], "rb") as f:
        f.read(4096)
    stats = settle(mounted)
    second = residency(mnt_show / episodes[1])
    assert second["chunks"] - second["uncached"] == HEAD // second["chunk_size"]
    assert stats["prefetch_covered"] == 0
    assert (
        read_head(mnt_show / episodes[1], 4 * MiB) == (show / episodes[1]).read_bytes()[: 4 * MiB]
    )
    stats = mounted.stats()
    assert stats["prefetch_covered"] == 4 * MiB // second["chunk_size"]  # the start of playback
    assert stats["prefetch_used_bytes"] == 4 * MiB


def read_head(path: Path, size: int) -> bytes:
    """The first *size* bytes, past the kernel's page cache (cachefs answers)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def test_setfattr_prefetch_on_a_directory_warms_it(
    origin: Path, mount_factory: MountFactory
) -> None:
    album = origin / "Photos" / "2026"
    album.mkdir(parents=True)
    rng = random.Random(2)
    for n in range(12):
        (album / f"IMG_{n:04d}.jpg").write_bytes(rng.randbytes(300_000))
    mounted = mount_factory(
        origin, [*DEFAULT_TEST_OPTIONS, "stats.backend=embedded", "tiers.ram.max_size=64MiB"]
    )
    os.setxattr(mounted.mnt / "Photos" / "2026", "user.cachefs.prefetch", b"1")
    settle(mounted)
    reads = mounted.stats()["origin_reads"]
    for n in range(12):
        photo = mounted.mnt / "Photos" / "2026" / f"IMG_{n:04d}.jpg"
        assert residency(photo)["uncached"] == 0
        assert read_direct(photo) == (album / f"IMG_{n:04d}.jpg").read_bytes()
    assert mounted.stats()["origin_reads"] == reads  # every byte from the tiers
