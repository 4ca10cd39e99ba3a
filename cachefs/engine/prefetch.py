"""The prefetcher: fetches what the predictor expects to be read next, without
ever standing in a reader's way.

Handlers tell it which files are opened (:meth:`Prefetcher.opened`, on the
trio thread, never blocking); the predictor (cachefs.data.prediction) says
what follows, and each file it is confident enough of (``prediction.
prefetch_confidence``) is queued: its head (``PREFETCH_HEAD``: enough to start
playback or show an image; the whole file when it is smaller).
``user.cachefs.prefetch`` queues a whole file, or every file known below a
directory, whatever the predictor thinks.

Foreground first. The origin is often one disk head: a prefetch must never
make a reader's miss wait. So the prefetcher fetches one chunk at a time, and
only while no reader's fill is in flight (their read-ahead included); a miss
that arrives meanwhile waits for at most the one chunk already being read.
Nor in the moment after an open (``FIRST_READ_GRACE``): the reader's first
read is on its way, and its fill has not started yet; a prefetch chunk sent
then would be ahead of it at the origin.
What stops being likely is dropped: the queue keeps the newest predictions,
and a job for a file that changed is abandoned. ``prediction.
max_prefetch_size`` bounds the bytes fetched ahead and not yet seen read.

The model is loaded from the stats backend at start and saved every
``SAVE_INTERVAL`` and at unmount, under a key of the origin, so a restart
keeps it and the mounts of one origin share it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from cachefs.config import ContentTypeConfig, PredictionConfig
from cachefs.data.chunkcache import ChunkCache
from cachefs.data.chunks import ChunkKey, chunk_count
from cachefs.data.pins import PinTable
from cachefs.data.prediction import Prediction, Predictor, SiblingOrder
from cachefs.data.rules import ContentTypeResolver
from cachefs.meta.cache import MetadataCache, StatInfo
from cachefs.origin.access import FileVersion, Origin, OriginFile, open_flags_for_origin
from cachefs.origin.monitor import OriginMonitor, OriginOffline
from cachefs.stats.counters import Stats, StatsBackend

log = logging.getLogger(__name__)

PREFETCH_HEAD = 8 * 1024 * 1024  # what a prediction fetches of a file
MAX_QUEUED = 16  # predicted files waiting; the oldest are dropped first
IDLE_WAIT = 0.02  # seconds between looks for a moment without foreground fills
# Seconds after a file is opened for reading in which no prefetch chunk is sent: the
# kernel sends the first READ right after the open's reply, and once its fill is in
# flight the rule above holds it back. A head already cached has no fill to wait for,
# and its prefetch of what follows starts this much later.
FIRST_READ_GRACE = 0.05
SAVE_INTERVAL = 60.0  # seconds between saves of the model
SIBLINGS_TTL = 2.0  # seconds a directory's sorted file names are reused
SIBLINGS_CACHED = 64  # directories whose sorted names are kept


@dataclass
class _Job:
    path: bytes
    st: StatInfo
    limit: int  # bytes from the start of the file
    explicit: bool


class _PrefetchSource:
    """A ChunkSource for a file the prefetcher reads through its own fd."""

    write_generation = 0
    cacheable = True

    def __init__(
        self, file: OriginFile, version: FileVersion, policy: ContentTypeConfig, pin: str | None
    ) -> None:
        self.file, self.version, self.policy, self.pin = file, version, policy, pin
        self.changed = False

    @property
    def chunk_size(self) -> int:
        return self.policy.chunk_size

    def fetch(self, key: ChunkKey) -> tuple[bytes, FileVersion]:
        return self.file.pread_versioned(key.expected_length, key.offset)

    def origin_changed(self, version: FileVersion) -> None:
        self.changed = True  # nothing was cached; the job stops


class Prefetcher:
    def __init__(
        self,
        cfg: PredictionConfig,
        cache: ChunkCache,
        meta: MetadataCache,
        resolver: ContentTypeResolver,
        pins: PinTable,
        origin: Origin,
        monitor: OriginMonitor,
        stats: Stats,
        model_key: str,
    ) -> None:
        self.cfg, self.cache, self.meta, self.resolver = cfg, cache, meta, resolver
        self.pins, self.origin, self.monitor, self.stats = pins, origin, monitor, stats
        self.model_key = model_key
        self.enabled = cfg.max_prefetch_size > 0
        self.predictor = Predictor(cfg.window_size)
        self._queue: OrderedDict[bytes, _Job] = OrderedDict()
        self._wake = trio.Event()
        self._current: bytes | None = None
        self._last_open = -FIRST_READ_GRACE  # trio time of the last open for reading
        self._backend: Callable[[], StatsBackend] | None = None
        self._orders: OrderedDict[bytes, tuple[float, SiblingOrder | None]] = OrderedDict()
        # Where a head fetched ahead goes next (the kernel's page cache: CacheFS.
        # hand_to_kernel); set by the composition root.
        self.head_ready: Callable[[bytes, FileVersion, list[tuple[ChunkKey, bytes]]], None] | None
        self.head_ready = None

    # -- what the handlers tell it (trio thread, never blocking) -------------------------

    def opened(self, path: bytes) -> None:
        """A regular file was opened for reading."""
        if not self.enabled:
            return
        self._last_open = trio.current_time()
        predictions = self.predictor.opened(path, self._siblings)
        self._queue.pop(path, None)  # read now: nothing left to guess about it
        wanted = [p for p in predictions if p.confidence >= self.cfg.prefetch_confidence]
        self.stats.add("predictions", len(wanted))
        for prediction in wanted:
            self._enqueue_prediction(prediction)
        # What stops being likely goes: guesses that are not among the new ones.
        keep = {p.path for p in wanted}
        for stale in [p for p, job in self._queue.items() if not job.explicit and p not in keep]:
            if stale != self._current:
                del self._queue[stale]

    def _enqueue_prediction(self, prediction: Prediction) -> None:
        entry = self.meta.get(prediction.path)
        st = entry.st if entry is not None else None
        if st is None or not stat.S_ISREG(st.st_mode):
            return  # unknown or not a file: nothing to fetch without asking the origin
        self._enqueue(_Job(prediction.path, st, min(st.st_size, PREFETCH_HEAD), False))

    def warm(self, path: bytes) -> int:
        """``user.cachefs.prefetch``: queue whole files (a file, or every file the
        metadata cache knows below a directory); how many were queued."""
        files = self.meta.regular_files(path)
        for file_path, st in files:
            self._enqueue(_Job(file_path, st, st.st_size, True))
        self.stats.add("prefetch_requested", len(files))
        return len(files)

    def _enqueue(self, job: _Job) -> None:
        self._queue.pop(job.path, None)
        self._queue[job.path] = job
        while len(self._queue) > MAX_QUEUED:
            # The oldest guess goes; an explicit warm is never dropped for room.
            guesses = [p for p, j in self._queue.items() if not j.explicit and p != self._current]
            if not guesses:
                break
            del self._queue[guesses[0]]
        self._wake.set()

    def _siblings(self, dirpath: bytes) -> SiblingOrder | None:
        """The directory's files in natural order, from its cached listing.

        Sorted once per SIBLINGS_TTL at most: a season of a hundred files or a
        photo folder of ten thousand costs one sort, not one per open. A name
        added since is not guessed for a moment; one removed since is found
        missing when its guess is queued."""
        now = trio.current_time()
        cached = self._orders.get(dirpath)
        if cached is not None and now - cached[0] < SIBLINGS_TTL:
            self._orders.move_to_end(dirpath)
            return cached[1]
        listing = self.meta.listing(dirpath)
        order = None
        if listing is not None:
            order = SiblingOrder(name for name, st in listing if stat.S_ISREG(st.st_mode))
        self._orders[dirpath] = (now, order)
        while len(self._orders) > SIBLINGS_CACHED:
            self._orders.popitem(last=False)
        return order

    # -- the task ------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            path, job = next(iter(self._queue.items()))
            self._current = path
            try:
                await self._prefetch(job)
            except (OSError, OriginOffline) as exc:
                log.debug("prefetch of %r stopped: %s", path, exc)
            finally:
                self._current = None
                if self._queue.get(path) is job:
                    del self._queue[path]

    async def _prefetch(self, job: _Job) -> None:
        policy = self.resolver.policy(os.fsdecode(job.path))
        version = FileVersion.of(job.st)
        count = chunk_count(min(job.limit, job.st.st_size), policy.chunk_size)
        keys = [ChunkKey(version, policy.chunk_size, n) for n in range(count)]
        todo = [k for k in keys if not self.cache.cached_anywhere(k)]
        if not todo:
            if not job.explicit:
                self._hand_on(job.path, keys)
            return
        pin = self.pins.tier_for(os.fsdecode(job.path))
        flags = open_flags_for_origin(os.O_RDONLY)
        file = OriginFile(None, lambda: self.origin.open(job.path, flags))
        source = _PrefetchSource(file, version, policy, pin)
        try:
            for key in todo:
                if not job.explicit and self._over_budget():
                    self.stats.add("prefetch_over_budget")
                    return
                await self._until_foreground_idle()
                if self._queue.get(job.path) is not job or not self.monitor.online:
                    return  # no longer likely (or the origin went away)
                await self.cache.prefetch_chunk(source, key)
                if source.changed:
                    return
        finally:
            fd = file.release()
            if fd is not None:
                await self.monitor.close_fd(fd)
        if not job.explicit:  # a whole file warmed may be far more than a head
            self._hand_on(job.path, keys)

    def _hand_on(self, path: bytes, keys: list[ChunkKey]) -> None:
        """Hand the head's chunks that RAM holds, from the first on, to head_ready."""
        chunks = []
        for key in keys:
            data = self.cache.in_ram(key)
            if data is None:
                break
            chunks.append((key, data))
        if chunks and self.head_ready is not None:
            self.head_ready(path, keys[0].version, chunks)

    def one_chunk(self, path: bytes, st: StatInfo) -> bool:
        """A regular file of one chunk of its content type (a walk's next file)."""
        size = st.st_size
        return (
            stat.S_ISREG(st.st_mode)
            and 0 < size <= self.resolver.policy(os.fsdecode(path)).chunk_size
        )

    async def fetch_one_chunk_file(self, path: bytes, st: StatInfo) -> int:
        """Fetch a file of one chunk now (walk-ahead picked the moment: the file a
        walking client reads next); the bytes fetched (0: cached, or fetched already)."""
        policy = self.resolver.policy(os.fsdecode(path))
        version = FileVersion.of(st)
        key = ChunkKey(version, policy.chunk_size, 0)
        if self.cache.cached_anywhere(key) or not self.monitor.online:
            return 0
        pin = self.pins.tier_for(os.fsdecode(path))
        flags = open_flags_for_origin(os.O_RDONLY)
        file = OriginFile(None, lambda: self.origin.open(path, flags))
        try:
            fetched = await self.cache.prefetch_chunk(
                _PrefetchSource(file, version, policy, pin), key
            )
        finally:
            fd = file.release()
            if fd is not None:
                await self.monitor.close_fd(fd)
        if fetched:
            self._hand_on(path, [key])
        return fetched

    def _over_budget(self) -> bool:
        """Fetched ahead (and not read yet) as much as prediction.max_prefetch_size allows."""
        return self.cache.prefetched_unread_bytes() >= self.cfg.max_prefetch_size

    async def _until_foreground_idle(self) -> None:
        while self.cache.foreground_fills() or self._first_read_due():
            await trio.sleep(IDLE_WAIT)

    def _first_read_due(self) -> bool:
        return trio.current_time() - self._last_open < FIRST_READ_GRACE

    # -- the model in the stats backend ----------------------------------------------------

    def use_backend(self, backend: Callable[[], StatsBackend]) -> None:
        self._backend = backend

    async def load_model(self) -> None:
        if self._backend is None or not self.enabled:
            return
        backend = self._backend()
        data = await trio.to_thread.run_sync(backend.load_model, self.model_key)
        if data:
            try:
                self.predictor.load_json(data)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("prediction model: starting afresh, cannot read it: %s", exc)

    async def save_model(self) -> None:
        if self._backend is None or not self.enabled or not self.predictor.observed:
            return
        backend = self._backend()
        await trio.to_thread.run_sync(backend.save_model, self.model_key, self.predictor.to_json())

    async def keep_saving(self) -> None:
        await self.load_model()
        while True:
            await trio.sleep(SAVE_INTERVAL)
            await self.save_model()

    def describe(self, counters: Mapping[str, int]) -> dict[str, int | float | bool]:
        """The prediction keys of the stats report, from its snapshot of the counters."""
        fetched = counters.get("prefetch_bytes", 0)
        used = counters.get("prefetch_used_bytes", 0)
        covered = counters.get("prefetch_covered", 0)
        # chunks readers needed from the origin: those they fetched, and those a
        # prefetch had fetched for them
        needed = covered + counters.get("origin_reads", 0) - counters.get("prefetch_chunks", 0)
        return {
            "prediction": self.enabled,
            "predictions": counters.get("predictions", 0),
            "prefetch_bytes": fetched,
            "prefetch_used_bytes": used,
            "prefetch_precision": round(used / fetched, 4) if fetched else 0.0,
            "prefetch_covered": covered,
            "prefetch_coverage": round(covered / needed, 4) if needed > 0 else 0.0,
            "prefetch_wasted_bytes": max(0, fetched - used),
            "prefetch_kernel_bytes": counters.get("prefetch_kernel_bytes", 0),
            "prefetch_queued": len(self._queue),
            "prediction_tracked_files": self.predictor.tracked_files(),
        }
