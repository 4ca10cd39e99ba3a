"""The access log (``stats.access_log``): the chunk accesses the tiers see, as a trace.

One line per *access* of a chunk, by the RAM tier's definition (``RamTier``:
the requests one read of one open file is cut into are one access; read-ahead
and prefetch are none), written as ``cachefs simulate`` reads a trace: the
libCacheSim CSV layout ``timestamp,obj_id,size`` with two more columns it
ignores or uses::

    timestamp,obj_id,size,content_type,tier
    1733112000.123456,5024398107764811313,1048576,media,origin

* ``timestamp``: Unix time in seconds, to the microsecond;
* ``obj_id``: 63 bits of the chunk's keyed digest (``ChunkKey.digest``, the name
  of its chunk file): stable for a chunk across mounts, a new id when the file
  changes (a new version is new chunks, as for the tiers). Never a path: file
  names stay private, and any name, UTF-8 or not, is just bytes hashed;
* ``size``: the chunk's length in bytes (what it takes in RAM);
* ``content_type``: the file's content type (its home tier, its keep weight);
* ``tier``: where the mount found it: ``ram``, ``ssd``, ``hdd`` or ``origin``.

Each file starts with that header line. **Never in a reader's way**: the read
path appends a tuple to a list on the trio thread (no I/O, no lock, no hashing);
the writer task swaps the list out every second (or sooner, once BATCH records
wait) and one worker thread (its own limiter of 1) hashes, formats and appends
them. Bounded: at most MAX_PENDING records wait; beyond that a record is dropped
and counted (``access_log_dropped``), a reader never waits. Rotated by size:
once ``PATH`` would pass ``stats.access_log_max_size``, it becomes ``PATH.1``
(replacing the previous one) and a new ``PATH`` starts, so the log never takes
more than twice that (counted: ``access_log_rotations``). The file is
``0600`` and must be ours (``open_private``: no symlink, no other owner). A
file removed or renamed by someone else is created again at the next batch.
The records still waiting at unmount are written by a shutdown step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import trio

from cachefs.common import private
from cachefs.data.chunks import ChunkKey
from cachefs.stats.counters import Stats

log = logging.getLogger(__name__)

HEADER = "timestamp,obj_id,size,content_type,tier\n"
FLUSH_INTERVAL = 1.0  # seconds between two batches at most
BATCH = 4096  # records waiting that wake the writer before its interval
MAX_PENDING = 65_536  # records kept waiting at most (~8 MiB); more are dropped and counted

Record = tuple[float, ChunkKey, int, str, str]  # time, key, size, content type, tier


def object_id(key: ChunkKey, namespace: bytes) -> int:
    """A chunk's id in the log: 63 bits of its keyed digest (a non-negative int64)."""
    return int.from_bytes(key.digest(namespace)[:8], "big") >> 1


class AccessLog:
    """The buffer (trio thread), the writer task and the file (its worker thread)."""

    def __init__(
        self,
        path: Path,
        max_size: int,
        namespace: bytes,
        stats: Stats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.rotated = self.path.with_name(self.path.name + ".1")
        self.max_size = max_size
        self.namespace = namespace
        self.stats = stats
        self.clock = clock
        # Trio thread only: the read path appends, the writer task swaps it out.
        self._pending: list[Record] = []
        self._dropped = 0  # dropped since the last batch, counted then
        self._wake = trio.Event()
        # The file: touched by one worker thread at a time (this limiter), and by
        # open() / close() before and after the mount is served.
        self._limiter = trio.CapacityLimiter(1)
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._size = 0
        self._failing = False

    # -- the file (blocking) -------------------------------------------------------------

    def open(self) -> None:
        """Blocking, before mounting: open (or create, 0600) the log for appending."""
        self._reopen(os.O_CREAT)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _reopen(self, create: int) -> None:
        self.close()
        fd = private.open_private(self.path, os.O_RDWR | os.O_APPEND | create)
        st = os.fstat(fd)
        self._fd, self._ino, self._size = fd, (st.st_dev, st.st_ino), st.st_size
        self._cut_partial_line()
        if not self._size:
            self._append(HEADER.encode())

    def _cut_partial_line(self) -> None:
        """A crash while a batch was written can leave a cut last line: cut it off,
        so every line of the log stays whole."""
        assert self._fd is not None
        if not self._size or os.pread(self._fd, 1, self._size - 1) == b"\n":
            return
        start = max(0, self._size - 4096)  # a line is far shorter
        tail = os.pread(self._fd, self._size - start, start)
        end = start + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
        os.ftruncate(self._fd, end)
        self._size = end

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _rotate(self) -> None:
        """PATH becomes PATH.1 (the previous PATH.1 goes), a new PATH starts."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, self.rotated)
        self._reopen(os.O_CREAT | os.O_EXCL)
        self.stats.add("access_log_rotations")

    def _still_ours(self) -> bool:
        """False when PATH was removed or replaced since we opened it."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._ino

    def write(self, batch: list[Record]) -> None:
        """Blocking (a worker thread): hash, format and append *batch*, rotating by size."""
        if self._fd is None or not self._still_ours():
            self._reopen(os.O_CREAT)
        namespace = self.namespace
        lines = [
            f"{when:.6f},{int.from_bytes(key.digest(namespace)[:8], 'big') >> 1},"
            f"{size},{content_type},{tier}\n"
            for when, key, size, content_type, tier in batch
        ]
        done = 0
        while done < len(lines):
            room = self.max_size - self._size
            take = done
            used = 0
            while take < len(lines) and used + len(lines[take]) <= room:
                used += len(lines[take])  # ASCII: as many bytes as characters
                take += 1
            if take > done:
                self._append("".join(lines[done:take]).encode())
                done = take
            if done < len(lines):
                self._rotate()

    # -- the buffer (trio thread) --------------------------------------------------------

    def record(self, key: ChunkKey, size: int, content_type: str, tier: str) -> None:
        """One access (the read path, trio thread): an append, never a wait."""
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            self._dropped += 1
            return
        pending.append((self.clock(), key, size, content_type, tier))
        if len(pending) == BATCH:
            self._wake.set()

    def waiting(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """The writer task: a batch every FLUSH_INTERVAL, or as soon as BATCH wait."""
        while True:
            with trio.move_on_after(FLUSH_INTERVAL):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Write what waits (also the shutdown step at unmount)."""
        batch, self._pending = self._pending, []
        dropped, self._dropped = self._dropped, 0
        if batch:
            try:
                await trio.to_thread.run_sync(self.write, batch, limiter=self._limiter)
            except OSError as exc:
                dropped += len(batch)
                if not self._failing:
                    log.warning(
                        "access log %s: cannot write (%s); dropping records", self.path, exc
                    )
                self._failing = True
            else:
                self.stats.add("access_log_records", len(batch))
                if self._failing:
                    log.info("access log %s: writing again", self.path)
                self._failing = False
        if dropped:
            self.stats.add("access_log_dropped", dropped)
