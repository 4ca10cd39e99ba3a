"""W-TinyLFU (policies.TinyLFUPolicy) and its frequency sketch: models and behaviour.

The shared policy behaviour (bookkeeping, TTL, iteration safety, every key
yielded once) is in test_policies.py, run for tinylfu too.
"""

from __future__ import annotations

import zlib
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cachefs.data.tiers.policies import LRUPolicy
from cachefs.data.tiers.tinylfu import (
    CANDIDATES,
    PROBATION,
    PROTECTED,
    SAMPLE_FACTOR,
    SURPLUS_SHARE,
    WINDOW,
    FrequencySketch,
    TinyLFUPolicy,
    stable_hash,
)

# --------------------------------------------------------------------------- the sketch


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=600))
def test_the_sketch_never_underestimates_an_aged_count(keys: list[int]) -> None:
    """Count-min with conservative update: each estimate is at least the key's true
    count, capped at 15 and halved at every reset, the way the counters are."""
    sketch = FrequencySketch(capacity=8)
    sketch.ensure_capacity(8)  # ages every 320 additions (its minimum)
    model: Counter[int] = Counter()
    for key in keys:
        resets = sketch.resets
        sketch.add(stable_hash(key))
        model[key] = min(model[key] + 1, FrequencySketch.MAX_COUNT)
        if sketch.resets != resets:
            for k in model:
                model[k] //= 2
        for k, count in model.items():
            assert count <= sketch.frequency(stable_hash(k)) <= FrequencySketch.MAX_COUNT


def test_the_sketch_ages_by_halving() -> None:
    sketch = FrequencySketch(capacity=8)
    for _ in range(12):
        sketch.add(stable_hash("hot"))
    assert sketch.frequency(stable_hash("hot")) == 12
    for i in range(sketch.sample_size - 12):
        sketch.add(stable_hash(f"once-{i}"))
    assert sketch.resets == 1
    assert sketch.frequency(stable_hash("hot")) == 6


def test_the_sketch_grows_with_the_tier_and_starts_afresh() -> None:
    sketch = FrequencySketch()
    width = sketch.width
    sketch.ensure_capacity(10 * sketch.capacity)
    assert sketch.width > width
    assert sketch.sample_size == SAMPLE_FACTOR * sketch.held
    assert sketch.frequency(stable_hash("anything")) == 0


def test_a_grown_sketch_keeps_the_held_keys_counts_halved() -> None:
    """Growing starts the counters afresh except for the keys the tier holds: those
    go on at half their count, so a filling tier's hot chunks do not look new."""
    sketch = FrequencySketch()
    held, gone = stable_hash("held"), stable_hash("gone")
    for _ in range(8):
        sketch.add(held)
        sketch.add(gone)
    sketch.ensure_capacity(10 * sketch.capacity, lambda: [held])
    assert sketch.frequency(held) == 4
    assert sketch.frequency(gone) == 0


def test_a_filling_tier_keeps_its_chunks_counts_when_the_sketch_grows() -> None:
    p: TinyLFUPolicy[int] = TinyLFUPolicy()
    p.add(0, 1, 0.0)
    for _ in range(9):
        p.touch(0, 1.0)
    width = p.sketch.width
    for i in range(1, 4 * FrequencySketch.MIN_CAPACITY):
        p.add(i, 1, 2.0)
    assert p.sketch.width > width
    assert p.frequency(0) >= 5 // 2  # 10, halved at each growth: not forgotten


def test_the_sketch_ages_after_many_more_additions_than_keys_held() -> None:
    """Ageing every 10 x the keys held forgot a hot set's counts during a scan of a
    few times the tier; every SAMPLE_FACTOR x (40) keeps them."""
    sketch = FrequencySketch()
    sketch.ensure_capacity(1000)
    assert sketch.sample_size == 40_000
    hot = stable_hash("hot")
    for _ in range(8):
        sketch.add(hot)
    for i in range(30_000):  # a scan of 30 x the keys held
        sketch.add(stable_hash(f"scan-{i}"))
    assert sketch.frequency(hot) == 8


def test_stable_hash_is_not_salted_per_process() -> None:
    """Simulations repeat run to run: bytes and str are hashed without the salt."""
    assert stable_hash(b"\x01" + b"\x00" * 15) == 1
    assert stable_hash("abc") == zlib.crc32(b"abc")
    assert stable_hash(7) == 7


