"""The FUSE handlers called in-process, beside the real-mount tests.

The mount is built by the composition root (cachefs.app.compose) over a real
origin directory with real disk tiers in a temporary directory, its Engine
runs, and the handlers are called directly under trio, as the kernel would
call them (as s3ql's t3_fs_api does). Only the kernel's side is stood in for:
pyfuse3's readdir_reply and the kernel cache invalidations, which need a
FUSE session, are recorded instead.
"""

from __future__ import annotations

import errno
import json
import os
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing
from pyfuse3 import FUSEError

from cachefs.app import compose
from cachefs.common import supervise
from cachefs.config import load_config
from cachefs.data.chunks import chunk_count
from cachefs.engine import prefetch
from cachefs.fuse.inodes import ROOT_INODE
from cachefs.meta.cache import MetadataCache
from cachefs.origin.access import Origin
from cachefs.stats.counters import EmbeddedBackend

MiB = 1024 * 1024


@dataclass(frozen=True)
class Ctx:
    """What the handlers read of pyfuse3.RequestContext (which Python cannot build)."""

    uid: int = os.geteuid()
    gid: int = os.getegid()
    pid: int = os.getpid()
    umask: int = 0o022


CTX: Any = Ctx()


@dataclass
class Kernel:
    """The kernel side: directory entries replied, cache invalidations and page-cache
    stores received."""

    entries: list[bytes]
    invalidated_entries: list[tuple[int, bytes]]
    invalidated_inodes: list[int]
    stored: list[tuple[int, int, int]] = field(default_factory=list)  # inode, offset, size


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    seen = Kernel([], [], [])

    def readdir_reply(token: list[bytes], name: bytes, attrs: Any, next_id: int) -> bool:
        token.append(name)
        seen.entries.append(name)
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", readdir_reply)
    monkeypatch.setattr(
        pyfuse3, "invalidate_entry", lambda p, n, *a, **k: seen.invalidated_entries.append((p, n))
    )
    monkeypatch.setattr(
        pyfuse3, "invalidate_inode", lambda i, *a, **k: seen.invalidated_inodes.append(i)
    )
    monkeypatch.setattr(
        pyfuse3, "notify_store", lambda i, offset, data: seen.stored.append((i, offset, len(data)))
    )
    return seen


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    (root / "Movies").mkdir(parents=True)
    (root / "Movies" / "film.mkv").write_bytes(os.urandom(3 * MiB))
    (root / "notes.txt").write_bytes(b"hello, cachefs\n")
    return root


Build = Callable[..., compose.Mount]


@pytest.fixture
def build(tmp_path: Path, origin: Path) -> Iterator[Build]:
    built: list[compose.Mount] = []

    def make(**overrides: str) -> compose.Mount:
        options = {
            "tiers.ram.max_size": "8MiB",
            "tiers.ssd.path": str(tmp_path / "cache" / "ssd"),
            "tiers.hdd.path": str(tmp_path / "cache" / "hdd"),
            "stats.backend": "embedded",
            **overrides,
        }
        cfg = load_config(None, options)
        state = compose.state_directory(cfg)
        parts = compose.build(
            Origin(str(origin)), cfg, lambda: EmbeddedBackend(state / "stats.json", 3600)
        )
        parts.open()
        parts.connect()
        built.append(parts)
        return parts

    yield make
    for parts in built:
        parts.close()
        parts.origin.close()


@asynccontextmanager
async def serving(parts: compose.Mount) -> AsyncIterator[compose.Mount]:
    """The mount's Engine runs (as under pyfuse3.main); stopped in order afterwards."""
    async with trio.open_nursery() as nursery:
        await nursery.start(parts.engine.run, parts.tasks())
        yield parts
        await parts.engine.stop(parts.shutdown_steps())


async def lookup_path(parts: compose.Mount, path: str) -> int:
    inode = ROOT_INODE
    for name in path.split("/"):
        inode = (await parts.fs.lookup(inode, name.encode(), CTX)).st_ino
    return inode


async def read_all(parts: compose.Mount, inode: int, size: int) -> bytes:
    fs = parts.fs
    fh = (await fs.open(inode, os.O_RDONLY, CTX)).fh
    try:
        return await fs.read(fh, 0, size)
    finally:
        await fs.release(fh)


