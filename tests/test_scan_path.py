"""What a library scan makes predictable, and the first read of a file.

A READDIR follows nearly every OPENDIR, and a file opened for reading is read:
the listing starts at opendir and, for a file that is one chunk, its fill at
open, each overlapping the round trip until the request that needs it. A
miss the loaded disk indexes rule out goes to the origin without a worker
thread for the disk tiers. Nothing here may read anything twice at the
origin, nor answer from a listing or a chunk the origin no longer has.
"""

# The in-process fixtures come from test_operations.py; as parameters they shadow the import.
# ruff: noqa: F811

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from pyfuse3 import FUSEError

from cachefs.fuse.inodes import ROOT_INODE
from tests.conftest import MountFactory, read_direct
from tests.test_operations import (  # noqa: F401 - the fixtures among them
    CTX,
    Build,
    Kernel,
    build,
    kernel,
    lookup_path,
    origin,
    serving,
    stats_of,
)


def test_a_file_of_one_chunk_is_fetched_from_its_open(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build()
    notes = (origin / "notes.txt").read_bytes()

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "notes.txt")
            fh = (await parts.fs.open(inode, os.O_RDONLY, CTX)).fh
            await trio.testing.wait_all_tasks_blocked()
            # Its fill is under way (or done) before any read came.
            assert parts.cache.fills_in_flight() + stats_of(parts)["origin_reads"] == 1
            assert await parts.fs.read(fh, 3, 4096) == notes[3:]  # waits on that fill
            assert await parts.fs.read(fh, 0, 4096) == notes
            await parts.fs.release(fh)
            assert stats_of(parts)["origin_reads"] == 1
            # Opened again while the kernel may keep its pages: nothing is fetched.
            fh = (await parts.fs.open(inode, os.O_RDONLY, CTX)).fh
            await trio.testing.wait_all_tasks_blocked()
            assert parts.cache.fills_in_flight() == 0
            await parts.fs.release(fh)

    trio.run(main)


def test_a_file_of_several_chunks_is_not_fetched_before_it_is_read(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    """Its first read may be anywhere (a player looking for an index at the end)."""
    parts = build()

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "Movies/film.mkv")  # 3 chunks
            fh = (await parts.fs.open(inode, os.O_RDONLY, CTX)).fh
            await trio.testing.wait_all_tasks_blocked()
            assert parts.cache.fills_in_flight() == 0
            assert stats_of(parts)["origin_reads"] == 0
            await parts.fs.release(fh)

    trio.run(main)


def test_a_miss_with_the_indexes_loaded_is_counted_in_every_tier(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await parts.cache.indexes_loaded()
            inode = await lookup_path(parts, "Movies/film.mkv")
            fh = (await parts.fs.open(inode, os.O_RDONLY, CTX)).fh
            await parts.fs.read(fh, 0, 4096)
            await parts.fs.release(fh)

    trio.run(main)
    report = stats_of(parts)
    assert report["origin_reads"] == 1
    for tier in ("ssd", "hdd"):
        assert report["tiers"][tier]["misses"] == 1
        assert report["tier_misses"][f"{tier}:media"] == 1


async def readdir_names(parts: Any, fh: int, start: int = 0) -> list[bytes]:
    token: list[bytes] = []
    await parts.fs.readdir(fh, start, token)
    return sorted(token)


def test_the_listing_starts_at_opendir_and_is_read_once(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build(**{"metadata.watch": "inotify"})

    async def main() -> None:
        async with serving(parts):
            fh = await parts.fs.opendir(ROOT_INODE, CTX)
            await trio.testing.wait_all_tasks_blocked()
            assert stats_of(parts)["metadata_listings"] == 1  # before any readdir
            # A second handle of the same directory meanwhile: no second listing.
            other = await parts.fs.opendir(ROOT_INODE, CTX)
            assert await readdir_names(parts, fh) == [b"Movies", b"notes.txt"]
            assert await readdir_names(parts, other) == [b"Movies", b"notes.txt"]
            assert stats_of(parts)["metadata_listings"] == 1
            # A rewind (readdir from 0 again) after a change at the origin sees it.
            (origin / "new.nfo").write_bytes(b"new")
            assert await readdir_names(parts, fh) == [b"Movies", b"new.nfo", b"notes.txt"]
            await parts.fs.releasedir(fh)
            await parts.fs.releasedir(other)

    trio.run(main)


def test_concurrent_listings_of_one_directory_read_the_origin_once(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build(**{"metadata.watch": "inotify"})

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "Movies")
            names: list[list[bytes]] = []

            async def list_it() -> None:
                fh = await parts.fs.opendir(inode, CTX)
                names.append(await readdir_names(parts, fh))
                await parts.fs.releasedir(fh)

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(list_it)
            assert names == [[b"film.mkv"]] * 4
            assert stats_of(parts)["metadata_listings"] == 1

    trio.run(main)


def test_a_listing_that_fails_at_opendir_fails_the_readdir(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build(**{"metadata.watch": "inotify"})

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "Movies")
            (origin / "Movies" / "film.mkv").unlink()
            (origin / "Movies").rmdir()
            fh = await parts.fs.opendir(inode, CTX)
            with pytest.raises(FUSEError) as raised:
                await readdir_names(parts, fh)
            assert raised.value.errno == errno.ENOENT
            await parts.fs.releasedir(fh)

    trio.run(main)


def scan(root: Path) -> dict[str, bytes]:
    """What a media server's scan does: walk, lstat each entry, read each file's head."""
    heads: dict[str, bytes] = {}
    pending = [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                st = os.lstat(entry.path)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(Path(entry.path))
                elif stat.S_ISREG(st.st_mode):
                    with open(entry.path, "rb") as f:
                        heads[os.path.relpath(entry.path, root)] = f.read(4096)
    return heads


def test_a_cold_scan_through_the_mount_reads_each_directory_and_file_once(
    tmp_path: Path, mount_factory: MountFactory
) -> None:
    library = tmp_path / "library"
    for show in range(3):
        season = library / f"Show {show}" / "Season 01"
        season.mkdir(parents=True)
        for episode in range(5):
            (season / f"S01E{episode:02d}.nfo").write_bytes(os.urandom(3000 + episode))
            (season / f"S01E{episode:02d}-thumb.jpg").write_bytes(os.urandom(90_000))
    m = mount_factory(library)
    heads = scan(m.mnt)
    assert heads == scan(library)
    report = m.stats()
    assert report["origin_reads"] == 30  # every file's one chunk, once
    assert report["metadata_listings"] == 7  # the root, 3 shows, 3 seasons
    # A file changed at the origin since is read anew, whole.
    changed = library / "Show 1" / "Season 01" / "S01E02.nfo"
    changed.write_bytes(b"a new version")
    assert read_direct(m.mnt / "Show 1" / "Season 01" / "S01E02.nfo") == b"a new version"
