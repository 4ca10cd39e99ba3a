"""The read path: byte ranges → chunks → tiers, with one fill per chunk.

A read is cut into chunks of the file's content-type chunk size. Each chunk is
looked up in the RAM tier, then the disk tiers (SSD, HDD), then fetched from
the origin. Concurrent misses on the same chunk share one fill (single flight).
A chunk fetched from the origin is returned at once and written to its disk
tier in the background; a full write queue skips caching rather than slow the
reader.

A little over 500 lines: the single flight, the stores, the read-ahead and
the prefetch hooks share the in-flight table and one read loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import trio

from cachefs.common.supervise import Task
from cachefs.config import ContentTypeConfig
from cachefs.data.accesslog import AccessLog
from cachefs.data.chunks import ChunkKey, chunk_count, chunk_range, file_chunk_keys
from cachefs.data.readahead import FIRST_SPAN, Turn, Turns, TurnTimer
from cachefs.data.tiers.disk import DiskTier
from cachefs.data.tiers.ram import RamTier
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats

log = logging.getLogger(__name__)

T = TypeVar("T")
OriginCall = Callable[..., Awaitable[Any]]

# Chunks waiting to be written to a disk tier. Mostly the same bytes objects
# the RAM tier holds; those RAM has already evicted are extra memory, so the
# queue stays short (fillers wait up to STORE_WAIT for room).
STORE_QUEUE = 64
STORE_WORKERS = 2
STORE_WAIT = 0.25  # seconds a filler may wait for room in the store queue
# A sequential reader gets this much read ahead (in whole chunks, at most 8).
# A sequential reader's read-ahead starts at READ_AHEAD_BYTES and doubles each time
# the reader catches up with it (it waited for a chunk the filler had not reached),
# up to READ_AHEAD_MAX_BYTES; a seek far from it stops it and starts it small again.
READ_AHEAD_BYTES = 4 * 1024 * 1024
READ_AHEAD_MAX_BYTES = 32 * 1024 * 1024
READ_AHEAD_MIN_CHUNKS = 2
READ_AHEAD_MAX_CHUNKS = 32
ORIGIN = "origin"  # where a chunk that no tier held came from
PREFETCHED_REMEMBERED = 65_536  # prefetched chunks watched for a later read (oldest go first)
# A prefetched chunk nobody read within this long counts as wasted, no longer as
# "ahead": the prefetch budget (prediction.max_prefetch_size) is for what may still be read.
PREFETCH_AHEAD_SECONDS = 600.0


class ChunkSource(Protocol):
    """An open origin file the cache can fetch chunks of (hashed by identity)."""

    @property
    def version(self) -> FileVersion: ...

    @property
    def policy(self) -> ContentTypeConfig: ...

    @property
    def chunk_size(self) -> int: ...

    @property
    def write_generation(self) -> int: ...

    @property
    def pin(self) -> str | None: ...

    @property
    def cacheable(self) -> bool:
        """False while the file is being written: what is read goes to the reader only."""
        ...

    def fetch(self, key: ChunkKey) -> tuple[bytes, FileVersion]:
        """Blocking: read a chunk from the origin.

        Returns the bytes and the version the origin file had once they were
        read. Only when that is the key's version are the bytes that chunk:
        ctime moves on with every change, so no change can have happened
        during the read.
        """
        ...

    def origin_changed(self, version: FileVersion) -> None:
        """A fetch found the origin file at another *version* than the source's."""
        ...


@dataclass
class _Flight:
    """One fill of one chunk; readers of the same chunk wait for it.

    ``data`` stays None when the fill produced nothing the waiters may take
    (cancelled, or bytes of another version): they then try again themselves.
    """

    leader: ChunkSource
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    tier: str = ORIGIN  # where data came from
    error: OSError | None = None


@dataclass
class _ReadAhead:
    """One sequential reader's read-ahead: fill chunks [next, until)."""

    next: int
    until: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    turn: Turn = field(default_factory=Turn)  # its place among the streams' origin turns
    span: _Span | None = None  # the span its turn reads (or read last)

    def stop(self) -> None:
        """Stop the filler, and its span's thread at its next chunk."""
        self.scope.cancel()
        if self.span is not None:
            self.span.stop.set()


_Landed = tuple[ChunkKey, bytes, FileVersion]  # a chunk of a span, as read, and its version


