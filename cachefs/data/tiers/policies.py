"""Eviction policies: which chunk a cache tier gives up first.

Each tier keeps an index of its chunks (size, last access, access count,
content-type weight) in one of these policies and, when it needs room, walks
``victims()`` until enough bytes are free. Four policies, one interface:

* ``tinylfu`` W-TinyLFU, the default of every tier: a small LRU *window* for
  new chunks, a segmented-LRU *main* space (probation, then protected), and
  between them an admission filter: a chunk leaving the window enters main
  only if a frequency sketch (count-min, ageing by halving; the history of
  evicted chunks too) says it is read more often than the chunks main would
  give up for it. Size-aware: a big chunk must beat every victim it would
  displace, and the bytes its victims free beyond its size let the next
  candidates seen twice in without a duel (main keeps its share). A chunk in
  main is protected at its third access. The window's
  share adapts on ghost hits, as ARC's target does.
* ``lru``    least recently used first;
* ``lfu``    least frequently used first, with counts that fade by half every
             ``half_life`` seconds so yesterday's hits cannot squat forever;
* ``weight`` a GDSF-like order, frequency x recency x weight / size.

The score is defined once, in scoring.py: ``keep_score`` (DESIGN.md's reads x
recency x weight). The disk tiers promote and demote by it (``promotion_score``, through
each policy's ``promotion_score`` method), whatever the eviction policy.

The policies own no clock: every time is a float of seconds handed in by the
caller. Tests drive them with made-up times, and a persisted index keeps its
meaning across restarts when the caller passes wall-clock time.

Cost. ``add``/``touch``/``remove`` are O(1) (``tinylfu``) or O(log n) (a heap
push for the others); a ``victims()`` pass costs O(log n) (heap) or amortised
O(1) (``tinylfu``) per key it yields, never a sort of the index, so a batch
eviction holds the tier lock for the victims it takes, not for the whole index
(``bench/eviction_cost.py``). The ``lru``, ``lfu`` and ``weight`` orders are
kept in a heap of static rank keys: an LFU count aged to ``now`` ranks as
``log2(count) + last / half_life`` minus the same ``now / half_life`` for every
key, so the order needs no ``now``; ``weight`` uses the same exponential fading
(it halves per idle hour; DESIGN.md's ``1 / (1 + hours)`` is not an order a
heap can keep, and ``WeightPolicy.score`` still reports that formula). Touched
keys leave a stale heap item behind, compacted when they outnumber the live
ones. Only a pass asked for at a time before some key's last access (a clock
stepped back) is ranked by a sort, exactly as before.

W-TinyLFU and its sketch live in tinylfu.py, with an index of typed arrays
instead of an object per chunk (a disk tier holds a million); the three heap
policies share ``_IndexedPolicy``'s dict of ``_Entry`` objects. This module
names them all (``POLICIES``, ``make_policy``) and re-exports the scores.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Generator, Hashable, Iterable, KeysView
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from cachefs.data.tiers.scoring import (
    SECONDS_PER_HOUR,
    gdsf_score,
    keep_score,
    promotion_score,
    recency_factor,
)
from cachefs.data.tiers.tinylfu import FrequencySketch, TinyLFUPolicy, stable_hash

__all__ = [
    "DEFAULT_HALF_LIFE",
    "POLICIES",
    "SECONDS_PER_HOUR",
    "EvictionPolicy",
    "FrequencySketch",
    "LFUPolicy",
    "LRUPolicy",
    "TinyLFUPolicy",
    "WeightPolicy",
    "gdsf_score",
    "keep_score",
    "make_policy",
    "promotion_score",
    "recency_factor",
    "stable_hash",
]

K = TypeVar("K", bound=Hashable)

DEFAULT_HALF_LIFE = 3600.0
# The weight policy's ranking fades a chunk's worth by half per idle hour
# (DESIGN.md's recency factor is also 1/2 after one hour).
WEIGHT_HALF_LIFE = SECONDS_PER_HOUR


class EvictionPolicy(Protocol[K]):
    """What a tier needs from a policy. Times are caller-supplied float seconds."""

    name: str

    def add(self, key: K, size: int, now: float, weight: float = 1.0, access: bool = True) -> None:
        """A new entry (a re-add replaces the old one, history included).

        *access*: the add is an access (the miss that brought the chunk in), so
        the entry starts with a count of 1; False for a chunk stored without
        being read (read-ahead): a count of 0.
        """
        ...

    def touch(self, key: K, now: float) -> None:
        """An access (hit); an unknown key is ignored."""
        ...

    def record(self, key: K, now: float) -> None:
        """An access to a key that is not held (a miss nobody may store): history only."""
        ...

    def remove(self, key: K) -> None:
        """Forget a key; an unknown key is ignored."""
        ...

    def __contains__(self, key: object) -> bool: ...

    def __len__(self) -> int: ...

    def keys(self) -> KeysView[K]:
        """The keys held, in no particular order (iterate under the tier's lock)."""
        ...

    def victims(self, now: float) -> Generator[K, None, None]:
        """Every key, best-to-evict first, each at most once; removing keys while
        iterating is safe, keys added after the call are not part of the pass.
        Close the iterator (or let it go) when done: keys it went past and the
        caller kept go back where they were."""
        ...

    def expired(self, now: float, ttl: float) -> list[K]:
        """Keys whose last access (or add) is older than ``now - ttl``."""
        ...

    def last_access(self, key: K) -> float | None: ...

    def access_count(self, key: K) -> int: ...

    def weight_of(self, key: K) -> float: ...  # 1.0 if unknown

    def size_of(self, key: K) -> int: ...  # 0 if unknown

    def promotion_score(self, key: K, now: float) -> float:
        """``promotion_score`` of *key*'s record at *now*; 0.0 if unknown."""
        ...

    def snapshot(self) -> list[tuple[K, int, float, int, float]]:
        """``(key, size, last_access, count, weight)`` records to persist the index."""
        ...

    def restore(self, key: K, size: int, last_access: float, count: int, weight: float) -> None:
        """Re-add one record from ``snapshot()``."""
        ...


@dataclass(slots=True, eq=False)
class _Entry:
    """One indexed chunk. Mutable so a hit updates it in place (no re-allocation)."""

    size: int
    last: float  # last access or add, on the caller's clock
    count: int  # accesses; for LFU the aged count as of `last`
    weight: float  # the content type's weight (content_types.<type>.keep_weight), 0..1
    born: int = 0  # when it was added: a victims() pass started before skips it
    seq: int = 0  # the tie-break of equal ranks: add order (LRU: access order)
    item: Any = None  # its live heap item (heap-ranked policies)
    borrowed: bool = False  # taken out of its heap by a victims() pass in progress


class _IndexedPolicy(Generic[K]):
    """The bookkeeping every policy shares; subclasses choose the order.

    Subclasses place entries in their structure (``_placed``), take them out
    (``_unplaced``), react to a hit (``_on_access``) and walk their order
    (``victims``).
    """

    name: str = ""

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}
        self._bytes = 0
        self._ops = 0  # numbers adds (born) and tie-breaks (seq)
        self._newest = -math.inf  # the latest access time ever seen

    # -- the interface -------------------------------------------------------------------

    def add(self, key: K, size: int, now: float, weight: float = 1.0, access: bool = True) -> None:
        self._insert(key, _Entry(size, now, int(access), weight))

    def touch(self, key: K, now: float) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            if now > self._newest:
                self._newest = now
            self._on_access(key, entry, now)

    def record(self, key: K, now: float) -> None:
        """Only tinylfu keeps a history of keys it does not hold."""

    def remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            self._unplaced(key, entry)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> KeysView[K]:
        return self._entries.keys()

    def victims(self, now: float) -> Generator[K, None, None]:
        raise NotImplementedError

    def expired(self, now: float, ttl: float) -> list[K]:
        cutoff = now - ttl
        stale = [(e.seq, key) for key, e in self._entries.items() if e.last < cutoff]
        stale.sort(key=lambda pair: pair[0])  # tie-break order (LRU: access order)
        return [key for _, key in stale]

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

    def _tick(self) -> int:
        self._ops += 1
        return self._ops

    def _insert(self, key: K, entry: _Entry) -> None:
        # Remove first so a replaced key is a new entry (newest, history reset).
        self.remove(key)
        entry.born = entry.seq = self._tick()
        if entry.last > self._newest:
            self._newest = entry.last
        self._entries[key] = entry
        self._bytes += entry.size
        self._placed(key, entry)

    def _placed(self, key: K, entry: _Entry) -> None:
        raise NotImplementedError

    def _unplaced(self, key: K, entry: _Entry) -> None:
        """Heap-ranked policies leave the stale item behind (skipped, compacted)."""

    def _on_access(self, key: K, entry: _Entry, now: float) -> None:
        entry.count += 1
        # A late-arriving, older timestamp must not make a key look less recent.
        entry.last = max(entry.last, now)