# --------------------------------------------------------------------------- behaviour


def serve(policy, keys, size: int, capacity: int, now: float = 0.0) -> int:
    """A byte-bounded cache of *capacity* driven by *policy*; returns the hits."""
    held: dict[object, int] = {}
    used = 0
    hits = 0
    for key in keys:
        now += 1.0
        if key in held:
            hits += 1
            policy.touch(key, now)
            continue
        if used + size > capacity:
            victims = policy.victims(now)
            for victim in victims:
                used -= held.pop(victim)
                policy.remove(victim)
                if used + size <= capacity:
                    break
            victims.close()
        held[key] = size
        used += size
        policy.add(key, size, now)
    return hits


def test_a_loop_larger_than_the_tier_still_hits() -> None:
    """LRU gets nothing from a loop over 1.5 x its size; a tie goes against the
    candidate, so tinylfu keeps most of one stretch of the loop."""
    loop = list(range(150)) * 20
    assert serve(LRUPolicy(), loop, 1, 100) == 0
    hits = serve(TinyLFUPolicy(100), loop, 1, 100)
    assert hits > 0.4 * len(loop)


def test_one_time_keys_do_not_displace_a_hot_set() -> None:
    hot = [f"hot-{i}" for i in range(40)]
    warm = hot * 5
    scan = [f"scan-{i}" for i in range(500)]
    policy = TinyLFUPolicy(100)
    serve(policy, [*warm, *scan], 1, 100)
    assert all(k in policy for k in hot)
    lru = LRUPolicy()
    serve(lru, [*warm, *scan], 1, 100)
    assert not any(k in lru for k in hot)


def test_a_chunk_seen_more_often_wins_the_duel_against_main() -> None:
    """Candidate vs victim: the sketch's counts decide; a tie keeps the victim."""
    p: TinyLFUPolicy[str] = TinyLFUPolicy(capacity=3, adaptive=False)
    for key in "abc":
        p.add(key, 1, 0.0)  # the window holds one: a and b went on to probation
    list(p.victims(1.0))  # the tier is full from now on: window leavers duel
    for _ in range(3):
        p.record("d", 1.0)  # d was read three times before (and evicted)
    p.add("d", 1, 2.0)  # pushes c out of the window: a candidate
    p.add("e", 1, 3.0)  # and d
    assert p.segment_bytes()["candidates"] == 2
    victims = p.victims(4.0)
    first = [next(victims), next(victims)]
    victims.close()
    # c (1 access) ties with probation's oldest, a (1): c goes. d (4) beats a.
    assert first == ["c", "a"]
    assert list(p.queue(CANDIDATES)) == ["c"]  # not evicted by the caller: put back
    assert "d" in p.queue(PROBATION)  # admitted: a decision, kept


def test_a_big_candidate_must_beat_victims_of_its_own_size() -> None:
    p: TinyLFUPolicy[str] = TinyLFUPolicy(capacity=1000, adaptive=False)
    for i in range(10):
        p.add(f"small-{i}", 100, float(i))
    list(p.victims(10.0))  # full
    for _ in range(5):
        p.record("big", 11.0)
    for _ in range(3):
        p.touch("small-2", 11.0)  # small-2 is popular: it moves to protected
    p.add("big", 300, 12.0)  # pushes small-9 out of the window
    p.add("new", 1, 13.0)  # and big: a candidate of 300 bytes
    victims = p.victims(14.0)
    order = [next(victims) for _ in range(4)]
    victims.close()
    # small-9 loses its tie; big beats small-0, small-1 and small-3 (small-2 is
    # protected), 300 bytes' worth, and joins probation.
    assert order == ["small-9", "small-0", "small-1", "small-3"]
    assert "big" in p.queue(PROBATION)


