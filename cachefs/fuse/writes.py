"""Write-behind: write() returns once its bytes are queued; they reach the origin
in order, in batches, and every fsync() and close() waits for them.

Each write through FUSE without the kernel's writeback cache is a round trip
the writer waits for. Sending each one to the origin from a worker thread
costs a thread hop (~120 µs here) per write, which caps 4 KiB random writes
far below what the origin can take. Queued, the writes of one file go out in
one hop per batch, contiguous ones merged into one pwritev.

The promise, the one a local file system's page cache makes: a successful
``fsync()`` or ``close()`` means the bytes are on the origin; a write error
(``ENOSPC``, ``EIO``) is reported by the next ``write()``, ``fsync()`` or
``close()`` of the handle whose bytes it lost. Unlike the kernel's writeback
cache, the kernel keeps asking cachefs for sizes, so changes made at the
origin by others stay visible (docs/configuration.md, ``mount.write_buffer``).

What must see the queued bytes waits for them (:meth:`WriteBehind.drain`):
reads of the file, truncation and other attribute changes (their order
matters: ``cp -p`` sets the times after the data), an ``open(O_TRUNC)``.
Attributes do not wait (a ``stat`` must answer while the origin hangs): they
report the size the queued bytes make (:meth:`WriteBehind.size_with_queued`).

Owned by the trio thread (docs/concurrency.md); the batches run in the
origin monitor's untimed worker threads, one batch per file at a time.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from cachefs.fuse.handles import OpenFile
from cachefs.origin.monitor import OUTAGE_ERRNOS, OriginMonitor, OriginOffline

log = logging.getLogger(__name__)

MERGE_LIMIT = 1024 * 1024  # contiguous writes merge into one pwritev up to this size
MERGE_PARTS = 64  # and up to this many buffers (IOV_MAX is 1024)
# A batch holds at most this many bytes: on a slow origin each lands well within
# origin.timeout, so a reader waiting behind a long queue sees progress.
BATCH_BYTES = 4 * 1024 * 1024
WRITE_OVERHEAD = 160  # bytes a queued write costs beyond its data (counted against the limit)
# A batch is sent this long after its first write: a writer that waits for each
# write() (most do) then pays one thread hop per batch, not one per write. A
# drain, or a full queue, sends at once.
GATHER_SECONDS = 0.002
OFFLINE_WAIT = 0.25  # seconds between looks for the origin back online, for a queued batch

Spawn = Callable[..., bool]


@dataclass
class _Write:
    handle: OpenFile
    offset: int
    parts: list[bytes]  # contiguous buffers, written with one pwritev (never copied)
    length: int
    cost: int  # bytes counted against the limit
    seq: int = 0  # the file's write count once this one (and what merged into it) queued


@dataclass
class _Landed:
    """What a batch did: the file's attributes after it, and the writes that failed."""

    st: os.stat_result | None
    failed: list[tuple[OpenFile, OSError]]


@dataclass
class _FileQueue:
    writes: deque[_Write] = field(default_factory=deque)
    end: int = 0  # the size the queued writes make the file at least
    queued: int = 0  # writes queued so far, merged ones included
    landed: int = 0  # of those, how many have landed (or failed)
    progress: trio.Event = field(default_factory=trio.Event)  # set when a batch lands
    hurry: trio.Event = field(default_factory=trio.Event)  # set when someone waits for it
    queued_bytes: int = 0


