"""Is the origin answering? Offline detection, fail-fast while offline, probing back.

A NAS that vanishes (its mount dropped, the server down, a disk spun down
past ``origin.timeout``) makes origin calls fail with ENOTCONN / EIO / ... or
hang. The first such call marks the origin *offline* and logs it once. While
offline no call reaches the origin: callers get :class:`OriginOffline` at once
(reads of uncached ranges become EIO, changes EROFS; cached metadata and
chunks keep being served). A probe task re-opens the origin root every
``origin.probe_interval`` and brings the origin back online by itself.

While online the same task checks every ``probe_interval`` that the origin
path still leads to the file system cachefs holds open (``umount -l`` of a
NAS, another disk mounted in its place) and that its root answers within the
timeout, so a hung origin is noticed even when no read is waiting on it.

Origin calls get worker threads from separate budgets, so one kind can never
starve another: *timed* calls (lookups, listings, reads) from ``reads``,
*untimed* ones (writes, fsync, creates, closes: never cut short, the caller
must learn whether they happened) from ``changes``, the checks and probes from
a budget of one. A thread stuck in a hung call cannot be killed; a timed one
is abandoned but keeps its slot until the call returns, so a hung origin
holds at most ``mount.max_threads`` threads of each budget, never more. The
wait for a slot counts against the timeout, and a change waiting for a slot
fails (EROFS) as soon as the origin is marked offline: a writer queued behind
calls stuck in a dead origin gets an answer, not a hang.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from cachefs.origin.access import Origin

log = logging.getLogger(__name__)

T = TypeVar("T")

# The thread of an untimed call runs on the slot its task holds.
_UNLIMITED = trio.CapacityLimiter(math.inf)

# Errors that say "the origin is not there", not "this file has a problem".
OUTAGE_ERRNOS = frozenset(
    {
        errno.ENOTCONN,
        errno.EIO,
        errno.ENODEV,
        errno.ENXIO,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.ESHUTDOWN,
        errno.ECONNABORTED,
        errno.ECONNRESET,
        errno.ECONNREFUSED,
    }
)


class OriginOffline(OSError):
    def __init__(self, reason: str = "origin is offline") -> None:
        super().__init__(errno.EIO, reason)


class OriginMonitor:
    def __init__(
        self, origin: Origin, timeout: float, probe_interval: float, threads: int = 16
    ) -> None:
        self.origin = origin
        self.timeout = timeout
        self.probe_interval = probe_interval
        self.online = True
        self.since = time.time()
        self.reason = ""
        self.outages = 0
        # Called (on the trio loop) when the origin comes back: revalidate what was served.
        self.on_online: list[Callable[[], None]] = []
        self.reads = trio.CapacityLimiter(threads)  # timed calls
        self.changes = trio.CapacityLimiter(threads)  # untimed calls
        self._checks = trio.CapacityLimiter(1)  # the online check and the offline probe
        self._queued_changes: set[trio.CancelScope] = set()

    @property
    def state(self) -> str:
        return "online" if self.online else "offline"

    def describe(self) -> dict[str, Any]:
        return {
            "origin_state": self.state,
            "origin_state_since": round(self.since, 3),
            "origin_offline_reason": self.reason,
            "origin_outages": self.outages,
            "origin_threads_reading": self.reads.borrowed_tokens,
            "origin_threads_changing": self.changes.borrowed_tokens,
        }

    # -- calls --------------------------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any, timed: bool = True) -> T:
        """Run blocking origin call *fn* in a worker thread, watching for an outage.

        *timed* calls (lookups, reads) that take longer than ``origin.timeout``,
        waiting for a thread included, mark the origin offline; changes (writes,
        fsync) are never cut short, since the caller must learn whether they
        happened.
        """
        if not self.online:
            raise OriginOffline()
        if timed:
            return await self._timed(fn, args)
        return await self._untimed(fn, args)

    async def _timed(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with trio.move_on_after(self.timeout):
            return await self._classify(fn, args, self.reads, abandon=True)
        why = f"no answer within {self.timeout:g}s"
        if self.reads.available_tokens == 0:
            why += " (every origin thread busy)"
        self.mark_offline(why)
        raise OriginOffline(f"origin: {why}")

    async def _untimed(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with trio.CancelScope() as queued:
            self._queued_changes.add(queued)
            try:
                await self.changes.acquire()
            finally:
                self._queued_changes.discard(queued)
        if queued.cancelled_caught:
            raise OriginOffline()  # went offline while this change waited for a thread
        try:
            if not self.online:
                raise OriginOffline()
            return await self._classify(fn, args, _UNLIMITED)
        finally:
            self.changes.release()

    async def close_fd(self, fd: int) -> None:
        """Close an origin fd, online or not (NFS may block in close: a change's thread)."""
        try:
            await trio.to_thread.run_sync(
                os.close, fd, limiter=self.changes, abandon_on_cancel=True
            )
        except OSError as exc:
            log.debug("closing origin fd %d: %s", fd, exc)

    async def _classify(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        limiter: trio.CapacityLimiter,
        abandon: bool = False,
    ) -> T:
        try:
            return await trio.to_thread.run_sync(
                fn, *args, limiter=limiter, abandon_on_cancel=abandon
            )
        except OriginOffline:
            raise
        except OSError as exc:
            if exc.errno not in OUTAGE_ERRNOS:
                raise
            self.mark_offline(f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc}")
            # The caller serves its cached answer, or EIO: never ENOTCONN, which
            # would make the application think cachefs itself had died.
            raise OriginOffline(str(exc)) from exc

    # -- state changes --------------------------------------------------------------------

    def mark_offline(self, reason: str) -> None:
        if not self.online:
            return
        self.online = False
        self.since = time.time()
        self.reason = reason
        self.outages += 1
        log.warning(
            "origin %s is offline (%s): serving what is cached; uncached reads fail with EIO, "
            "changes with EROFS; probing every %gs",
            self.origin.root,
            reason,
            self.probe_interval,
        )
        for queued in self._queued_changes:
            queued.cancel()

    def _mark_online(self) -> None:
        offline_for = time.time() - self.since
        self.online = True
        self.since = time.time()
        self.reason = ""
        log.warning("origin %s is back online after %.1fs", self.origin.root, offline_for)
        for callback in self.on_online:
            callback()

    # -- checking and probing -----------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every probe_interval: check an online origin, probe an offline one; forever."""
        task_status.started()
        while True:
            await trio.sleep(self.probe_interval)
            if self.online:
                await self.check()
            elif await self.probe():
                self._mark_online()

    async def check(self) -> None:
        """Is the online origin still there, the same file system, and answering?"""
        with trio.move_on_after(self.timeout):
            try:
                await self._on_check_thread(self.origin.check_same)
            except OSError as exc:
                if exc.errno in OUTAGE_ERRNOS or exc.errno in (errno.ENOENT, errno.ESTALE):
                    self.mark_offline(str(exc))
                else:
                    log.debug("origin check: %s", exc)
            return
        self.mark_offline(f"its root did not answer within {self.timeout:g}s")

    async def probe(self) -> bool:
        """Can the origin root be opened again (and is it the origin, not an empty mount point)?"""
        with trio.move_on_after(self.timeout):
            try:
                await self._on_check_thread(self.origin.reconnect)
                return True
            except OSError as exc:
                log.debug("origin probe: %s", exc)
        return False

    async def _on_check_thread(self, fn: Callable[[], None]) -> None:
        # One slot: while an earlier check hangs in the origin, the next one waits
        # for it (and times out) instead of leaving another thread behind.
        await trio.to_thread.run_sync(fn, limiter=self._checks, abandon_on_cancel=True)
