"""The Engine: every background task of one mount, started, supervised and stopped in one place.

The composition root (cachefs.app.compose) hands it the mount's tasks; each
runs behind an error boundary (cachefs.common.supervise): an exception is
logged with its traceback, counted in ``background_failures``, and a
long-lived task starts again after a growing pause. A background failure
never ends the mount. Handlers start one-off jobs (read-ahead, kernel notices,
dropping a changed file's chunks) with :meth:`Engine.spawn`.

Shutdown is ordered: :meth:`Engine.stop` runs the shutdown steps one after
the other (drain the chunk stores, flush the stats, write the metadata
snapshot), each bounded by its own timeout, and only then cancels the tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from cachefs.common.supervise import Counters, Task, guarded, supervised

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShutdownStep:
    """One step of an orderly stop, cut short after *timeout* seconds."""

    name: str
    run: Callable[[], Awaitable[Any]]
    timeout: float = 10.0


class Engine:
    def __init__(self, stats: Counters) -> None:
        self.stats = stats
        self._nursery: trio.Nursery | None = None
        self.started: list[str] = []  # names of the tasks run, in order (for stats, tests)

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(
        self,
        tasks: Sequence[Task],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run *tasks* until cancelled (by :meth:`stop` or the caller)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for task in tasks:
                    self._start(nursery, task)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def _start(self, nursery: trio.Nursery, task: Task) -> None:
        boundary = guarded if task.once else supervised
        nursery.start_soon(boundary, self.stats, task.name, task.run, *task.args, name=task.name)
        self.started.append(task.name)

    def spawn(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start one-off job *fn* behind an error boundary; False if the engine is not running
        (before the mount is served, or while it stops): the job is dropped."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(guarded, self.stats, name, fn, *args, name=name)
        return True

    async def stop(self, steps: Sequence[ShutdownStep]) -> None:
        """Run *steps* in order, each within its timeout, then cancel every task."""
        for step in steps:
            with trio.move_on_after(step.timeout) as scope:
                await guarded(self.stats, f"shutdown: {step.name}", step.run)
            if scope.cancelled_caught:
                log.warning("shutdown: %s did not finish within %gs", step.name, step.timeout)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