class WriteBehind:
    def __init__(
        self,
        limit: int,
        monitor: OriginMonitor,
        spawn: Spawn,
        landed: Callable[[int, os.stat_result], None],
    ) -> None:
        """*limit*: bytes queued in all before writers wait (0: write-behind off).
        *landed*: told the file's attributes after each batch (inode, stat)."""
        self.limit = limit
        self.monitor, self._spawn, self._landed = monitor, spawn, landed
        self._files: dict[int, _FileQueue] = {}
        self._queued = 0  # bytes, all files
        self._room = trio.Event()
        self._errors: dict[OpenFile, OSError] = {}  # not yet reported to their handle

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def queued_bytes(self) -> int:
        return self._queued

    def has_queued(self, inode: int) -> bool:
        return inode in self._files

    def size_with_queued(self, inode: int, size: int) -> int:
        """*size* (the origin's) grown by what the file's queued writes will add."""
        queue = self._files.get(inode)
        return size if queue is None else max(size, queue.end)

    # -- the handlers' side ------------------------------------------------------------

    async def write(self, handle: OpenFile, offset: int, data: bytes) -> None:
        """Queue *data* at *offset*, once there is room; raises an error an earlier
        write of this handle met at the origin."""
        self.raise_error(handle)
        while self._queued >= self.limit:
            # Writers faster than the origin wait here, as they would for a disk.
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()
        queue = self._files.get(handle.inode)
        started = queue is not None
        if queue is None:
            queue = self._files[handle.inode] = _FileQueue()
        last = queue.writes[-1] if queue.writes else None
        if (
            last is not None
            and last.handle is handle
            and last.offset + last.length == offset
            and last.length + len(data) <= MERGE_LIMIT
            and len(last.parts) < MERGE_PARTS
        ):
            cost = len(data)
            last.parts.append(data)
            last.length += cost
            last.cost += cost
        else:
            cost = len(data) + WRITE_OVERHEAD
            queue.writes.append(_Write(handle, offset, [data], len(data), cost))
        self._queued += cost
        queue.queued_bytes += cost
        queue.queued += 1
        queue.writes[-1].seq = queue.queued
        queue.end = max(queue.end, offset + len(data))
        if not started and not self._spawn("write-behind", self._send, handle.inode, queue):
            await self._send(handle.inode, queue)  # no engine (yet, or any more): write now

    async def drain(self, inode: int, stall: float | None = None) -> None:
        """Until every write queued for *inode* so far is on the origin (or failed);
        writes queued meanwhile are not waited for. With *stall*: EIO once no batch
        has landed for that many seconds (a slow origin is waited for, a hung one not)."""
        queue = self._files.get(inode)
        if queue is None:
            return
        target = queue.queued
        queue.hurry.set()
        while queue.landed < target:
            with trio.move_on_after(math.inf if stall is None else stall) as waited:
                await queue.progress.wait()
            if waited.cancelled_caught:
                raise OSError(errno.EIO, f"no queued write landed within {stall:g}s")

    async def drain_all(self) -> None:
        """At unmount: until nothing is queued."""
        while self._files:
            await self.drain(next(iter(self._files)))

    def raise_error(self, handle: OpenFile) -> None:
        """Report (once) a write error met by *handle*'s queued bytes."""
        error = self._errors.pop(handle, None)
        if error is not None:
            raise error

    def forget(self, handle: OpenFile) -> None:
        """The handle is released: an error nobody can be told any more is logged."""
        error = self._errors.pop(handle, None)
        if error is not None:
            log.error(
                "%s: written bytes were lost, with no close() left to say so: %s",
                handle.relpath,
                error,
            )

    # -- the sender (one task per file with queued writes) -------------------------------

    async def _send(self, inode: int, queue: _FileQueue) -> None:
        try:
            while queue.writes:
                await self._gather(queue)
                batch = _take_batch(queue)
                if not queue.writes and queue.hurry.is_set():
                    queue.hurry = trio.Event()  # every drain so far waits for this batch at most
                target = batch[-1].seq
                try:
                    landed = await self._land(batch)
                except BaseException:
                    for item in batch:  # unknown whether it landed: the writer must not think so
                        self._errors.setdefault(item.handle, OSError(errno.EIO, "write failed"))
                    raise
                finally:
                    self._queued -= sum(w.cost for w in batch)
                    self._room.set()
                    queue.landed = target
                    queue.progress.set()
                    queue.progress = trio.Event()
                self._note_failures(landed.failed)
                if landed.st is not None:
                    self._landed(inode, landed.st)
        finally:
            del self._files[inode]
            self._abandon(queue)
            queue.landed = queue.queued
            queue.progress.set()

    def _abandon(self, queue: _FileQueue) -> None:
        """Writes a stopped sender leaves (cancelled at unmount, or a bug): their room is
        given back and their handles told, never left waiting or thought written."""
        while queue.writes:
            item = queue.writes.popleft()
            self._queued -= item.cost
            self._errors.setdefault(item.handle, OSError(errno.EIO, "the write was not sent"))
        self._room.set()

    async def _gather(self, queue: _FileQueue) -> None:
        """Let more writes join the batch, unless it is needed now or is big already."""
        if queue.queued_bytes >= MERGE_LIMIT or self._queued * 2 >= self.limit:
            return
        with trio.move_on_after(GATHER_SECONDS):
            await queue.hurry.wait()

    async def _land(self, batch: list[_Write]) -> _Landed:
        """The batch written, in order. In an outage it waits for the origin to come
        back, up to origin.timeout, then fails with EIO: bytes are not held forever."""
        waited = 0.0
        while True:
            try:
                return await self.monitor.call(write_batch, batch, timed=False)
            except OriginOffline:
                if waited >= self.monitor.timeout:
                    error = OSError(errno.EIO, "the origin went offline before the write landed")
                    return _Landed(None, [(w.handle, error) for w in batch])
            while not self.monitor.online and waited < self.monitor.timeout:
                await trio.sleep(OFFLINE_WAIT)
                waited += OFFLINE_WAIT

    def _note_failures(self, failed: list[tuple[OpenFile, OSError]]) -> None:
        for handle, error in failed:
            if error.errno in OUTAGE_ERRNOS:
                # as for any origin call: an outage, and EIO rather than ENOTCONN
                self.monitor.mark_offline(f"a write failed: {error}")
                error = OSError(errno.EIO, str(error))
            self._errors.setdefault(handle, error)


def _take_batch(queue: _FileQueue) -> list[_Write]:
    """The oldest writes, up to BATCH_BYTES (at least one)."""
    batch = [queue.writes.popleft()]
    size = batch[0].length
    while queue.writes and size + queue.writes[0].length <= BATCH_BYTES:
        batch.append(queue.writes.popleft())
        size += batch[-1].length
    queue.queued_bytes -= sum(w.cost for w in batch)
    return batch


def write_batch(batch: list[_Write]) -> _Landed:
    """Blocking: each write's bytes at its offset, through its handle's origin fd."""
    failed: list[tuple[OpenFile, OSError]] = []
    last: OpenFile | None = None
    for item in batch:
        try:
            with item.handle.file.use() as fd:
                _pwrite_all(fd, item.parts, item.offset)
            last = item.handle
        except OSError as exc:
            failed.append((item.handle, exc))
    st = None
    if last is not None:
        try:
            with last.file.use() as fd:
                st = os.fstat(fd)
        except OSError as exc:
            log.debug("fstat after a write batch: %s", exc)
    return _Landed(st, failed)


def _pwrite_all(fd: int, parts: list[bytes], offset: int) -> None:
    written = os.pwritev(fd, parts, offset) if len(parts) > 1 else os.pwrite(fd, parts[0], offset)
    total = sum(len(p) for p in parts)
    if written == total:
        return
    # Short (a full disk, a signal): the rest again, until it is taken or an error says why.
    rest = memoryview(b"".join(parts))[written:]
    offset += written
    while rest:
        done = os.pwrite(fd, rest, offset)
        if done <= 0:
            raise OSError(errno.EIO, "the origin took no bytes")
        rest, offset = rest[done:], offset + done