@dataclass(eq=False)
class _Span:
    """The chunks one read-ahead turn reads from the origin, in one worker-thread call.

    The trio thread owns ``flights`` and ``error``; the worker thread reads the
    rest, writes ``timer`` (read back once the call has returned) and is told to
    stop through ``stop``. ``reading`` is set once the thread has the origin head.
    """

    keys: list[ChunkKey]
    flights: dict[ChunkKey, _Flight]
    before: threading.Event | None  # set when the span before this one stops reading
    head: threading.Event  # set by this span's thread when it stops reading
    seconds: float | None  # the turn's length; None: a measuring turn of len(keys)
    generation: int  # the source's write generation when the span was claimed
    stop: threading.Event = field(default_factory=threading.Event)
    reading: trio.Event = field(default_factory=trio.Event)
    timer: TurnTimer = field(default_factory=TurnTimer)
    error: OSError | None = None


def _offer(send: trio.MemorySendChannel[_Landed], span: _Span, item: _Landed | None) -> None:
    """On the trio thread (run_sync_soon, so it must not raise): a chunk for the span's
    reader, or (None) the news that the thread has the head."""
    if item is None:
        span.reading.set()
        return
    with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
        send.send_nowait(item)


def _read_span_blocking(
    source: ChunkSource, span: _Span, landed: Callable[[_Landed | None], None]
) -> None:
    """Blocking: wait for the origin head (the span before this one stops reading),
    then read the span's chunks back to back, handing each over as it lands.

    Stops early when told to, when the turn's time is up (the origin slower than
    measured), or when the file changed (a fetch saw another version)."""
    try:
        if span.before is not None:
            while not span.before.wait(0.05):
                if span.stop.is_set():
                    return
        landed(None)
        timer = span.timer
        timer.start()
        for n, key in enumerate(span.keys):
            if span.stop.is_set():
                return
            seconds = span.seconds
            if seconds is not None and n >= FIRST_SPAN and not timer.one_more_fits(seconds):
                return  # the turn's time is up: the next stream's turn
            data, version = source.fetch(key)
            timer.done()
            landed((key, data, version))
            if version != key.version:
                return
    finally:
        span.head.set()  # the next span's thread may read now


@dataclass(frozen=True)
class _Store:
    key: ChunkKey
    data: bytes
    policy: ContentTypeConfig
    pin: str | None
    forgotten: int  # how often its version had been forgotten when it was queued


