"""The ``prediction.*`` keys do what docs/configuration.md says, on the real parts.

promote_threshold, promote_move_cost and promote_rewrites_per_day are the
migrator's (tests/test_promotion.py); here: window_size, prefetch_confidence
and max_prefetch_size, on a mount's own predictor and prefetcher.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cachefs.app import compose
from cachefs.config import load_config
from cachefs.origin.access import Origin
from cachefs.stats.counters import EmbeddedBackend

from .conftest import DEFAULT_TEST_OPTIONS, Mounted, MountFactory, read_direct

MiB = 1024 * 1024
EPISODES = [f"TV/Show/S01E0{n}.mkv" for n in range(1, 5)]


@pytest.fixture
def parts(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[compose.Mount]:
    """A mount's parts in-process (no FUSE), with the overrides the test is marked with."""
    (tmp_path / "origin").mkdir()
    options = {
        "tiers.ssd.path": str(tmp_path / "ssd"),
        "tiers.hdd.path": str(tmp_path / "hdd"),
        "stats.backend": "embedded",
        **request.param,
    }
    cfg = load_config(None, options)
    state = compose.state_directory(cfg)
    built = compose.build(
        Origin(str(tmp_path / "origin")), cfg, lambda: EmbeddedBackend(state / "stats.json", 3600)
    )
    built.open()
    built.connect()
    yield built
    built.close()
    built.origin.close()


def no_siblings(dirpath: bytes) -> None:
    return None


@pytest.mark.parametrize(
    ("parts", "learnt"),
    [({"prediction.window_size": "4"}, True), ({"prediction.window_size": "2"}, False)],
    indirect=["parts"],
)
def test_window_size_is_how_far_back_an_open_is_credited(
    parts: compose.Mount, learnt: bool
) -> None:
    """a, x, y, b: with the last 4 opens remembered, b is learnt as a's successor;
    with the last 2, a has left the window when b is opened."""
    predictor = parts.prefetcher.predictor

    async def opens() -> None:
        for path in (b"a.bin", b"x.bin", b"y.bin", b"b.bin"):
            parts.prefetcher.opened(path)

    trio.run(opens)
    followers = {p.path for p in predictor.predict(b"a.bin", no_siblings)}
    assert (b"b.bin" in followers) is learnt
    assert b"x.bin" in followers  # the next open is credited with any window


def a_season(origin: Path) -> None:
    for name in EPISODES:
        (origin / name).parent.mkdir(parents=True, exist_ok=True)
        (origin / name).write_bytes(os.urandom(2 * MiB))


def start_watching(m: Mounted) -> None:
    os.listdir(m.mnt / "TV/Show")  # the listing the next sibling is found in
    read_direct(m.mnt / EPISODES[0])


def settle(m: Mounted, key: str, want: int) -> dict:
    deadline = time.monotonic() + 30
    while (stats := m.stats())[key] < want or stats["prefetch_queued"]:
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    return stats


@pytest.mark.parametrize(("confidence", "prefetched"), [("0.5", True), ("0.9", False)])
def test_prefetch_confidence_gates_the_next_episode(
    origin: Path, mount_factory: MountFactory, confidence: str, prefetched: bool
) -> None:
    """A next sibling in a directory nothing is known of is 0.5 likely: fetched at
    the default 0.5, not at 0.9."""
    a_season(origin)
    m = mount_factory(
        origin, [*DEFAULT_TEST_OPTIONS, f"prediction.prefetch_confidence={confidence}"]
    )
    start_watching(m)
    if prefetched:
        stats = settle(m, "prefetch_bytes", 2 * MiB)
        assert stats["predictions"] == 1 and stats["prefetch_bytes"] == 2 * MiB
        assert m.residency(EPISODES[1])["uncached"] == 0
    else:
        stats = m.stats()  # predictions are counted as the open is handled
        assert stats["predictions"] == 0 and stats["prefetch_queued"] == 0
        assert stats["prefetch_bytes"] == 0
        assert m.residency(EPISODES[1])["uncached"] > 0


def test_max_prefetch_size_zero_turns_prediction_off_not_an_explicit_warm(
    origin: Path, mount_factory: MountFactory
) -> None:
    a_season(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "prediction.max_prefetch_size=0"])
    start_watching(m)
    stats = m.stats()
    assert stats["predictions"] == 0 and stats["prefetch_queued"] == 0
    assert m.residency(EPISODES[1])["uncached"] > 0
    os.setxattr(m.mnt / EPISODES[2], "user.cachefs.prefetch", b"1")  # asked for: fetched
    stats = settle(m, "prefetch_bytes", 2 * MiB)
    assert stats["prefetch_bytes"] == 2 * MiB
    assert m.residency(EPISODES[2])["uncached"] == 0
    assert m.residency(EPISODES[1])["uncached"] > 0
