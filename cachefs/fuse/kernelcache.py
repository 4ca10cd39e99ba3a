"""Prefetched heads handed to the kernel's page cache.

A prefetch puts the head of the file a client will open next in the RAM tier,
yet each of the client's reads still costs a FUSE round trip (1 MiB per
request at most, ~1 ms each under load: 4 of the 5.6 ms an episode's start
took). Stored in the kernel's page cache with ``notify_store`` and kept by the
open (``keep_cache``), the head costs no round trip at all.

Pages of one version only. The handlers decide what may be stored (CacheFS.
hand_to_kernel: a file the kernel knows, not open, not being written, with no
pages of another version); this module stores it off the trio thread and lets
every handler that opens the file or changes its size wait until a store in
flight has landed, so that an open answered without keep_cache (which drops
the kernel's pages) or a truncation always comes after the store, never
before it (docs/concurrency.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pyfuse3
import trio

from cachefs.stats.counters import Stats

log = logging.getLogger(__name__)

Spawn = Callable[..., bool]  # Engine.spawn: (name, async fn, *args) -> started


class KernelStore:
    def __init__(self, limiter: trio.CapacityLimiter, spawn: Spawn, stats: Stats) -> None:
        self._limiter, self._spawn, self.stats = limiter, spawn, stats
        self._in_flight: dict[int, trio.Event] = {}  # inode -> set once its store landed

    def busy(self, inode: int) -> bool:
        return inode in self._in_flight

    def store(self, inode: int, pieces: Sequence[tuple[int, bytes]]) -> bool:
        """Start storing (offset, bytes) *pieces* of *inode*; False if it could not start."""
        done = self._in_flight[inode] = trio.Event()
        if self._spawn("kernel store", self._store, inode, pieces, done):
            return True
        del self._in_flight[inode]  # the engine is not running: nothing was started
        done.set()
        return False

    async def wait(self, inode: int) -> None:
        """Until no store of *inode* is in flight."""
        done = self._in_flight.get(inode)
        if done is not None:
            await done.wait()

    async def _store(
        self, inode: int, pieces: Sequence[tuple[int, bytes]], done: trio.Event
    ) -> None:
        try:
            # From a worker thread: the kernel may wait for a page lock that a read
            # request, which this loop must answer, holds.
            await trio.to_thread.run_sync(self._write, inode, pieces, limiter=self._limiter)
            self.stats.add("prefetch_kernel_bytes", sum(len(data) for _, data in pieces))
        except OSError as exc:  # ENOENT: the kernel forgot the inode meanwhile
            log.debug("kernel store of inode %d: %s", inode, exc)
        finally:
            del self._in_flight[inode]
            done.set()

    @staticmethod
    def _write(inode: int, pieces: Sequence[tuple[int, bytes]]) -> None:
        for offset, data in pieces:
            pyfuse3.notify_store(inode, offset, data)
