"""Origin fds outlive every fetch through them; bytes of another version reach nobody else.

A released handle's fd number is handed by the kernel to the next file the
daemon opens, so a read-ahead still reading through it would read that file.
These tests hold a fetch inside its pread while the handle is released and
another file is opened, with real files and real descriptors.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import threading
from pathlib import Path

import pytest
import trio

from cachefs.config import default_config
from cachefs.data.chunkcache import ChunkCache
from cachefs.data.tiers.ram import RamTier
from cachefs.engine.engine import Engine
from cachefs.fuse.handles import FileState, OpenFile
from cachefs.origin.access import FileVersion, HandleReleased, OriginFile
from cachefs.stats.counters import Stats

from .test_cache import FakeSource

CHUNK = 4096
POLICY = dataclasses.replace(default_config().content_types["user_data"], chunk_size=CHUNK)


def handle_for(path: Path) -> OpenFile:
    fd = os.open(path, os.O_RDONLY)
    state = FileState(version=FileVersion.of(os.fstat(fd)))
    return OpenFile(OriginFile(fd), 1, state, POLICY, path.name)


def test_release_while_in_use_defers_the_close(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"f" * 10)
    file = OriginFile(os.open(path, os.O_RDONLY))
    with file.use() as fd:
        assert file.release() is None  # in use: not handed back for closing
        assert os.pread(fd, 10, 0) == b"f" * 10  # still this file's fd
    with pytest.raises(OSError) as closed:
        os.fstat(fd)
    assert closed.value.errno == errno.EBADF  # the last user closed it
    with pytest.raises(HandleReleased):
        file.use().__enter__()


def test_a_lazy_open_after_release_never_happens(tmp_path: Path) -> None:
    opened: list[int] = []

    def opener() -> int:
        opened.append(1)
        return os.open(tmp_path, os.O_RDONLY)

    file = OriginFile(None, opener)
    assert file.release() is None
    with pytest.raises(HandleReleased), file.use():
        pass
    assert opened == []


def test_closing_a_handle_during_its_read_ahead_never_serves_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(1)
    a_bytes, b_bytes = rng.randbytes(8 * CHUNK), rng.randbytes(8 * CHUNK)
    (tmp_path / "a").write_bytes(a_bytes)
    (tmp_path / "b").write_bytes(b_bytes)
    in_pread = threading.Event()
    go_on = threading.Event()
    real_pread = os.pread

    def gated_pread(fd: int, n: int, offset: int) -> bytes:
        if offset >= CHUNK:  # the read-ahead's chunks wait here, holding their fd
            in_pread.set()
            go_on.wait(10)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", gated_pread)
    limiter = trio.CapacityLimiter(8)
    engine = Engine(Stats())
    cache = ChunkCache(RamTier(1 << 20), {}, Stats(), limiter, limiter, spawn=engine.spawn)
    results: dict[str, bytes] = {}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, cache.tasks())
            first = handle_for(tmp_path / "a")
            assert await cache.read(first, 0, CHUNK, sequential=True) == a_bytes[:CHUNK]
            await trio.to_thread.run_sync(in_pread.wait, 5)
            # The application closes the file while chunk 1 is being read ahead...
            cache.stop_read_ahead(first)
            closable = first.file.release()  # as CacheFS.release does
            if closable is not None:
                os.close(closable)
            # ...and opens another one: it must not get the number still in use.
            other = handle_for(tmp_path / "b")
            # A second reader of a wants chunk 1 and waits on the fill in flight.
            second = handle_for(tmp_path / "a")

            async def read_second() -> None:
                results["a"] = await cache.read(second, CHUNK, CHUNK)

            nursery.start_soon(read_second)
            await trio.sleep(0.1)
            go_on.set()
            results["b"] = await cache.read(other, CHUNK, CHUNK)
            await trio.sleep(0.2)
            assert not first.file.opened  # closed by the fetch that used it last
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert results["a"] == a_bytes[CHUNK : 2 * CHUNK]
    assert results["b"] == b_bytes[CHUNK : 2 * CHUNK]


def test_bytes_of_another_version_are_not_handed_to_waiters() -> None:
    """The leader's fetch finds the file changed: its bytes go to its own reader
    only; a reader of another handle waiting on the fill reads for itself."""
    leader = FakeSource(b"L" * 5000, delay=0.2, changed=True)
    waiter = FakeSource(b"W" * 5000)
    limiter = trio.CapacityLimiter(8)
    cache = ChunkCache(RamTier(1 << 20), {}, Stats(), limiter, limiter)
    results: dict[str, bytes] = {}

    async def read(name: str, source: FakeSource, start: float) -> None:
        await trio.sleep(start)
        results[name] = await cache.read(source, 0, 100)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "leader", leader, 0)
            nursery.start_soon(read, "waiter", waiter, 0.05)

    trio.run(main)
    assert results == {"leader": b"L" * 100, "waiter": b"W" * 100}
    assert waiter.fetches == [0]  # it fetched through its own handle
