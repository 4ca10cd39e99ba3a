"""pyfuse3's wait for the next FUSE request, with a short busy poll before it sleeps.

A FUSE request is a round trip: the caller sleeps in the kernel until we
answer, and our reading worker sleeps in epoll until the next request. Waking a
sleeping thread is the dearest step of that trip on a virtual machine (the
vCPU halts and needs an interrupt to run again) and on CPUs with deep idle
states. A library scan after drop_caches is ~15,000 such trips, and a scanner
sends its next request a few µs after our answer. So after each request the
reading worker polls /dev/fuse for up to ``mount.busy_poll`` before it sleeps,
and yields to trio between polls, so every other task and thread completion
runs as before. The same idea as Linux's NAPI busy polling, on a smaller scale.

pyfuse3 reaches trio only through its module global ``trio``, which is how
pyfuse3.asyncio swaps in asyncio; `install` hands it a copy of trio whose
``lowlevel.wait_readable`` and ``lowlevel.notify_closing`` are ours.
"""

from __future__ import annotations

import logging
import os
import select
import time
import types

import pyfuse3
import trio

from cachefs.config import format_duration

log = logging.getLogger(__name__)


class BusyPoll:
    """``wait_readable`` that polls an fd for *window* seconds before sleeping in epoll."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.caught = 0  # requests that arrived while we polled: no wake-up needed
        self.slept = 0  # waits that ended in epoll
        self._pollers: dict[int, select.poll] = {}
        self._closing: set[int] = set()

    async def wait_readable(self, fd: int) -> None:
        if self.window:
            give_up = time.perf_counter() + self.window
            poller = self._poller(fd)
            while True:
                self._check_open(fd)
                if poller.poll(0):
                    self.caught += 1
                    await trio.lowlevel.checkpoint_if_cancelled()
                    return
                if time.perf_counter() >= give_up:
                    break
                await trio.lowlevel.checkpoint()  # every other task runs meanwhile
        self._check_open(fd)
        self.slept += 1
        await trio.lowlevel.wait_readable(fd)

    def notify_closing(self, fd: int) -> None:
        """pyfuse3.terminate(): wake every waiter, the polling one included."""
        self._closing.add(fd)
        self._pollers.pop(fd, None)
        trio.lowlevel.notify_closing(fd)

    def _check_open(self, fd: int) -> None:
        if fd in self._closing:
            raise trio.ClosedResourceError("the FUSE session is closing")

    def _poller(self, fd: int) -> select.poll:
        poller = self._pollers.get(fd)
        if poller is None:
            poller = self._pollers[fd] = select.poll()
            poller.register(fd, select.POLLIN)
        return poller


def describe_busy_poll(busy: BusyPoll | None) -> dict[str, str | int]:
    """The ``fuse_busy_poll*`` keys of ``user.cachefs.stats``."""
    return {
        "fuse_busy_poll": format_duration(busy.window) if busy else "off",
        "fuse_busy_poll_caught": busy.caught if busy else 0,
        "fuse_busy_poll_slept": busy.slept if busy else 0,
    }


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0))


def install(window: float) -> BusyPoll | None:
    """Make pyfuse3's workers poll for *window* seconds before sleeping; None if off.

    Off for a zero window, and on a single CPU, where polling would keep the
    very process we wait for from running.
    """
    if window <= 0 or usable_cpus() < 2:
        uninstall()
        return None
    if not isinstance(getattr(pyfuse3, "trio", None), types.ModuleType):
        # A pyfuse3 that no longer takes trio from this global: leave it alone.
        log.warning("this pyfuse3 has no trio hook: mount.busy_poll is off")
        return None
    busy = BusyPoll(window)
    lowlevel = types.ModuleType("trio.lowlevel")
    lowlevel.__dict__.update(vars(trio.lowlevel))
    lowlevel.wait_readable = busy.wait_readable  # type: ignore[attr-defined]
    lowlevel.notify_closing = busy.notify_closing  # type: ignore[attr-defined]
    shim = types.ModuleType("trio")
    shim.__dict__.update(vars(trio))
    shim.lowlevel = lowlevel  # type: ignore[attr-defined]
    pyfuse3.trio = shim  # type: ignore[attr-defined]
    return busy


def uninstall() -> None:
    pyfuse3.trio = trio  # type: ignore[attr-defined]