def stats_of(parts: compose.Mount) -> dict[str, Any]:
    return parts.report()


def test_reads_come_from_the_origin_once_then_from_the_cache(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build()
    film = (origin / "Movies" / "film.mkv").read_bytes()

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "Movies/film.mkv")
            attrs = await parts.fs.getattr(inode, CTX)
            assert attrs.st_size == len(film)
            assert await read_all(parts, inode, len(film)) == film
            origin_reads = stats_of(parts)["origin_reads"]
            assert origin_reads > 0
            assert await read_all(parts, inode, len(film)) == film
            assert stats_of(parts)["origin_reads"] == origin_reads  # all from the tiers

    trio.run(main)


def test_readdir_lists_the_origin_directory(build: Build, kernel: Kernel) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            fh = await parts.fs.opendir(ROOT_INODE, CTX)
            token: list[bytes] = []
            await parts.fs.readdir(fh, 0, token)  # type: ignore[arg-type]
            await parts.fs.releasedir(fh)
            assert sorted(token) == [b"Movies", b"notes.txt"]

    trio.run(main)


def test_a_write_reaches_the_origin_and_is_read_back(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            info, entry = await fs.create(ROOT_INODE, b"new.bin", 0o644, os.O_RDWR, CTX)
            assert await fs.write(info.fh, 0, b"abc" * 1000) == 3000
            assert await fs.read(info.fh, 1000, 6) == b"bcabca"[:6]
            await fs.release(info.fh)
            assert (origin / "new.bin").read_bytes() == b"abc" * 1000
            assert await read_all(parts, entry.st_ino, 4000) == b"abc" * 1000

    trio.run(main)


def test_an_origin_change_is_seen_and_the_old_chunks_are_not_served(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build(**{"metadata.revalidate_after": "0s", "metadata.watch": "off"})
    notes = origin / "notes.txt"

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "notes.txt")
            assert await read_all(parts, inode, 100) == b"hello, cachefs\n"
            notes.write_bytes(b"changed at the origin, longer\n")
            assert (await parts.fs.getattr(inode, CTX)).st_size == notes.stat().st_size
            assert await read_all(parts, inode, 100) == b"changed at the origin, longer\n"

    trio.run(main)


def test_an_open_of_another_version_makes_the_kernel_drop_the_attributes_it_holds(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    """Close-to-open: the kernel may hold a file's attributes (its size!) for
    attr_timeout. An open that finds another version than the one those came from
    makes the kernel drop them; an open of the same version does not."""
    parts = build(**{"metadata.revalidate_after": "0s", "metadata.watch": "off"})

    async def reopen(inode: int) -> None:
        info = await parts.fs.open(inode, os.O_RDONLY, CTX)
        await parts.fs.release(info.fh)

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "notes.txt")  # the kernel holds its attributes
            await reopen(inode)
            assert inode not in kernel.invalidated_inodes
            (origin / "notes.txt").write_bytes(b"hello again, cachefs, longer\n")
            await reopen(inode)
            assert kernel.invalidated_inodes.count(inode) == 1
            await parts.fs.getattr(inode, CTX)  # the kernel holds the new version's now
            await reopen(inode)
            assert kernel.invalidated_inodes.count(inode) == 1

    trio.run(main)


def test_the_control_xattrs_report_residency_and_evict(build: Build, kernel: Kernel) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            inode = await lookup_path(parts, "Movies/film.mkv")
            await read_all(parts, inode, 3 * MiB)
            residency = json.loads(await fs.getxattr(inode, b"user.cachefs.residency", CTX))
            assert residency["ram"] == residency["chunks"] > 0
            assert residency["uncached"] == 0
            await fs.setxattr(inode, b"user.cachefs.evict", b"1", CTX)
            residency = json.loads(await fs.getxattr(inode, b"user.cachefs.residency", CTX))
            assert residency["uncached"] == residency["chunks"]
            stats = json.loads(await fs.getxattr(ROOT_INODE, b"user.cachefs.stats", CTX))
            assert stats["origin_state"] == "online"
            assert stats["stats_backend"] == "embedded"
            assert b"user.cachefs.stats" not in await fs.listxattr(ROOT_INODE, CTX)

    trio.run(main)


def test_offline_cached_reads_go_on_uncached_fail_and_changes_are_refused(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    parts = build()
    film = (origin / "Movies" / "film.mkv").read_bytes()

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            inode = await lookup_path(parts, "Movies/film.mkv")
            notes = await lookup_path(parts, "notes.txt")
            assert await read_all(parts, inode, len(film)) == film
            parts.monitor.mark_offline("test: origin unplugged")
            assert await read_all(parts, inode, len(film)) == film
            with pytest.raises(FUSEError) as uncached:
                await read_all(parts, notes, 100)
            assert uncached.value.errno == errno.EIO
            with pytest.raises(FUSEError) as refused:
                await fs.create(ROOT_INODE, b"nope", 0o644, os.O_RDWR, CTX)
            assert refused.value.errno == errno.EROFS

    trio.run(main)


def test_a_change_the_detector_reports_reaches_the_kernel(build: Build, kernel: Kernel) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "notes.txt")
            parts.fs.tell_kernel(b"", b"notes.txt", True)
            with trio.fail_after(5):
                while inode not in kernel.invalidated_inodes:
                    await trio.sleep(0.01)
            assert (ROOT_INODE, b"notes.txt") in kernel.invalidated_entries

    trio.run(main)


def test_a_failing_engine_task_is_restarted_while_reads_go_on(
    build: Build, origin: Path, kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The janitor's disk refuses (ENOSPC, then EROFS): counted, restarted, reads unharmed."""
    monkeypatch.setattr(supervise, "FIRST_RESTART", 0.01)
    parts = build(**{"monitoring.cleanup_interval": "1s"})  # its floor
    failures = [OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EROFS, "ro")]
    ssd = parts.disks["ssd"]
    real_sweep = ssd.sweep_expired

    def sweep() -> int:
        if failures:
            raise failures.pop(0)
        return real_sweep()

    monkeypatch.setattr(ssd, "sweep_expired", sweep)
    film = (origin / "Movies" / "film.mkv").read_bytes()

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "Movies/film.mkv")
            with trio.fail_after(10):
                while failures or parts.stats.get("background_failures:janitor") < 2:
                    assert await read_all(parts, inode, len(film)) == film
                    await trio.sleep(0.01)
            assert await read_all(parts, inode, len(film)) == film

    trio.run(main)
    assert parts.stats.get("background_failures:janitor") == 2