def test_the_surplus_of_a_won_duel_admits_the_next_candidate_without_a_duel() -> None:
    """A small winner frees a whole big victim: the bytes beyond its own size (up to
    SURPLUS_SHARE of the tier) let the next candidate seen twice join probation
    without displacing anything, so main does not shrink win after win."""
    p: TinyLFUPolicy[str] = TinyLFUPolicy(capacity=1000, adaptive=False)
    p.add("V", 200, 0.0)
    p.add("W", 200, 0.1)
    p.add("pad", 1, 0.2)  # V and W went on to probation
    p.record("W", 0.3)  # W was read twice: B (twice too) would lose a duel with it
    list(p.victims(1.0))  # the tier is full from now on
    for _ in range(2):
        p.record("A", 1.0)
    p.add("A", 10, 2.0)  # pushes pad out of the window (seen once: it will lose)
    p.record("B", 2.0)
    p.add("B", 10, 3.0)  # pushes A out (seen three times)
    p.add("C", 10, 4.0)  # pushes B out (seen twice)
    assert list(p.queue(CANDIDATES)) == ["pad", "A", "B"]
    victims = p.victims(5.0)
    order = []
    for key in victims:
        order.append(key)
        p.remove(key)  # evicted, as a tier does
        if len(order) == 3:
            break
    victims.close()
    # pad loses; A beats V (200 bytes for its 10: a surplus of 190, capped at 50, is
    # kept); B fits in it and joins probation; the window's C (seen once) loses.
    assert order == ["pad", "V", "C"]
    assert list(p.queue(PROBATION)) == ["W", "A", "B"]
    assert p._surplus == SURPLUS_SHARE * 1000 - 10
    # A candidate seen once gets no free pass, room or not: it duels, and loses.
    p.add("D", 5, 6.0)
    p.add("E", 10, 7.0)  # pushes D out of the window
    victims = p.victims(8.0)
    assert next(victims) == "D"
    victims.close()


def test_protection_comes_at_the_third_access() -> None:
    """A chunk in probation read once more (its second access) stays in probation,
    at its newest end; the third access protects it. A scan reading each file
    twice so never reaches protected. (Before the tier has been full, the second
    access protects: test_ram_tier's test_requests_of_one_read_are_one_access.)"""
    p: TinyLFUPolicy[str] = TinyLFUPolicy(capacity=100, adaptive=False)
    for key in "abc":
        p.add(key, 10, 0.0)
    p.add("d", 10, 0.0)  # the window holds one: a, b and c are in probation
    list(p.victims(0.5))  # as if it were full (the pass takes nothing)
    assert list(p.queue(PROBATION)) == ["a", "b", "c"]
    p.touch("a", 1.0)
    assert list(p.queue(PROBATION)) == ["b", "c", "a"]
    assert p.segment_bytes()["protected"] == 0
    p.touch("a", 2.0)
    assert list(p.queue(PROTECTED)) == ["a"]


def test_re_read_in_the_window_goes_to_protected_only_if_it_has_room() -> None:
    p: TinyLFUPolicy[str] = TinyLFUPolicy(capacity=10, adaptive=False)
    p.add("a", 1, 0.0)
    p.touch("a", 1.0)  # read again while in the window
    p.add("b", 1, 2.0)  # pushes a out of the window
    assert p.segment_bytes()["protected"] == 1
    q: TinyLFUPolicy[str] = TinyLFUPolicy(capacity=10, adaptive=False, protected_share=0.0)
    q.add("a", 1, 0.0)
    q.touch("a", 1.0)
    q.add("b", 1, 2.0)
    assert q.segment_bytes() == {"window": 1, "probation": 1, "protected": 0, "candidates": 0}


def test_the_window_grows_for_a_recency_stream() -> None:
    """Each key read twice a few requests apart, then never: only a large window
    (recency) catches the second reads; the hill climber finds it."""
    keys = []
    for i in range(0, 20_000, 10):
        block = [f"k{i + j}" for j in range(10)]
        keys += block + block[::-1]
    p: TinyLFUPolicy[str] = TinyLFUPolicy(capacity=200)
    serve(p, keys, 1, 200)
    assert p.window_share > 0.05


def test_a_large_index_ranks_every_chunk_and_the_untouched_go_first() -> None:
    """test_policies' large-index test, for tinylfu: the first victim is a chunk read
    once, but not the oldest (the window's leavers that lose their duel go first)."""
    p: TinyLFUPolicy[int] = TinyLFUPolicy(100_000 << 20)
    for i in range(100_000):
        p.add(i, 1 << 20, float(i), 0.7)
    for i in range(0, 100_000, 3):
        p.touch(i, 200_000.0)
    victims = list(p.victims(300_000.0))
    assert len(victims) == len(set(victims)) == len(p) == 100_000
    untouched = {i for i in range(100_000) if i % 3}
    assert set(victims[: len(untouched)]) == untouched


