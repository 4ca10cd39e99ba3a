"""The RAM tier: decompressed chunks in memory, bounded in bytes.

Plain mode is one LRU list. Scan-resistant mode (the default) is a segmented
LRU: a new chunk enters a *probation* segment and moves to the *protected*
segment (80 % of the tier) only when it is read again a while later; eviction
takes probation's least recently used first. A media-library scan that reads
every file once therefore only churns probation, and the chunks people
actually re-read stay protected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from cachefs.data.chunks import ChunkKey

PROTECTED_SHARE = 0.8
# A hit this soon after the chunk arrived is the same read (several FUSE
# requests per chunk, read-ahead), not a second access: no promotion.
PROMOTE_AFTER = 1.0


@dataclass
class TierCounters:
    hits: int = 0
    misses: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions}


class RamTier:
    """Chunks in memory, never over max_size."""

    name = "ram"

    def __init__(self, max_size: int, scan_resistant: bool = True, clock=time.monotonic) -> None:
        self.max_size = max_size
        self.scan_resistant = scan_resistant
        self.clock = clock
        self.bytes = 0
        self.protected_bytes = 0
        self.counters = TierCounters()
        self._probation: OrderedDict[ChunkKey, bytes] = OrderedDict()
        self._protected: OrderedDict[ChunkKey, bytes] = OrderedDict()
        self._arrived: dict[ChunkKey, float] = {}
        self._last_access: dict[ChunkKey, float] = {}
        # file id -> its keys, so a file's chunks can be dropped without a scan
        self._by_file: dict[int, set[ChunkKey]] = {}
        self.pinned_files: set[int] = set()  # never evicted (pins.py)

    def __len__(self) -> int:
        return len(self._probation) + len(self._protected)

    def __contains__(self, key: ChunkKey) -> bool:
        return key in self._probation or key in self._protected

    def get(self, key: ChunkKey) -> bytes | None:
        now = self.clock()
        data = self._protected.get(key)
        if data is not None:
            self._protected.move_to_end(key)
        else:
            data = self._probation.get(key)
            if data is None:
                self.counters.misses += 1
                return None
            if self.scan_resistant and now - self._arrived[key] >= PROMOTE_AFTER:
                self._promote(key, data)
            else:
                self._probation.move_to_end(key)
        self._last_access[key] = now
        self.counters.hits += 1
        return data

    def put(self, key: ChunkKey, data: bytes) -> bool:
        """Store a chunk (on probation); False when it cannot fit at all."""
        if len(data) > self.max_size:
            return False
        self.discard(key)
        while self.bytes + len(data) > self.max_size:
            if not self._evict_one():
                return False  # everything left is pinned
        now = self.clock()
        self._probation[key] = data
        self._arrived[key] = self._last_access[key] = now
        self.bytes += len(data)
        self._by_file.setdefault(key.file_id, set()).add(key)
        return True

    def _promote(self, key: ChunkKey, data: bytes) -> None:
        del self._probation[key]
        self._protected[key] = data
        self.protected_bytes += len(data)
        limit = self.max_size * PROTECTED_SHARE
        while self.protected_bytes > limit and len(self._protected) > 1:
            # the protected segment's oldest gets one more chance on probation
            old_key, old_data = self._protected.popitem(last=False)
            self.protected_bytes -= len(old_data)
            self._probation[old_key] = old_data

    def discard(self, key: ChunkKey) -> None:
        data = self._probation.pop(key, None)
        if data is None:
            data = self._protected.pop(key, None)
            if data is None:
                return
            self.protected_bytes -= len(data)
        del self._arrived[key]
        del self._last_access[key]
        self.bytes -= len(data)
        keys = self._by_file.get(key.file_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_file[key.file_id]

    def drop_file(self, file_id: int) -> int:
        """Drop every chunk of every version of a file; returns how many."""
        keys = list(self._by_file.get(file_id, ()))
        for key in keys:
            self.discard(key)
        return len(keys)

    def expire(self, older_than: float) -> int:
        """Drop chunks last used before *older_than* (on the tier's clock)."""
        stale = [
            k
            for k, t in self._last_access.items()
            if t < older_than and k.file_id not in self.pinned_files
        ]
        for key in stale:
            self.discard(key)
        return len(stale)

    def _evict_one(self) -> bool:
        for segment in (self._probation, self._protected):
            for key in segment:
                if key.file_id not in self.pinned_files:
                    self.discard(key)
                    self.counters.evictions += 1
                    return True
        return False

    def stats(self) -> dict[str, int]:
        return {
            "chunks": len(self),
            "bytes": self.bytes,
            "max_size": self.max_size,
            "protected_bytes": self.protected_bytes,
            **self.counters.as_dict(),
        }
