"""The Engine: tasks behind error boundaries, one-off jobs, and an ordered, bounded stop."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from cachefs.common import supervise
from cachefs.common.supervise import Task
from cachefs.engine.engine import Engine, ShutdownStep
from cachefs.stats.counters import Stats


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "FIRST_RESTART", 0.01)


def test_a_failing_task_is_restarted_while_the_others_go_on() -> None:
    stats = Stats()
    engine = Engine(stats)
    runs = {"failing": 0, "steady": 0}

    async def failing() -> None:
        runs["failing"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    async def steady() -> None:
        while True:
            runs["steady"] += 1
            await trio.sleep(0.01)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            tasks = [Task("failing", failing), Task("steady", steady)]
            await nursery.start(engine.run, tasks)
            with trio.fail_after(5):
                while runs["failing"] < 3:
                    await trio.sleep(0.01)
            steady_before = runs["steady"]
            await trio.sleep(0.1)
            assert runs["steady"] > steady_before  # never stopped by the failures
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert stats.get("background_failures:failing") >= 3
    assert stats.get("background_failures") == stats.get("background_failures:failing")
    assert engine.started == ["failing", "steady"]


def test_a_one_off_task_that_fails_is_counted_not_restarted() -> None:
    stats = Stats()
    engine = Engine(stats)
    runs = []

    async def once() -> None:
        runs.append(1)
        raise RuntimeError("a bug")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, [Task("warm-up", once, once=True)])
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert runs == [1]
    assert stats.get("background_failures:warm-up") == 1


def test_spawn_drops_jobs_unless_the_engine_runs_and_guards_them() -> None:
    stats = Stats()
    engine = Engine(stats)
    done: list[str] = []

    async def job(name: str) -> None:
        done.append(name)
        if name == "bad":
            raise OSError(errno.EROFS, "Read-only file system")

    async def main() -> None:
        assert not engine.spawn("early", job, "early")
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, [])
            assert engine.spawn("good", job, "good")
            assert engine.spawn("bad", job, "bad")
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert not engine.spawn("late", job, "late")

    trio.run(main)
    assert sorted(done) == ["bad", "good"]
    assert stats.get("background_failures:bad") == 1


def test_stop_runs_each_step_in_order_within_its_timeout_then_cancels_the_tasks() -> None:
    stats = Stats()
    engine = Engine(stats)
    order: list[str] = []
    task_cancelled = trio.Event()

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            order.append("tasks cancelled")
            task_cancelled.set()

    def step(name: str, hang: bool = False, fail: bool = False) -> ShutdownStep:
        async def run() -> None:
            order.append(name)
            if hang:
                await trio.sleep_forever()
            if fail:
                raise OSError(errno.EIO, "Input/output error")

        return ShutdownStep(name, run, timeout=0.2)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run, [Task("forever", forever)])
            steps = [
                step("drain chunk stores", hang=True),  # a hung disk: cut at its timeout
                step("flush stats", fail=True),  # Redis gone: counted, the stop goes on
                step("save metadata"),
            ]
            with trio.fail_after(5):
                await engine.stop(steps)
                await task_cancelled.wait()

    trio.run(main)
    assert order == ["drain chunk stores", "flush stats", "save metadata", "tasks cancelled"]
    assert stats.get("background_failures:shutdown: flush stats") == 1
    assert not engine.running
