"""Walk-ahead: a client walking a tree finds the next listings made.

When a client lists a directory whose parent it listed moments before, the
mount lists what a top-down walk reaches next, in that order, at most
AHEAD_LIMIT directories ahead of the client, never while a reader's fill is
waiting for the origin, and forgets the walk when the client stops. The
client's listings are then answered from the cache, and a walk through the
mount sees exactly the origin's tree.
"""

# The in-process fixtures come from test_operations.py; as parameters they shadow the import.
# ruff: noqa: F811

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from cachefs.app import compose
from cachefs.engine import walkahead
from cachefs.engine.walkahead import AHEAD_LIMIT, FILES_AHEAD_LIMIT, WALK_IDLE_S
from tests.conftest import MountFactory
from tests.test_operations import (  # noqa: F401 - the fixtures among them
    Build,
    Kernel,
    build,
    kernel,
    list_dir,
    origin,
    serving,
    stats_of,
)


def library(origin: Path, shows: int, seasons: int, alone: bool = True) -> list[str]:
    """lib/<show>/<season>/ with a file in each season (*alone*: nothing else in the
    origin); the directories under lib/ in the order a top-down walk (os.walk's)
    reaches them."""
    if alone:
        shutil.rmtree(origin / "Movies")
        (origin / "notes.txt").unlink()
    for show in range(shows):
        for season in range(seasons):
            d = origin / "lib" / f"show{show:03d}" / f"season{season}"
            d.mkdir(parents=True)
            (d / "e01.nfo").write_bytes(b"<episode/>")
    order = []
    for top, _dirs, _ in os.walk(origin / "lib"):  # scandir order, as the mount lists
        if top != str(origin / "lib"):
            order.append(os.path.relpath(top, origin))
    return order


def stack_walk_order(root: Path) -> list[str]:
    """The directories below *root* in the order a walker that pushes each listing's
    subdirectories on a stack and pops them lists them (bench/workloads.py's scan)."""
    order, pending = [], [str(root)]
    while pending:
        top = pending.pop()
        if top != str(root):
            order.append(os.path.relpath(top, root.parent))
        with os.scandir(top) as entries:
            pending.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
    return order


def counts(parts: compose.Mount) -> tuple[int, int, int]:
    report = stats_of(parts)
    return report["walk_ahead_listings"], report["walk_ahead_used"], report["metadata_listings"]


def recorded(parts: compose.Mount) -> list[bytes]:
    """Wrap the walker's listing call: the directories it lists, in order."""
    walker, seen = parts.fs.walker, []
    listing = walker.list_dir
    assert listing is not None

    async def watched(dirpath: bytes) -> Any:
        seen.append(dirpath)
        return await listing(dirpath)

    walker.list_dir = watched
    return seen


def test_a_walk_is_listed_ahead_in_its_order_and_the_client_finds_it_cached(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    order = library(origin, shows=4, seasons=3)  # 16 directories under lib/
    parts = build()
    seen = recorded(parts)

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "")
            await list_dir(parts, "lib")  # the parent was listed just before: a walk
            await settled(parts)
            assert [p.decode() for p in seen] == order
            ahead, used, listings = counts(parts)
            assert (ahead, used) == (len(order), 0)
            for path in order:  # the client walks the same way: no listing of its own
                await list_dir(parts, path)
            assert counts(parts) == (len(order), len(order), listings)

    trio.run(main)


def test_a_lone_listing_starts_no_walk(build: Build, origin: Path, kernel: Kernel) -> None:
    library(origin, shows=3, seasons=2)
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "lib")  # its parent was not listed: not a walk
            await list_dir(parts, "lib")
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert counts(parts)[:2] == (0, 0)

    trio.run(main)


def test_the_walk_stays_within_its_limit_of_the_client(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    order = library(origin, shows=AHEAD_LIMIT + 20, seasons=1)
    parts = build()
    seen = recorded(parts)

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "")
            await list_dir(parts, "lib")
            await settled(parts)
            assert len(seen) == AHEAD_LIMIT
            # The client reaches the third directory listed ahead: the first three no
            # longer count (passed or skipped), so the walker goes three further.
            await list_dir(parts, order[2])
            await settled(parts)
            assert [p.decode() for p in seen] == order[: AHEAD_LIMIT + 3]

    trio.run(main)


