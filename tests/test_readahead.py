"""Read-ahead turns (cachefs/data/readahead.py): concurrent streams on a one-head origin.

In process, as test_cache.py does: a real ChunkCache, the Engine's spawn for
the fillers, and an origin modelled as one disk head (a fetch that does not
continue the previous one pays a seek, one fetch at a time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from cachefs.config import default_config
from cachefs.config.model import TierConfig
from cachefs.data.chunkcache import ChunkCache
from cachefs.data.chunks import ChunkKey
from cachefs.data.readahead import Turns, TurnTimer
from cachefs.data.tiers.disk import DiskTier
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


def serving_cache(engine: Engine, cache: ChunkCache, body: Callable[[], Awaitable[None]]) -> None:
    """Run *body* with the cache's tasks beside it, then stop them."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, cache.tasks())
            await body()
            nursery.cancel_scope.cancel()

    trio.run(main)


def read_concurrently(
    engine: Engine,
    cache: ChunkCache,
    files: list[HeadFile],
    reader: Callable[[HeadFile], Awaitable[None]],
) -> None:
    """Run *reader* for every file at once, the cache's tasks beside them."""

    async def readers() -> None:
        async with trio.open_nursery() as nursery:
            for file in files:
                nursery.start_soon(reader, file)

    serving_cache(engine, cache, readers)


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

    read_concurrently(engine, cache, files, reader)
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
            assert waits_for_the_head(cache, queued)
            # A read of a third file goes to the origin at once.
            assert await cache.read(other, 2 * CHUNK, CHUNK) == other.data[2 * CHUNK : 3 * CHUNK]
            # The queued stream's reader waits for its span, until its handle goes.
            result: list[bytes] = []

            async def wait_for_turn() -> None:
                result.append(await cache.read(queued, 3 * CHUNK, CHUNK, True))

            nursery.start_soon(wait_for_turn)
            await trio.sleep(0.05)
            assert not result
            assert waits_for_the_head(cache, queued)
            cache.stop_read_ahead(queued)
            with trio.fail_after(5):
                while not result:
                    await trio.sleep(0.01)
            assert result == [queued.data[3 * CHUNK : 4 * CHUNK]]
            hung.set()
            nursery.cancel_scope.cancel()

    trio.run(main)


def waits_for_the_head(cache: ChunkCache, file: HeadFile) -> bool:
    """The stream's filler waits for its turn, or its span for the origin head."""
    stream = cache._streams[file]
    span = stream.span
    return stream.turn.queued or (span is not None and not span.reading.is_set())


def timed_turn(lead: float, per_chunk: float, chunks: int) -> TurnTimer:
    """A turn's timer: its second chunk *lead* seconds after its start, then one
    chunk every *per_chunk* seconds (its first chunk came from a cache at once)."""
    laps = [0.0, lead, *(lead + n * per_chunk for n in range(1, chunks - 1))]
    return TurnTimer(chunks, 0.0, laps[-1], laps=laps)


def measured(lead: float, per_chunk: float = 0.013) -> Turns:
    found = Turns()
    for n in range(2, 10):
        found.record(timed_turn(lead, per_chunk, n))
    return found


def test_a_turn_lasts_what_the_gap_budget_leaves_the_other_streams() -> None:
    assert Turns().turn_seconds(4) is None  # nothing measured yet
    assert not Turns().record(TurnTimer(1, 0.0, 0.01, laps=[0.01]))  # one chunk tells nothing
    slow, fast = measured(0.030), measured(0.010)
    assert slow.lead() == pytest.approx(0.030)
    # More streams: shorter turns, so that a reader waits for the others' turns and
    # its own turn's lead within the gap budget, and no shorter than that.
    lasting = [slow.turn_seconds(n) or 0.0 for n in (2, 4, 8, 16)]
    assert lasting == sorted(lasting, reverse=True) and lasting[0] > lasting[-1], lasting
    for n, turn in zip((2, 4, 8, 16), lasting, strict=True):
        assert (n - 1) * turn + 0.030 == pytest.approx(slow.gap_budget), (n, turn)
    # A slower lead (a costlier seek) leaves the others less.
    assert (slow.turn_seconds(4) or 0.0) < (fast.turn_seconds(4) or 0.0)
    assert slow.turn_seconds(1) == slow.gap_budget  # alone: it seeks nowhere in between
    # A stray turn (cached whole, or stalled) does not move the median.
    slow.record(timed_turn(0.0005, 0.0005, 3))
    slow.record(timed_turn(0.2, 0.013, 3))
    assert slow.lead() == pytest.approx(0.030)