def test_the_stop_drains_stores_and_writes_the_metadata_snapshot(
    build: Build, kernel: Kernel
) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "Movies/film.mkv")
            await read_all(parts, inode, 3 * MiB)

    trio.run(main)
    # Every chunk read reached its disk tier before the tasks were cancelled,
    # and the metadata learned was written to the store.
    on_disk = sum(int(tier.stats_dict()["chunks"] or 0) for tier in parts.disks.values())
    chunk_size = parts.fs.resolver.policy("Movies/film.mkv").chunk_size
    assert on_disk == chunk_count(3 * MiB, chunk_size)
    assert parts.meta_store is not None
    restored = MetadataCache(3600, 10_000)
    parts.meta_store.load_into(restored)
    entry = restored.get(b"Movies/film.mkv")
    assert entry is not None and entry.st is not None and entry.st.st_size == 3 * MiB


def test_a_change_the_watch_has_queued_is_seen_by_the_very_next_request(
    build: Build, origin: Path, kernel: Kernel
) -> None:
    """No race between the watch task and the next lookup: the handler itself reads
    what inotify has queued before it trusts an entry confirmed under the watch."""
    parts = build(**{"metadata.watch": "inotify", "metadata.revalidate_after": "1h"})
    notes = origin / "notes.txt"

    async def main() -> None:
        async with serving(parts):
            inode = await lookup_path(parts, "notes.txt")
            assert parts.meta.get(b"notes.txt").watched  # type: ignore[union-attr]
            notes.write_bytes(b"longer than before, written at the origin\n")
            # No checkpoint between the change and the request: the watch task
            # has had no chance to run.
            assert (await parts.fs.getattr(inode, CTX)).st_size == notes.stat().st_size

    trio.run(main)


