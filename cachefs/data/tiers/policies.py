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

The score is defined once, here: ``keep_score`` (DESIGN.md's reads x recency x
weight). The disk tiers promote and demote by it (``promotion_score``, through
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

Longer than the other modules, for a reason: the four policies share one
indexed base and one interface, and the tests and the simulator hold them
side by side; W-TinyLFU (with its sketch) is most of the length. Splitting it
out is the next step when it changes again.
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections import OrderedDict
from collections.abc import Callable, Generator, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "DEFAULT_HALF_LIFE",
    "POLICIES",
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
SECONDS_PER_HOUR = 3600.0
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
    seg: int = 0  # its queue (tinylfu)
    borrowed: bool = False  # taken out of its queue by a victims() pass in progress
    at: int = 0  # tinylfu: bytes read from the tier before its last access
    h: int = 0  # tinylfu: stable_hash of its key, for the sketch


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
    chunk is worth keeping (``WeightPolicy.score``).

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


def stable_hash(key: object) -> int:
    """A hash of *key* that is the same in every process (``hash()`` of bytes and
    str is salted per process): the frequency sketch's collisions, and so a
    simulation's figures, repeat from run to run."""
    if isinstance(key, bytes):
        return int.from_bytes(key[:8], "little")  # a chunk digest: already random
    if isinstance(key, int):
        return key
    if isinstance(key, str):
        return zlib.crc32(key.encode())
    return hash(key)  # ChunkKey: a tuple of ints, hashed the same everywhere


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


# --------------------------------------------------------------------------- W-TinyLFU

_M64 = (1 << 64) - 1
_HALVE = bytes(i >> 1 for i in range(256))
# Counters per row for each key the sketch is sized for: with fewer, the keys
# in circulation (many more than those held) collide and inflate the estimates.
SKETCH_WIDTH = 8
SAMPLE_FACTOR = 40  # additions between two halvings, per key held (TinyLFU's W/C)


class FrequencySketch:
    """How often keys were seen lately, in about 16 bytes per key held: a count-min
    sketch (4 rows of counters saturating at 15, conservative update) that
    *ages*: after ``SAMPLE_FACTOR x`` (40) as many additions as the most keys
    ever held, every counter is halved, so what was popular an era ago fades
    (TinyLFU's reset).

    It counts keys whether or not the tier holds them, so it is the history of
    evicted chunks too (what a ghost queue gives S3-FIFO and ARC). It is sized
    for twice the keys held; when a tier outgrows that, the sketch starts anew
    at four times the size (copying the old counters would copy their
    collisions with them), which happens only while a tier fills up; the keys
    held then go on at half their count (``ensure_capacity``'s *keep*).
    """

    MAX_COUNT = 15
    MIN_CAPACITY = 1024
    MIN_SAMPLE = 320

    def __init__(self, capacity: int = MIN_CAPACITY) -> None:
        self.capacity = 0
        self.width = 0
        self._mask = 0
        self._rows: list[bytearray] = []
        self.held = 0  # the most keys held at once
        self.additions = 0
        self.sample_size = self.MIN_SAMPLE
        self.resets = 0
        self._grow(max(capacity, 1))

    def ensure_capacity(self, held: int, keep: Callable[[], Iterable[int]] | None = None) -> None:
        """The tier holds *held* keys now: age by it, and grow if it outgrew the sketch.

        *keep*: the hashes of the keys held, asked for only when the sketch grows:
        their counts go on into the new sketch, halved (a grown sketch must not
        make the chunks a filling tier holds look new against the next arrivals).
        """
        if held <= self.held:
            return
        self.held = held
        self.sample_size = max(self.MIN_SAMPLE, SAMPLE_FACTOR * held)
        if held > self.capacity:
            kept = [] if keep is None else [(h, self.frequency(h)) for h in keep()]
            self._grow(2 * held)
            for h, count in kept:
                self.seed(h, count >> 1)

    def _grow(self, capacity: int) -> None:
        width = 1 << max(6, (SKETCH_WIDTH * capacity - 1).bit_length())  # a power of 2
        self._rows = [bytearray(width) for _ in range(4)]
        self.width = width
        self._mask = width - 1
        self.capacity = capacity
        self.additions = 0

    def _slots(self, h: int) -> tuple[int, int, int, int]:
        h = (h * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _M64
        h ^= h >> 29
        h = (h * 0xBF58476D1CE4E5B9) & _M64
        low, step = h & 0xFFFFFFFF, (h >> 32) | 1
        m = self._mask
        return low & m, (low + step) & m, (low + 2 * step) & m, (low + 3 * step) & m

    def frequency(self, h: int) -> int:
        r0, r1, r2, r3 = self._rows
        a, b, c, d = self._slots(h)
        return min(r0[a], r1[b], r2[c], r3[d])

    def add(self, h: int) -> None:
        r0, r1, r2, r3 = self._rows
        a, b, c, d = self._slots(h)
        v0, v1, v2, v3 = r0[a], r1[b], r2[c], r3[d]
        low = min(v0, v1, v2, v3)
        if low < self.MAX_COUNT:  # conservative update: raise only the minimal counters
            up = low + 1
            if v0 == low:
                r0[a] = up
            if v1 == low:
                r1[b] = up
            if v2 == low:
                r2[c] = up
            if v3 == low:
                r3[d] = up
        self.additions += 1
        if self.additions >= self.sample_size:
            self._age()

    def seed(self, h: int, count: int) -> None:
        """At least *count* for *h* (a restored chunk keeps its popularity)."""
        count = min(max(count, 0), self.MAX_COUNT)
        for row, slot in zip(self._rows, self._slots(h), strict=True):
            if row[slot] < count:
                row[slot] = count

    def _age(self) -> None:
        self._rows = [row.translate(_HALVE) for row in self._rows]
        self.additions //= 2
        self.resets += 1


WINDOW, PROBATION, PROTECTED, CANDIDATES = 0, 1, 2, 3
MAIN = PROBATION  # a ghost's side: evicted from main (probation or protected)
INITIAL_WINDOW_SHARE = 0.01
MIN_WINDOW_SHARE = 0.01
MAX_WINDOW_SHARE = 0.8
PROTECTED_SHARE = 0.8  # of main
# A candidate must have been seen at least this often to displace anything: a
# first sighting never does (so a loop longer than the sketch's memory, whose
# keys all look new, cannot churn main).
ADMIT_MIN = 2
# Once the tier has been full, a chunk in main moves to protected at its
# PROTECT_MIN-th access since it was added (the add counts): a chunk read twice
# and then never again (a scan that reads each file twice) stays in probation,
# first to go. While the tier fills up, nothing competes: the second access does.
PROTECT_MIN = 3
# A won duel frees whole victims, often more bytes than the winner takes; main
# would shrink by the difference on every win (the candidates' queue growing into
# the room, a FIFO beside main). That surplus is kept, up to this share of the
# tier, and a later candidate that fits in it (and was seen ADMIT_MIN times)
# joins probation without a duel: main stays at its share.
SURPLUS_SHARE = 0.05


class TinyLFUPolicy(_IndexedPolicy[K]):
    """W-TinyLFU, byte-bounded (``tinylfu``).

    Queues (each an LRU, oldest first), their shares counted in bytes of the
    tier's *capacity* (what it holds, if not given):

    * the *window* (1 % to start): every new chunk enters here, so a burst of
      new chunks read twice in a row is served like an LRU would; while the
      tier fills up, a chunk read again in the window goes to protected when it
      leaves, if protected has room;
    * *candidates*: chunks pushed out of a full tier's window, waiting for
      their duel;
    * *probation* and *protected* (80 % of main): a hit in probation moves a
      chunk to protected if it is the chunk's third access since it was added
      (``PROTECT_MIN``; before that, to probation's newest end; the second
      access while the tier has never been full); protected's overflow goes
      back to probation.

    Eviction (``victims()``) makes the oldest candidate (or, when there is
    none because the window is under its share, the window's oldest) duel
    main's victims (probation's oldest, else protected's), as many as it takes
    to make room for it: it wins only if the sketch has seen it at least twice
    (``ADMIT_MIN``) and more often than each of them; then they go and it joins
    probation (a window entry stays in the window), else it goes and they stay.
    A tie goes against the candidate, so a scan or a loop cannot churn main.
    The victims a winner displaces are whole chunks, often more bytes than it
    takes: that surplus (up to ``SURPLUS_SHARE``, 5 % of the tier) lets the next
    candidates seen at least twice that fit in it join probation without a duel,
    so main keeps its share instead of shrinking by the difference at every win.
    Before the tier has ever been full, window leavers join probation without
    a duel.

    The sketch counts every access (``add`` with ``access``, ``touch``,
    ``record``). The window's share (1 %..80 %) adapts as ARC's target does:
    the keys evicted lately are remembered (a ghost as long as the keys held)
    with the side they left from; a miss on one evicted from the window side
    grows the window (if the bytes read since its last access would fit in the
    largest window), one evicted from main shrinks it. Recency-heavy streams
    (files read again soon after) get a large window, frequency-heavy ones a
    small one.

    Deterministic: no randomness, and the sketch hashes keys with
    ``stable_hash``. A restored index (``restore``) goes to probation in the
    order of its last accesses, the sketch seeded with each record's count;
    which queue a chunk was in is not persisted.
    """

    name = "tinylfu"

    def __init__(
        self,
        capacity: int | None = None,
        window_share: float = INITIAL_WINDOW_SHARE,
        protected_share: float = PROTECTED_SHARE,
        adaptive: bool = True,
    ) -> None:
        super().__init__()
        # The tier's size in bytes (its max_size), which the shares are of; None:
        # what it holds now (a tier that is full holds about its capacity).
        self.capacity = capacity
        self._queues: tuple[OrderedDict[K, None], ...] = tuple(OrderedDict() for _ in range(4))
        self._seg_bytes = [0, 0, 0, 0]
        self.sketch = FrequencySketch()
        self.window_share = window_share
        self.protected_share = protected_share
        self.adaptive = adaptive
        self._full = False  # a victims() pass has run: window leavers must duel
        self._unsorted = False  # restored out of order: probation is sorted before a pass
        self._probation_last = -math.inf
        # Keys evicted lately: ARC's ghosts. key -> (side, traffic before its last
        # access); side is WINDOW or MAIN.
        self._ghost: OrderedDict[K, tuple[int, int]] = OrderedDict()
        self._ghost_counts = [0, 0]
        self._traffic = 0  # bytes accessed (adds that are accesses, and hits)
        self._surplus = 0  # bytes won duels freed beyond their winners' sizes

    # -- what the tier sees --------------------------------------------------------------

    @property
    def protected_bytes(self) -> int:
        return self._seg_bytes[PROTECTED]

    @property
    def window_bytes(self) -> int:
        return self._seg_bytes[WINDOW]

    def frequency(self, key: K) -> int:
        """What the sketch says of *key* (0..15), held or not."""
        return self.sketch.frequency(stable_hash(key))

    def segment_bytes(self) -> dict[str, int]:
        names = ("window", "probation", "protected", "candidates")
        return dict(zip(names, self._seg_bytes, strict=True))

    def add(self, key: K, size: int, now: float, weight: float = 1.0, access: bool = True) -> None:
        h = stable_hash(key)
        if access:
            self._count(key, h)
            self._ghost_hit(key, size)
        entry = _Entry(size, now, int(access), weight)
        entry.h = h
        entry.seg = WINDOW
        entry.at = self._traffic
        if access:
            self._traffic += size
        self._insert(key, entry)
        self._spill()

    def record(self, key: K, now: float) -> None:
        self._count(key)

    def _ghost_hit(self, key: K, size: int) -> None:
        """A miss on a key evicted lately moves the window's share, as ARC moves its
        target: evicted from the window side (a candidate that lost, or the window's
        own oldest), the window was too small; evicted from main, main was. The step
        is the chunk's share of the tier, times the other ghost's size over this
        one's (at least 1), so the rarer signal weighs more.

        Unlike ARC, a window-side hit counts only if the bytes read since the key's
        last access fit in the largest window: a loop a little longer than the
        tier comes back farther than any window reaches, and must not grow it."""
        ghost = self._ghost.pop(key, None)
        if ghost is None:
            return
        side, at = ghost
        counts = self._ghost_counts
        counts[side] -= 1
        if not self.adaptive:
            return
        if side == WINDOW and self._traffic - at > MAX_WINDOW_SHARE * self._size():
            return
        other = MAIN if side == WINDOW else WINDOW
        step = max(1.0, counts[other] / max(1, counts[side])) * size / (self._size() or 1)
        if side == WINDOW:
            self.window_share = min(MAX_WINDOW_SHARE, self.window_share + step)
        else:
            self.window_share = max(MIN_WINDOW_SHARE, self.window_share - step)
            self._spill()

    def _remember(self, key: K, side: int, at: int) -> None:
        """Keep an evicted key in the ghost (as many as the keys held), with its side
        and the traffic before its last access."""
        ghost = self._ghost
        counts = self._ghost_counts
        old = ghost.pop(key, None)
        if old is not None:
            counts[old[0]] -= 1
        ghost[key] = (side, at)
        counts[side] += 1
        limit = max(64, len(self._entries))
        while len(ghost) > limit:
            _, (gone, _) = ghost.popitem(last=False)
            counts[gone] -= 1

    def restore(self, key: K, size: int, last_access: float, count: int, weight: float) -> None:
        entry = _Entry(size, last_access, count, weight)
        entry.h = stable_hash(key)
        entry.seg = PROBATION
        if last_access < self._probation_last:
            self._unsorted = True
        self._probation_last = max(self._probation_last, last_access)
        self._insert(key, entry)
        self.sketch.seed(entry.h, count)

    def snapshot(self) -> list[tuple[K, int, float, int, float]]:
        # Eviction order (probation, candidates, protected, window): restored into
        # probation in this order, the oldest still go first.
        entries = self._entries
        records = []
        for seg in (PROBATION, CANDIDATES, PROTECTED, WINDOW):
            for key in self._queues[seg]:
                e = entries[key]
                records.append((key, e.size, e.last, e.count, e.weight))
        return records

    # -- placement -----------------------------------------------------------------------

    def _placed(self, key: K, entry: _Entry) -> None:
        self._queues[entry.seg][key] = None
        self._seg_bytes[entry.seg] += entry.size
        if len(self._entries) > self.sketch.held:
            self.sketch.ensure_capacity(len(self._entries), self._held_hashes)

    def _held_hashes(self) -> list[int]:
        return [e.h for e in self._entries.values()]

    def _unplaced(self, key: K, entry: _Entry) -> None:
        if not entry.borrowed:
            del self._queues[entry.seg][key]
        self._seg_bytes[entry.seg] -= entry.size

    def _move(self, key: K, entry: _Entry, seg: int) -> None:
        """To the newest end of queue *seg*."""
        if entry.borrowed:
            entry.borrowed = False  # a pass took it: it is back in a queue now
        else:
            del self._queues[entry.seg][key]
        self._seg_bytes[entry.seg] -= entry.size
        entry.seg = seg
        self._queues[seg][key] = None
        self._seg_bytes[seg] += entry.size

    def _on_access(self, key: K, entry: _Entry, now: float) -> None:
        self._count(key, entry.h)
        entry.at = self._traffic
        self._traffic += entry.size
        super()._on_access(key, entry, now)
        seg = entry.seg
        if seg in (PROBATION, CANDIDATES):
            if entry.count >= (PROTECT_MIN if self._full else 2):
                self._move(key, entry, PROTECTED)
                self._balance()
            else:  # read again, not yet often enough to be protected
                self._move(key, entry, PROBATION)
        elif entry.borrowed:
            self._move(key, entry, seg)
        else:
            self._queues[seg].move_to_end(key)

    def _spill(self) -> None:
        """The window's oldest leave it while it is over its share: to the duel once
        the tier has been full; before that, to probation, or to protected if it
        was read again while in the window and protected has room (so a warm-up's
        hot chunk that happened to be last in the window is not left in probation
        to age out). Once the tier is full, every leaver duels: a scan that reads
        each file twice in a row has to beat main's victims like anything else."""
        window = self._queues[WINDOW]
        limit = self.window_share * self._size()
        target = CANDIDATES if self._full else PROBATION
        entries = self._entries
        protected = self._seg_bytes[PROTECTED]
        while self._seg_bytes[WINDOW] > limit and len(window) > 1:
            key = next(iter(window))
            entry = entries[key]
            if (
                not self._full
                and entry.count >= 2
                and protected + entry.size <= self._protected_limit()
            ):
                self._move(key, entry, PROTECTED)
                protected += entry.size
            else:
                self._move(key, entry, target)

    def _protected_limit(self) -> float:
        size = self._size()
        window = min(size * self.window_share, self._seg_bytes[WINDOW])
        return self.protected_share * (size - window)

    def _balance(self) -> None:
        """Protected's oldest go back to probation while it is over its share of main."""
        protected = self._queues[PROTECTED]
        limit = self._protected_limit()
        entries = self._entries
        while self._seg_bytes[PROTECTED] > limit and len(protected) > 1:
            key = next(iter(protected))
            self._move(key, entries[key], PROBATION)

    def _size(self) -> float:
        return self._bytes if self.capacity is None else max(self.capacity, self._bytes)

    def _count(self, key: K, h: int | None = None) -> None:
        self.sketch.add(stable_hash(key) if h is None else h)

    # -- eviction ------------------------------------------------------------------------

    def victims(self, now: float) -> Generator[K, None, None]:
        self._full = True
        if self._unsorted:
            self._sort_probation()
        self._spill()
        return self._pass(self._ops)

    def _sort_probation(self) -> None:
        entries = self._entries
        old = self._queues[PROBATION]
        ordered = sorted(old, key=lambda k: _rank_tiebreak(entries[k]))
        old.clear()
        for key in ordered:
            old[key] = None
        self._unsorted = False

    def _pass(self, stamp: int) -> Generator[K, None, None]:
        queues = self._queues
        window, probation, protected, candidates = queues
        entries = self._entries
        frequency = self.sketch.frequency
        borrowed: list[K] = []
        yielded: set[K] = set()
        spared: list[K] = []  # window entries that won: the window's oldest, in order

        def take(key: K) -> _Entry:
            entry = entries[key]
            del queues[entry.seg][key]
            entry.borrowed = True
            borrowed.append(key)
            return entry

        def main_victim() -> K | None:
            victim = next(iter(probation), None)
            return victim if victim is not None else next(iter(protected), None)

        try:
            while True:
                # The candidate: the oldest window leaver, else (the window is under
                # its share, which grew) the window's oldest itself.
                candidate = next(iter(candidates), None)
                if candidate is None:
                    candidate = next(iter(window), None)
                if candidate is None:
                    victim = main_victim()
                    if victim is None:
                        break  # only the spared window entries are left
                    out = [victim]
                    take(victim)
                else:
                    chosen = entries[candidate]
                    seen = frequency(chosen.h)
                    if (
                        self._surplus
                        and chosen.size <= self._surplus
                        and chosen.seg == CANDIDATES
                        and seen >= ADMIT_MIN
                    ):
                        self._surplus -= chosen.size  # main has that room: no duel
                        self._move(candidate, chosen, PROBATION)
                        continue
                    wins = seen >= ADMIT_MIN  # seen before: a first sighting never displaces
                    # The victims it would displace, main's oldest, as many bytes as it
                    # takes; it must have been seen more often than each of them.
                    group: list[K] = []
                    room = 0
                    while wins and (room < chosen.size or not group):
                        victim = main_victim()
                        if victim is None:
                            break
                        room += take(victim).size
                        group.append(victim)
                        wins = seen > frequency(entries[victim].h)
                    if wins and group:
                        out = group
                        if room > chosen.size:
                            self._surplus = min(
                                self._surplus + room - chosen.size,
                                int(SURPLUS_SHARE * self._size()),
                            )
                        if chosen.seg == CANDIDATES:
                            self._move(candidate, chosen, PROBATION)  # into main
                        else:  # stays in the window; the next one duels
                            take(candidate)
                            spared.append(candidate)
                    else:
                        for key in reversed(group):  # they stay, where they were
                            kept = entries[key]
                            kept.borrowed = False
                            queue = queues[kept.seg]
                            queue[key] = None
                            queue.move_to_end(key, last=False)
                        out = [candidate]
                        take(candidate)
                for key in out:
                    entry = entries.get(key)  # the caller may drop keys meanwhile
                    if entry is None or entry.born > stamp or key in yielded:
                        continue
                    yielded.add(key)
                    side = WINDOW if entry.seg in (WINDOW, CANDIDATES) else MAIN
                    self._remember(key, side, entry.at)
                    yield key
            for key in spared:
                if key in entries and key not in yielded and entries[key].born <= stamp:
                    yielded.add(key)
                    yield key
        finally:
            for key in reversed(borrowed):  # back to the oldest end, in their order
                kept_entry = entries.get(key)
                if kept_entry is not None and kept_entry.borrowed:
                    kept_entry.borrowed = False
                    queue = queues[kept_entry.seg]
                    queue[key] = None
                    queue.move_to_end(key, last=False)


POLICIES: dict[str, Callable[[], _IndexedPolicy[Any]]] = {
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
