"""Counters kept in process: cheap to bump on the hot path, read by xattrs."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    """Global counters. Tier counters live with each tier."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def get(self, name: str) -> int:
        return self.counters[name]

    def snapshot(self) -> dict[str, Any]:
        return dict(self.counters)
