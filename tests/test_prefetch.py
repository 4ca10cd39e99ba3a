"""Prediction and prefetch through a real mount: the kernel's opens feed the predictor."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import logged_origin
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


# -- the prefetcher never delays a reader on a one-head origin -------------------------------


@dataclass
class OriginChunk:
    """The origin requests that fetched one chunk through one fd (the kernel cuts a
    chunk's pread in two or more), as the logged origin served them."""

    foreground: bool
    reads: list[logged_origin.Read] = field(default_factory=list)

    @property
    def arrived(self) -> float:
        return min(r.arrived for r in self.reads)

    @property
    def ended(self) -> float:
        return max(r.ended for r in self.reads)

    def delayed_by(self, other: OriginChunk) -> bool:
        """*other*, sent before this chunk, was being served while one of its requests
        waited for the head."""
        return other.arrived < self.arrived and any(
            p.started < q.started and p.ended > q.arrived for q in self.reads for p in other.reads
        )


def origin_chunks(log: logged_origin.Log, chunk_size: int) -> list[OriginChunk]:
    """The log's chunks; the reader opened its files with O_NOATIME, the prefetcher
    (which opens with O_RDONLY alone) did not: that is how they are told apart."""
    chunks: dict[tuple[int, int], OriginChunk] = {}
    for read in log.reads:
        flags = log.opens[read.fh][0]
        key = (read.fh, read.offset // chunk_size)
        chunk = chunks.setdefault(key, OriginChunk(bool(flags & os.O_NOATIME)))
        chunk.reads.append(read)
    return sorted(chunks.values(), key=lambda c: c.arrived)


def play(
    mnt_show: Path, episodes: list[str], expected: dict[str, bytes]
) -> list[tuple[float, float]]:
    """Watch the season in order as a player does, 256 KiB at a time with short
    pauses (the reader's read-ahead gets ahead, and the prefetcher has moments to
    run); the time each episode was open."""
    open_times = []
    for name in episodes:
        opened = time.monotonic()
        fd = os.open(mnt_show / name, os.O_RDONLY | os.O_NOATIME)
        try:
            got = []
            while piece := os.read(fd, 256 * 1024):
                got.append(piece)
                time.sleep(0.004)
        finally:
            os.close(fd)
        assert b"".join(got) == expected[name]
        open_times.append((opened, time.monotonic()))
    return open_times


def test_the_prefetcher_never_delays_a_reader_on_a_one_head_origin(
    tmp_path: Path, mount_factory: MountFactory
) -> None:
    """A reader watches a season in order over a slow origin that serves one request
    at a time (logged_origin); the prefetcher fetches each next episode's head.

    Checked from the origin's log, by order and overlap only: once a prefetch chunk
    has delayed a reader's chunk (was sent before it and served while it waited
    for the head), no other prefetch chunk is sent until that reader's chunk is
    served. That is the rule "a miss waits for at most the one prefetch chunk
    already being read": the prefetcher sends a chunk only while no reader's fill
    is in flight, and a delayed chunk's fill was in flight from before the
    delaying chunk ended until after it was served itself. A reader's chunk sent
    between the prefetcher's look and its request reaching the origin (a race the
    rule allows) was not delayed, and is not counted: the check cannot flake."""
    source = tmp_path / "source"
    show = source / "Show"
    show.mkdir(parents=True)
    rng = random.Random(3)
    expected = {f"Show S01E{n:02d}.mkv": rng.randbytes(12 * MiB) for n in range(1, 5)}
    for name, data in expected.items():
        (show / name).write_bytes(data)
    log_path = tmp_path / "origin.log"
    with logged_origin.serve(source, tmp_path / "origin", log_path, delay_ms=3.0) as origin:
        mounted = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "tiers.ram.max_size=128MiB"])
        mnt_show = mounted.mnt / "Show"
        episodes = sorted(os.listdir(mnt_show))  # a player lists the season first
        open_times = play(mnt_show, episodes, expected)
        stats = mounted.stats()
        mount_factory.unmount(mounted)
    chunks = origin_chunks(logged_origin.read_log(log_path), MiB)  # media chunks are 1 MiB
    prefetched = [c for c in chunks if not c.foreground]
    # the prefetcher had work while the reader read: it is what is checked
    assert stats["prefetch_covered"] > 0
    assert any(start < c.arrived < end for c in prefetched for start, end in open_times)
    for chunk in chunks:
        if not chunk.foreground:
            continue
        delaying = [p for p in prefetched if chunk.delayed_by(p)]
        assert len(delaying) <= 1
        sent_meanwhile = [
            p for p in prefetched if delaying and delaying[0].arrived < p.arrived < chunk.ended
        ]
        assert sent_meanwhile == [], "a prefetch chunk was sent while a reader waited for one"
