"""Eviction policies: which chunk a cache tier gives up first.

Each tier keeps an index of its chunks (size, last access, access count,
content-type weight) in one of these policies and, when it needs room, walks
``victims()`` until enough bytes are free. Three policies, one interface:

* ``lru``    least recently used first (the RAM tier's default);
* ``lfu``    least frequently used first, with counts that fade by half every
             ``half_life`` seconds so yesterday's hits cannot squat forever;
* ``weight`` a GDSF-like score, frequency x recency x weight / size.

The score is defined once, here: ``keep_score`` (DESIGN.md's reads x recency x
weight). The weight policy ranks by it per byte (``gdsf_score``); the disk tiers
promote and demote by it (``promotion_score``, through each policy's
``promotion_score`` method), so eviction and migration can never drift apart.

The policies own no clock: every time is a float of seconds handed in by the
caller. Tests drive them with made-up times, and a persisted index keeps its
meaning across restarts when the caller passes wall-clock time.

``add``/``touch``/``remove`` are O(1); ``victims()`` sorts a snapshot of the
index (O(n log n)) because the caller evicts in batches, and keeping a sorted
structure current on every hit would cost the hot path more than it saves.
Entries are ``__slots__`` objects: about 140 bytes per chunk besides its key
(190 for LRU's ordered index), so 100,000 chunks cost under 20 MiB.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "DEFAULT_HALF_LIFE",
    "POLICIES",
    "EvictionPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "WeightPolicy",
    "gdsf_score",
    "keep_score",
    "make_policy",
    "promotion_score",
    "recency_factor",
]

K = TypeVar("K", bound=Hashable)

DEFAULT_HALF_LIFE = 3600.0
SECONDS_PER_HOUR = 3600.0


class EvictionPolicy(Protocol[K]):
    """What a tier needs from a policy. Times are caller-supplied float seconds."""

    name: str

    def add(self, key: K, size: int, now: float, weight: float = 1.0) -> None:
        """A new entry (a re-add replaces the old one, history included)."""
        ...

    def touch(self, key: K, now: float) -> None:
        """An access (hit); an unknown key is ignored."""
        ...

    def remove(self, key: K) -> None:
        """Forget a key; an unknown key is ignored."""
        ...

    def __contains__(self, key: object) -> bool: ...

    def __len__(self) -> int: ...

    def victims(self, now: float) -> Iterator[K]:
        """Every key, best-to-evict first; removing keys while iterating is safe."""
        ...

    def expired(self, now: float, ttl: float) -> list[K]:
        """Keys whose last access (or add) is older than ``now - ttl``."""
        ...

    def last_access(self, key: K) -> float | None: ...

    def access_count(self, key: K) -> int: ...

    def weight_of(self, key: K) -> float: ...  # 1.0 if unknown

    def promotion_score(self, key: K, now: float) -> float:
        """``promotion_score`` of *key*'s record at *now*; 0.0 if unknown."""
        ...

    def snapshot(self) -> list[tuple[K, int, float, int, float]]:
        """``(key, size, last_access, count, weight)`` records to persist the index."""
        ...

    def restore(self, key: K, size: int, last_access: float, count: int, weight: float) -> None:
        """Re-add one record from ``snapshot()``."""
        ...


@dataclass(slots=True)
class _Entry:
    """One indexed chunk. Mutable so a hit updates it in place (no re-allocation)."""

    size: int
    last: float  # last access or add, on the caller's clock
    count: int  # accesses; for LFU the aged count as of `last`
    weight: float  # the content type's weight (content_types.<type>.keep_weight), 0..1


def recency_factor(last_access: float, now: float) -> float:
    """DESIGN.md's recency factor: 1 / (1 + hours since the last access).

    A last access in the future (clock skew, a restored index) counts as now,
    so the factor stays within (0, 1].
    """
    hours = max(0.0, now - last_access) / SECONDS_PER_HOUR
    return 1.0 / (1.0 + hours)


def keep_score(reads: float, last_access: float, weight: float, now: float) -> float:
    """DESIGN.md's score, the one definition: reads x recency factor x the type's weight."""
    return reads * recency_factor(last_access, now) * weight


