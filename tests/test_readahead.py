"""Read-ahead turns (cachefs/data/readahead.py): concurrent streams on a one-head origin.

In process, as test_cache.py does: a real ChunkCache, the Engine's spawn for
the fillers, and an origin modelled as one disk head (a fetch that does not
continue the previous one pays a seek, one fetch at a time).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest
import trio

from cachefs.config import default_config
from cachefs.data.chunkcache import ChunkCache
from cachefs.data.chunks import ChunkKey
from cachefs.data.readahead import Turns, TurnTimer
from cachefs.data.tiers.ram import RamTier
from cachefs.engine.engine import Engine
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats

CHUNK = 64 * 1024


@dataclass
class Head:
    """One disk head shared by every file: one request at a time, a seek between files."""

    seek: float = 0.004
    per_chunk: float = 0.001
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: tuple[int, int] | None = None
    seeks: int = 0
    order: list[tuple[int, int]] = field(default_factory=list)


@dataclass(eq=False)
class HeadFile:
    ino: int
    head: Head
    chunks: int
    block: threading.Event | None = None  # set: fetches go on; clear: they wait
    chunk_size: int = CHUNK
    write_generation: int = 0
    policy = default_config().content_types["media"]
    pin = None
    cacheable = True

    def __post_init__(self) -> None:
        pattern = bytes((self.ino * 7 + i) % 251 for i in range(251))
        self.data = (pattern * (self.chunks * CHUNK // 251 + 1))[: self.chunks * CHUNK]

    @property
    def version(self) -> FileVersion:
        return FileVersion(self.ino, self.chunks * CHUNK, 3, 3)

    def fetch(self, key: ChunkKey) -> tuple[bytes, FileVersion]:
        if self.block is not None:
            self.block.wait(10)
        head = self.head
        with head.lock:
            if head.last != (self.ino, key.number - 1):
                head.seeks += 1
                time.sleep(head.seek)
            time.sleep(head.per_chunk)
            head.last = (self.ino, key.number)
            head.order.append(head.last)
        return self.data[key.offset : key.offset + key.expected_length], self.version

    def origin_changed(self, version: FileVersion) -> None:
        raise AssertionError("the file never changes")


def new_cache(engine: Engine) -> ChunkCache:
    limiter = trio.CapacityLimiter(8)
    return ChunkCache(RamTier(1 << 30), {}, Stats(), limiter, limiter, spawn=engine.spawn)


def test_concurrent_streams_take_turns_a_span_per_seek() -> None:
    head = Head()
    files = [HeadFile(ino, head, chunks=48) for ino in range(1, 5)]
    engine = Engine(Stats())
    cache = new_cache(engine)
    got: dict[int, bytes] = {}

    async def reader(file: HeadFile) -> None:
        pieces = []
        for n in range(file.chunks):
            pieces.append(await cache.read(file, n * CHUNK, CHUNK, sequential=n > 0))
        got[file.ino] = b"".join(pieces)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, cache.tasks())
            async with trio.open_nursery() as readers:
                for file in files:
                    readers.start_soon(reader, file)
            nursery.cancel_scope.cancel()

    trio.run(main)
    for file in files:
        assert got[file.ino] == file.data  # never a wrong byte
    fetched = len(head.order)
    assert fetched == sum(f.chunks for f in files)  # each chunk once
    # Interleaved one chunk at a time, nearly every fetch would seek; in turns
    # a seek brings a span of several chunks.
    assert head.seeks * 4 <= fetched, (head.seeks, fetched)
    assert cache.stats.get("read_ahead_turns") > 0
    assert cache.stats.get("read_ahead_turn_chunks") > fetched // 2
    # Fair: while all four read, no stream's run of chunks at the head is
    # followed by another run of its own before every other stream had one
    # (from the third chunk on: the first two each reader fetches itself, as
    # its read-ahead starts with its second read).
    runs: list[int] = []
    for ino, number in head.order:
        if number < 2:
            continue
        if not runs or runs[-1] != ino:
            runs.append(ino)
    finished = {ino: max(i for i, r in enumerate(runs) if r == ino) for ino in {1, 2, 3, 4}}
    everyone = min(finished.values())
    for i, ino in enumerate(runs[:everyone]):
        nxt = [j for j in range(i + 1, len(runs)) if runs[j] == ino]
        if nxt and nxt[0] <= everyone:
            assert len(set(runs[i + 1 : nxt[0]])) == 3, runs


def test_a_foreground_fill_never_waits_for_a_turn() -> None:
    """A turn whose fetch hangs holds the origin for read-ahead only: another
    file's read (not sequential: no read-ahead) is fetched meanwhile, and a
    reader waiting for its stream's queued turn is released when its handle is."""
    head = Head(seek=0.0, per_chunk=0.0)
    hung = threading.Event()
    holder = HeadFile(1, head, chunks=40, block=hung)
    queued = HeadFile(2, head, chunks=40)
    other = HeadFile(3, head, chunks=4)
    engine = Engine(Stats())
    cache = new_cache(engine)
    cache.turns.gap_budget = 60.0  # a waiting reader goes when its stream stops, not later

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, cache.tasks())
            hung.set()
            await cache.read(holder, 0, CHUNK)
            hung.clear()  # from now on the holder's fetches hang until set
            nursery.start_soon(cache.read, holder, CHUNK, CHUNK, True)  # starts its turn
            await trio.sleep(0.05)
            assert holder in cache._streams
            await cache.read(queued, 0, CHUNK)
            await cache.read(queued, CHUNK, CHUNK, True)  # its filler queues behind
            await trio.sleep(0.05)
            assert cache._streams[queued].turn.queued
            # A read of a third file goes to the origin at once.
            assert await cache.read(other, 2 * CHUNK, CHUNK) == other.data[2 * CHUNK : 3 * CHUNK]
            # The queued stream's reader waits for its turn, until its handle goes.
            result: list[bytes] = []

            async def wait_for_turn() -> None:
                result.append(await cache.read(queued, 5 * CHUNK, CHUNK, True))

            nursery.start_soon(wait_for_turn)
            await trio.sleep(0.05)
            assert not result
            assert cache._streams[queued].turn.queued
            cache.stop_read_ahead(queued)
            with trio.fail_after(5):
                while not result:
                    await trio.sleep(0.01)
            assert result == [queued.data[5 * CHUNK : 6 * CHUNK]]
            hung.set()
            nursery.cancel_scope.cancel()

    trio.run(main)


