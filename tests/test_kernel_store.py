"""A prefetched head handed to the kernel's page cache, through a real mount.

The head of the episode a player opens next is stored in the kernel's page
cache (cachefs.fuse.kernelcache), so its reads never reach the daemon; and it
never outlives its version: a change at the origin, a truncation or a write
through the mount, each after the store, reads the file as it is now.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

from .conftest import DEFAULT_TEST_OPTIONS, Mounted, MountFactory

MiB = 1024 * 1024
SIZE = 3 * MiB  # under the prefetcher's 8 MiB head: the whole file is stored


def season(origin: Path, episodes: int = 3) -> list[Path]:
    show = origin / "TV" / "Show"
    show.mkdir(parents=True)
    rng = random.Random(7)
    paths = []
    for n in range(1, episodes + 1):
        path = show / f"Show S01E{n:02d}.mkv"
        path.write_bytes(rng.randbytes(SIZE))
        paths.append(path)
    return paths


def start_first(mounted: Mounted, origin: Path, paths: list[Path]) -> Path:
    """List the season and start its first episode, as a player; the second's path
    in the mount (the episode the prefetcher guesses)."""
    mnt_show = mounted.mnt / paths[0].parent.relative_to(origin)
    assert sorted(os.listdir(mnt_show)) == [p.name for p in paths]
    with open(mnt_show / paths[0].name, "rb") as f:
        f.read(4096)
    return mnt_show / paths[1].name


def stored_season(
    origin: Path, mount_factory: MountFactory, *options: str
) -> tuple[list[Path], Mounted, Path]:
    """A season on the origin, a mount (DEFAULT_TEST_OPTIONS and *options*), its first
    episode started (start_first) until the second's head is in the kernel's page
    cache: the episodes' origin paths, the mount, the second's path in it."""
    paths = season(origin)
    mounted = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, *options])
    second = start_first(mounted, origin, paths)
    assert wait_stored(mounted, SIZE)["prefetch_kernel_bytes"] == SIZE
    return paths, mounted, second


def wait_stored(mounted: Mounted, size: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    stats = mounted.stats()
    while stats["prefetch_kernel_bytes"] < size and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = mounted.stats()
    return stats


def read_all(path: Path) -> bytes:
    with open(path, "rb") as f:  # buffered: through the kernel's page cache
        return f.read()


def test_the_next_episode_is_read_from_the_kernels_page_cache(
    origin: Path, mount_factory: MountFactory
) -> None:
    paths, mounted, second = stored_season(origin, mount_factory)
    reads = mounted.stats()["fuse_reads"]
    assert read_all(second) == paths[1].read_bytes()
    stats = mounted.stats()
    assert stats["fuse_reads"] == reads  # no READ came to the daemon
    assert stats["prefetch_used_bytes"] == SIZE  # counted at the open that kept it


def test_a_stored_head_gives_way_to_a_change_at_the_origin(
    origin: Path, mount_factory: MountFactory
) -> None:
    paths, _, second = stored_season(origin, mount_factory)
    new = os.urandom(SIZE)  # same size; a new mtime and ctime
    paths[1].write_bytes(new)
    assert read_all(second) == new


def test_a_stored_head_gives_way_to_a_change_without_a_watch(
    origin: Path, mount_factory: MountFactory
) -> None:
    """No watch: the open's revalidation (revalidate_after=0 here) finds the new
    version, and its reply drops the kernel's pages."""
    paths, _, second = stored_season(
        origin, mount_factory, "metadata.watch=off", "metadata.revalidate_after=0s"
    )
    new = os.urandom(SIZE // 2)
    paths[1].write_bytes(new)
    assert read_all(second) == new


def test_a_stored_head_gives_way_to_another_file_renamed_over_it(
    origin: Path, mount_factory: MountFactory
) -> None:
    """The name now holds another file (another inode): its bytes, not the stored ones."""
    paths, _, second = stored_season(origin, mount_factory, "metadata.watch=off")
    replacement = origin / "replacement.tmp"
    new = os.urandom(SIZE)
    replacement.write_bytes(new)
    os.rename(replacement, paths[1])
    time.sleep(1.2)  # revalidate_after (1 s): the mount asks the origin again
    assert read_all(second) == new


def test_a_truncation_through_the_mount_after_a_store_is_read_as_truncated(
    origin: Path, mount_factory: MountFactory
) -> None:
    paths, _, second = stored_season(origin, mount_factory)
    before = paths[1].read_bytes()
    os.truncate(second, 1000)
    assert paths[1].read_bytes() == before[:1000]  # the origin is truncated ...
    assert read_all(second) == before[:1000]  # ... and the mount reads it so
    assert os.stat(second).st_size == 1000


def test_a_write_through_the_mount_after_a_store_is_read_back(
    origin: Path, mount_factory: MountFactory
) -> None:
    paths, _, second = stored_season(origin, mount_factory)
    with open(second, "r+b") as f:
        f.seek(MiB)
        f.write(b"written through the mount")
    expected = paths[1].read_bytes()
    assert expected[MiB : MiB + 25] == b"written through the mount"
    assert read_all(second) == expected


def test_no_head_is_stored_with_the_writeback_cache(
    origin: Path, mount_factory: MountFactory
) -> None:
    paths = season(origin)
    mounted = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "mount.writeback_cache=true"])
    second = start_first(mounted, origin, paths)
    deadline = time.monotonic() + 20
    while mounted.stats()["prefetch_bytes"] < SIZE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mounted.stats()["prefetch_bytes"] >= SIZE  # the head was prefetched ...
    assert mounted.stats()["prefetch_kernel_bytes"] == 0  # ... and kept to the daemon
    assert read_all(second) == paths[1].read_bytes()
