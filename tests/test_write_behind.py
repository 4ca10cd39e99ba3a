"""Write-behind (``mount.write_buffer``): write() returns once the bytes are queued.

Each test tries to break one promise of cachefs/fuse/writes.py: whatever must
see queued bytes sees them (reads, sizes, a later truncate or utime, an
O_TRUNC open), fsync() and close() report what the origin refused, and an
fsync()ed byte survives kill -9. The in-process tests slow every batch down,
so a queued write is still queued when the next request comes: without that
the local origin would often win the race and the test would pass by luck.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest
import trio

from cachefs.fuse import writes

from .conftest import DEFAULT_TEST_OPTIONS, MountFactory, tmpfs
from .test_operations import CTX, Build, build, lookup_path, origin, serving  # noqa: F401

SETATTR_FIELDS = ("uid", "gid", "mode", "size", "atime", "mtime", "ctime")
LANDING_DELAY = 0.3  # seconds each batch waits before it writes


@pytest.fixture
def slow_landing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every batch of queued writes reaches the origin LANDING_DELAY late; the sizes
    of the batches, as they land."""
    landed: list[int] = []
    real = writes.write_batch

    def late(batch: list[Any]) -> Any:
        time.sleep(LANDING_DELAY)
        landed.append(len(batch))
        return real(batch)

    monkeypatch.setattr(writes, "write_batch", late)
    return landed


async def open_rw(parts: Any, path: str, flags: int = os.O_RDWR) -> int:
    inode = await lookup_path(parts, path)
    return (await parts.fs.open(inode, flags, CTX)).fh


def test_a_stat_counts_queued_bytes_and_a_read_sees_them(
    build: Build,  # noqa: F811
    origin: Path,  # noqa: F811
    slow_landing: list[int],
) -> None:
    parts = build()
    notes = origin / "notes.txt"
    before = notes.read_bytes()

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            inode = await lookup_path(parts, "notes.txt")
            fh = await open_rw(parts, "notes.txt")
            assert await fs.write(fh, 1000, b"appended") == 8
            assert notes.read_bytes() == before  # queued, not landed
            assert (await fs.getattr(inode, CTX)).st_size == 1008  # the kernel keeps the size
            reader = await open_rw(parts, "notes.txt", os.O_RDONLY)
            data = await fs.read(reader, 0, 2000)
            assert data == before + bytes(1000 - len(before)) + b"appended"
            assert slow_landing == [1]  # the read waited for the batch
            await fs.release(reader)
            await fs.flush(fh)
            await fs.release(fh)

    trio.run(main)
    assert notes.read_bytes()[1000:] == b"appended"