def test_a_walk_the_client_left_is_forgotten(build: Build, origin: Path, kernel: Kernel) -> None:
    order = library(origin, shows=AHEAD_LIMIT + 20, seasons=1)
    parts = build()
    walker = parts.fs.walker
    now = [1000.0]
    walker.clock = lambda: now[0]
    seen = recorded(parts)

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "")
            await list_dir(parts, "lib")
            await settled(parts)
            assert len(seen) == AHEAD_LIMIT
            now[0] += WALK_IDLE_S + 1  # the client went quiet, then lists elsewhere
            await list_dir(parts, order[-1])
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert len(seen) == AHEAD_LIMIT and not walker._stack and not walker._ahead

    trio.run(main)


def test_no_walk_ahead_listing_starts_while_a_reader_waits_for_the_origin(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    order = library(origin, shows=3, seasons=2, alone=False)  # Movies/film.mkv is read
    parts = build()
    cache, release = parts.cache, trio.Event()
    from_origin = cache._from_origin
    seen = recorded(parts)

    async def held(source: Any, key: Any) -> Any:
        await release.wait()  # a slow origin read: the reader's fill stays in flight
        return await from_origin(source, key)

    cache._from_origin = held  # type: ignore[method-assign]

    async def read_film() -> None:
        from tests.test_operations import lookup_path, read_all

        inode = await lookup_path(parts, "Movies/film.mkv")
        await read_all(parts, inode, 4096)

    async def main() -> None:
        async with serving(parts), trio.open_nursery() as nursery:
            nursery.start_soon(read_film)
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert cache.foreground_fills() == 1
            await list_dir(parts, "")
            await list_dir(parts, "lib")
            await trio.sleep(0.2)  # the walker looks for a quiet moment meanwhile
            assert seen == []
            release.set()
            await settled(parts)
            # Each once (and Movies/ too when the walk, from where it went, goes there).
            assert len(seen) == len(set(seen)) and set(order) <= {p.decode() for p in seen}

    trio.run(main)


def test_a_client_that_takes_the_last_subdirectory_first_is_followed_that_way(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    library(origin, shows=AHEAD_LIMIT + 20, seasons=1)
    client_order = stack_walk_order(origin / "lib")
    parts = build()
    walker, seen = parts.fs.walker, recorded(parts)
    busy = walker.busy
    walker.busy = lambda: True  # nothing listed ahead until the client showed its way

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "")
            await list_dir(parts, "lib")
            await list_dir(parts, client_order[0])  # lib's last subdirectory
            walker.busy = busy
            await settled(parts)
            assert [p.decode() for p in seen] == client_order[1 : AHEAD_LIMIT + 1]

    trio.run(main)


def test_a_walk_longer_than_the_listings_remembered_keeps_answering(
    build: Build, origin: Path, kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walker remembers RECENT_LIMIT listings. A walk that comes back to its
    parent when the parent is the oldest one remembered must not lose it on the
    way (a KeyError there failed the client's readdir with EIO: a scan of a
    million-entry library died in metadata/people/)."""
    monkeypatch.setattr(walkahead, "RECENT_LIMIT", 4)
    library(origin, shows=4, seasons=1)
    parts = build()

    async def main() -> None:
        async with serving(parts):
            # "", lib, show000, its season, then lib's next shows: when show002 is
            # listed, lib is the oldest of the four remembered.
            for path in ("", "lib", "lib/show000", "lib/show000/season0"):
                await list_dir(parts, path)
            for show in ("lib/show001", "lib/show002", "lib/show003"):
                await list_dir(parts, show)

    trio.run(main)


def test_a_failing_guess_never_fails_the_request_it_watches(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    """Walk-ahead and prediction only guess: an exception in one is logged, and the
    readdir or open it was told of is answered."""
    library(origin, shows=2, seasons=1)
    parts = build()

    def broken(*args: object) -> None:
        raise KeyError("a bug in a guess")

    parts.fs.walker.client_listed = broken  # type: ignore[method-assign]
    parts.fs.walker.client_opened = broken  # type: ignore[method-assign]
    parts.fs.prefetcher.opened = broken  # type: ignore[method-assign]

    async def main() -> None:
        async with serving(parts):
            for path in ("", "lib", "lib/show000", "lib/show000/season0"):
                await list_dir(parts, path)
            assert await read_path(parts, "lib/show000/season0/e01.nfo") == b"<episode/>"

    trio.run(main)


async def read_path(parts: compose.Mount, path: str) -> bytes:
    from tests.test_operations import lookup_path, read_all

    return await read_all(parts, await lookup_path(parts, path), 1 << 20)


async def settled(parts: compose.Mount) -> None:
    walker, cache = parts.fs.walker, parts.cache
    with trio.fail_after(20):
        while (
            walker._next_file is not None
            or (walker._client_reads and walker._files and len(walker._unread) < FILES_AHEAD_LIMIT)
            or (walker._stack and len(walker._ahead) < AHEAD_LIMIT)
            or cache.fills_in_flight()
            or walker.in_flight
        ):
            await trio.sleep(0.01)


async def walk_to_the_season(parts: compose.Mount) -> None:
    """A walk down to lib/show000/season0, the client listing every level itself (the
    walker held back meanwhile, as though the origin were busy)."""
    walker = parts.fs.walker
    busy, walker.busy = walker.busy, lambda: True
    for path in ("", "lib", "lib/show000", "lib/show000/season0"):
        await list_dir(parts, path)
    walker.busy = busy


def test_a_walking_client_finds_the_next_small_file_of_the_directory_fetched(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    """Where the client listed a directory before the walker could, each open fetches
    the directory's next file of one chunk."""
    library(origin, shows=1, seasons=1)
    season = origin / "lib" / "show000" / "season0"
    for name in ("e02.nfo", "e03.nfo", "poster.jpg"):
        (season / name).write_bytes(name.encode() * 100)
    (season / "big.nfo").write_bytes(os.urandom(200 * 1024))  # more than one 64 KiB chunk
    # Prediction off: a guess (the natural-order sibling, big.nfo's head among them)
    # would add origin reads of its own, sooner or later as the machine's load has it.
    parts = build(**{"prediction.max_prefetch_size": "0"})

    async def main() -> None:
        async with serving(parts):
            await walk_to_the_season(parts)
            listing = parts.meta.listing(b"lib/show000/season0")
            assert listing is not None
            names = [n.decode() for n, _ in listing]
            expected_files = 0
            for name in (n for n in names if n != "big.nfo"):
                at = names.index(name)
                reads = stats_of(parts)["origin_reads"]
                data = await read_path(parts, f"lib/show000/season0/{name}")
                assert data == (season / name).read_bytes()
                await settled(parts)
                # Its own chunk was fetched ahead if it follows a small file; the next
                # file is fetched now if it is small (not big.nfo, not past the end).
                own = at == 0 or names[at - 1] == "big.nfo"
                ahead = at + 1 < len(names) and names[at + 1] != "big.nfo"
                expected_files += ahead
                assert stats_of(parts)["origin_reads"] - reads == own + ahead
            assert stats_of(parts)["walk_ahead_files"] == expected_files > 0

    trio.run(main)


def test_a_next_file_due_while_the_origin_is_offline_never_stalls_the_mount(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    """The next file falls due while the origin is offline: the walker drops it and the
    mount goes on answering (it once spun on it without yielding and froze the mount).
    Run in a thread, so that a frozen trio loop fails the test instead of hanging it."""
    library(origin, shows=1, seasons=1)
    season = origin / "lib" / "show000" / "season0"
    for name in ("e02.nfo", "e03.nfo"):
        (season / name).write_bytes(name.encode() * 100)
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await walk_to_the_season(parts)
            parts.fs.walker.online = lambda: False
            names = [n.decode() for n, _ in parts.meta.listing(b"lib/show000/season0") or []]
            await read_path(parts, f"lib/show000/season0/{names[0]}")  # the next one falls due
            for _ in range(5):
                await trio.sleep(0.01)  # the walker's turn comes and goes
            last = f"lib/show000/season0/{names[-1]}"
            assert await read_path(parts, last) == (origin / last).read_bytes()
            assert stats_of(parts)["walk_ahead_files"] == 0

    failures: list[BaseException] = []

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as e:  # handed to the test's thread
            failures.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the mount stopped answering"
    if failures:
        raise failures[0]


def test_the_small_files_of_directories_listed_ahead_are_fetched_within_a_limit(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    """Once the walking client opens a file (a scanner reading heads, not a `find`
    that only lists), within FILES_AHEAD_LIMIT of its opens."""
    library(origin, shows=1, seasons=1)
    season = origin / "lib" / "show000" / "season0"
    for n in range(FILES_AHEAD_LIMIT + 10):
        (season / f"still{n:03d}.jpg").write_bytes(b"%d" % n * 50)
    (season / "big.nfo").write_bytes(os.urandom(200 * 1024))  # more than one chunk
    # Prediction off: it would fetch the natural-order sibling of the client's first
    # file (still034 -> still035) before the walker gets to it, and count it its own.
    parts = build(**{"prediction.max_prefetch_size": "0"})

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "")
            await list_dir(parts, "lib")  # a walk: the walker lists the rest
            await settled(parts)
            assert stats_of(parts)["walk_ahead_listings"] == 2
            assert stats_of(parts)["walk_ahead_files"] == 0  # the client only lists, so far
            for path in ("lib/show000", "lib/show000/season0"):
                await list_dir(parts, path)
            listing = parts.meta.listing(b"lib/show000/season0")
            assert listing is not None
            small = [n.decode() for n, _ in listing if n != b"big.nfo"]
            for at, name in enumerate(small):  # in listing order, as a scanner
                data = await read_path(parts, f"lib/show000/season0/{name}")
                assert data == (season / name).read_bytes()
                await settled(parts)
                if at == 0:  # the first open starts the files; each open makes room
                    assert stats_of(parts)["walk_ahead_files"] == FILES_AHEAD_LIMIT
            # Every small file came once, the first the client's, the others fetched
            # ahead; big.nfo never.
            assert stats_of(parts)["walk_ahead_files"] == len(small) - 1
            assert stats_of(parts)["origin_reads"] == len(small)

    trio.run(main)


def test_a_client_that_does_not_walk_gets_no_file_fetched_ahead(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    library(origin, shows=1, seasons=1)
    season = origin / "lib" / "show000" / "season0"
    (season / "e02.nfo").write_bytes(b"two")
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "lib/show000/season0")  # one listing: no walk
            await read_path(parts, "lib/show000/season0/e01.nfo")
            await read_path(parts, "lib/show000/season0/e02.nfo")
            await settled(parts)
            assert stats_of(parts)["walk_ahead_files"] == 0
            assert stats_of(parts)["origin_reads"] == 2

    trio.run(main)


def test_walk_ahead_off_lists_only_what_clients_ask_for(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    library(origin, shows=3, seasons=2)
    parts = build(**{"metadata.walk_ahead": "false"})

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "")
            await list_dir(parts, "lib")
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert counts(parts)[:2] == (0, 0)
            assert "walk-ahead" not in parts.engine.started

    trio.run(main)


def test_a_walk_through_the_mount_sees_the_origin_tree(
    tmp_path: Path, mount_factory: MountFactory
) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    library(origin, shows=12, seasons=4, alone=False)
    mounted = mount_factory(origin)

    def tree(root: Path) -> list[tuple[str, list[str], list[tuple[str, int]]]]:
        found = []
        for top, dirs, files in os.walk(root):
            stats = [(f, os.lstat(os.path.join(top, f)).st_size) for f in sorted(files)]
            found.append((os.path.relpath(top, root), sorted(dirs), stats))
        return sorted(found)

    assert tree(mounted.mnt) == tree(origin)
    # A file made at the origin after the walk (and its walk-ahead) is seen by the next.
    (origin / "lib" / "show011" / "season3" / "e02.nfo").write_bytes(b"<new/>")
    assert tree(mounted.mnt) == tree(origin)
