"""The disk tier against a dict model: put / get / evict / restart / corrupt."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from cachefs.chunks import ChunkKey
from cachefs.config import TierConfig
from cachefs.disktier import DiskTier, TierInUse, allocated
from cachefs.origin import FileVersion
from cachefs.stats import Stats

NAMESPACE = b"n" * 32
MAX = 64 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tier_config(path: Path, max_size: int = MAX, ttl: float = 3600.0, eviction: str = "lru"):
    return TierConfig("ssd", path, max_size, eviction, ttl, 0)


def open_tier(path: Path, clock: Clock | None = None, **kw) -> DiskTier:
    tier = DiskTier(tier_config(path, **kw), NAMESPACE, Stats(), clock or Clock())
    tier.open()
    tier.load_index()
    return tier


def key(index: int, size: int = 10_000) -> ChunkKey:
    return ChunkKey(FileVersion(42, size, 7, 7), 1000, index)


def data_for(k: ChunkKey, compressible: bool) -> bytes:
    """A key names one content: the same bytes every time (compressible or not)."""
    if compressible:
        return bytes([k.number % 251]) * k.expected_length
    return random.Random(k.number).randbytes(k.expected_length)


class DiskTierMachine(RuleBasedStateMachine):
    """Whatever happens, a get returns the bytes that were put, or nothing."""

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[ChunkKey, bytes] = {}

    @initialize(target=keys)
    def setup(self):
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="disktier-"))
        self.clock = Clock()
        self.tier = open_tier(self.dir, self.clock, max_size=16 * 1024)
        return key(0)

    @rule(target=keys, index=st.integers(0, 9))
    def new_key(self, index: int) -> ChunkKey:
        return key(index)

    @rule(k=keys, compressible=st.booleans())
    def put(self, k: ChunkKey, compressible: bool) -> None:
        data = data_for(k, compressible=k.number % 2 == 0)
        if self.tier.put(k, data, 3 if compressible else None):
            self.model[k] = data

    @rule(k=keys)
    def get(self, k: ChunkKey) -> None:
        got = self.tier.get(k)
        assert got is None or got == self.model.get(k)
        if got is None:
            self.model.pop(k, None)

    @rule()
    def restart(self) -> None:
        self.tier.close()
        self.tier = open_tier(self.dir, self.clock, max_size=16 * 1024)

    @rule(k=keys, offset=st.integers(0, 200))
    def corrupt(self, k: ChunkKey, offset: int) -> None:
        path = self.tier.chunk_path(k.digest(NAMESPACE))
        if path.exists():
            blob = bytearray(path.read_bytes())
            blob[offset % len(blob)] ^= 0xFF
            path.write_bytes(bytes(blob))  # a get now returns the true bytes or nothing

    @rule(seconds=st.floats(0, 10_000))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds
        self.tier.sweep_expired()

    @invariant()
    def bounded(self) -> None:
        if hasattr(self, "tier"):
            assert self.tier.bytes <= 16 * 1024
            on_disk = sum(allocated(p.stat().st_size) for p in self.dir.glob("chunks/*/*"))
            assert on_disk <= 16 * 1024

    def teardown(self) -> None:
        if hasattr(self, "tier"):
            self.tier.close()
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)


DiskTierMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=list(HealthCheck)
)
TestDiskTierMachine = DiskTierMachine.TestCase


def test_put_get_and_compression(tmp_path: Path) -> None:
    tier = open_tier(tmp_path)
    k = key(1)
    assert tier.put(k, b"a" * 1000, level=3)
    assert tier.get(k) == b"a" * 1000
    assert tier.stats.get("compressed_bytes_saved") > 900
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o700"


def test_incompressible_chunks_are_stored_raw(tmp_path: Path) -> None:
    tier = open_tier(tmp_path)
    k = key(2)
    data = os.urandom(1000)
    assert tier.put(k, data, level=3)
    assert tier.get(k) == data
    assert tier.stats.get("compressed_bytes_saved") == 0


def test_a_corrupt_chunk_is_deleted_and_counted(tmp_path: Path) -> None:
    tier = open_tier(tmp_path)
    k = key(3)
    tier.put(k, b"b" * 1000, level=None)
    path = tier.chunk_path(k.digest(NAMESPACE))
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    assert tier.get(k) is None
    assert not path.exists()
    assert tier.stats.get("corrupt_chunks") == 1
    assert not tier.contains(k)


def test_restart_keeps_chunks_and_removes_temp_files(tmp_path: Path) -> None:
    tier = open_tier(tmp_path)
    tier.put(key(4), b"c" * 1000, level=3)
    (tmp_path / "tmp" / "half-written").write_bytes(b"junk")
    tier._lock_fd and os.close(tier._lock_fd)  # a crash: no close(), no index saved
    tier._lock_fd = None
    again = open_tier(tmp_path)
    assert again.get(key(4)) == b"c" * 1000
    assert list((tmp_path / "tmp").iterdir()) == []


def test_capacity_is_never_exceeded(tmp_path: Path) -> None:
    tier = open_tier(tmp_path, max_size=10 * 4096)
    for i in range(50):
        tier.put(key(i % 20, size=100_000), os.urandom(1000), level=None)
        assert tier.bytes <= 10 * 4096
    assert tier.counters.evictions > 0


def test_lru_evicts_the_least_recently_used(tmp_path: Path) -> None:
    clock = Clock()
    tier = open_tier(tmp_path, clock, max_size=3 * 4096)
    for i in range(3):
        clock.now += 1
        tier.put(key(i), b"x" * 1000, level=None)
    clock.now += 1
    tier.get(key(0))
    clock.now += 1
    tier.put(key(3), b"x" * 1000, level=None)
    assert tier.contains(key(0)) and tier.contains(key(3))
    assert not tier.contains(key(1))


def test_ttl_sweep(tmp_path: Path) -> None:
    clock = Clock()
    tier = open_tier(tmp_path, clock, ttl=60)
    tier.put(key(5), b"x" * 1000, level=None)
    clock.now += 30
    tier.put(key(6), b"x" * 1000, level=None)
    clock.now += 40
    assert tier.sweep_expired() == 1
    assert not tier.contains(key(5)) and tier.contains(key(6))


def test_one_mount_per_tier_directory(tmp_path: Path) -> None:
    open_tier(tmp_path)
    with pytest.raises(TierInUse):
        open_tier(tmp_path)


def test_enospc_skips_the_chunk_without_an_error(tmp_path: Path, monkeypatch) -> None:
    tier = open_tier(tmp_path)
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        if "w" in mode and "tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    assert tier.put(key(7), b"x" * 1000, level=None) is False
    assert tier.bytes == 0


def test_move_copies_then_deletes(tmp_path: Path) -> None:
    ssd = open_tier(tmp_path / "ssd")
    hdd = open_tier(tmp_path / "hdd")
    k = key(8)
    ssd.put(k, b"m" * 1000, level=3)
    assert ssd.move_to(k, hdd)
    assert not ssd.contains(k) and hdd.get(k) == b"m" * 1000


def test_a_move_never_spreads_a_corrupt_chunk(tmp_path: Path) -> None:
    ssd = open_tier(tmp_path / "ssd")
    hdd = open_tier(tmp_path / "hdd")
    k = key(9)
    ssd.put(k, b"q" * 1000, level=None)
    path = ssd.chunk_path(k.digest(NAMESPACE))
    blob = bytearray(path.read_bytes())
    blob[100] ^= 1
    path.write_bytes(bytes(blob))
    assert not ssd.move_to(k, hdd)
    assert not hdd.contains(k) and not ssd.contains(k)


def test_ssd_evictions_demote_chunks_that_earned_it(tmp_path: Path) -> None:
    clock = Clock()
    ssd = open_tier(tmp_path / "ssd", clock, max_size=2 * 4096)
    hdd = open_tier(tmp_path / "hdd", clock)
    ssd.demote_to, ssd.demote_threshold = hdd, 0.3
    hot, cold, new = key(5), key(6), key(7)
    ssd.put(hot, b"h" * 1000, level=None, weight=0.7)
    clock.now += 1
    ssd.put(cold, b"c" * 1000, level=None, weight=0.7)
    for _ in range(3):  # read again: score 3 x ~1 x 0.7
        clock.now += 1
        assert ssd.get(hot) is not None
    clock.now += 1
    ssd.put(new, b"n" * 1000, level=None, weight=0.7)  # full: LRU evicts cold, then hot
    clock.now += 1
    ssd.put(key(8), b"m" * 1000, level=None, weight=0.7)
    assert not ssd.contains(hot) and not ssd.contains(cold)
    assert hdd.get(hot) == b"h" * 1000  # demoted, not lost
    assert not hdd.contains(cold)  # never read again: dropped
    assert ssd.stats.get("demotions") == 1


def test_scores_follow_the_design_formula(tmp_path: Path) -> None:
    clock = Clock()
    tier = open_tier(tmp_path, clock)
    k = key(3)
    tier.put(k, b"s" * 1000, level=None, weight=0.5)
    digest = k.digest(NAMESPACE)
    assert tier.score(digest, clock.now) == 0  # the read that brought it in does not count
    tier.get(k)
    tier.get(k)
    assert tier.score(digest, clock.now) == 2 * 1.0 * 0.5
    assert tier.score(digest, clock.now + 3600) == 2 * 0.5 * 0.5  # 1 / (1 + 1 hour)
    assert tier.hot_chunks(0.6) == [(digest, 1.0, 4096)]


def test_an_eviction_never_deletes_a_copy_stored_again_meanwhile(tmp_path: Path) -> None:
    """A store worker evicts chunk X (out of the index, file not yet unlinked) while
    another stores X again: the unlink must spare the new file, or the index would
    count a chunk that is gone. The interleaving is driven step by step."""
    tier = open_tier(tmp_path, max_size=1024 * 1024)
    k = key(0)
    data = data_for(k, compressible=False)
    assert tier.put(k, data, None)
    digest = k.digest(NAMESPACE)
    with tier._lock:  # worker A picks X as a victim
        victims = [(digest, tier._sizes[digest])]
        leaving = tier._drop_leaving(victims)
    assert tier.put(k, data, None)  # worker B stores X again
    tier._evict(victims, [], leaving)  # worker A unlinks its victims
    assert tier.get(k) == data
    assert tier.bytes == allocated(tier.chunk_path(digest).stat().st_size)
