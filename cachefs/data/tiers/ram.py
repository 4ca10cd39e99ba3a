"""The RAM tier: decompressed chunks in memory, bounded in bytes.

Scan-resistant mode (the default) orders eviction with the ``tinylfu`` policy
(W-TinyLFU, policies.py): a new chunk enters a small window; leaving it, it
joins the main space only if the frequency sketch has seen it more often than
the chunk main would give up for it, and a second access in main moves it to
the protected segment (80 % of main). A media-library scan that reads every
file once therefore only churns the window, and the chunks people actually
re-read stay. Plain mode is one LRU list.

**What counts as an access.** Promotion and the sketch count *accesses*, not
lookups: one FUSE read is cut into several requests (128 KiB each, say) that
look up the same chunk, and each is one ``get``. The read path passes the
reader (its open file handle) with every lookup, and a lookup of the same
chunk as that reader's previous lookup is the same access again, not a new
one: it is served and counted as a hit, but does not count towards keeping
the chunk. Another handle, or the same handle after it has read another chunk,
is a new access. A lookup without a reader (tests, the simulator, pins) always
counts. This is a rule in requests, not in seconds, so it means the same at
any request rate: a scan that re-reads each file a second later does read it
twice, and it does count twice. A chunk stored without being read (read-ahead,
a pin's warm) has no access until someone reads it.

A read RAM serves counts for the disk tiers' copies too (``below``): each is
told (``DiskTier.note_read``, a lock-free append) and touches its policy at
its next eviction or migrator pass. Otherwise a chunk that stays hot in RAM
would look read-once to the SSD and HDD, be their first victim, and never be
promoted: the tiers are inclusive, and a disk tier sees only RAM's misses.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers.policies import EvictionPolicy, LRUPolicy, TinyLFUPolicy

# Readers whose last lookup is remembered (open handles, most recent first).
STREAMS = 1024


class TierBelow(Protocol):
    """A tier that is told of the reads RAM served of its chunks (DiskTier)."""

    def note_read(self, key: ChunkKey) -> None: ...


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

    def __init__(
        self,
        max_size: int,
        scan_resistant: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_size = max_size
        self.scan_resistant = scan_resistant
        self.clock = clock
        self.bytes = 0
        self.counters = TierCounters()
        self.policy: EvictionPolicy[ChunkKey] = (
            TinyLFUPolicy(max_size) if scan_resistant else LRUPolicy()
        )
        self._data: dict[ChunkKey, bytes] = {}
        # reader -> the chunk it looked up last (see "What counts as an access")
        self._streams: OrderedDict[object, ChunkKey] = OrderedDict()
        # chunks whose miss was an access, until they are stored
        self._pending: OrderedDict[ChunkKey, None] = OrderedDict()
        # file id -> its keys, so a file's chunks can be dropped without a scan
        self._by_file: dict[int, set[ChunkKey]] = {}
        self.pinned_files: set[int] = set()  # never evicted (pins.py)
        # The disk tiers below: a read served here counts for their copy too, or
        # their eviction and promotion would see only RAM's misses of a hot chunk.
        self.below: tuple[TierBelow, ...] = ()
        # Whether the last get was an access (not the next request of the same read):
        # the read path logs accesses by it (stats.access_log), by the same rule.
        self.counted = False

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: ChunkKey) -> bool:
        return key in self._data

    @property
    def protected_bytes(self) -> int:
        policy = self.policy
        return policy.protected_bytes if isinstance(policy, TinyLFUPolicy) else 0

    def peek(self, key: ChunkKey) -> bytes | None:
        """The chunk, or None, with no access counted (nobody read it)."""
        return self._data.get(key)

    def get(self, key: ChunkKey, reader: object = None) -> bytes | None:
        """The chunk, or None; *reader* (the open handle) tells a new access from
        the next request of the same read."""
        data = self._data.get(key)
        counts = self.counted = reader is None or self._new_access(key, reader)
        if data is None:
            self.counters.misses += 1
            if counts:  # the access the store that follows will be
                pending = self._pending
                pending[key] = None
                if len(pending) > STREAMS:  # a miss that was never stored: history only
                    self.policy.record(pending.popitem(last=False)[0], self.clock())
            return None
        if counts:
            self.policy.touch(key, self.clock())
            for tier in self.below:
                tier.note_read(key)
        self.counters.hits += 1
        return data

    def _new_access(self, key: ChunkKey, reader: object) -> bool:
        streams = self._streams
        if streams.get(reader) == key:
            return False
        streams[reader] = key
        streams.move_to_end(reader)
        if len(streams) > STREAMS:
            streams.popitem(last=False)
        return True

    def put(self, key: ChunkKey, data: bytes) -> bool:
        """Store a chunk; False when it cannot fit at all.

        It arrives with one access if a ``get`` missed it (the read it is for),
        with none if nobody has read it yet (read-ahead, a pin's warm).
        """
        accessed = self._pending.pop(key, False) is None
        size = len(data)
        if size > self.max_size:
            return False
        self.discard(key)
        if not self._make_room(size):
            return False  # everything left is pinned
        self._data[key] = data
        self.bytes += size
        self.policy.add(key, size, self.clock(), access=accessed)
        self._by_file.setdefault(key.file_id, set()).add(key)
        return True

    def _make_room(self, size: int) -> bool:
        if self.bytes + size <= self.max_size:
            return True
        victims = self.policy.victims(self.clock())
        try:
            for key in victims:
                if key.file_id in self.pinned_files:
                    continue
                self.discard(key)
                self.counters.evictions += 1
                if self.bytes + size <= self.max_size:
                    return True
        finally:
            victims.close()  # the keys it went past and kept go back in place
        return False

    def discard(self, key: ChunkKey) -> None:
        data = self._data.pop(key, None)
        if data is None:
            return
        self.policy.remove(key)
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
            k for k in self.policy.expired(older_than, 0.0) if k.file_id not in self.pinned_files
        ]
        for key in stale:
            self.discard(key)
        return len(stale)

    def stats(self) -> dict[str, int]:
        return {
            "chunks": len(self),
            "bytes": self.bytes,
            "max_size": self.max_size,
            "protected_bytes": self.protected_bytes,
            **self.counters.as_dict(),
        }