class _HeapRanked(_IndexedPolicy[K]):
    """A policy whose order is a static rank key, kept in a lazy min-heap.

    Heap items are ``(rank, last, seq, key)``; an entry's live item is the one
    it points to, any other item of its key is stale and dropped when popped.
    A ``victims()`` pass pops items (O(log n) each) and pushes back, when the
    iterator is closed, those of keys the caller kept.
    """

    # True when the rank at a given `now` clamps ages at 0 (LFU, weight): a pass
    # at a time before some entry's last access is then ranked exactly, by a sort.
    clamped = False

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[float, float, int, Any]] = []

    def _static_rank(self, entry: _Entry) -> float:
        raise NotImplementedError

    def _rank_at(self, entry: _Entry, now: float) -> float:
        """The rank at *now*, ages clamped at 0 (the exact order of a sort)."""
        return self._static_rank(entry)

    def _placed(self, key: K, entry: _Entry) -> None:
        item = (self._static_rank(entry), entry.last, entry.seq, key)
        entry.item = item
        entry.borrowed = False
        heap = self._heap
        heapq.heappush(heap, item)
        if len(heap) > 2 * len(self._entries) + 64:
            self._compact()

    def _compact(self) -> None:
        """Drop stale items: O(n), after at least n touches, so amortised O(1) each."""
        self._heap = [e.item for e in self._entries.values() if not e.borrowed]
        heapq.heapify(self._heap)

    def _on_access(self, key: K, entry: _Entry, now: float) -> None:
        super()._on_access(key, entry, now)
        self._placed(key, entry)

    def victims(self, now: float) -> Generator[K, None, None]:
        if self.clamped and now < self._newest:
            rank = self._rank_at
            ordered = sorted(
                self._entries.items(), key=lambda i: (rank(i[1], now), i[1].last, i[1].seq)
            )
            return self._still_present(key for key, _ in ordered)
        return self._pass(self._ops)

    def _still_present(self, keys: Iterable[K]) -> Generator[K, None, None]:
        entries = self._entries
        for key in keys:
            if key in entries:
                yield key

    def _pass(self, stamp: int) -> Generator[K, None, None]:
        entries = self._entries
        borrowed: list[tuple[float, float, int, Any]] = []
        yielded: set[K] = set()
        try:
            while self._heap:  # re-read: a compaction may replace the list
                item = heapq.heappop(self._heap)
                key = item[3]
                entry = entries.get(key)
                if entry is None or entry.item is not item:
                    continue  # stale: dropped for good
                borrowed.append(item)
                entry.borrowed = True
                if entry.born > stamp or key in yielded:
                    continue
                yielded.add(key)
                yield key
        finally:
            for item in borrowed:
                entry = entries.get(item[3])
                if entry is not None and entry.item is item and entry.borrowed:
                    entry.borrowed = False
                    heapq.heappush(self._heap, item)