def test_a_turn_stops_when_one_more_chunk_at_its_pace_would_overrun() -> None:
    clock = [0.0]
    timer = TurnTimer(clock=lambda: clock[0])
    timer.start()
    for now in (0.001, 0.034, 0.047, 0.060):  # cached, the seek, then 13 ms a chunk
        clock[0] = now
        timer.done()
    assert timer.one_more_fits(0.090)  # 0.060 + ~0.02 a chunk
    assert not timer.one_more_fits(0.075)


@dataclass(eq=False)
class GatedFile(HeadFile):
    """A HeadFile whose fetch of chunk *gate_at* waits for *gate*, and whose version
    moves on (a change at the origin) once chunk *changes_at* has been read."""

    gate_at: int = -1
    gate: threading.Event = field(default_factory=threading.Event)
    changes_at: int = -1
    changed: list[FileVersion] = field(default_factory=list)

    def fetch(self, key: ChunkKey) -> tuple[bytes, FileVersion]:
        if key.number == self.gate_at:
            self.gate.wait(10)
        data, version = super().fetch(key)
        if 0 <= self.changes_at <= key.number:
            version = version._replace(ctime_ns=4)
        return data, version

    def origin_changed(self, version: FileVersion) -> None:
        self.changed.append(version)


def counting_cache(engine: Engine) -> tuple[ChunkCache, list[str]]:
    """A cache whose origin calls are logged by the name of what they run."""
    calls: list[str] = []
    limiter = trio.CapacityLimiter(8)

    async def origin_call(fn: Callable[..., Any], *args: Any) -> Any:
        calls.append(fn.__name__)
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)

    cache = ChunkCache(
        RamTier(1 << 30), {}, Stats(), limiter, limiter, origin_call=origin_call, spawn=engine.spawn
    )
    return cache, calls


def test_a_turn_reads_its_span_in_one_origin_call() -> None:
    head = Head()
    files = [HeadFile(ino, head, chunks=24) for ino in (1, 2)]
    engine = Engine(Stats())
    cache, calls = counting_cache(engine)

    async def reader(file: HeadFile) -> None:
        for n in range(file.chunks):
            got = await cache.read(file, n * CHUNK, CHUNK, sequential=n > 0)
            assert got == file.data[n * CHUNK : (n + 1) * CHUNK]

    read_concurrently(engine, cache, files, reader)
    turns = cache.stats.get("read_ahead_turns")
    spans = calls.count("_read_span_blocking")
    assert turns > 0 and spans == turns  # one origin call per turn
    # ... which read several chunks: the whole span, not one chunk a call
    assert cache.stats.get("read_ahead_turn_chunks") >= 2 * spans
    assert len(calls) - spans < len(head.order) // 2  # most chunks came in spans


def test_while_a_tier_index_loads_read_ahead_takes_what_the_tier_holds(tmp_path: Path) -> None:
    """After a restart a tier answers by name before its index is loaded. Read-ahead
    must ask it first then, chunk by chunk, rather than read spans from the origin:
    those would fetch again what the tier holds (and skip a damaged chunk file the
    tier would have caught and counted)."""
    head = Head(seek=0.0, per_chunk=0.0)
    file = HeadFile(1, head, chunks=12)
    tier = DiskTier(
        TierConfig("hdd", tmp_path / "hdd", 1 << 30, "tinylfu", 3600.0, 0), b"n" * 32, Stats()
    )
    tier.open()
    tier.load_index()
    for n in range(file.chunks):
        key = ChunkKey(file.version, CHUNK, n)
        assert tier.put(key, file.data[key.offset : key.offset + CHUNK], None)
    tier.ready.clear()  # as while a restart's index load runs
    engine = Engine(Stats())
    limiter = trio.CapacityLimiter(8)
    cache = ChunkCache(
        RamTier(1 << 30), {"hdd": tier}, Stats(), limiter, limiter, spawn=engine.spawn
    )

    async def reader(file: HeadFile) -> None:
        for n in range(file.chunks):
            got = await cache.read(file, n * CHUNK, CHUNK, sequential=n > 0)
            assert got == file.data[n * CHUNK : (n + 1) * CHUNK]

    read_concurrently(engine, cache, [file], reader)
    assert head.order == []  # every chunk came from the tier
    tier.close()


