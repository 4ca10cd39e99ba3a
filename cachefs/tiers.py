"""Cache tiers. The RAM tier keeps decompressed chunks in a byte-bounded LRU."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from .chunks import ChunkKey


@dataclass
class TierCounters:
    hits: int = 0
    misses: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions}


class RamTier:
    """Chunks in memory, least recently used evicted first, never over max_size."""

    name = "ram"

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.bytes = 0
        self.counters = TierCounters()
        self._chunks: OrderedDict[ChunkKey, bytes] = OrderedDict()
        self._last_access: dict[ChunkKey, float] = {}  # monotonic seconds
        # file id -> its keys, so a file's chunks can be dropped without a scan
        self._by_file: dict[tuple[int, int], set[ChunkKey]] = {}

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, key: ChunkKey) -> bool:
        return key in self._chunks

    def get(self, key: ChunkKey) -> bytes | None:
        data = self._chunks.get(key)
        if data is None:
            self.counters.misses += 1
            return None
        self._chunks.move_to_end(key)
        self._last_access[key] = time.monotonic()
        self.counters.hits += 1
        return data

    def put(self, key: ChunkKey, data: bytes) -> bool:
        """Store a chunk; False when it cannot fit at all."""
        if len(data) > self.max_size:
            return False
        self.discard(key)
        while self.bytes + len(data) > self.max_size:
            self._evict_one()
        self._chunks[key] = data
        self._last_access[key] = time.monotonic()
        self.bytes += len(data)
        self._by_file.setdefault(key.file_id, set()).add(key)
        return True

    def discard(self, key: ChunkKey) -> None:
        data = self._chunks.pop(key, None)
        if data is None:
            return
        del self._last_access[key]
        self.bytes -= len(data)
        keys = self._by_file.get(key.file_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_file[key.file_id]

    def drop_file(self, file_id: tuple[int, int]) -> int:
        """Drop every chunk of every version of a file; returns how many."""
        keys = list(self._by_file.get(file_id, ()))
        for key in keys:
            self.discard(key)
        return len(keys)

    def keys_of_file(self, file_id: tuple[int, int]) -> set[ChunkKey]:
        return set(self._by_file.get(file_id, ()))

    def expire(self, older_than: float) -> int:
        """Drop chunks last used before *older_than* (monotonic); LRU order makes it cheap."""
        dropped = 0
        while self._chunks:
            key = next(iter(self._chunks))
            if self._last_access[key] >= older_than:
                break
            self.discard(key)
            dropped += 1
        return dropped

    def _evict_one(self) -> None:
        key = next(iter(self._chunks))
        self.discard(key)
        self.counters.evictions += 1

    def stats(self) -> dict[str, int]:
        return {
            "chunks": len(self._chunks),
            "bytes": self.bytes,
            "max_size": self.max_size,
            **self.counters.as_dict(),
        }
