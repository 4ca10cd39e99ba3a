"""W-TinyLFU (``tinylfu``), the default policy of every tier, and its frequency sketch.

A tier of a million chunks keeps a million index rows, so the rows are typed
arrays, not an object per chunk (``TinyLFUPolicy``'s docstring): at 1 M chunks
an object per chunk with its queue nodes cost ~400 bytes more a chunk, and
the cyclic garbage collector walked every one of them in its full passes.
The interface is policies.py's ``EvictionPolicy``.
"""

from __future__ import annotations

import math
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Generator, Hashable, Iterable, KeysView
from operator import itemgetter
from typing import Generic, TypeVar

from cachefs.data.tiers.scoring import promotion_score

__all__ = [
    "ADMIT_MIN",
    "CANDIDATES",
    "PROBATION",
    "PROTECTED",
    "PROTECT_MIN",
    "SAMPLE_FACTOR",
    "SKETCH_WIDTH",
    "SURPLUS_SHARE",
    "WINDOW",
    "FrequencySketch",
    "TinyLFUPolicy",
    "stable_hash",
]

K = TypeVar("K", bound=Hashable)


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


_M64 = (1 << 64) - 1
_HALVE = bytes(i >> 1 for i in range(256))
# Counters per row for each key the sketch is sized for: with fewer, the keys
# in circulation (many more than those held) collide and inflate the estimates.
SKETCH_WIDTH = 8
SAMPLE_FACTOR = 40  # additions between two halvings, per key held (TinyLFU's W/C)