def test_restore_goes_to_probation_oldest_first_with_its_counts() -> None:
    p: TinyLFUPolicy[str] = TinyLFUPolicy()
    p.restore("new", 10, 50.0, 4, 1.0)
    p.restore("old", 10, 10.0, 1, 1.0)
    assert p.segment_bytes()["probation"] == 20
    assert list(p.victims(60.0)) == ["old", "new"]
    assert p.frequency("new") >= 4
    records = {r[0]: r[1:] for r in p.snapshot()}
    assert records == {"new": (10, 50.0, 4, 1.0), "old": (10, 10.0, 1, 1.0)}


def test_a_chunk_stored_without_a_read_has_no_access() -> None:
    p: TinyLFUPolicy[str] = TinyLFUPolicy()
    p.add("read-ahead", 1, 0.0, access=False)
    assert p.access_count("read-ahead") == 0
    assert p.frequency("read-ahead") == 0
    p.add("missed", 1, 0.0)
    assert p.access_count("missed") == 1
    assert p.frequency("missed") == 1


def test_a_pass_that_takes_nothing_puts_everything_back() -> None:
    p: TinyLFUPolicy[int] = TinyLFUPolicy(capacity=50)
    for i in range(60):
        p.add(i, 1, float(i))
        if i % 3 == 0:
            p.touch(i, float(i))
    list(p.victims(100.0))
    before = p.snapshot()
    victims = p.victims(100.0)
    taken = [next(victims) for _ in range(10)]
    victims.close()
    assert len(set(taken)) == 10
    assert p.snapshot() == before


# --------------------------------------------------------------------------- a model


class TinyLFUModel(RuleBasedStateMachine):
    """Random adds, hits, misses, removals and partial eviction passes: the queues
    always partition the keys, the byte counts add up, nothing stays borrowed."""

    def __init__(self) -> None:
        super().__init__()
        self.p: TinyLFUPolicy[int] = TinyLFUPolicy(capacity=200)
        self.sizes: dict[int, int] = {}
        self.now = 0.0

    @rule(key=st.integers(0, 30), size=st.integers(0, 60), access=st.booleans())
    def add(self, key: int, size: int, access: bool) -> None:
        self.now += 1
        self.p.add(key, size, self.now, access=access)
        self.sizes[key] = size

    @rule(key=st.integers(0, 30))
    def touch(self, key: int) -> None:
        self.now += 1
        self.p.touch(key, self.now)

    @rule(key=st.integers(0, 40))
    def record(self, key: int) -> None:
        self.p.record(key, self.now)

    @rule(key=st.integers(0, 30))
    def remove(self, key: int) -> None:
        self.p.remove(key)
        self.sizes.pop(key, None)

    @precondition(lambda self: self.sizes)
    @rule(take=st.integers(0, 10), evict=st.booleans(), touch=st.booleans())
    def partial_pass(self, take: int, evict: bool, touch: bool) -> None:
        victims = self.p.victims(self.now)
        seen = []
        for key in victims:
            seen.append(key)
            if evict:
                self.p.remove(key)
                del self.sizes[key]
            elif touch:
                self.p.touch(key, self.now)  # a hit on a key the pass holds
            if len(seen) >= take:
                break
        victims.close()
        assert len(seen) == len(set(seen))

    @invariant()
    def queues_partition_the_keys(self) -> None:
        p = self.p
        queued = [k for seg in (WINDOW, PROBATION, PROTECTED, CANDIDATES) for k in p.queue(seg)]
        assert sorted(queued) == sorted(self.sizes)
        assert not p.borrowed()
        for seg in (WINDOW, PROBATION, PROTECTED, CANDIDATES):
            assert p._seg_bytes[seg] == sum(self.sizes[k] for k in p.queue(seg))
        assert p.total_size == sum(self.sizes.values())
        assert 0.01 <= p.window_share <= 0.8
        for seg in (WINDOW, PROBATION, PROTECTED, CANDIDATES):  # the lists are whole
            rows = [p._slot[k] for k in p.queue(seg)]
            assert len(rows) == p._lengths[seg]
            backwards, row = [], p._tail[seg]
            while row != -1:
                backwards.append(row)
                row = p._prev[row]
            assert backwards == rows[::-1]
        assert p._surplus >= 0


TestTinyLFUModel = TinyLFUModel.TestCase
TestTinyLFUModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