def _rank_tiebreak(entry: _Entry) -> tuple[float, int]:
    return (entry.last, entry.seq)


class LRUPolicy(_HeapRanked[K]):
    """Least recently used (touched or added) first; equal times in access order."""

    name = "lru"

    def _static_rank(self, entry: _Entry) -> float:
        return entry.last

    def _on_access(self, key: K, entry: _Entry, now: float) -> None:
        entry.seq = self._tick()  # access order breaks ties of a coarse clock
        super()._on_access(key, entry, now)

    def snapshot(self) -> list[tuple[K, int, float, int, float]]:
        # In access order, so a restore reproduces the tie-breaks of equal times
        # (Timsort: near-linear on an index mostly in that order already).
        ordered = sorted(self._entries.items(), key=lambda item: item[1].seq)
        return [(k, e.size, e.last, e.count, e.weight) for k, e in ordered]


class LFUPolicy(_HeapRanked[K]):
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
    clamped = True

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
        self._placed(key, entry)

    @staticmethod
    def _log_count(entry: _Entry) -> float:
        # log2 of the count: a count aged by many half-lives does not underflow
        # to 0.0 and tie with every other old key.
        return math.log2(entry.count) if entry.count > 0 else -math.inf

    def _static_rank(self, entry: _Entry) -> float:
        if math.isinf(self.half_life):
            return self._log_count(entry)
        return self._log_count(entry) + entry.last / self.half_life

    def _rank_at(self, entry: _Entry, now: float) -> float:
        age = max(0.0, now - entry.last) / self.half_life
        return self._log_count(entry) - age


