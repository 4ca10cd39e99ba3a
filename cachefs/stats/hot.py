"""Which files are read most right now: byte counts that halve every HALF_LIFE.

For ``cachefs top``: a bounded table (MAX_FILES paths; the coldest go first)
fed by the read handler with the bytes each read served. Thread-safe; cheap
enough for every read (one dict update; ageing is applied lazily per path).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

HALF_LIFE = 30.0  # seconds
MAX_FILES = 2000


class HotFiles:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._files: dict[str, tuple[float, float, int]] = {}  # path -> (score, when, reads)

    def _decayed(self, score: float, when: float, now: float) -> float:
        return score * math.exp2(-(now - when) / HALF_LIFE)

    def record(self, path: str, nbytes: int) -> None:
        now = self._clock()
        with self._lock:
            score, when, reads = self._files.get(path, (0.0, now, 0))
            self._files[path] = (self._decayed(score, when, now) + nbytes, now, reads + 1)
            if len(self._files) > MAX_FILES:
                self._trim(now)

    def _trim(self, now: float) -> None:
        ranked = sorted(self._files.items(), key=lambda kv: self._decayed(kv[1][0], kv[1][1], now))
        for path, _ in ranked[: len(ranked) - MAX_FILES // 2]:
            del self._files[path]

    def top(self, n: int) -> list[dict[str, float | int | str]]:
        """The *n* hottest files: path, bytes per second lately (decayed rate), reads."""
        now = self._clock()
        with self._lock:
            scored = [
                (self._decayed(score, when, now), path, reads)
                for path, (score, when, reads) in self._files.items()
            ]
        scored.sort(reverse=True)
        rate = math.log(2) / HALF_LIFE  # a decayed sum times this is a rate
        return [
            {"path": path, "bytes_per_second": round(score * rate, 1), "reads": reads}
            for score, path, reads in scored[:n]
            if score >= 1.0
        ]
