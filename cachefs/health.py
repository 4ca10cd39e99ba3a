"""Is the origin answering? Offline detection, fail-fast while offline, probing back.

A NAS that vanishes (its mount dropped, the server down, a disk spun down
past ``origin.timeout``) makes origin calls fail with ENOTCONN / EIO / ... or
hang. The first such call marks the origin *offline* and logs it once. While
offline no call reaches the origin: callers get :class:`OriginOffline` at once
(reads of uncached ranges become EIO, changes EROFS; cached metadata and
chunks keep being served). A probe task re-opens the origin root every
``origin.probe_interval`` and brings the origin back online by itself.

Worker threads stuck in a hung origin call cannot be killed; they are
abandoned (``abandon_on_cancel``) and keep their limiter slot until the call
returns, which is why nothing new is sent while offline.
"""

from __future__ import annotations

import errno
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from .origin import Origin

log = logging.getLogger(__name__)

T = TypeVar("T")

# Timed calls hold the caller's limiter themselves; their thread needs no second one.
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
    def __init__(self, origin: Origin, timeout: float, probe_interval: float) -> None:
        self.origin = origin
        self.timeout = timeout
        self.probe_interval = probe_interval
        self.online = True
        self.since = time.time()
        self.reason = ""
        self.outages = 0
        # Called (on the trio loop) when the origin comes back: revalidate what was served.
        self.on_online: list[Callable[[], None]] = []
        self._wake = trio.Event()

    @property
    def state(self) -> str:
        return "online" if self.online else "offline"

    def describe(self) -> dict[str, Any]:
        return {
            "origin_state": self.state,
            "origin_state_since": round(self.since, 3),
            "origin_offline_reason": self.reason,
            "origin_outages": self.outages,
        }

    # -- calls --------------------------------------------------------------------------

    async def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        limiter: trio.CapacityLimiter | None = None,
        timed: bool = True,
    ) -> T:
        """Run blocking origin call *fn* in a worker thread, watching for an outage.

        *timed* calls (lookups, reads) that take longer than ``origin.timeout``
        mark the origin offline; changes (writes, fsync) are never cut short,
        since the caller must learn whether they happened.
        """
        if not self.online:
            raise OriginOffline()
        if not timed:
            return await self._classify(fn, args, limiter)
        if limiter is None:
            return await self._timed(fn, args)
        # Time the call, not the wait for a worker: a busy limiter is not an outage.
        async with limiter:
            return await self._timed(fn, args)

    async def _timed(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with trio.move_on_after(self.timeout):
            return await self._classify(fn, args, _UNLIMITED, abandon=True)
        self.mark_offline(f"no answer within {self.timeout:g}s")
        raise OriginOffline(f"origin did not answer within {self.timeout:g}s")

    async def _classify(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        limiter: trio.CapacityLimiter | None,
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
        self._wake.set()

    def _mark_online(self) -> None:
        offline_for = time.time() - self.since
        self.online = True
        self.since = time.time()
        self.reason = ""
        log.warning("origin %s is back online after %.1fs", self.origin.root, offline_for)
        for callback in self.on_online:
            callback()

    # -- probing ----------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe an offline origin until it answers again; forever."""
        task_status.started()
        while True:
            if self.online:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            await trio.sleep(self.probe_interval)
            if await self.probe():
                self._mark_online()

    async def probe(self) -> bool:
        """Can the origin root be opened again (and is it the origin, not an empty mount point)?"""
        with trio.move_on_after(self.timeout):
            try:
                await trio.to_thread.run_sync(self.origin.reconnect, abandon_on_cancel=True)
                return True
            except OSError as exc:
                log.debug("origin probe: %s", exc)
        return False
