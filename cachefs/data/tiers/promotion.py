"""When moving a chunk up a tier (HDD -> SSD) pays, and how much may move an hour.

A move reads the chunk from the lower tier and writes it to the upper one:
about the I/O of two reads of it from the lower tier (``MOVE_COST``), plus
wear on the SSD. What it buys is the reads that will then be served by the
upper tier. The best guess at those is the chunk's recent past: its reads
from the lower tier after the one that brought it in, faded by the time since
the last (``policies.promotion_score``: reads x 1/(1 + hours idle) x the
type's ``keep_weight``). So a chunk is promoted only when that score reaches
``MOVE_COST x prediction.promote_threshold``: with the defaults (0.6, media's
weight 0.7) it takes two re-reads in quick succession, and a movie watched one
more time (one re-read: 0.7 < 1.2) stays on the HDD. The cost is counted in
reads of the same chunk, so the rule is the same for any chunk size.

On top of that the migrator spends at most ``BUDGET_SHARE_PER_HOUR`` of the
upper tier's size an hour (a token bucket holding at most one hour's worth,
full at the start): the SSD is rewritten by promotions at most once a day.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MOVE_COST = 2.0  # a read from the lower tier + a write to the upper: ~2 reads
BUDGET_SHARE_PER_HOUR = 1 / 24  # of the upper tier's max_size
HOUR = 3600.0


def promotion_bar(threshold: float) -> float:
    """The promotion score a chunk needs to be worth moving up (see the module)."""
    return threshold * MOVE_COST


class HourlyBudget:
    """Bytes that may be moved: ``per_hour`` an hour, at most an hour's worth saved up."""

    def __init__(self, per_hour: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_hour = max(0.0, per_hour)
        self.clock = clock
        self._tokens = self.per_hour
        self._at = clock()

    def available(self) -> float:
        now = self.clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._tokens = min(self.per_hour, self._tokens + elapsed * self.per_hour / HOUR)
        return self._tokens

    def spend(self, nbytes: float) -> None:
        self.available()
        self._tokens = max(0.0, self._tokens - nbytes)


def upper_tier_budget(max_size: int, clock: Callable[[], float] = time.monotonic) -> HourlyBudget:
    """The hourly promotion budget of an upper tier of *max_size* bytes."""
    return HourlyBudget(max_size * BUDGET_SHARE_PER_HOUR, clock)
