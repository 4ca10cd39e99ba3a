"""Tests for cachefs.data.tiers.policies: ranking, aging, TTL, persistence, iteration safety."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachefs.config import EVICTION_POLICIES
from cachefs.data.tiers.policies import (
    POLICIES,
    EvictionPolicy,
    LFUPolicy,
    LRUPolicy,
    TinyLFUPolicy,
    WeightPolicy,
    gdsf_score,
    keep_score,
    make_policy,
    promotion_score,
    recency_factor,
)

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY

AnyPolicy = LRUPolicy[Any] | LFUPolicy[Any] | WeightPolicy[Any]
Factory = Callable[[], AnyPolicy]
FACTORIES: list[Factory] = [LRUPolicy, LFUPolicy, WeightPolicy]
FACTORY_IDS = ["lru", "lfu", "weight"]

each_policy = pytest.mark.parametrize("factory", FACTORIES, ids=FACTORY_IDS)
# The shared behaviour holds for tinylfu too; restoring its exact order does not
# (which queue a chunk was in is not persisted): see test_tinylfu.py.
every_policy = pytest.mark.parametrize(
    "factory", [*FACTORIES, TinyLFUPolicy], ids=[*FACTORY_IDS, "tinylfu"]
)


def order(policy: EvictionPolicy[Any], now: float) -> list[Any]:
    return list(policy.victims(now))


# --------------------------------------------------------------------------- LRU


def test_lru_evicts_least_recently_used_first() -> None:
    p: LRUPolicy[str] = LRUPolicy()
    for i, key in enumerate("abcd"):
        p.add(key, 100, now=float(i))
    assert order(p, 10.0) == ["a", "b", "c", "d"]
    p.touch("a", 5.0)
    p.touch("c", 6.0)
    assert order(p, 10.0) == ["b", "d", "a", "c"]


def test_lru_equal_timestamps_fall_back_to_access_order() -> None:
    """A coarse clock gives many hits the same time; the later hit is still newer."""
    p: LRUPolicy[str] = LRUPolicy()
    for key in "abc":
        p.add(key, 1, 0.0)
    p.touch("a", 0.0)
    p.touch("b", 0.0)
    assert order(p, 0.0) == ["c", "a", "b"]


def test_lru_re_add_makes_the_key_newest_and_resets_history() -> None:
    p: LRUPolicy[str] = LRUPolicy()
    p.add("a", 1, 0.0)
    p.add("b", 1, 1.0)
    p.touch("a", 1.5)
    p.add("a", 5, 2.0)
    assert order(p, 3.0) == ["b", "a"]
    assert p.access_count("a") == 1
    assert p.size_of("a") == 5


def test_lru_restored_out_of_order_still_ranks_by_time() -> None:
    p: LRUPolicy[str] = LRUPolicy()
    p.restore("new", 1, 50.0, 1, 1.0)
    p.restore("old", 1, 10.0, 1, 1.0)
    assert order(p, 60.0) == ["old", "new"]


def test_touch_with_an_older_time_does_not_make_a_key_look_older() -> None:
    p: LRUPolicy[str] = LRUPolicy()
    p.add("a", 1, 10.0)
    p.add("b", 1, 20.0)
    p.touch("b", 5.0)  # a late report of an earlier hit
    assert p.last_access("b") == 20.0
    assert order(p, 30.0) == ["a", "b"]


# --------------------------------------------------------------------------- LFU


def test_lfu_evicts_least_frequently_used_first() -> None:
    p: LFUPolicy[str] = LFUPolicy()
    p.add("once", 1, 0.0)
    p.add("thrice", 1, 0.0)
    p.add("twice", 1, 0.0)
    for _ in range(2):
        p.touch("thrice", 0.0)
    p.touch("twice", 0.0)
    assert order(p, 0.0) == ["once", "twice", "thrice"]
    assert [p.access_count(k) for k in ("once", "twice", "thrice")] == [1, 2, 3]


def test_lfu_ties_go_to_the_older_last_access() -> None:
    p: LFUPolicy[str] = LFUPolicy(half_life=math.inf)  # no aging: pure counts
    p.add("recent", 1, 0.0)
    p.add("stale", 1, 0.0)
    p.touch("stale", 10.0)
    p.touch("recent", 20.0)
    p.add("new", 1, 30.0)
    assert order(p, 40.0) == ["new", "stale", "recent"]


def test_lfu_old_popularity_fades() -> None:
    """100 hits a week ago rank below 5 hits just now."""
    p: LFUPolicy[str] = LFUPolicy(half_life=HOUR)
    now = 1_000_000.0
    p.add("old-hit", 1, now - WEEK)
    for _ in range(99):
        p.touch("old-hit", now - WEEK)
    p.add("fresh", 1, now - 60)
    for _ in range(4):
        p.touch("fresh", now)
    assert p.access_count("old-hit") == 100
    assert order(p, now) == ["old-hit", "fresh"]
    assert p.frequency("old-hit", now) < p.frequency("fresh", now)
    # ... but not before it has had time to fade.
    assert order(p, now - WEEK + 1) == ["fresh", "old-hit"]


def test_lfu_rank_does_not_underflow_for_very_old_keys() -> None:
    """0.5 ** (10 years in hours) is 0.0; the ranking must still tell counts apart."""
    p: LFUPolicy[str] = LFUPolicy(half_life=HOUR)
    p.add("many", 1, 0.0)
    for _ in range(9):
        p.touch("many", 0.0)
    p.add("one", 1, 0.0)
    ten_years = 10 * 365 * DAY
    assert p.frequency("many", ten_years) == 0.0
    assert order(p, ten_years) == ["one", "many"]


def test_lfu_count_decays_on_access() -> None:
    p: LFUPolicy[str] = LFUPolicy(half_life=HOUR)
    p.add("a", 1, 0.0)
    for _ in range(7):
        p.touch("a", 0.0)
    assert p.access_count("a") == 8
    p.touch("a", 2 * HOUR)  # 8 -> 2 after two half-lives, + this hit
    assert p.access_count("a") == 3
    assert p.frequency("a", 3 * HOUR) == pytest.approx(1.5)


def test_lfu_rejects_a_bad_half_life() -> None:
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="half_life"):
            LFUPolicy(half_life=bad)


# --------------------------------------------------------------------------- weight


def test_weight_bigger_chunks_go_first() -> None:
    p: WeightPolicy[str] = WeightPolicy()
    p.add("small", 1_000, 0.0)
    p.add("big", 1_000_000, 0.0)
    assert order(p, 0.0) == ["big", "small"]
    assert p.score("big", 0.0) < p.score("small", 0.0)


def test_weight_higher_weight_is_kept_longer() -> None:
    p: WeightPolicy[str] = WeightPolicy()
    p.add("config", 4096, 0.0, weight=0.9)
    p.add("thumb", 4096, 0.0, weight=0.6)
    assert order(p, 0.0) == ["thumb", "config"]


def test_weight_recency_matters() -> None:
    p: WeightPolicy[str] = WeightPolicy()
    p.add("stale", 100, 0.0)
    p.add("fresh", 100, 10 * HOUR)
    assert order(p, 10 * HOUR) == ["stale", "fresh"]
    # recency = 1 / (1 + hours since last access)
    assert p.score("stale", 10 * HOUR) == pytest.approx(1 / 11 / 100)
    assert p.score("fresh", 10 * HOUR) == pytest.approx(1 / 100)


def test_weight_frequency_matters_and_outweighs_a_little_staleness() -> None:
    p: WeightPolicy[str] = WeightPolicy()
    p.add("popular", 100, 0.0)
    for _ in range(9):
        p.touch("popular", 0.0)
    p.add("once", 100, HOUR)
    # popular: 10 / (1 + 2h) = 3.33 ; once: 1 / (1 + 1h) = 0.5
    assert order(p, 2 * HOUR) == ["once", "popular"]


def test_weight_score_matches_the_design_formula() -> None:
    p: WeightPolicy[str] = WeightPolicy()
    p.add("k", 2048, 0.0, weight=0.7)
    p.touch("k", HOUR)
    p.touch("k", 2 * HOUR)
    now = 5 * HOUR
    expected = 3 * (1 / (1 + 3)) * 0.7 / 2048
    assert p.score("k", now) == pytest.approx(expected)
    assert gdsf_score(3, 2 * HOUR, 0.7, 2048, now) == pytest.approx(expected)
    assert p.score("unknown", now) == 0.0


def test_weight_ties_go_to_the_older_last_access_and_zero_size_is_finite() -> None:
    p: WeightPolicy[str] = WeightPolicy()
    p.add("w0-old", 10, 0.0, weight=0.0)
    p.add("w0-new", 10, 5.0, weight=0.0)
    p.add("empty", 0, 5.0)
    assert order(p, 5.0) == ["w0-old", "w0-new", "empty"]
    assert math.isfinite(p.score("empty", 5.0))


def test_recency_factor() -> None:
    assert recency_factor(0.0, 0.0) == 1.0
    assert recency_factor(0.0, HOUR) == pytest.approx(0.5)
    assert recency_factor(10.0, 0.0) == 1.0  # a future stamp counts as now


# --------------------------------------------------------------------------- one score


def test_the_scores_are_one_formula() -> None:
    """keep_score is DESIGN.md's reads x recency x weight; the eviction score is it
    per byte over every access, the promotion score over the reads after the first."""
    now = 5 * HOUR
    assert keep_score(3, 2 * HOUR, 0.7, now) == pytest.approx(3 * (1 / (1 + 3)) * 0.7)
    assert gdsf_score(3, 2 * HOUR, 0.7, 2048, now) == keep_score(3, 2 * HOUR, 0.7, now) / 2048
    assert promotion_score(3, 2 * HOUR, 0.7, now) == keep_score(2, 2 * HOUR, 0.7, now)
    assert promotion_score(1, now, 0.9, now) == 0.0  # read once: never promoted
    assert promotion_score(0, now, 0.9, now) == 0.0  # a restored count of 0: not negative


@every_policy
def test_every_policy_scores_promotion_with_the_one_formula(factory: Factory) -> None:
    p = factory()
    p.add("k", 2048, 0.0, weight=0.7)
    p.touch("k", HOUR)
    p.touch("k", 2 * HOUR)
    p.restore("r", 4096, HOUR, 5, 0.6)
    now = 5 * HOUR
    for k in ("k", "r"):
        last = p.last_access(k)
        assert last is not None
        expected = promotion_score(p.access_count(k), last, p.weight_of(k), now)
        assert p.promotion_score(k, now) == expected
    assert p.promotion_score("unknown", now) == 0.0


def test_the_weight_policy_ranks_by_the_same_score_per_byte() -> None:
    p: WeightPolicy[str] = WeightPolicy()
    p.add("k", 2048, 0.0, weight=0.7)
    p.touch("k", HOUR)
    now = 3 * HOUR
    assert p.score("k", now) == keep_score(2, HOUR, 0.7, now) / 2048  # the add counts
    assert p.promotion_score("k", now) == keep_score(1, HOUR, 0.7, now)  # it does not


# --------------------------------------------------------------------------- shared behaviour


@every_policy
def test_expired_uses_last_access_and_ttl(factory: Factory) -> None:
    p = factory()
    p.add("added-old", 1, 0.0)
    p.add("touched", 1, 0.0)
    p.touch("touched", 90.0)
    p.add("added-new", 1, 95.0)
    assert p.expired(100.0, ttl=50.0) == ["added-old"]
    assert sorted(p.expired(100.0, ttl=5.0)) == ["added-old", "touched"]
    assert p.expired(100.0, ttl=100.0) == []  # exactly at the cutoff: not older
    assert p.expired(100.0, ttl=1000.0) == []


@every_policy
def test_unknown_keys_are_ignored(factory: Factory) -> None:
    p = factory()
    p.touch("ghost", 1.0)
    p.remove("ghost")
    assert "ghost" not in p
    assert len(p) == 0
    assert p.last_access("ghost") is None
    assert p.access_count("ghost") == 0
    assert order(p, 1.0) == []


@every_policy
def test_bookkeeping(factory: Factory) -> None:
    p = factory()
    p.add("a", 10, 1.0, weight=0.5)
    p.add("b", 20, 2.0)
    p.touch("a", 3.0)
    assert "a" in p and "b" in p and 3 not in p
    assert len(p) == 2
    assert p.last_access("a") == 3.0
    assert p.access_count("a") == 2
    assert p.access_count("b") == 1
    assert p.total_size == 30
    p.add("a", 5, 4.0)  # replaces
    assert p.total_size == 25
    p.remove("b")
    assert p.total_size == 5
    assert sorted(k for k, *_ in p.snapshot()) == ["a"]


@every_policy
def test_remove_while_iterating_victims(factory: Factory) -> None:
    p = factory()
    for i in range(10):
        p.add(f"k{i}", 100, float(i))
    expected = order(p, 20.0)
    seen: list[str] = []
    for key in p.victims(20.0):
        seen.append(key)
        p.remove(key)  # the caller evicts as it goes
        if key == expected[2]:
            p.remove(expected[5])  # and something else drops a later victim
    assert seen == [k for k in expected if k != expected[5]]
    assert len(p) == 0


@each_policy
def test_victims_order_is_fixed_at_the_call(factory: Factory) -> None:
    p = factory()
    p.add("a", 1, 0.0)
    p.add("b", 1, 1.0)
    victims = p.victims(2.0)
    p.add("c", 1, 2.0)  # added after the call: not part of this pass
    assert list(victims) == order(p, 2.0)[:2]


@each_policy
def test_snapshot_restore_reproduces_the_order(factory: Factory) -> None:
    p = factory()
    sizes = [100, 5000, 250, 1000, 42, 9000]
    for i, size in enumerate(sizes):
        p.add(f"k{i}", size, float(i * 600), weight=(i % 3 + 1) / 3)
    for i, key in enumerate(["k0", "k3", "k3", "k5", "k0", "k0", "k2"]):
        p.touch(key, 4000.0 + 900 * i)
    q = factory()
    for record in p.snapshot():
        q.restore(*record)
    for now in (10_000.0, 20_000.0, 1e6):
        assert order(q, now) == order(p, now)
    assert q.snapshot() == p.snapshot()


# --------------------------------------------------------------------------- make_policy


def test_make_policy() -> None:
    assert isinstance(make_policy("tinylfu"), TinyLFUPolicy)
    assert isinstance(make_policy("lru"), LRUPolicy)
    assert isinstance(make_policy("lfu"), LFUPolicy)
    assert isinstance(make_policy("weight"), WeightPolicy)
    assert make_policy("lfu").name == "lfu"


def test_make_policy_knows_every_configurable_name() -> None:
    assert set(POLICIES) == set(EVICTION_POLICIES)


@pytest.mark.parametrize("name", ["", "LRU", "fifo", "random"])
def test_make_policy_rejects_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown eviction policy"):
        make_policy(name)


# --------------------------------------------------------------------------- properties

KEYS = st.integers(min_value=0, max_value=15)
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            KEYS,
            st.integers(0, 10**7),
            st.floats(0.0, 1.0, allow_nan=False),
        ),
        st.tuples(st.just("touch"), KEYS),
        st.tuples(st.just("remove"), KEYS),
        st.tuples(st.just("tick"), st.floats(0.0, 10 * DAY, allow_nan=False)),
    ),
    max_size=80,
)


def apply_ops(p: EvictionPolicy[int], ops: list[tuple]) -> tuple[set[int], float]:
    """Run *ops* on *p* and on a plain set; returns the model key set and the clock."""
    model: set[int] = set()
    now = 0.0
    for op in ops:
        match op:
            case ("add", key, size, weight):
                p.add(key, size, now, weight)
                model.add(key)
            case ("touch", key):
                p.touch(key, now)
            case ("remove", key):
                p.remove(key)
                model.discard(key)
            case ("tick", dt):
                now += dt
    return model, now


@every_policy
@settings(max_examples=150, deadline=None)
@given(ops=OPS, later=st.floats(0.0, 30 * DAY, allow_nan=False))
def test_victims_yield_exactly_the_key_set(
    factory: Factory, ops: list[tuple], later: float
) -> None:
    p: EvictionPolicy[int] = factory()
    model, now = apply_ops(p, ops)
    victims = list(p.victims(now + later))
    assert len(victims) == len(set(victims))
    assert set(victims) == model
    assert len(p) == len(model)
    assert all(key in p for key in model)


@each_policy
@settings(max_examples=100, deadline=None)
@given(ops=OPS, later=st.floats(0.0, 30 * DAY, allow_nan=False))
def test_snapshot_restore_round_trips(factory: Factory, ops: list[tuple], later: float) -> None:
    p: EvictionPolicy[int] = factory()
    _, now = apply_ops(p, ops)
    q: EvictionPolicy[int] = factory()
    for record in p.snapshot():
        q.restore(*record)
    assert list(q.victims(now + later)) == list(p.victims(now + later))
    assert q.expired(now + later, DAY) == p.expired(now + later, DAY)


@each_policy
def test_a_large_index_ranks_every_chunk(factory: Factory) -> None:
    """100,000 chunks, a third of them hit: the ranking covers all of them.

    Speed is measured by benchmarks, not asserted here.
    """
    p = factory()
    for i in range(100_000):
        p.add(i, 1 << 20, float(i), 0.7)
    for i in range(0, 100_000, 3):
        p.touch(i, 200_000.0)
    victims = list(p.victims(300_000.0))
    assert len(victims) == len(p) == 100_000
    assert victims[0] == 1  # the oldest untouched chunk, whichever the policy