class WeightPolicy(_HeapRanked[K]):
    """Lowest GDSF-like worth first: frequency x recency x weight / size.

    Frequency is the access count (an add counts as one), recency fades the
    worth by half per idle hour (``WEIGHT_HALF_LIFE``), weight is the content
    type's, so a rarely read, stale, large, low-weight chunk goes first. Ties go
    to the older last access. ``score`` reports DESIGN.md's formula
    (``gdsf_score``, with its ``1 / (1 + hours)`` recency); the order uses the
    exponential fading, which a heap can keep without a sort.
    """

    name = "weight"
    clamped = True

    def score(self, key: K, now: float) -> float:
        """The gdsf_score of *key* at *now* (higher = keep); 0.0 if unknown."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return gdsf_score(entry.count, entry.last, entry.weight, entry.size, now)

    @staticmethod
    def _log_worth(entry: _Entry) -> float:
        worth = entry.count * entry.weight / max(entry.size, 1)
        return math.log2(worth) if worth > 0 else -math.inf

    def _static_rank(self, entry: _Entry) -> float:
        return self._log_worth(entry) + entry.last / WEIGHT_HALF_LIFE

    def _rank_at(self, entry: _Entry, now: float) -> float:
        return self._log_worth(entry) - max(0.0, now - entry.last) / WEIGHT_HALF_LIFE


POLICIES: dict[str, Callable[[], EvictionPolicy[Any]]] = {
    TinyLFUPolicy.name: TinyLFUPolicy,
    LRUPolicy.name: LRUPolicy,
    LFUPolicy.name: LFUPolicy,
    WeightPolicy.name: WeightPolicy,
}


def make_policy(name: str, capacity: int | None = None) -> EvictionPolicy[Any]:
    """The policy called *name* ("tinylfu", "lru", "lfu" or "weight"), default settings;
    *capacity*: the tier's size in bytes (only tinylfu's shares use it)."""
    if name == TinyLFUPolicy.name:
        return TinyLFUPolicy(capacity)
    try:
        factory = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown eviction policy {name!r} (expected one of: {known})") from None
    return factory()
