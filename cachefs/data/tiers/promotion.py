"""When moving a chunk up a tier (HDD -> SSD) pays, and how much may move an hour.

A move reads the chunk from the lower tier and writes it to the upper one:
about the I/O of two reads of it from the lower tier
(``prediction.promote_move_cost``, 2 by default), plus wear on the SSD. What
it buys is the reads that will then be served by the upper tier. The best
guess at those is the chunk's recent past: its reads from the lower tier after
the one that brought it in, faded by the time since the last
(``policies.promotion_score``: reads x 1/(1 + hours idle) x the type's
``keep_weight``). So a chunk is promoted only when that score reaches
``promote_move_cost x promote_threshold``: with the defaults (2 x 0.6, media's
weight 0.7) it takes two re-reads in quick succession, and a movie watched one
more time (one re-read: 0.7 < 1.2) stays on the HDD. The cost is counted in
reads of the same chunk, so the rule is the same for any chunk size.

On top of that the migrator writes at most ``prediction.promote_rewrites_per_day``
times the upper tier's size a day, spread over the hours (a token bucket of
1/24 of it an hour, holding at most one hour's worth, full at the start): with
the default 1 the SSD is rewritten by promotions at most once a day; 0 stops
promotion.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# The defaults of prediction.promote_move_cost and promote_rewrites_per_day.
DEFAULT_MOVE_COST = 2.0  # a read from the lower tier + a write to the upper: ~2 reads
DEFAULT_REWRITES_PER_DAY = 1.0  # of the upper tier's max_size
HOUR = 3600.0
HOURS_PER_DAY = 24


def promotion_bar(threshold: float, move_cost: float = DEFAULT_MOVE_COST) -> float:
    """The promotion score a chunk needs to be worth moving up (see the module)."""
    return threshold * move_cost


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


def upper_tier_budget(
    max_size: int,
    rewrites_per_day: float = DEFAULT_REWRITES_PER_DAY,
    clock: Callable[[], float] = time.monotonic,
) -> HourlyBudget:
    """The hourly promotion budget of an upper tier of *max_size* bytes that
    promotions may rewrite *rewrites_per_day* times a day."""
    return HourlyBudget(max_size * rewrites_per_day / HOURS_PER_DAY, clock)
