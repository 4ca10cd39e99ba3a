"""Promotion HDD -> SSD only when the expected reads pay for the move, within an
hourly budget (data/tiers/promotion.py, the Migrator's pass)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from cachefs.app import compose
from cachefs.config import TierConfig, default_config, load_config
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers.disk import DiskTier
from cachefs.data.tiers.promotion import (
    DEFAULT_MOVE_COST,
    DEFAULT_REWRITES_PER_DAY,
    HourlyBudget,
    promotion_bar,
    upper_tier_budget,
)
from cachefs.engine.tasks import Migrator
from cachefs.origin.access import FileVersion, Origin
from cachefs.stats.counters import EmbeddedBackend, Stats

MiB = 1 << 20
NAMESPACE = b"n" * 32
MEDIA_WEIGHT = 0.7  # content_types.media.keep_weight
THRESHOLD = 0.6  # prediction.promote_threshold


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tier(path: Path, name: str, max_size: int, clock: Clock) -> DiskTier:
    t = DiskTier(TierConfig(name, path, max_size, "tinylfu", 86400.0, 0), NAMESPACE, Stats(), clock)
    t.open()
    t.load_index()
    return t


CHUNK = 4000  # a chunk file of 4000 bytes + its 64-byte header takes one 4 KiB block


def movie(chunks: int) -> list[ChunkKey]:
    version = FileVersion(99, chunks * CHUNK, 1, 1)
    return [ChunkKey(version, CHUNK, i) for i in range(chunks)]


def watch(hdd: DiskTier, keys: list[ChunkKey], clock: Clock) -> None:
    for key in keys:
        clock.now += 1
        if hdd.get(key) is None:
            hdd.put(key, bytes([key.number % 256]) * CHUNK, None, MEDIA_WEIGHT)


def migrator(
    hdd: DiskTier,
    ssd: DiskTier,
    clock: Clock,
    move_cost: float = DEFAULT_MOVE_COST,
    rewrites_per_day: float = 1.0,
) -> Migrator:
    m = Migrator(
        cast(Any, None), hdd, ssd, THRESHOLD, Stats(), cast(Any, None), move_cost=move_cost
    )
    m.budget = upper_tier_budget(ssd.cfg.max_size, rewrites_per_day, clock)
    return m


def test_the_bar_counts_the_move() -> None:
    assert promotion_bar(THRESHOLD) == THRESHOLD * DEFAULT_MOVE_COST == 1.2
    defaults = default_config().prediction  # the config's defaults are promotion.py's
    assert defaults.promote_move_cost == DEFAULT_MOVE_COST
    assert defaults.promote_rewrites_per_day == DEFAULT_REWRITES_PER_DAY
    assert 1 * MEDIA_WEIGHT < promotion_bar(THRESHOLD) <= 2 * MEDIA_WEIGHT


def test_a_movie_watched_once_more_stays_on_the_hdd(tmp_path: Path) -> None:
    """Before, one re-read promoted it (1 read x 0.7 >= 0.6); a move costs about two
    reads, so it takes two re-reads in quick succession now."""
    clock = Clock()
    hdd = tier(tmp_path / "hdd", "hdd", 64 * MiB, clock)
    ssd = tier(tmp_path / "ssd", "ssd", 64 * MiB, clock)
    m = migrator(hdd, ssd, clock)
    film = movie(8)
    watch(hdd, film, clock)  # first watch: from the origin, stored on the HDD
    watch(hdd, film, clock)  # watched once more
    assert m.promote_once() == 0
    assert all(hdd.contains(k) and not ssd.contains(k) for k in film)
    watch(hdd, film, clock)  # and again, the same day: it is a favourite
    assert m.promote_once() == len(film)
    assert all(ssd.contains(k) and not hdd.contains(k) for k in film)


def test_a_cheaper_move_promotes_a_movie_watched_once_more(tmp_path: Path) -> None:
    """prediction.promote_move_cost = 1 (a move as dear as one read): one re-read
    (0.7) passes the bar 1 x 0.6, where the default 2 x 0.6 keeps it on the HDD."""
    clock = Clock()
    hdd = tier(tmp_path / "hdd", "hdd", 64 * MiB, clock)
    ssd = tier(tmp_path / "ssd", "ssd", 64 * MiB, clock)
    m = migrator(hdd, ssd, clock, move_cost=1.0)
    film = movie(8)
    watch(hdd, film, clock)
    assert m.promote_once() == 0  # read once: nothing to go by
    watch(hdd, film, clock)
    assert m.promote_once() == len(film)
    assert all(ssd.contains(k) and not hdd.contains(k) for k in film)


def test_a_budget_of_no_rewrites_promotes_nothing(tmp_path: Path) -> None:
    """prediction.promote_rewrites_per_day = 0: a favourite stays on the HDD."""
    clock = Clock()
    hdd = tier(tmp_path / "hdd", "hdd", 64 * MiB, clock)
    ssd = tier(tmp_path / "ssd", "ssd", 64 * MiB, clock)
    m = migrator(hdd, ssd, clock, rewrites_per_day=0.0)
    film = movie(8)
    for _ in range(4):
        watch(hdd, film, clock)
    assert m.promote_once() == 0
    clock.now += 3600  # an hour on, the bucket still holds nothing
    watch(hdd, film, clock)
    assert m.promote_once() == 0
    assert all(hdd.contains(k) and not ssd.contains(k) for k in film)


def test_the_mount_takes_the_promotion_costs_from_its_config(tmp_path: Path) -> None:
    (tmp_path / "origin").mkdir()
    cfg = load_config(
        None,
        {
            "tiers.ssd.path": str(tmp_path / "ssd"),
            "tiers.ssd.max_size": "48MiB",
            "tiers.hdd.path": str(tmp_path / "hdd"),
            "stats.backend": "embedded",
            "prediction.promote_threshold": "0.5",
            "prediction.promote_move_cost": "3",
            "prediction.promote_rewrites_per_day": "2",
        },
    )
    state = compose.state_directory(cfg)
    parts = compose.build(
        Origin(str(tmp_path / "origin")), cfg, lambda: EmbeddedBackend(state / "stats.json", 3600)
    )
    parts.open()
    try:
        parts.connect()
        (m,) = [t.run.__self__ for t in parts.tasks() if t.name == "migrator"]  # type: ignore[attr-defined]
        assert isinstance(m, Migrator)
        assert m.bar == 0.5 * 3
        assert m.budget.per_hour == 48 * MiB * 2 / 24
    finally:
        parts.close()
        parts.origin.close()


def test_two_rereads_a_month_apart_do_not_promote(tmp_path: Path) -> None:
    clock = Clock()
    hdd = tier(tmp_path / "hdd", "hdd", 64 * MiB, clock)
    ssd = tier(tmp_path / "ssd", "ssd", 64 * MiB, clock)
    m = migrator(hdd, ssd, clock)
    film = movie(4)
    watch(hdd, film, clock)
    watch(hdd, film, clock)
    clock.now += 30 * 86400
    watch(hdd, film, clock)
    clock.now += 86400  # a day after the third watch: 2 x 1/25 x 0.7
    assert m.promote_once() == 0


def test_promotion_spends_at_most_the_hourly_budget(tmp_path: Path) -> None:
    clock = Clock()
    ssd_size = 24 * 40 * 4096  # an hour's budget: 40 chunk files (4 KiB on disk each)
    hdd = tier(tmp_path / "hdd", "hdd", 64 * MiB, clock)
    ssd = tier(tmp_path / "ssd", "ssd", ssd_size, clock)
    m = migrator(hdd, ssd, clock)
    assert m.budget.per_hour == ssd_size / 24  # the default: the SSD rewritten once a day
    film = movie(100)
    for _ in range(3):
        watch(hdd, film, clock)
    moved = m.promote_once()
    assert moved == 40
    assert m.promote_once() == 0  # spent; the seconds since refill less than a chunk
    clock.now += 1800  # half an hour: half the budget back
    watch(hdd, film[moved:], clock)  # still being watched: the scores stay fresh
    assert m.promote_once() == 20


def test_the_hourly_budget_is_a_capped_token_bucket() -> None:
    clock = Clock()
    b = HourlyBudget(3600.0, clock)
    assert b.available() == 3600.0  # full at the start
    b.spend(3000.0)
    assert b.available() == pytest.approx(600.0)
    clock.now += 60
    assert b.available() == pytest.approx(660.0)
    clock.now += 10 * 3600
    assert b.available() == 3600.0  # never more than an hour's worth
    b.spend(1e9)
    assert b.available() == 0.0


def test_reads_served_by_ram_count_for_the_hdd_copy(tmp_path: Path) -> None:
    """A favourite that stays in RAM is read from RAM, not from the HDD: RAM tells
    the HDD (note_read), so its copy is promoted all the same and, after a restart
    empties RAM, is read from the SSD."""
    clock = Clock()
    hdd = tier(tmp_path / "hdd", "hdd", 64 * MiB, clock)
    ssd = tier(tmp_path / "ssd", "ssd", 64 * MiB, clock)
    m = migrator(hdd, ssd, clock)
    film = movie(4)
    watch(hdd, film, clock)
    assert m.promote_once() == 0
    for _ in range(2):  # two more watches, served by RAM
        for key in film:
            hdd.note_read(key)
    assert m.promote_once() == len(film)
    assert all(ssd.contains(k) for k in film)


def test_hot_chunks_looks_only_at_chunks_read_again(tmp_path: Path) -> None:
    clock = Clock()
    hdd = tier(tmp_path / "hdd", "hdd", 64 * MiB, clock)
    film = movie(10)
    watch(hdd, film, clock)
    watch(hdd, film[:3], clock)
    assert len(hdd._reread) == 3
    assert {d for d, _, _ in hdd.hot_chunks(0.01)} == {k.digest(NAMESPACE) for k in film[:3]}
    assert len(hdd.hot_chunks(0.0)) == 10  # a threshold of 0: every chunk qualifies
    hdd.discard(film[:1])
    assert len(hdd._reread) == 2
