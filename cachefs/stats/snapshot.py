"""The last stats report, handed from the trio thread to threads that must not touch it.

The daemon's trio side publishes a copy of ``Mount.report()`` (the dict behind
``user.cachefs.stats``) every second; the Prometheus endpoint's threads read
that copy, never the live counters, tiers or caches. Kept apart from
prometheus.py so that a mount without metrics never imports prometheus_client.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any


class LatestReport:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report: Mapping[str, Any] | None = None

    def publish(self, report: Mapping[str, Any]) -> None:
        """*report* is a fresh dict nobody changes afterwards: it is shared, not copied."""
        with self._lock:
            self._report = report

    def get(self) -> Mapping[str, Any] | None:
        with self._lock:
            return self._report
