"""The read path without FUSE: chunking, single flight, what gets cached."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from cachefs.config import default_config
from cachefs.data.chunkcache import ChunkCache
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers.ram import RamTier
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats


@dataclass(eq=False)
class FakeSource:
    """An origin file in memory that counts fetches and can change under us."""

    data: bytes
    chunk_size: int = 1000
    delay: float = 0.0
    write_generation: int = 0
    fetches: list[int] = field(default_factory=list)
    changed: bool = False
    changes_seen: list[FileVersion] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    policy = default_config().content_types["user_data"]
    pin = None
    cacheable = True

    @property
    def version(self) -> FileVersion:
        return FileVersion(2, len(self.data), 3, 3)

    def fetch(self, key: ChunkKey) -> tuple[bytes, FileVersion]:
        time.sleep(self.delay)
        with self.lock:
            self.fetches.append(key.number)
        now = self.version._replace(ctime_ns=4) if self.changed else self.version
        return self.data[key.offset : key.offset + key.expected_length], now

    def origin_changed(self, version: FileVersion) -> None:
        self.changes_seen.append(version)


def new_cache(max_size: int = 1 << 20) -> ChunkCache:
    limiter = trio.CapacityLimiter(8)
    return ChunkCache(RamTier(max_size), {}, Stats(), limiter, limiter)


def test_concurrent_misses_share_one_fetch() -> None:
    source = FakeSource(bytes(range(256)) * 20, delay=0.05)
    cache = new_cache()
    results: list[bytes] = []

    async def reader() -> None:
        results.append(await cache.read(source, 100, 50))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(reader)

    trio.run(main)
    assert source.fetches == [0]
    assert results == [source.data[100:150]] * 10


def test_a_chunk_of_a_changed_file_is_returned_but_not_cached() -> None:
    source = FakeSource(b"x" * 5000, changed=True)
    cache = new_cache()
    assert trio.run(cache.read, source, 0, 10) == b"x" * 10
    assert len(cache.ram) == 0
    assert source.changes_seen == [source.version._replace(ctime_ns=4)]


def test_a_fetch_racing_a_write_is_not_cached() -> None:
    source = FakeSource(b"y" * 5000)
    cache = new_cache()

    def fetch_during_write(key: ChunkKey) -> tuple[bytes, FileVersion]:
        source.write_generation += 1  # a write lands while the chunk is read
        return b"y" * key.expected_length, source.version

    source.fetch = fetch_during_write  # type: ignore[method-assign]
    trio.run(cache.read, source, 0, 10)
    assert len(cache.ram) == 0


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 10_000),
    chunk=st.sampled_from([512, 1000, 4096]),
    reads=st.lists(st.tuples(st.integers(0, 11_000), st.integers(0, 5000)), max_size=20),
    ram=st.integers(0, 8000),
)
def test_reads_match_the_model(size: int, chunk: int, reads: list, ram: int) -> None:
    source = FakeSource(random.Random(size).randbytes(size), chunk_size=chunk)
    cache = new_cache(ram)

    async def main() -> None:
        for offset, length in reads:
            assert await cache.read(source, offset, length) == source.data[offset : offset + length]
            assert cache.ram.bytes <= ram

    trio.run(main)


def test_read_ahead_grows_while_the_reader_keeps_up_and_stops_on_a_seek() -> None:
    from cachefs.data import chunkcache
    from cachefs.engine.engine import Engine

    chunk = 256 * 1024  # a window of 16 chunks to start, 32 at most
    source = FakeSource(bytes(range(256)) * (chunk * 200 // 256), chunk_size=chunk, delay=0.002)
    limiter = trio.CapacityLimiter(8)
    engine = Engine(Stats())
    cache = ChunkCache(RamTier(1 << 30), {}, Stats(), limiter, limiter, spawn=engine.spawn)
    start = max(chunkcache.READ_AHEAD_MIN_CHUNKS, chunkcache.READ_AHEAD_BYTES // chunk)
    start = min(start, chunkcache.READ_AHEAD_MAX_CHUNKS)
    windows: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, cache.tasks())
            for n in range(120):  # faster than the filler: it keeps catching up
                await cache.read(source, n * chunk, chunk, sequential=n > 0)
                windows.append(cache._windows.get(source, start))
            stream = cache._streams.get(source)
            assert stream is not None
            await cache.read(source, 190 * chunk, chunk)  # a seek far ahead
            await trio.sleep(0.05)
            assert source not in cache._streams and source not in cache._windows
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert windows[0] == start
    assert max(windows) > start  # grew
    assert max(windows) <= chunkcache.READ_AHEAD_MAX_CHUNKS
    assert windows == sorted(windows)  # never shrank while sequential
    assert cache.stats.get("read_ahead_stopped_by_seek") == 1
