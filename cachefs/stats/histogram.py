"""A latency histogram counted on the hot path: fixed buckets, one lock, no allocation.

Fed by the FUSE read handler (the time ``ChunkCache.read`` took) and read as a
plain dict in the stats xattr (``read_seconds``), which the Prometheus
endpoint turns into ``cachefs_read_seconds``. The buckets are cumulative
upper bounds, as Prometheus has them.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import Any

# From a RAM hit (tens of microseconds) to an origin that barely answers.
READ_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    def __init__(self, bounds: Sequence[float] = READ_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        slot = bisect.bisect_left(self.bounds, seconds)  # a value on a bound counts in it
        with self._lock:
            self._counts[slot] += 1
            self._sum += seconds

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": [[le, cumulative count], ...], "count": n, "sum": seconds}``;
        the last bucket is ``"+Inf"`` (JSON has no infinity)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        buckets: list[list[Any]] = []
        running = 0
        for bound, count in zip([*self.bounds, "+Inf"], counts, strict=True):
            running += count
            buckets.append([bound, running])
        return {"buckets": buckets, "count": running, "sum": round(total, 6)}