@pytest.fixture
def season(origin: Path) -> list[bytes]:
    show = origin / "TV" / "Show"
    show.mkdir(parents=True)
    rng = random.Random(5)
    names = []
    for n in range(1, 5):
        name = f"Show S01E{n:02d}.mkv"
        (show / name).write_bytes(rng.randbytes(10 * MiB))
        names.append(f"TV/Show/{name}".encode())
    return names


async def list_dir(parts: compose.Mount, path: str) -> None:
    inode = await lookup_path(parts, path)
    fh = await parts.fs.opendir(inode, CTX)
    await parts.fs.readdir(fh, 0, [])  # type: ignore[arg-type]
    await parts.fs.releasedir(fh)


async def prefetch_settled(parts: compose.Mount) -> None:
    with trio.fail_after(20):
        # settled: nothing queued, nothing being read, nothing on its way to a disk tier
        cache = parts.cache
        while parts.prefetcher._queue or cache.fills_in_flight() or cache.stores_pending():
            await trio.sleep(0.01)


def test_the_next_episode_is_prefetched_while_this_one_plays(
    build: Build, season: list[bytes], kernel: Kernel
) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "TV/Show")
            first = await lookup_path(parts, os.fsdecode(season[0]))
            fh = (await parts.fs.open(first, os.O_RDONLY, CTX)).fh
            await parts.fs.read(fh, 0, 4096)
            await prefetch_settled(parts)
            second = await lookup_path(parts, os.fsdecode(season[1]))
            residency = json.loads(await parts.fs.getxattr(second, b"user.cachefs.residency", CTX))
            head_chunks = prefetch.PREFETCH_HEAD // residency["chunk_size"]
            assert residency["chunks"] - residency["uncached"] == head_chunks  # the head only
            await parts.fs.release(fh)
            # The head went into the kernel's page cache, from its first chunk on, as far
            # as RAM held it (the kernel then reads it there; this stand-in does not).
            stored = [(offset, size) for inode, offset, size in kernel.stored if inode == second]
            chunk = residency["chunk_size"]
            assert stored == [(n * chunk, chunk) for n in range(len(stored))]
            assert stats_of(parts)["prefetch_kernel_bytes"] == len(stored) * chunk > 0
            origin_reads = stats_of(parts)["origin_reads"]
            fh = (await parts.fs.open(second, os.O_RDONLY, CTX)).fh  # keeps it: counted used
            assert (
                await parts.fs.read(fh, 0, 4 * MiB)
                == (Path(parts.origin.root) / os.fsdecode(season[1])).read_bytes()[: 4 * MiB]
            )
            await parts.fs.release(fh)
            report = stats_of(parts)
            assert report["origin_reads"] == origin_reads  # the first 4 MiB: all prefetched
            used = max(len(stored), 4 * MiB // chunk)
            assert report["prefetch_covered"] == used
            assert report["prefetch_used_bytes"] == used * chunk
            assert report["prefetch_bytes"] >= prefetch.PREFETCH_HEAD

    trio.run(main)


def test_a_prefetch_never_runs_beside_a_readers_fill(
    build: Build, season: list[bytes], kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader's miss finds at most the one prefetched chunk already being read."""
    parts = build()
    cache = parts.cache
    seen: list[tuple[int, int]] = []
    real_fill = cache._fill

    async def watched_fill(source: Any, key: Any) -> Any:
        seen.append((cache._prefetch_fills, cache.foreground_fills()))
        return await real_fill(source, key)

    monkeypatch.setattr(cache, "_fill", watched_fill)

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "TV/Show")
            for episode in season[:3]:  # each open predicts the next; each read competes
                inode = await lookup_path(parts, os.fsdecode(episode))
                fh = (await parts.fs.open(inode, os.O_RDONLY, CTX)).fh
                offset = 0
                while data := await parts.fs.read(fh, offset, 256 * 1024):
                    offset += len(data)
                await parts.fs.release(fh)
            await prefetch_settled(parts)

    trio.run(main)
    assert stats_of(parts)["prefetch_bytes"] > 0
    assert max(prefetching for prefetching, _ in seen) <= 1  # one chunk at a time
    # a prefetch starts only when no reader's fill is in flight (the fill being
    # recorded is counted when it is a reader's: so at most itself)
    assert all(fg <= 1 or pf == 0 for pf, fg in seen)


def test_a_cold_first_read_does_not_queue_behind_a_prefetch_sent_after_its_open(
    build: Build, season: list[bytes], kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between an open and its first READ no reader's fill is in flight yet; a prefetch
    chunk sent then would be ahead of that read at the origin. The clock stands still
    over that gap (a MockClock at rate 0), however long the other tasks take."""
    parts = build()
    cache = parts.cache
    reader_fills: list[int] = []  # prefetch fills in flight when each reader's fill began
    real_fill = cache._fill

    async def watched_fill(source: Any, key: Any) -> Any:
        if not isinstance(source, prefetch._PrefetchSource):
            reader_fills.append(cache._prefetch_fills)
        return await real_fill(source, key)

    monkeypatch.setattr(cache, "_fill", watched_fill)
    clock = trio.testing.MockClock(rate=1.0)

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "TV/Show")
            inode = await lookup_path(parts, os.fsdecode(season[0]))
            clock.rate = 0.0
            fh = (await parts.fs.open(inode, os.O_RDONLY, CTX)).fh  # predicts season[1]
            await trio.testing.wait_all_tasks_blocked()  # the prefetcher had every chance
            await parts.fs.read(fh, 0, 256 * 1024)
            clock.rate = 1.0
            await parts.fs.release(fh)
            await prefetch_settled(parts)

    trio.run(main, clock=clock)
    assert stats_of(parts)["prefetch_bytes"] > 0  # season[1]'s head, after the read
    assert reader_fills[0] == 0


def test_a_shuffled_library_is_not_prefetched(
    build: Build, season: list[bytes], kernel: Kernel
) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "TV/Show")
            for episode in [season[2], season[0], season[3], season[1]]:
                inode = await lookup_path(parts, os.fsdecode(episode))
                await read_all(parts, inode, 4096)
            await prefetch_settled(parts)

    trio.run(main)
    report = stats_of(parts)
    assert report["predictions"] <= 1  # the first guess, before anything was known


def test_setting_user_cachefs_prefetch_on_a_directory_warms_every_file(
    build: Build, season: list[bytes], kernel: Kernel
) -> None:
    parts = build(**{"tiers.ram.max_size": "64MiB"})

    async def main() -> None:
        async with serving(parts):
            show = await lookup_path(parts, "TV/Show")  # never listed: the xattr lists it
            await parts.fs.setxattr(show, b"user.cachefs.prefetch", b"1", CTX)
            await prefetch_settled(parts)
            for episode in season:
                inode = await lookup_path(parts, os.fsdecode(episode))
                residency = json.loads(
                    await parts.fs.getxattr(inode, b"user.cachefs.residency", CTX)
                )
                assert residency["uncached"] == 0, episode

    trio.run(main)


def test_the_model_is_kept_across_a_restart(
    build: Build, season: list[bytes], kernel: Kernel
) -> None:
    parts = build()

    async def play(mount: compose.Mount) -> None:
        async with serving(mount):
            await list_dir(mount, "TV/Show")
            for episode in season[:3]:
                inode = await lookup_path(mount, os.fsdecode(episode))
                await read_all(mount, inode, 4096)

    trio.run(play, parts)
    parts.close()
    again = build()

    async def ask() -> list[Any]:
        async with serving(again):
            with trio.fail_after(5):  # loaded by its task as the mount starts
                while not again.prefetcher.predictor.tracked_files():
                    await trio.sleep(0.01)
            await list_dir(again, "TV/Show")
            return again.prefetcher.predictor.predict(season[2], again.prefetcher._siblings)

    predicted = trio.run(ask)
    assert predicted and predicted[0].path == season[3]
    assert predicted[0].confidence > 0.5  # three in order were seen before the restart


def test_the_prefetch_budget_bounds_what_is_fetched_ahead(
    build: Build, season: list[bytes], kernel: Kernel
) -> None:
    parts = build(**{"prediction.max_prefetch_size": "2MiB"})

    async def main() -> None:
        async with serving(parts):
            await list_dir(parts, "TV/Show")
            first = await lookup_path(parts, os.fsdecode(season[0]))
            await read_all(parts, first, 4096)
            await prefetch_settled(parts)

    trio.run(main)
    report = stats_of(parts)
    assert report["prefetch_bytes"] == 2 * MiB  # two 1 MiB media chunks, then the budget
    assert report["prefetch_queued"] == 0