def gdsf_score(count: int, last_access: float, weight: float, size: int, now: float) -> float:
    """keep_score per byte, counting every access (the add too): what a byte of this
    chunk is worth keeping, for the weight policy's eviction order.

    Dividing by size makes one big chunk pay for the many small ones it would
    displace; a zero size counts as one byte so an empty chunk is not infinitely
    valuable. Counting the add lets weight and size order chunks read only once.
    """
    return keep_score(count, last_access, weight, now) / max(size, 1)


def promotion_score(count: int, last_access: float, weight: float, now: float) -> float:
    """keep_score of the reads after the first, for promotion and demotion between tiers.

    *count* is a policy's access count, which includes the add: the read that
    brought the chunk in does not count, or every chunk ever read once would
    qualify (1 x 1 x 0.7 > 0.6, media's weight over the default threshold).
    """
    return keep_score(max(0, count - 1), last_access, weight, now)


class _IndexedPolicy(Generic[K]):
    """The bookkeeping every policy shares; subclasses choose the ranking.

    Subclasses override ``_rank_key`` (a sort key, lowest evicted first) and,
    when an access means more than "count + 1", ``_on_access``.
    """

    name: str = ""

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = self._new_index()
        self._bytes = 0

    def _new_index(self) -> dict[K, _Entry]:
        return {}

    # -- the interface -------------------------------------------------------------------

    def add(self, key: K, size: int, now: float, weight: float = 1.0) -> None:
        self._insert(key, _Entry(size, now, 1, weight))

    def touch(self, key: K, now: float) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            self._on_access(key, entry, now)

    def remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def victims(self, now: float) -> Iterator[K]:
        # Rank eagerly (not inside the generator) so the order reflects the index
        # at the call, whatever the caller does before its first next().
        return self._still_present(self._ranked(now))

    def expired(self, now: float, ttl: float) -> list[K]:
        cutoff = now - ttl
        return [key for key, entry in self._entries.items() if entry.last < cutoff]

    def last_access(self, key: K) -> float | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.last

    def access_count(self, key: K) -> int:
        entry = self._entries.get(key)
        return 0 if entry is None else entry.count

    def weight_of(self, key: K) -> float:
        entry = self._entries.get(key)
        return entry.weight if entry is not None else 1.0

    def promotion_score(self, key: K, now: float) -> float:
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return promotion_score(entry.count, entry.last, entry.weight, now)

    def snapshot(self) -> list[tuple[K, int, float, int, float]]:
        # Index order is kept, so restoring in this order reproduces tie-breaks.
        return [(k, e.size, e.last, e.count, e.weight) for k, e in self._entries.items()]

    def restore(self, key: K, size: int, last_access: float, count: int, weight: float) -> None:
        self._insert(key, _Entry(size, last_access, count, weight))

    # -- extras a tier finds handy -------------------------------------------------------

    @property
    def total_size(self) -> int:
        """Sum of the sizes of all entries, kept current in O(1)."""
        return self._bytes

    def size_of(self, key: K) -> int:
        """The size recorded for *key*; 0 if unknown."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry.size

    # -- for subclasses ------------------------------------------------------------------

    def _insert(self, key: K, entry: _Entry) -> None:
        # Pop first so a replaced key moves to the end of the index (newest),
        # which is what LRU order and insertion-order tie-breaks expect.
        self.remove(key)
        self._entries[key] = entry
        self._bytes += entry.size

    def _on_access(self, key: K, entry: _Entry, now: float) -> None:
        entry.count += 1
        # A late-arriving, older timestamp must not make a key look less recent.
        entry.last = max(entry.last, now)

    def _rank_key(self, entry: _Entry, now: float) -> Any:
        raise NotImplementedError

    def _ranked(self, now: float) -> list[K]:
        # sorted() is stable: equal ranks keep index order (oldest insert first).
        rank = self._rank_key
        ordered = sorted(self._entries.items(), key=lambda item: rank(item[1], now))
        return [key for key, _ in ordered]

    def _still_present(self, keys: Iterable[K]) -> Iterator[K]:
        # The caller may remove keys as it goes (its own evictions, or a file
        # dropped meanwhile): never hand back a key that is no longer indexed.
        entries = self._entries
        for key in keys:
            if key in entries:
                yield key


class LRUPolicy(_IndexedPolicy[K]):
    """Least recently used (touched or added) first.

    The index is an OrderedDict kept in access order, so a hit is an O(1)
    ``move_to_end`` and ranking is a stable sort by last access that Timsort
    finishes in linear time on the already-ordered data. Sorting (rather than
    trusting insertion order alone) keeps entries restored out of order, or
    with older timestamps, in their right place.
    """

    name = "lru"

    def _new_index(self) -> dict[K, _Entry]:
        self._order: OrderedDict[K, _Entry] = OrderedDict()
        return self._order

    def _on_access(self, key: K, entry: _Entry, now: float) -> None:
        super()._on_access(key, entry, now)
        self._order.move_to_end(key)

    def _rank_key(self, entry: _Entry, now: float) -> float:
        return entry.last


class LFUPolicy(_IndexedPolicy[K]):
    """Least frequently used first, with popularity that fades over time.

    A count loses half its value every ``half_life`` seconds. Decay is lazy:
    the stored count is valid as of the entry's last access, and its effective
    value at ``now`` is ``count * 0.5 ** ((now - last) / half_life)``. On each hit
    the count is aged to ``now``, rounded, and incremented. Keeping it an
    integer (instead of a float) means ``snapshot()`` records the whole state,
    so a restored index ranks exactly as before; the rounding costs at most
    half a hit per access.

    Ties on effective count go to the older last access. A new chunk starts
    at 1 and so ranks below anything used twice recently, which keeps a
    one-pass scan from pushing out proven chunks (DESIGN.md rule 8).
    ``half_life=math.inf`` gives plain LFU without aging.
    """

    name = "lfu"

    def __init__(self, half_life: float = DEFAULT_HALF_LIFE) -> None:
        if not half_life > 0:  # also rejects NaN
            raise ValueError(f"half_life must be positive, not {half_life!r}")
        super().__init__()
        self.half_life = half_life

    def frequency(self, key: K, now: float) -> float:
        """The effective (aged) access count of *key* at *now*; 0.0 if unknown."""
        entry = self._entries.get(key)
        return 0.0 if entry is None else entry.count * self._decay(entry.last, now)

    def _decay(self, since: float, now: float) -> float:
        return 0.5 ** (max(0.0, now - since) / self.half_life)

    def _on_access(self, key: K, entry: _Entry, now: float) -> None:
        aged = entry.count * self._decay(entry.last, now)
        entry.count = math.floor(aged + 0.5) + 1  # round half up: deterministic
        entry.last = max(entry.last, now)

    def _rank_key(self, entry: _Entry, now: float) -> tuple[float, float]:
        # log2 of the effective count: the same order, but a count aged by many
        # half-lives does not underflow to 0.0 and tie with every other old key.
        age = max(0.0, now - entry.last) / self.half_life
        log_count = math.log2(entry.count) if entry.count > 0 else -math.inf
        return (log_count - age, entry.last)


class WeightPolicy(_IndexedPolicy[K]):
    """Lowest GDSF-like score first: frequency x recency x weight / size.

    Frequency is the access count (an add counts as one), recency is
    DESIGN.md's ``1 / (1 + hours since last access)`` and weight the content
    type's weight, so a rarely read, stale, large, low-weight chunk goes
    first (``gdsf_score``). Ties go to the older last access.
    """

    name = "weight"

    def score(self, key: K, now: float) -> float:
        """The gdsf_score of *key* at *now* (higher = keep); 0.0 if unknown."""
        entry = self._entries.get(key)
        return 0.0 if entry is None else self._score(entry, now)

    @staticmethod
    def _score(entry: _Entry, now: float) -> float:
        return gdsf_score(entry.count, entry.last, entry.weight, entry.size, now)

    def _rank_key(self, entry: _Entry, now: float) -> tuple[float, float]:
        return (self._score(entry, now), entry.last)


POLICIES: dict[str, Callable[[], _IndexedPolicy[Any]]] = {
    LRUPolicy.name: LRUPolicy,
    LFUPolicy.name: LFUPolicy,
    WeightPolicy.name: WeightPolicy,
}


def make_policy(name: str) -> EvictionPolicy[Any]:
    """The policy called *name* ("lru", "lfu" or "weight"), with default settings."""
    try:
        factory = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown eviction policy {name!r} (expected one of: {known})") from None
    return factory()
