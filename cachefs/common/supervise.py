"""Error boundaries for background work: a failing task never ends the mount.

Every task started beside the FUSE loop runs under one of these. An exception
(a bug, a disk that refuses an unlink, a library raising what it should not)
is logged once with its traceback to the mount's log, counted in
``user.cachefs.stats`` (``background_failures`` and
``background_failures:<task>``), and — for long-lived tasks — the task is
started again after a pause that doubles up to a minute. Cancellation is
never caught: unmounting still stops everything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

log = logging.getLogger(__name__)

FIRST_RESTART = 1.0  # seconds before a failed task runs again
LAST_RESTART = 60.0  # the longest pause between restarts
HEALTHY_AFTER = 600.0  # a task that ran this long before failing starts the pauses anew


@dataclass(frozen=True)
class Task:
    """A background task a part hands to the Engine: long-lived (restarted after a
    failure), or *once* (a failure is logged and counted, the mount goes on without it)."""

    name: str
    run: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...] = ()
    once: bool = False


class Counters(Protocol):
    """Where failures are counted: cachefs.stats.Stats."""

    def add(self, name: str, amount: int = 1) -> None: ...


def _failed(stats: Counters, name: str, what: str) -> None:
    stats.add("background_failures")
    stats.add(f"background_failures:{name}")
    log.exception("background task %s failed; %s", name, what)


async def supervised(
    stats: Counters, name: str, fn: Callable[..., Awaitable[Any]], *args: Any
) -> None:
    """Run long-lived task *fn* until it returns; after a failure, run it again."""
    pause = FIRST_RESTART
    while True:
        started = trio.current_time()
        try:
            await fn(*args)
            return
        except Exception:
            if trio.current_time() - started > HEALTHY_AFTER:
                pause = FIRST_RESTART
            _failed(stats, name, f"starting it again in {pause:g}s")
        await trio.sleep(pause)
        pause = min(LAST_RESTART, pause * 2)


async def guarded(
    stats: Counters, name: str, fn: Callable[..., Awaitable[Any]], *args: Any
) -> None:
    """Run one-off job *fn*; a failure is logged and counted, never raised."""
    try:
        await fn(*args)
    except Exception:
        _failed(stats, name, "the mount goes on without it")