async def span_from_chunk_2(cache: ChunkCache, file: HeadFile) -> Any:
    """Read chunks 0 and 1 in order; the read-ahead's first span, from chunk 2 on."""
    await cache.read(file, 0, CHUNK)
    await cache.read(file, CHUNK, CHUNK, True)
    with trio.fail_after(5):
        while cache._streams.get(file) is None or cache._streams[file].span is None:
            await trio.sleep(0.001)
    span = cache._streams[file].span
    assert span is not None and span.keys[0].number == 2
    return span


def test_the_reader_of_a_spans_first_chunk_does_not_wait_for_the_rest() -> None:
    head = Head(seek=0.0, per_chunk=0.0)
    file = GatedFile(1, head, chunks=16, gate_at=3)  # the span from chunk 2 hangs at 3
    engine = Engine(Stats())
    cache = new_cache(engine)

    async def body() -> None:
        span = await span_from_chunk_2(cache, file)
        assert len(span.keys) >= 2
        with trio.fail_after(5):
            got = await cache.read(file, 2 * CHUNK, CHUNK, True)
        assert got == file.data[2 * CHUNK : 3 * CHUNK]
        assert not file.gate.is_set() and (1, 3) not in head.order  # chunk 3 still hangs
        file.gate.set()
        with trio.fail_after(5):
            got = await cache.read(file, 3 * CHUNK, CHUNK, True)
        assert got == file.data[3 * CHUNK : 4 * CHUNK]

    serving_cache(engine, cache, body)


def test_a_file_changed_during_a_span_caches_nothing_read_after_the_change() -> None:
    head = Head(seek=0.0, per_chunk=0.0)
    file = GatedFile(1, head, chunks=16, gate_at=2, changes_at=3)
    engine = Engine(Stats())
    cache = new_cache(engine)

    async def body() -> None:
        span = await span_from_chunk_2(cache, file)
        assert span is not None and len(span.keys) >= 2  # chunks 2 and 3 at least
        file.gate.set()
        with trio.fail_after(5):  # every byte is right, read before or after
            for n in range(2, file.chunks):
                got = await cache.read(file, n * CHUNK, CHUNK, True)
                assert got == file.data[n * CHUNK : (n + 1) * CHUNK]

    serving_cache(engine, cache, body)
    held = {n for n in range(file.chunks) if ChunkKey(file.version, CHUNK, n) in cache.ram}
    assert held == {0, 1, 2}  # read before the change; nothing read after it
    assert file.changed and all(v != file.version for v in file.changed)
    assert cache.stats.get("origin_changed_during_read") >= 1


def test_a_reader_overtaking_its_filler_leaves_it_the_chunks_still_asked_for() -> None:
    """The kernel's read-ahead sends READs of consecutive chunks at once: a READ of
    chunk 3 may come before the one of chunk 2. The filler, waiting for its turn at
    2, goes on from 2 (no fill has started there), so both readers are served by
    its span, and neither reads for itself beside the turns."""
    head = Head(seek=0.0, per_chunk=0.0)
    hung = threading.Event()
    holder = HeadFile(1, head, chunks=40, block=hung)
    file = HeadFile(2, head, chunks=40)
    engine = Engine(Stats())
    cache, calls = counting_cache(engine)
    fetched: list[int] = []
    fetch = file.fetch

    def counted_fetch(key: ChunkKey) -> tuple[bytes, FileVersion]:
        fetched.append(key.number)
        return fetch(key)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, cache.tasks())
            hung.set()
            await cache.read(holder, 0, CHUNK)
            hung.clear()  # the holder's turn hangs: the other stream's filler queues
            nursery.start_soon(cache.read, holder, CHUNK, CHUNK, True)
            await cache.read(file, 0, CHUNK)
            await cache.read(file, CHUNK, CHUNK, True)  # its read-ahead from chunk 2 on
            with trio.fail_after(5):
                while not waits_for_the_head(cache, file):
                    await trio.sleep(0.001)
            file.fetch = counted_fetch  # type: ignore[method-assign]
            got: dict[int, bytes] = {}

            async def read(n: int) -> None:
                got[n] = await cache.read(file, n * CHUNK, CHUNK, True)

            nursery.start_soon(read, 3)
            await trio.sleep(0.01)
            nursery.start_soon(read, 2)
            await trio.sleep(0.05)
            hung.set()
            with trio.fail_after(5):
                while len(got) < 2:
                    await trio.sleep(0.01)
            assert got == {n: file.data[n * CHUNK : (n + 1) * CHUNK] for n in (2, 3)}
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert {2, 3} <= set(fetched)  # fetched from the origin once swapped in,
    assert "counted_fetch" not in calls  # in the filler's span: no fill of their own