def test_a_read_waits_for_a_slow_origin_but_not_for_a_hung_one(
    build: Build,  # noqa: F811
    origin: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two batches of 0.6 s each: the read waits 1.1 s in all, longer than
    origin.timeout (1 s), yet no single wait for a batch is that long. A batch
    that never lands makes the read fail with EIO after origin.timeout."""
    parts = build(**{"origin.timeout": "1s"})
    delay = [0.6]
    real = writes.write_batch

    def late(batch: list[Any]) -> Any:
        time.sleep(delay[0])
        return real(batch)

    monkeypatch.setattr(writes, "write_batch", late)

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            fh = await open_rw(parts, "notes.txt")
            reader = await open_rw(parts, "notes.txt", os.O_RDONLY)
            await fs.write(fh, 0, b"first ")
            await trio.sleep(0.1)  # the first batch is landing
            await fs.write(fh, 6, b"second")  # the second batch
            assert (await fs.read(reader, 0, 12)) == b"first second"
            delay[0] = 3.0  # a hang, as far as a reader can tell
            await fs.write(fh, 0, b"FIRST")
            with pytest.raises(pyfuse3.FUSEError) as failed:
                await fs.read(reader, 0, 12)
            assert failed.value.errno == errno.EIO
            await fs.release(reader)
            await fs.flush(fh)  # close() waits for it, however long
            await fs.release(fh)

    trio.run(main)
    assert (origin / "notes.txt").read_bytes().startswith(b"FIRST second")


def test_times_set_after_writes_stay_set(
    build: Build,  # noqa: F811
    origin: Path,  # noqa: F811
    slow_landing: list[int],
) -> None:
    """cp -p, rsync -t, tar: the data, then the times. A write landing after the
    utime would move the mtime to now."""
    parts = build()

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            inode = await lookup_path(parts, "notes.txt")
            fh = await open_rw(parts, "notes.txt")
            await fs.write(fh, 0, b"rewritten")
            attrs = pyfuse3.EntryAttributes()
            attrs.st_atime_ns = attrs.st_mtime_ns = 1_000_000_000_000_000_000
            fields: Any = SimpleNamespace(  # pyfuse3's SetattrFields cannot be built here
                **{f"update_{f}": f in ("atime", "mtime") for f in SETATTR_FIELDS}
            )
            await fs.setattr(inode, attrs, fields, fh, CTX)
            await fs.flush(fh)
            await fs.release(fh)

    trio.run(main)
    st = (origin / "notes.txt").stat()
    assert st.st_mtime_ns == 1_000_000_000_000_000_000
    assert (origin / "notes.txt").read_bytes().startswith(b"rewritten")


def test_a_truncating_open_comes_after_the_writes_queued_before_it(
    build: Build,  # noqa: F811
    origin: Path,  # noqa: F811
    slow_landing: list[int],
) -> None:
    parts = build()

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            first = await open_rw(parts, "notes.txt")
            await fs.write(first, 0, b"AAAAAAAA")
            second = await open_rw(parts, "notes.txt", os.O_WRONLY | os.O_TRUNC)
            await fs.write(second, 0, b"B")
            for fh in (second, first):
                await fs.flush(fh)
                await fs.release(fh)

    trio.run(main)
    assert (origin / "notes.txt").read_bytes() == b"B"


def test_contiguous_writes_land_in_few_batches_and_in_order(
    build: Build,  # noqa: F811
    origin: Path,  # noqa: F811
    slow_landing: list[int],
) -> None:
    parts = build()
    blocks = [os.urandom(4096) for _ in range(64)]

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            fh = await open_rw(parts, "notes.txt", os.O_WRONLY | os.O_TRUNC)
            for n, block in enumerate(blocks):
                await fs.write(fh, n * 4096, block)
            await fs.write(fh, 0, b"overwritten")  # after the first: must land after it
            await fs.fsync(fh, False)
            assert (origin / "notes.txt").read_bytes()[:11] == b"overwritten"
            await fs.release(fh)

    trio.run(main)
    expected = b"overwritten" + b"".join(blocks)[11:]
    assert (origin / "notes.txt").read_bytes() == expected
    assert sum(slow_landing) <= 3  # one merged write, then the overwrite


def test_the_queue_is_bounded(
    build: Build,  # noqa: F811
    origin: Path,  # noqa: F811
    slow_landing: list[int],
) -> None:
    parts = build(**{"mount.write_buffer": "64KiB"})
    most = 0

    async def main() -> None:
        nonlocal most
        async with serving(parts):
            fs = parts.fs
            fh = await open_rw(parts, "notes.txt")
            for n in range(48):  # 48 random 4 KiB writes: nothing merges
                await fs.write(fh, (n * 7919 % 48) * 8192, os.urandom(4096))
                most = max(most, fs.writes.queued_bytes())
            await fs.flush(fh)
            await fs.release(fh)

    trio.run(main)
    assert most <= 64 * 1024 + 4096 + writes.WRITE_OVERHEAD
    assert len(slow_landing) >= 3  # the writers waited for batches to land


def test_a_batch_is_bounded_so_a_slow_origin_shows_progress(
    build: Build,  # noqa: F811
    origin: Path,  # noqa: F811
    slow_landing: list[int],
) -> None:
    parts = build()
    block = os.urandom(writes.MERGE_LIMIT)  # too big to merge with its neighbour

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            fh = await open_rw(parts, "notes.txt", os.O_WRONLY | os.O_TRUNC)
            for n in range(12):
                await fs.write(fh, n * len(block), block)
            await fs.flush(fh)
            await fs.release(fh)

    trio.run(main)
    assert sum(slow_landing) == 12
    assert max(slow_landing) <= writes.BATCH_BYTES // len(block)
    assert (origin / "notes.txt").read_bytes() == block * 12


def test_a_sender_that_fails_unexpectedly_reports_eio_and_frees_its_room(
    build: Build,  # noqa: F811
    origin: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = build()
    real = writes.write_batch
    broken = [True]

    def bug(batch: list[Any]) -> Any:
        if broken[0]:
            raise RuntimeError("a bug in the sender")
        return real(batch)

    monkeypatch.setattr(writes, "write_batch", bug)

    async def main() -> None:
        async with serving(parts):
            fs = parts.fs
            fh = await open_rw(parts, "notes.txt")
            await fs.write(fh, 0, b"lost")
            with pytest.raises(pyfuse3.FUSEError) as failed:
                await fs.flush(fh)  # close() says so
            assert failed.value.errno == errno.EIO
            assert fs.writes.queued_bytes() == 0
            broken[0] = False
            await fs.write(fh, 0, b"kept")  # the next write goes through
            await fs.flush(fh)
            await fs.release(fh)

    trio.run(main)
    assert (origin / "notes.txt").read_bytes().startswith(b"kept")


# -- real mounts -------------------------------------------------------------------------


@pytest.fixture
def tiny_origin(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny", "1m") as path:
        yield path


def test_close_reports_bytes_the_origin_refused(
    tiny_origin: Path, mount_factory: MountFactory
) -> None:
    """A full origin: the ENOSPC of a queued write reaches write() or close(),
    never nobody."""
    m = mount_factory(tiny_origin)
    block = os.urandom(64 * 1024)
    with pytest.raises(OSError) as refused:
        fd = os.open(m.mnt / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for _ in range(64):  # 4 MiB into 1 MiB
                os.write(fd, block)
        finally:
            os.close(fd)
    assert refused.value.errno == errno.ENOSPC
    # what the origin holds is what the mount shows
    assert (m.mnt / "big.bin").stat().st_size == (tiny_origin / "big.bin").stat().st_size
    assert (m.mnt / "big.bin").read_bytes() == (tiny_origin / "big.bin").read_bytes()


def test_fsynced_bytes_survive_kill_9(origin: Path, mount_factory: MountFactory) -> None:  # noqa: F811
    m = mount_factory(origin, DEFAULT_TEST_OPTIONS)
    synced = os.urandom(256 * 1024)
    fd = os.open(m.mnt / "journal.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, synced)
        os.fsync(fd)
        for _ in range(64):
            os.write(fd, os.urandom(4096))  # queued, maybe lost: never fsynced
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)  # the daemon is gone: ENOTCONN, not a hang
    assert (origin / "journal.bin").read_bytes()[: len(synced)] == synced