class Spawn(Protocol):
    """Starts a one-off background job (the Engine's spawn); False if it was dropped."""

    def __call__(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool: ...


def _no_background(name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
    return False


class ChunkCache:
    def __init__(
        self,
        ram: RamTier,
        disks: Mapping[str, DiskTier],
        stats: Stats,
        origin_limiter: trio.CapacityLimiter,
        disk_limiter: trio.CapacityLimiter,
        origin_call: OriginCall | None = None,
        spawn: Spawn = _no_background,
        access_log: AccessLog | None = None,
    ) -> None:
        self.ram = ram
        # stats.access_log: each access of a chunk (RamTier's rule), with where it was found
        self.access_log = access_log
        self.disks = dict(disks)  # fastest first
        ram.below = tuple(self.disks.values())  # RAM's hits count for the disk copies too
        self.stats = stats
        self._origin_limiter = origin_limiter
        # How a blocking origin fetch is run: the filesystem passes its outage
        # monitor (timeouts, fail fast while offline); plain worker threads otherwise.
        self._origin_call = origin_call or self._in_thread
        self._disk_limiter = disk_limiter
        self._inflight: dict[ChunkKey, _Flight] = {}
        self._store_queue: trio.MemorySendChannel[_Store] | None = None
        self._pending_stores = 0
        # Bumped by forget_version: a store queued before is not written, or is
        # deleted again if it was being written (an evict must leave nothing behind).
        self._forgotten: dict[FileVersion, int] = {}
        # Read-ahead fillers run as the Engine's one-off jobs; without one, no read-ahead.
        self._spawn = spawn
        self._indexes_loaded = {name: trio.Event() for name in self.disks}
        # Keyed by the source itself, not id(): a released handle's id is reused.
        self._streams: dict[ChunkSource, _ReadAhead] = {}
        # Each reader's read-ahead window in chunks (kept between its bursts).
        self._windows: weakref.WeakKeyDictionary[ChunkSource, int] = weakref.WeakKeyDictionary()
        # The streams' read-ahead takes turns at the origin (readahead.py).
        self.turns = Turns()
        # Chunks the prefetcher brought from the origin, not read since: a later
        # read of one is a miss the prefetch covered (precision and coverage).
        self._prefetched: OrderedDict[ChunkKey, tuple[float, int]] = OrderedDict()
        self._prefetched_bytes = 0  # the sizes of the chunks in _prefetched
        self._prefetch_fills = 0  # fills in flight that are prefetches

    # -- background work ------------------------------------------------------------

    def tasks(self) -> list[Task]:
        """For the Engine: load the disk indexes, and write chunks to disk tiers.

        Until these are asked for, chunks read are not queued for the disks.
        """
        send, receive = trio.open_memory_channel[_Store](STORE_QUEUE)
        self._store_queue = send
        loads = [
            Task("index load", self._load_index, (tier,), once=True) for tier in self.disks.values()
        ]
        stores = [
            Task("store worker", self._store_worker, (receive.clone(),))
            for _ in range(STORE_WORKERS)
        ]
        return loads + stores

    async def drain(self) -> None:
        """At unmount: let queued chunks reach their disk tier (the caller bounds the wait)."""
        if self._store_queue is None:
            return
        await self._store_queue.aclose()
        while self._pending_stores:
            await trio.sleep(0.01)

    async def _load_index(self, tier: DiskTier) -> None:
        try:
            await trio.to_thread.run_sync(tier.load_index, abandon_on_cancel=True)
        except OSError as exc:
            log.error("%s tier: cannot load the index, the tier stays unused: %s", tier.name, exc)
        finally:
            self._indexes_loaded[tier.name].set()

    async def _store_worker(self, receive: trio.MemoryReceiveChannel[_Store]) -> None:
        async for item in receive:
            try:
                tier = self.home_tier(item.policy, item.pin)
                if tier is not None:
                    # chunks read right after mounting wait for their tier's index
                    await self._indexes_loaded[tier.name].wait()
                    if not self._was_forgotten(item):
                        await trio.to_thread.run_sync(
                            self._store, tier, item, limiter=self._disk_limiter
                        )
            finally:
                self._pending_stores -= 1
                if not self._pending_stores:
                    self._forgotten.clear()

    def _was_forgotten(self, item: _Store) -> bool:
        return self._forgotten.get(item.key.version, 0) != item.forgotten

    def _store(self, tier: DiskTier, item: _Store) -> None:
        policy = item.policy
        level = policy.compression_level if policy.compression else None
        if not tier.put(item.key, item.data, level, policy.keep_weight):
            return
        if self._was_forgotten(item):  # evicted while it was being written
            tier.discard([item.key])
        elif item.pin == tier.name:
            tier.set_pinned([item.key.digest(tier.namespace)], True)

    def home_tier(self, policy: ContentTypeConfig, pin: str | None = None) -> DiskTier | None:
        """The disk tier a new chunk lives in: its pin's, its type's default, or the SSD."""
        return (
            self.disks.get(pin or "")
            or self.disks.get(policy.default_tier)
            or self.disks.get("ssd")
        )

    async def _store_later(
        self, key: ChunkKey, data: bytes, policy: ContentTypeConfig, pin: str | None
    ) -> None:
        """Queue a chunk for its disk tier.

        When the origin outruns the cache disk the queue fills; the filler then
        waits a little (STORE_WAIT) rather than leave holes in the cache, and
        skips the disk copy after that rather than stall the reader.
        """
        if self._store_queue is None:
            return
        item = _Store(key, data, policy, pin, self._forgotten.get(key.version, 0))
        self._pending_stores += 1
        queued = False
        with contextlib.suppress(trio.ClosedResourceError):  # unmounting: no more stores
            try:
                # No checkpoint while there is room: the reader's reply goes out before
                # the store worker starts on its chunk (a first read waits for neither).
                self._store_queue.send_nowait(item)
                queued = True
            except trio.WouldBlock:
                with trio.move_on_after(STORE_WAIT):
                    await self._store_queue.send(item)
                    queued = True
        if not queued:
            self._pending_stores -= 1
            self.stats.add("store_skipped")

    async def forget_version(self, version: FileVersion, chunk_size: int) -> None:
        """Delete every disk chunk of a file version (changed at the origin, or
        evicted), including those still queued for a disk tier."""
        self._forgotten[version] = self._forgotten.get(version, 0) + 1
        keys = file_chunk_keys(version, chunk_size)
        for tier in self.disks.values():
            await trio.to_thread.run_sync(tier.discard, keys, limiter=self._disk_limiter)

    async def indexes_loaded(self) -> None:
        for event in self._indexes_loaded.values():
            await event.wait()

    def fills_in_flight(self) -> int:
        return len(self._inflight)

    def stores_pending(self) -> int:
        """Chunks read and queued for a disk tier, not written there yet."""
        return self._pending_stores

    def foreground_fills(self) -> int:
        """Fills in flight for readers (their read-ahead included), prefetches not."""
        return len(self._inflight) - self._prefetch_fills

    # -- prefetch ------------------------------------------------------------------------

    def cached_anywhere(self, key: ChunkKey) -> bool:
        return key in self.ram or any(t.known_to_hold(key) for t in self.disks.values())

    async def prefetch_chunk(self, source: ChunkSource, key: ChunkKey) -> int:
        """Bring one chunk from the origin into the tiers, unless a tier holds it or
        a fill is under way; the bytes fetched (0 if none were)."""
        if self.cached_anywhere(key) or key in self._inflight:
            return 0
        self._prefetch_fills += 1
        try:
            data, tier = await self._fill(source, key)
        finally:
            self._prefetch_fills -= 1
        if tier != ORIGIN:
            return 0
        self._prefetched[key] = (trio.current_time(), len(data))
        self._prefetched_bytes += len(data)
        while len(self._prefetched) > PREFETCHED_REMEMBERED:
            self._prefetched_bytes -= self._prefetched.popitem(last=False)[1][1]
        self.stats.add("prefetch_bytes", len(data))
        self.stats.add("prefetch_chunks")
        return len(data)

    def prefetched_unread_bytes(self) -> int:
        """Bytes prefetched within PREFETCH_AHEAD_SECONDS and not read since."""
        horizon = trio.current_time() - PREFETCH_AHEAD_SECONDS
        while self._prefetched:
            key, (when, size) = next(iter(self._prefetched.items()))
            if when >= horizon:
                break
            del self._prefetched[key]
            self._prefetched_bytes -= size
        return self._prefetched_bytes

    def in_ram(self, key: ChunkKey) -> bytes | None:
        """A chunk the RAM tier holds, to hand on (no access counted)."""
        return self.ram.peek(key)

    def prefetch_read_elsewhere(self, keys: list[ChunkKey]) -> None:
        """Prefetched chunks a reader got from the kernel's page cache."""
        for key in keys:
            self._note_prefetch_used(key)

    def _note_prefetch_used(self, key: ChunkKey) -> None:
        found = self._prefetched.pop(key, None)
        if found is not None:
            self._prefetched_bytes -= found[1]
            self.stats.add("prefetch_covered")  # a miss the prefetch took in its stead
            self.stats.add("prefetch_used_bytes", found[1])

    # -- the read path -----------------------------------------------------------------

    async def read(
        self, source: ChunkSource, offset: int, size: int, sequential: bool = False
    ) -> bytes:
        """Bytes ``[offset, offset + size)`` of *source*, short at end of file.

        A *sequential* reader gets the next chunks filled in the background,
        so its next requests find them in RAM instead of waiting on a disk
        tier or the origin one chunk at a time.
        """
        version = source.version
        chunk_size = source.chunk_size
        end = min(offset + size, version.size)
        if offset >= end:
            return b""
        chunks = chunk_range(offset, end - offset, chunk_size)
        if sequential:
            self._read_ahead(source, chunks[0], chunks[-1] + 1)
        elif self._streams:
            self._seeked(source, chunks[0])
        pieces: list[bytes] = []
        content_type = source.policy.name
        waited = False
        for index in chunks:
            key = ChunkKey(version, chunk_size, index)
            data, tier = await self.chunk(source, key)
            waited |= tier != self.ram.name
            start = max(offset, key.offset) - key.offset
            stop = min(end, key.offset + len(data)) - key.offset
            pieces.append(data[start:stop])
            if tier != ORIGIN:  # a hit: counted with the bytes it served to this read
                self.stats.tier_access(tier, content_type, True, max(0, stop - start))
                if self._prefetched:
                    self._note_prefetch_used(key)
            if len(data) < key.expected_length:  # the origin file shrank under us
                break
        if sequential and waited:
            self._caught_up(source, chunks[-1] + 1)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def first_read_soon(self, source: ChunkSource) -> None:
        """*source* was just opened for reading and the kernel holds none of its pages,
        so its first read comes here. A file that is one chunk is read from that
        chunk wherever the read falls: its fill starts now, overlapping the round
        trip until the first READ arrives (which then waits on this fill, single
        flight). A file opened and never read costs that one chunk."""
        version = source.version
        if not 0 < version.size <= source.chunk_size or not source.cacheable:
            return
        key = ChunkKey(version, source.chunk_size, 0)
        if key not in self.ram and key not in self._inflight:
            self._spawn("first-read", self._fill_quietly, source, key)

    def _read_ahead(self, source: ChunkSource, reader: int, first: int) -> None:
        """Extend this reader's read-ahead window past *first*; start its filler if it
        is idle. A running filler also covers the reader's own chunks from *reader*
        on (the reader waits for its queued turn rather than seek away from another
        stream's, see _turn_coming); a new one starts at *first*."""
        stream = self._streams.get(source)
        window = self._window(source)
        last = min(first + window, chunk_count(source.version.size, source.chunk_size))
        if first >= last:
            return  # the reader is at the last chunk: a small file read whole, say
        if stream is None:
            stream = _ReadAhead(first, last)
            if self._spawn("read-ahead", self._run_read_ahead, source, stream):
                self._streams[source] = stream
        else:
            # The reader may have overtaken it: what it has read or is reading (in
            # flight) the filler skips. Not the chunks in between, which the kernel's
            # read-ahead may be asking for in READs still on their way: passing them
            # would send their readers to the origin beside the turns.
            version, chunk_size = source.version, source.chunk_size
            while stream.next < reader:
                key = ChunkKey(version, chunk_size, stream.next)
                if key not in self.ram and key not in self._inflight:
                    break
                stream.next += 1
            stream.until = max(stream.until, last)

    def _caught_up(self, source: ChunkSource, first: int) -> None:
        """A sequential reader waited for a chunk its read-ahead had not brought yet:
        the window was too small to keep ahead of it, so it doubles."""
        if source not in self._streams:
            return
        window = self._window(source)
        grown = min(self._max_window(source), window * 2)
        if grown > window:
            self._windows[source] = grown
            self._read_ahead(source, first, first)

    def _window(self, source: ChunkSource) -> int:
        found = self._windows.get(source)
        if found is None:
            start = READ_AHEAD_BYTES // source.chunk_size
            found = self._windows[source] = max(
                READ_AHEAD_MIN_CHUNKS, min(start, self._max_window(source))
            )
        return found

    def _max_window(self, source: ChunkSource) -> int:
        # All read-ahead together stays within half the RAM tier: a window read
        # ahead must not evict what the streams have not read yet.
        share = self.ram.max_size // 2 // max(1, len(self._streams))
        return max(
            READ_AHEAD_MIN_CHUNKS,
            min(READ_AHEAD_MAX_CHUNKS, min(READ_AHEAD_MAX_BYTES, share) // source.chunk_size),
        )

    def _seeked(self, source: ChunkSource, chunk: int) -> None:
        """A read away from the reader's stream: far away, the stream stops (what it
        would fetch is not what the reader wants) and the window starts small again.
        Near it (requests of one read arriving out of order) nothing changes."""
        stream = self._streams.get(source)
        if stream is None:
            return
        window = self._window(source)
        if stream.next - 2 * window <= chunk <= stream.until + window:
            return
        stream.stop()
        self._windows.pop(source, None)
        self.stats.add("read_ahead_stopped_by_seek")

    async def _run_read_ahead(self, source: ChunkSource, stream: _ReadAhead) -> None:
        """Fill a reader's window in order.

        Chunks a disk tier holds are filled in parallel (a local disk serves
        them fast); chunks that need the origin are fetched in file order, in
        turns: the streams' fillers queue for the origin (FIFO), and a turn
        fetches a span of chunks back to back, so a disk or NAS origin seeks
        once per turn, not once per chunk of interleaved streams (readahead.py).
        """
        try:
            with stream.scope:
                while stream.next < stream.until:
                    if await self._skip_or_spawn(source, stream):
                        continue
                    if not await self._origin_turn(source, stream):
                        break
        finally:
            stream.turn.queued = stream.turn.in_turn = False
            stream.turn.move()  # its readers waiting for the filler fill for themselves
            self.turns.leave(stream.turn)
            del self._streams[source]

    async def _skip_or_spawn(self, source: ChunkSource, stream: _ReadAhead) -> bool:
        """Deal with the stream's next chunk unless it needs the origin (False then)."""
        key = ChunkKey(source.version, source.chunk_size, stream.next)
        if key in self.ram:
            stream.next += 1
            return True
        flight = self._inflight.get(key)
        if flight is not None:
            stream.next += 1
            await flight.done.wait()
            return True
        if any(tier.known_to_hold(key) for tier in self.disks.values()):
            stream.next += 1
            self._spawn("read-ahead", self._fill_quietly, source, key)
            return True
        return False

    async def _origin_turn(self, source: ChunkSource, stream: _ReadAhead) -> bool:
        """One turn: wait for it, then read the span of chunks it takes, in file order,
        in one worker-thread call (_read_span); False on an error.

        The turn (the FIFO lock) is handed on as soon as the span's thread has the
        origin head: the next stream's span is then chained behind this one (its
        thread waits for this one's last pread, Turns.chain), while this filler
        waits here for its span's chunks to land."""
        span: _Span | None = None
        async with trio.open_nursery() as reading, self.turns.turn(stream.turn):
            if not all(tier.ready.is_set() for tier in self.disks.values()):
                return await self._fill_in_turn(source, stream)
            span = self._claim_span(source, stream)
            if span is None:
                return True  # its next chunk came meanwhile (a reader filled it)
            self.stats.add("read_ahead_turns")
            reading.start_soon(self._read_span, source, stream, span)
            await span.reading.wait()  # its thread has the head (or ended)
        return span.error is None

    async def _fill_in_turn(self, source: ChunkSource, stream: _ReadAhead) -> bool:
        """The stream's next chunk alone, disks first: while a tier's index loads
        (after a restart) a chunk it holds is found only by name, and a span, which
        reads the origin, would fetch again what the tier has (or miss a damaged
        chunk file it should have caught)."""
        key = ChunkKey(source.version, source.chunk_size, stream.next)
        stream.next += 1
        turn = stream.turn
        turn.started = turn.claimed = stream.next
        turn.move()  # its readers wait on the fill's flight
        return await self._fill_quietly(source, key)

    def _claim_span(self, source: ChunkSource, stream: _ReadAhead) -> _Span | None:
        """The chunks this turn may read, from the stream's next on, up to the window's
        end and the first chunk a tier holds or a fill brings (a short measuring turn
        while nothing is measured); each gets its flight now, so a reader of any of
        them waits for it (single flight). The span's thread stops when the turn's
        time is up (measured as it reads, as a turn of single fetches did: an estimate
        of the chunks up front would carry the fit's noise into every turn)."""
        chunk_size = source.chunk_size
        seconds = self.turns.turn_seconds()
        # nothing measured yet: a short turn that measures
        count = READ_AHEAD_MAX_CHUNKS if seconds is not None else self.turns.measuring_span()
        keys: list[ChunkKey] = []
        for number in range(stream.next, min(stream.until, stream.next + count)):
            key = ChunkKey(source.version, chunk_size, number)
            if (
                key in self.ram
                or key in self._inflight
                or any(tier.known_to_hold(key) for tier in self.disks.values())
            ):
                break
            keys.append(key)
        if not keys:
            return None
        flights = {key: _Flight(source) for key in keys}
        self._inflight.update(flights)
        stream.next = keys[-1].number + 1
        turn = stream.turn
        turn.started = turn.claimed = stream.next  # every fill of the span is under way
        turn.move()  # its readers wait on the span's flights
        before, head = self.turns.chain()
        span = stream.span = _Span(
            keys,
            flights,
            before,
            head,
            seconds,
            source.write_generation,
        )
        return span

    async def _read_span(self, source: ChunkSource, stream: _ReadAhead, span: _Span) -> None:
        """Read the span's chunks from the origin in one worker-thread call and settle
        each flight as its chunk lands (verified as a single fill's chunk is)."""
        send, receive = trio.open_memory_channel[_Landed](math.inf)
        token = trio.lowlevel.current_trio_token()

        def landed(item: _Landed | None) -> None:  # in the worker thread
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(_offer, send, span, item)

        async def call() -> None:
            try:
                await self._origin_call(_read_span_blocking, source, span, landed)
            except OSError as exc:
                span.error = exc if exc.errno else OSError(errno.EIO, str(exc))
                log.debug("read-ahead of %s failed: %s", span.keys[0], exc)
            finally:
                span.stop.set()  # an abandoned thread (a timeout) reads no further
                span.reading.set()
                send.close()  # after every chunk its thread handed over (FIFO callbacks)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                async for item in receive:
                    # Settle every chunk that has landed before waiting for room in
                    # the store queue: a reader waits for its chunk, not for stores.
                    landed_now = [item]
                    with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                        while True:
                            landed_now.append(receive.receive_nowait())
                    cached = [i for i in landed_now if self._span_landed(source, span, *i)]
                    for key, data, _ in cached:
                        await self._store_later(key, data, source.policy, source.pin)
        finally:
            span.stop.set()
            span.reading.set()
            # Already set by its thread, unless the thread never ran (cancelled before
            # it started) or was abandoned (stopped, it reads at most one more chunk):
            # the next span must not wait for it.
            span.head.set()
            if span.flights:  # not read (the turn's time was up): the next turn's
                stream.next = min(stream.next, min(key.number for key in span.flights))
                # their readers, woken below, wait for that turn (Turn.covers)
                stream.turn.started = stream.next
            for key, flight in span.flights.items():  # their readers go on
                if span.error is not None:
                    flight.error = span.error
                if self._inflight.get(key) is flight:
                    del self._inflight[key]
                flight.done.set()
            span.flights.clear()
            stream.turn.move()
            self.turns.record(span.timer)

    def _span_landed(
        self, source: ChunkSource, span: _Span, key: ChunkKey, data: bytes, version: FileVersion
    ) -> bool:
        """One chunk of a span is read: settle its flight as _from_origin settles a
        single fill's; True if it is cached (then it is to be stored)."""
        flight = span.flights.pop(key)
        self.stats.add("origin_bytes_read", len(data))
        self.stats.add("origin_reads")
        try:
            if version != key.version:
                self.stats.add("origin_changed_during_read")
                span.stop.set()  # the rest of the span is of another version too
                source.origin_changed(version)
            elif len(data) != key.expected_length:
                span.stop.set()  # the file shrank under us: the rest is short too
            elif source.cacheable and source.write_generation == span.generation:
                self.ram.put(key, data)
                flight.data = data
                self.stats.add("read_ahead_turn_chunks")
        finally:
            if self._inflight.get(key) is flight:
                del self._inflight[key]
            flight.done.set()
        return flight.data is not None

    async def _turn_coming(self, source: ChunkSource, key: ChunkKey) -> bool:
        """The reader needs *key*, which its stream's filler will fetch in its queued
        turn or in the span of its turn under way: the reader waits until the filler
        has started that fill (at most Turns.patience in all), rather than make the
        origin seek away from another stream's turn or fetch beside its own filler.
        True if it waited."""
        deadline = trio.current_time() + self.turns.patience
        waited = False
        while key not in self._inflight and key not in self.ram:
            stream = self._streams.get(source)
            if stream is None:
                break
            turn = stream.turn
            if not turn.covers(key.number, stream.next, stream.until):
                break
            waited = True
            with trio.move_on_at(deadline) as waiting:
                await turn.moved.wait()
            if waiting.cancelled_caught:
                break
        return waited

    def stop_read_ahead(self, source: ChunkSource) -> None:
        """The handle is released: its read-ahead stops (a fetch already in a worker
        thread finishes there; the handle's fd stays open until it has)."""
        stream = self._streams.get(source)
        if stream is not None:
            stream.stop()

    async def _fill_quietly(self, source: ChunkSource, key: ChunkKey) -> bool:
        if key in self.ram or key in self._inflight:
            return True
        try:
            await self._fill(source, key)
            return True
        except OSError as exc:  # the reader will meet the error itself, if it comes
            log.debug("read-ahead of %s failed: %s", key, exc)
            return False

    async def chunk(self, source: ChunkSource, key: ChunkKey) -> tuple[bytes, str]:
        """A chunk's bytes and the tier that had them (ORIGIN if none did); misses
        are counted here, hits by the caller, with the bytes they serve."""
        ram = self.ram
        data = ram.get(key, source)  # the handle: one read's requests are one access
        access_log = self.access_log if ram.counted else None
        if data is not None:
            if access_log is not None:
                access_log.record(key, len(data), source.policy.name, ram.name)
            return data, ram.name
        self.stats.tier_access(ram.name, source.policy.name, False, 0)
        found = await self._below_ram(source, key)
        if access_log is not None:
            access_log.record(key, len(found[0]), source.policy.name, found[1])
        return found

    async def _below_ram(self, source: ChunkSource, key: ChunkKey) -> tuple[bytes, str]:
        """A chunk RAM did not have: from a fill in flight, or a fill of our own."""
        waited_for_turn = False
        while True:
            flight = self._inflight.get(key)
            if flight is None:
                if not waited_for_turn and await self._turn_coming(source, key):
                    waited_for_turn = True  # the filler reached it, or the wait ran out
                    data = self.ram.get(key, source)  # filled already: waited on the origin
                    if data is not None:
                        return data, ORIGIN
                    continue
                return await self._fill(source, key)
            await flight.done.wait()
            if flight.data is not None:
                return flight.data, flight.tier
            if flight.error is not None and flight.leader is source:
                raise OSError(flight.error.errno, flight.error.strerror)
            # Nothing to take: the leader was cancelled, read another version, or
            # failed through another handle (released, say). Try again, maybe leading.

    async def _fill(self, source: ChunkSource, key: ChunkKey) -> tuple[bytes, str]:
        flight = self._inflight[key] = _Flight(source)
        try:
            found = await self._from_disks(key, source.policy.name)
            if found is not None:
                flight.data, flight.tier = found
                return found
            data, verified = await self._from_origin(source, key)
            if verified:
                flight.data = data
            return data, ORIGIN
        except OSError as exc:
            flight.error = exc if exc.errno else OSError(errno.EIO, str(exc))
            raise
        finally:
            del self._inflight[key]
            flight.done.set()

    async def _from_disks(self, key: ChunkKey, content_type: str) -> tuple[bytes, str] | None:
        if not self.disks:
            return None
        if all(tier.known_absent(key) for tier in self.disks.values()):
            # The loaded indexes say no tier has it: a miss without a thread hop,
            # which costs more than the lookup (the first read of every file).
            for tier in self.disks.values():
                tier.count_miss()
                self.stats.tier_access(tier.name, content_type, False, 0)
            return None
        found = await trio.to_thread.run_sync(
            self._lookup_disks, key, content_type, limiter=self._disk_limiter
        )
        if found is not None:
            self.ram.put(key, found[0])
        return found

    def _lookup_disks(self, key: ChunkKey, content_type: str) -> tuple[bytes, str] | None:
        for tier in self.disks.values():
            data = tier.get(key)
            if data is not None:
                return data, tier.name
            self.stats.tier_access(tier.name, content_type, False, 0)
        return None

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._origin_limiter)

    async def _from_origin(self, source: ChunkSource, key: ChunkKey) -> tuple[bytes, bool]:
        """The chunk read through *source*'s own fd, and whether it is the key's chunk.

        Bytes read while the file changed are no chunk of the key's version: they
        are neither cached nor handed to readers waiting on the fill (who may read
        another handle); only this reader, whose fd read them, gets them, as a
        read racing a change gets them from a local disk.
        """
        generation = source.write_generation
        data, version = await self._origin_call(source.fetch, key)
        self.stats.add("origin_bytes_read", len(data))
        self.stats.add("origin_reads")
        if version != key.version:
            self.stats.add("origin_changed_during_read")
            source.origin_changed(version)
            return data, False
        complete = len(data) == key.expected_length
        if complete and source.cacheable and source.write_generation == generation:
            self.ram.put(key, data)
            await self._store_later(key, data, source.policy, source.pin)
            return data, True
        return data, False