class FrequencySketch:
    """How often keys were seen lately, in 32-128 bytes per key held: a count-min
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


NIL = -1  # no slot: an empty queue's head, the end of a list


class TinyLFUPolicy(Generic[K]):
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

    The index is compact: a chunk is a *slot*, a row of typed arrays (size,
    last access, count, weight, add order, traffic, hash, queue, borrowed),
    and the four queues are doubly linked lists threaded through two more
    arrays (``_prev``/``_next``), so a chunk costs its key, one dict entry
    (key -> slot) and ~80 bytes of arrays, with no object of its own for the
    cyclic collector to walk. Freed slots are reused (chained through
    ``_next``).
    """

    name = "tinylfu"

    def __init__(
        self,
        capacity: int | None = None,
        window_share: float = INITIAL_WINDOW_SHARE,
        protected_share: float = PROTECTED_SHARE,
        adaptive: bool = True,
    ) -> None:
        # The tier's size in bytes (its max_size), which the shares are of; None:
        # what it holds now (a tier that is full holds about its capacity).
        self.capacity = capacity
        self._slot: dict[K, int] = {}  # key -> its row in the arrays below
        self._keys: list[K | None] = []  # row -> key (None: a free row)
        self._size_of = array("q")
        self._last_of = array("d")  # last access or add, on the caller's clock
        self._count_of = array("q")  # accesses, the add included when it was one
        self._weight_of = array("d")  # the content type's keep_weight, 0..1
        self._seq_of = array("q")  # add order: a victims() pass skips later adds
        self._at_of = array("q")  # traffic (bytes accessed) before its last access
        self._hash_of = array("Q")  # stable_hash of its key mod 2**64, for the sketch
        self._seg_of = array("b")  # its queue
        self._borrowed_of = array("b")  # taken out of its queue by a pass in progress
        self._prev = array("i")
        self._next = array("i")  # also chains the free rows
        self._free = NIL
        self._head = [NIL] * 4  # each queue's oldest row
        self._tail = [NIL] * 4  # and its newest
        self._lengths = [0] * 4
        self._seg_bytes = [0, 0, 0, 0]
        self._bytes = 0
        self._ops = 0  # numbers the adds
        self.sketch = FrequencySketch()
        self.window_share = window_share
        self.protected_share = protected_share
        self.adaptive = adaptive
        self._full = False  # a victims() pass has run: window leavers must duel
        self._unsorted = False  # restored out of order: probation is sorted before a pass
        self._probation_last = -math.inf
        # Keys evicted lately: ARC's ghosts. key -> traffic before its last access
        # << 1 | its side (WINDOW or MAIN), one int rather than a tuple of two.
        self._ghost: OrderedDict[K, int] = OrderedDict()
        self._ghost_counts = [0, 0]
        self._traffic = 0  # bytes accessed (adds that are accesses, and hits)
        self._surplus = 0  # bytes won duels freed beyond their winners' sizes

    # -- the interface -------------------------------------------------------------------

    def add(self, key: K, size: int, now: float, weight: float = 1.0, access: bool = True) -> None:
        h = stable_hash(key) & _M64
        if access:
            self.sketch.add(h)
            self._ghost_hit(key, size)
        at = self._traffic
        if access:
            self._traffic += size
        self._insert(key, size, now, int(access), weight, WINDOW, at, h)
        self._spill()

    def restore(self, key: K, size: int, last_access: float, count: int, weight: float) -> None:
        h = stable_hash(key) & _M64
        if last_access < self._probation_last:
            self._unsorted = True
        self._probation_last = max(self._probation_last, last_access)
        self._insert(key, size, last_access, count, weight, PROBATION, 0, h)
        self.sketch.seed(h, count)

    def touch(self, key: K, now: float) -> None:
        slot = self._slot.get(key)
        if slot is not None:
            self._on_access(slot, now)

    def record(self, key: K, now: float) -> None:
        self.sketch.add(stable_hash(key))

    def remove(self, key: K) -> None:
        slot = self._slot.pop(key, None)
        if slot is None:
            return
        size = self._size_of[slot]
        seg = self._seg_of[slot]
        self._bytes -= size
        self._seg_bytes[seg] -= size
        if not self._borrowed_of[slot]:
            self._unlink(seg, slot)
        self._release(slot)

    def __contains__(self, key: object) -> bool:
        return key in self._slot

    def __len__(self) -> int:
        return len(self._slot)

    def keys(self) -> KeysView[K]:
        return self._slot.keys()

    def expired(self, now: float, ttl: float) -> list[K]:
        cutoff = now - ttl
        last, seq = self._last_of, self._seq_of
        stale = [(seq[s], key) for key, s in self._slot.items() if last[s] < cutoff]
        stale.sort(key=itemgetter(0))  # add order
        return [key for _, key in stale]

    def last_access(self, key: K) -> float | None:
        slot = self._slot.get(key)
        return None if slot is None else self._last_of[slot]

    def access_count(self, key: K) -> int:
        slot = self._slot.get(key)
        return 0 if slot is None else self._count_of[slot]

    def weight_of(self, key: K) -> float:
        slot = self._slot.get(key)
        return 1.0 if slot is None else self._weight_of[slot]

    def size_of(self, key: K) -> int:
        slot = self._slot.get(key)
        return 0 if slot is None else self._size_of[slot]

    @property
    def total_size(self) -> int:
        """Sum of the sizes of all entries, kept current in O(1)."""
        return self._bytes

    def promotion_score(self, key: K, now: float) -> float:
        slot = self._slot.get(key)
        if slot is None:
            return 0.0
        return promotion_score(
            self._count_of[slot], self._last_of[slot], self._weight_of[slot], now
        )

    def snapshot(self) -> list[tuple[K, int, float, int, float]]:
        # Eviction order (probation, candidates, protected, window): restored into
        # probation in this order, the oldest still go first.
        records = []
        for seg in (PROBATION, CANDIDATES, PROTECTED, WINDOW):
            for slot in self._walk(seg):
                records.append(
                    (
                        self._key(slot),
                        self._size_of[slot],
                        self._last_of[slot],
                        self._count_of[slot],
                        self._weight_of[slot],
                    )
                )
        return records

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

    def queue(self, seg: int) -> list[K]:
        """The keys of queue *seg* (WINDOW, PROBATION, PROTECTED, CANDIDATES), oldest first."""
        return [self._key(slot) for slot in self._walk(seg)]

    def borrowed(self) -> list[K]:
        """Keys a victims() pass in progress has taken out of their queues."""
        flags = self._borrowed_of
        return [key for key, slot in self._slot.items() if flags[slot]]

    # -- rows and queues -----------------------------------------------------------------

    def _key(self, slot: int) -> K:
        key = self._keys[slot]
        assert key is not None  # a row in a queue is held
        return key

    def _insert(
        self, key: K, size: int, last: float, count: int, weight: float, seg: int, at: int, h: int
    ) -> None:
        # Remove first so a replaced key is a new entry (newest, history reset).
        self.remove(key)
        self._ops += 1
        slot = self._free
        if slot == NIL:
            slot = len(self._keys)
            self._keys.append(key)
            self._size_of.append(size)
            self._last_of.append(last)
            self._count_of.append(count)
            self._weight_of.append(weight)
            self._seq_of.append(self._ops)
            self._at_of.append(at)
            self._hash_of.append(h)
            self._seg_of.append(seg)
            self._borrowed_of.append(0)
            self._prev.append(NIL)
            self._next.append(NIL)
        else:
            self._free = self._next[slot]
            self._keys[slot] = key
            self._size_of[slot] = size
            self._last_of[slot] = last
            self._count_of[slot] = count
            self._weight_of[slot] = weight
            self._seq_of[slot] = self._ops
            self._at_of[slot] = at
            self._hash_of[slot] = h
            self._seg_of[slot] = seg
        self._slot[key] = slot
        self._bytes += size
        self._push_back(seg, slot)
        self._seg_bytes[seg] += size
        if len(self._slot) > self.sketch.held:
            self.sketch.ensure_capacity(len(self._slot), self._held_hashes)

    def _release(self, slot: int) -> None:
        self._keys[slot] = None
        self._borrowed_of[slot] = 0
        self._next[slot] = self._free
        self._free = slot

    def _held_hashes(self) -> list[int]:
        hashes = self._hash_of
        return [hashes[slot] for slot in self._slot.values()]

    def _walk(self, seg: int) -> Iterable[int]:
        slots = []
        nxt = self._next
        slot = self._head[seg]
        while slot != NIL:
            slots.append(slot)
            slot = nxt[slot]
        return slots

    def _push_back(self, seg: int, slot: int) -> None:
        tail = self._tail[seg]
        self._prev[slot] = tail
        self._next[slot] = NIL
        if tail == NIL:
            self._head[seg] = slot
        else:
            self._next[tail] = slot
        self._tail[seg] = slot
        self._lengths[seg] += 1

    def _push_front(self, seg: int, slot: int) -> None:
        head = self._head[seg]
        self._next[slot] = head
        self._prev[slot] = NIL
        if head == NIL:
            self._tail[seg] = slot
        else:
            self._prev[head] = slot
        self._head[seg] = slot
        self._lengths[seg] += 1

    def _unlink(self, seg: int, slot: int) -> None:
        before, after = self._prev[slot], self._next[slot]
        if before == NIL:
            self._head[seg] = after
        else:
            self._next[before] = after
        if after == NIL:
            self._tail[seg] = before
        else:
            self._prev[after] = before
        self._lengths[seg] -= 1

    def _move(self, slot: int, seg: int) -> None:
        """To the newest end of queue *seg*."""
        old = self._seg_of[slot]
        if self._borrowed_of[slot]:
            self._borrowed_of[slot] = 0  # a pass took it: it is back in a queue now
        else:
            self._unlink(old, slot)
        size = self._size_of[slot]
        self._seg_bytes[old] -= size
        self._seg_of[slot] = seg
        self._push_back(seg, slot)
        self._seg_bytes[seg] += size

    # -- the ghost -----------------------------------------------------------------------

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
        side, at = ghost & 1, ghost >> 1
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
            counts[old & 1] -= 1
        ghost[key] = at << 1 | side
        counts[side] += 1
        limit = max(64, len(self._slot))
        while len(ghost) > limit:
            _, gone = ghost.popitem(last=False)
            counts[gone & 1] -= 1

    # -- placement -----------------------------------------------------------------------

    def _on_access(self, slot: int, now: float) -> None:
        self.sketch.add(self._hash_of[slot])
        self._at_of[slot] = self._traffic
        self._traffic += self._size_of[slot]
        count = self._count_of[slot] + 1
        self._count_of[slot] = count
        # A late-arriving, older timestamp must not make a key look less recent.
        if now > self._last_of[slot]:
            self._last_of[slot] = now
        seg = self._seg_of[slot]
        if seg in (PROBATION, CANDIDATES):
            if count >= (PROTECT_MIN if self._full else 2):
                self._move(slot, PROTECTED)
                self._balance()
            else:  # read again, not yet often enough to be protected
                self._move(slot, PROBATION)
        elif self._borrowed_of[slot]:
            self._move(slot, seg)
        else:
            self._unlink(seg, slot)
            self._push_back(seg, slot)

    def _spill(self) -> None:
        """The window's oldest leave it while it is over its share: to the duel once
        the tier has been full; before that, to probation, or to protected if it
        was read again while in the window and protected has room (so a warm-up's
        hot chunk that happened to be last in the window is not left in probation
        to age out). Once the tier is full, every leaver duels: a scan that reads
        each file twice in a row has to beat main's victims like anything else."""
        limit = self.window_share * self._size()
        target = CANDIDATES if self._full else PROBATION
        seg_bytes, lengths, head = self._seg_bytes, self._lengths, self._head
        protected = seg_bytes[PROTECTED]
        while seg_bytes[WINDOW] > limit and lengths[WINDOW] > 1:
            slot = head[WINDOW]
            size = self._size_of[slot]
            if (
                not self._full
                and self._count_of[slot] >= 2
                and protected + size <= self._protected_limit()
            ):
                self._move(slot, PROTECTED)
                protected += size
            else:
                self._move(slot, target)

    def _protected_limit(self) -> float:
        size = self._size()
        window = min(size * self.window_share, self._seg_bytes[WINDOW])
        return self.protected_share * (size - window)

    def _balance(self) -> None:
        """Protected's oldest go back to probation while it is over its share of main."""
        limit = self._protected_limit()
        while self._seg_bytes[PROTECTED] > limit and self._lengths[PROTECTED] > 1:
            self._move(self._head[PROTECTED], PROBATION)

    def _size(self) -> float:
        return self._bytes if self.capacity is None else max(self.capacity, self._bytes)

    # -- eviction ------------------------------------------------------------------------

    def victims(self, now: float) -> Generator[K, None, None]:
        self._full = True
        if self._unsorted:
            self._sort_probation()
        self._spill()
        return self._pass(self._ops)

    def _sort_probation(self) -> None:
        last, seq = self._last_of, self._seq_of
        ordered = sorted(self._walk(PROBATION), key=lambda s: (last[s], seq[s]))
        self._head[PROBATION] = self._tail[PROBATION] = NIL
        self._lengths[PROBATION] = 0
        for slot in ordered:
            self._push_back(PROBATION, slot)
        self._unsorted = False

    def _pass(self, stamp: int) -> Generator[K, None, None]:
        slots, keys, head = self._slot, self._keys, self._head
        size_of, seg_of, seq_of, hash_of = self._size_of, self._seg_of, self._seq_of, self._hash_of
        borrowed_of = self._borrowed_of
        frequency = self.sketch.frequency
        borrowed: list[K] = []
        yielded: set[K] = set()
        spared: list[K] = []  # window entries that won: the window's oldest, in order

        def take(key: K) -> int:
            slot = slots[key]
            self._unlink(seg_of[slot], slot)
            borrowed_of[slot] = 1
            borrowed.append(key)
            return slot

        def main_victim() -> K | None:
            slot = head[PROBATION]
            if slot == NIL:
                slot = head[PROTECTED]
            return None if slot == NIL else keys[slot]

        try:
            while True:
                # The candidate: the oldest window leaver, else (the window is under
                # its share, which grew) the window's oldest itself.
                chosen = head[CANDIDATES]
                if chosen == NIL:
                    chosen = head[WINDOW]
                if chosen == NIL:
                    victim = main_victim()
                    if victim is None:
                        break  # only the spared window entries are left
                    out = [victim]
                    take(victim)
                else:
                    candidate = self._key(chosen)
                    size = size_of[chosen]
                    seen = frequency(hash_of[chosen])
                    if (
                        self._surplus
                        and size <= self._surplus
                        and seg_of[chosen] == CANDIDATES
                        and seen >= ADMIT_MIN
                    ):
                        self._surplus -= size  # main has that room: no duel
                        self._move(chosen, PROBATION)
                        continue
                    wins = seen >= ADMIT_MIN  # seen before: a first sighting never displaces
                    # The victims it would displace, main's oldest, as many bytes as it
                    # takes; it must have been seen more often than each of them.
                    group: list[K] = []
                    room = 0
                    while wins and (room < size or not group):
                        victim = main_victim()
                        if victim is None:
                            break
                        taken = take(victim)
                        room += size_of[taken]
                        group.append(victim)
                        wins = seen > frequency(hash_of[taken])
                    if wins and group:
                        out = group
                        if room > size:
                            self._surplus = min(
                                self._surplus + room - size, int(SURPLUS_SHARE * self._size())
                            )
                        if seg_of[chosen] == CANDIDATES:
                            self._move(chosen, PROBATION)  # into main
                        else:  # stays in the window; the next one duels
                            take(candidate)
                            spared.append(candidate)
                    else:
                        for key in reversed(group):  # they stay, where they were
                            kept = slots[key]
                            borrowed_of[kept] = 0
                            self._push_front(seg_of[kept], kept)
                        out = [candidate]
                        take(candidate)
                for key in out:
                    slot = slots.get(key)  # the caller may drop keys meanwhile
                    if slot is None or seq_of[slot] > stamp or key in yielded:
                        continue
                    yielded.add(key)
                    side = WINDOW if seg_of[slot] in (WINDOW, CANDIDATES) else MAIN
                    self._remember(key, side, self._at_of[slot])
                    yield key
            for key in spared:
                slot = slots.get(key)
                if slot is not None and key not in yielded and seq_of[slot] <= stamp:
                    yielded.add(key)
                    yield key
        finally:
            for key in reversed(borrowed):  # back to the oldest end, in their order
                slot = slots.get(key)
                if slot is not None and borrowed_of[slot]:
                    borrowed_of[slot] = 0
                    self._push_front(seg_of[slot], slot)
