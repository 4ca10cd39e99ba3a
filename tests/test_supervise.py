"""Error boundaries: a failing background task is logged, counted and run again."""

from __future__ import annotations

import itertools
import logging

import pytest
import trio
import trio.testing

from cachefs.common.supervise import FIRST_RESTART, guarded, supervised
from cachefs.stats.counters import Stats


def test_a_failing_task_is_restarted_with_growing_pauses(caplog: pytest.LogCaptureFixture) -> None:
    stats = Stats()
    starts: list[float] = []

    async def flaky() -> None:
        starts.append(trio.current_time())
        if len(starts) <= 3:
            raise UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed")

    async def main() -> None:
        await supervised(stats, "stats flusher", flaky)

    with caplog.at_level(logging.ERROR):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(starts) == 4  # three failures, then a clean return
    pauses = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert pauses == [FIRST_RESTART, 2 * FIRST_RESTART, 4 * FIRST_RESTART]
    assert stats.get("background_failures") == 3
    assert stats.get("background_failures:stats flusher") == 3
    failures = [r for r in caplog.records if "stats flusher failed" in r.getMessage()]
    assert len(failures) == 3 and all(r.exc_info for r in failures)  # with the traceback


def test_a_failing_job_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    stats = Stats()

    async def broken() -> None:
        raise KeyError("no such chunk")

    with caplog.at_level(logging.ERROR):
        trio.run(guarded, stats, "read-ahead", broken)
    assert stats.get("background_failures:read-ahead") == 1
    assert any(r.exc_info for r in caplog.records)


def test_cancellation_is_never_caught() -> None:
    stats = Stats()

    async def forever() -> None:
        await trio.sleep_forever()

    async def main() -> None:
        with trio.move_on_after(1):
            await supervised(stats, "janitor", forever)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert stats.get("background_failures") == 0