def measured(seek: float, per_chunk: float) -> Turns:
    found = Turns()
    for n in range(2, 10):  # turns of 2 to 9 chunks, one seek each
        found.record(TurnTimer(n, 0.0, seek + n * per_chunk), CHUNK)
    return found


def test_a_turn_lasts_by_the_seek_cost_and_the_number_of_streams() -> None:
    assert Turns().turn_seconds(CHUNK, 4) is None  # nothing measured yet
    slow_seek, fast_seek = measured(0.008, 0.013), measured(0.0005, 0.013)
    seek = slow_seek.seek_cost()
    assert seek == pytest.approx(0.008)
    assert slow_seek.chunk_seconds(CHUNK) == pytest.approx(0.013)
    # A costlier seek: longer turns, so it is paid less often.
    slow_one, fast_one = slow_seek.turn_seconds(CHUNK, 1), fast_seek.turn_seconds(CHUNK, 1)
    assert slow_one is not None and fast_one is not None and slow_one > fast_one
    # More streams: shorter turns, so the others' turns fit the gap budget.
    lasting = [slow_seek.turn_seconds(CHUNK, n) or 0.0 for n in (2, 4, 8, 16)]
    assert lasting == sorted(lasting, reverse=True) and lasting[0] > lasting[-1], lasting
    chunk = slow_seek.chunk_seconds(CHUNK)
    for n, turn in zip((2, 4, 8, 16), lasting, strict=True):
        assert (n - 1) * turn + seek + chunk <= slow_seek.gap_budget + 1e-9, (n, turn)
    # Turns all of one length cannot tell the seek from the chunks: not measured.
    same = Turns()
    for _ in range(5):
        same.record(TurnTimer(3, 0.0, 0.047), CHUNK)
    assert same.seek_cost() is None and same.measuring_span() in (2, 4)
