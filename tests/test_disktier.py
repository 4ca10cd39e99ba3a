"""The disk tier against a dict model: put / get / evict / restart / corrupt;
its secret and format marker; a tier filesystem too small for min_free."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from cachefs.app.check import check_tier
from cachefs.config import TierConfig
from cachefs.data.chunks import ChunkKey
from cachefs.data.tiers import chunkfile
from cachefs.data.tiers.disk import FORMAT_MARKER, DiskTier, TierInUse, allocated
from cachefs.data.tiers.policies import promotion_score
from cachefs.origin.access import FileVersion
from cachefs.stats.counters import Stats

from .conftest import Mounted, MountFactory, read_direct, tmpfs

NAMESPACE = b"n" * 32
MAX = 64 * 1024


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tier_config(
    path: Path, max_size: int = MAX, ttl: float = 3600.0, eviction: str = "lru", min_free: int = 0
):
    return TierConfig("ssd", path, max_size, eviction, ttl, min_free)


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

    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    # (a real full filesystem: test_a_tier_fills_its_filesystem_without_failing_a_read)
    monkeypatch.setattr("cachefs.common.private.create_file", full_disk)
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


@pytest.mark.parametrize("eviction", ["lru", "lfu", "weight", "tinylfu"])
def test_the_tier_and_its_policy_agree_on_the_score(tmp_path: Path, eviction: str) -> None:
    """One formula (policies.promotion_score) for promotion, demotion and the weakest
    chunk, whatever the tier's eviction policy."""
    clock = Clock()
    tier = open_tier(tmp_path, clock, eviction=eviction)
    keys = [key(i) for i in range(4)]
    for i, k in enumerate(keys):
        tier.put(k, bytes([i]) * 1000, level=None, weight=0.2 * (i + 1))
        for _ in range(i):
            clock.now += 600
            tier.get(k)
    clock.now += 1800
    digests = [k.digest(NAMESPACE) for k in keys]
    policy = tier.policy
    for d in digests:
        last = policy.last_access(d)
        assert last is not None
        expected = promotion_score(policy.access_count(d), last, policy.weight_of(d), clock.now)
        assert tier.score(d, clock.now) == policy.promotion_score(d, clock.now) == expected
    scores = {d: tier.score(d, clock.now) for d in digests}
    threshold = sorted(scores.values())[1]
    hot = tier.hot_chunks(threshold)
    assert [(d, s) for d, s, _ in hot] == sorted(
        ((d, s) for d, s in scores.items() if s >= threshold), key=lambda e: -e[1]
    )
    first_victim = next(iter(policy.victims(clock.now)))
    assert tier.weakest_score() == scores[first_victim]


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
        victims = [(digest, tier.policy.size_of(digest))]
        leaving = tier._drop_leaving(victims)
    assert tier.put(k, data, None)  # worker B stores X again
    tier._evict(victims, [], leaving)  # worker A unlinks its victims
    assert tier.get(k) == data
    assert tier.bytes == allocated(tier.chunk_path(digest).stat().st_size)


def test_a_failed_store_leaves_no_evicted_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A evicts chunk X; worker B is storing X again, so A's unlink spares the
    file (it would be B's); then B's write fails (ENOSPC). The old file must go:
    nothing counts it any more. Seen on a full tmpfs once the first victims were
    recent chunks (tinylfu), which are the ones read, and stored, again."""
    tier = open_tier(tmp_path, max_size=1024 * 1024)
    k = key(0)
    data = data_for(k, compressible=False)
    assert tier.put(k, data, None)
    digest = k.digest(NAMESPACE)
    with tier._lock:  # worker A picks X as a victim
        victims = [(digest, tier.policy.size_of(digest))]
        leaving = tier._drop_leaving(victims)

    def write_that_fails(*args: object) -> bool:
        tier._evict(victims, [], leaving)  # A unlinks meanwhile: X is being written
        return False  # and B's write meets ENOSPC

    monkeypatch.setattr(tier, "_write", write_that_fails)
    assert not tier.put(k, data, None)
    assert not tier.chunk_path(digest).exists()
    assert tier.bytes == 0 and not tier.contains(k)


# -- the secret, the format marker, modes ----------------------------------------------------


def test_the_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    tier = open_tier(tmp_path)
    secret = (tmp_path / "secret").read_bytes()
    assert len(secret) == chunkfile.SECRET_SIZE and secret == tier.secret
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    assert (tmp_path / "format").read_bytes() == FORMAT_MARKER
    assert tier.put(key(1), b"s" * 1000, level=3)
    tier.close()
    again = open_tier(tmp_path)
    assert again.secret == secret
    assert again.get(key(1)) == b"s" * 1000


@pytest.mark.parametrize("umask", [0, 0o022, 0o277])
def test_modes_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        tier = open_tier(tmp_path / "a" / "b" / "ssd")  # a and b are created too
        assert tier.put(key(1), os.urandom(1000), level=None)
        tier.close()  # writes the index
    finally:
        os.umask(old)
    seen = set()
    for path in [tmp_path / "a", *(tmp_path / "a").rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
        seen.add(path.name)
    assert {".lock", "secret", "format", "index", "chunks", "tmp"} <= seen


V1_HEADER = struct.Struct("<4sBBHII16s16s")


def write_v1_chunk(tier_dir: Path, k: ChunkKey, raw: bytes) -> Path:
    """A good chunk file of format 1 (no tag), as an older cachefs wrote it."""
    digest = k.digest(NAMESPACE)
    check = chunkfile.checksum(raw)
    path = tier_dir / "chunks" / digest.hex()[:2] / digest.hex()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(V1_HEADER.pack(b"CFSC", 1, 0, 0, len(raw), len(raw), check, digest) + raw)
    return path


def test_old_format_chunks_are_dropped_once_not_counted_as_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "chunks").mkdir(mode=0o700)
    tmp_path.chmod(0o700)
    old = [write_v1_chunk(tmp_path, key(i), bytes([i]) * 1000) for i in range(3)]
    (tmp_path / "index").write_bytes(b"an old snapshot")
    with caplog.at_level(logging.INFO, logger="cachefs.data.tiers.disk"):
        tier = DiskTier(tier_config(tmp_path), NAMESPACE, Stats(), Clock())
        tier.open()
        assert not tier.contains(key(0))  # before the index loads: not served, not counted
        assert tier.get(key(0)) is None
        tier.load_index()
    assert not any(p.exists() for p in old)
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert drops == [
        "ssd tier: dropped 3 chunk files of an older format (or of another "
        "secret): they cannot be verified; they are fetched again as needed"
    ]
    assert tier.stats.get("corrupt_chunks") == 0
    assert (tmp_path / "format").read_bytes() == FORMAT_MARKER
    assert tier.put(key(0), b"n" * 1000, level=None) and tier.get(key(0)) == b"n" * 1000
    tier.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cachefs.data.tiers.disk"):
        again = open_tier(tmp_path)
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]
    assert again.get(key(0)) == b"n" * 1000


def test_a_lost_secret_drops_the_chunks_it_tagged(tmp_path: Path) -> None:
    tier = open_tier(tmp_path)
    assert tier.put(key(1), b"x" * 1000, level=None)
    tier.close()
    (tmp_path / "secret").unlink()
    again = open_tier(tmp_path)
    assert again.secret != tier.secret
    assert not again.contains(key(1)) and list(tmp_path.glob("chunks/*/*")) == []
    assert again.stats.get("corrupt_chunks") == 0


def test_a_move_retags_the_chunk_without_recompressing(tmp_path: Path) -> None:
    ssd = open_tier(tmp_path / "ssd")
    hdd = open_tier(tmp_path / "hdd")
    k = key(8)
    data = (b"compress me " * 100)[:1000]
    assert ssd.put(k, data, level=3)
    before = ssd.chunk_path(k.digest(NAMESPACE)).read_bytes()
    assert chunkfile.parse_header(before).codec == chunkfile.CODEC_ZSTD
    assert ssd.move_to(k, hdd)
    after = hdd.chunk_path(k.digest(NAMESPACE)).read_bytes()
    tag_at = chunkfile.HEADER_SIZE - chunkfile.TAG_SIZE
    assert after[:tag_at] == before[:tag_at]  # same header fields
    assert after[chunkfile.HEADER_SIZE :] == before[chunkfile.HEADER_SIZE :]  # same payload
    assert after[tag_at : chunkfile.HEADER_SIZE] != before[tag_at : chunkfile.HEADER_SIZE]
    assert hdd.get(k) == data
    hdd.close()
    report = check_tier(tmp_path / "hdd")  # cachefs check agrees: a good chunk of that tier
    assert (report.good, report.bad) == (1, [])


def test_a_demoted_chunk_is_retagged_for_the_lower_tier(tmp_path: Path) -> None:
    clock = Clock()
    ssd = open_tier(tmp_path / "ssd", clock, max_size=4096)
    hdd = open_tier(tmp_path / "hdd", clock)
    ssd.demote_to, ssd.demote_threshold = hdd, 0.0
    assert ssd.put(key(1), b"d" * 1000, level=None)
    clock.now += 1
    assert ssd.put(key(2), b"e" * 1000, level=None)  # full: key(1) goes down
    assert not ssd.contains(key(1))
    assert hdd.get(key(1)) == b"d" * 1000
    assert hdd.stats.get("corrupt_chunks") == 0


# -- a tier filesystem too small for min_free (a real tmpfs) ---------------------------------

MiB = 1024 * 1024


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "32m") as path:
        yield path


def tier_stats(mounted: Mounted, tier: str) -> dict:
    return json.loads(os.getxattr(mounted.mnt, "user.cachefs.stats"))["tiers"][tier]


def test_a_tier_kept_from_caching_by_min_free_says_so_once(
    small_tmpfs: Path, origin: Path, mount_factory: MountFactory
) -> None:
    rng = random.Random(11)
    files = {"film.mkv": rng.randbytes(3 * MiB), "report.bin": rng.randbytes(2 * MiB)}
    for name, data in files.items():  # media: 3 chunks for hdd; user_data: 4 for ssd
        (origin / name).write_bytes(data)
    mounted = mount_factory(  # the default min_free: 1 GiB, on a 32 MiB filesystem
        origin,
        [
            "stats.backend=embedded",
            f"tiers.ssd.path={small_tmpfs / 'ssd'}",
            f"tiers.hdd.path={small_tmpfs / 'hdd'}",
        ],
    )
    for _ in range(2):
        for name, data in files.items():
            assert read_direct(mounted.mnt / name) == data
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        tier_stats(mounted, "hdd")["skipped_min_free"] < 3
        or tier_stats(mounted, "ssd")["skipped_min_free"] < 4
    ):
        time.sleep(0.05)
    log = mounted.log()
    for tier in ("ssd", "hdd"):
        stats = tier_stats(mounted, tier)
        assert stats["caching"] is False and stats["chunks"] == 0
        assert stats["skipped_min_free"] >= (3 if tier == "hdd" else 4)
        assert (
            f"below tiers.{tier}.min_free = 1073741824 bytes (1GiB)"
            in (stats["not_caching_reason"])
        )
        warnings = [line for line in log.splitlines() if f"{tier} tier: caching nothing" in line]
        assert len(warnings) == 1, log
        assert " free on the filesystem of " in warnings[0]
        assert f"-o tiers.{tier}.min_free=0" in warnings[0]
        assert f"tiers.{tier}.path" in warnings[0]


def test_caching_resumes_once_there_is_room_again(
    small_tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tier = open_tier(small_tmpfs / "ssd", min_free=16 * MiB, max_size=32 * MiB)
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(b"\0" * 20 * MiB)  # leaves less than min_free
    time.sleep(1.1)  # the free-space figure is rechecked every second
    with caplog.at_level(logging.INFO, logger="cachefs.data.tiers.disk"):
        assert not tier.put(key(1), b"a" * 1000, level=None)
        assert not tier.put(key(2), b"b" * 1000, level=None)
        assert tier.stats_dict()["caching"] is False
        assert tier.stats_dict()["skipped_min_free"] == 2
        ballast.unlink()
        time.sleep(1.1)
        assert tier.put(key(1), b"a" * 1000, level=None)
        assert tier.put(key(2), b"b" * 1000, level=None)
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "caching nothing" in m]) == 1
    assert len([m for m in messages if "caching again" in m]) == 1
    stats = tier.stats_dict()
    assert (stats["caching"], stats["not_caching_reason"], stats["chunks"]) == (True, None, 2)
    tier.close()


def test_with_no_reserve_tiers_fill_their_filesystem_and_reads_never_fail(
    small_tmpfs: Path, origin: Path, mount_factory: MountFactory
) -> None:
    rng = random.Random(12)
    files = {f"f{i}.{'mkv' if i % 2 else 'bin'}": rng.randbytes(4 * MiB) for i in range(12)}
    for name, data in files.items():  # 48 MiB, half for each tier, on 32 MiB
        (origin / name).write_bytes(data)
    mounted = mount_factory(
        origin,
        [
            "tiers.ram.max_size=4MiB",
            "stats.backend=embedded",
            f"tiers.ssd.path={small_tmpfs / 'ssd'}",
            f"tiers.hdd.path={small_tmpfs / 'hdd'}",
            "tiers.ssd.min_free=0",
            "tiers.hdd.min_free=0",
        ],
    )
    least_free = [float("inf")]
    done = threading.Event()

    def watch_free_space() -> None:
        while not done.wait(0.005):
            sv = os.statvfs(small_tmpfs)
            least_free[0] = min(least_free[0], sv.f_bavail * sv.f_frsize)

    watcher = threading.Thread(target=watch_free_space)
    watcher.start()
    try:
        for _ in range(3):
            for name, data in files.items():
                assert read_direct(mounted.mnt / name) == data
    finally:
        done.set()
        watcher.join()
    assert least_free[0] < 2 * MiB  # the tiers filled their filesystem (less than 2 chunks left)
    evictions = 0
    for tier in ("ssd", "hdd"):
        stats = tier_stats(mounted, tier)
        assert stats["caching"] is True and stats["skipped_min_free"] == 0
        assert stats["chunks"] > 0
        evictions += stats["evictions"]
    assert evictions > 0  # far below max_size: only a full filesystem evicts


def crash(tier: DiskTier) -> None:
    """End a tier as a crash would: no close(), no index snapshot saved."""
    if tier._lock_fd is not None:
        os.close(tier._lock_fd)
    tier._lock_fd = None


def test_a_restart_trusts_the_files_over_a_stale_snapshot(tmp_path: Path) -> None:
    """The snapshot gives the sizes and history of the chunks it lists (no stat of each
    file); chunk files stored after it are found by the listing, and chunks it lists
    whose files are gone are not indexed."""
    clock = Clock()
    tier = open_tier(tmp_path, clock, max_size=1 << 20)
    for i in range(3):
        tier.put(key(i), bytes([i]) * 1000, level=None)
    for _ in range(4):
        clock.now += 1
        assert tier.get(key(0)) is not None  # read again: history to keep
    tier.save_index()
    tier.discard([key(2)])  # after the snapshot: one gone, one new
    tier.put(key(7), b"n" * 1000, level=None)
    crash(tier)

    again = open_tier(tmp_path, clock, max_size=1 << 20)
    held = {i for i in range(8) if again.known_to_hold(key(i))}
    assert held == {0, 1, 7}
    on_disk = sum(
        allocated(p.stat().st_size) for p in (tmp_path / "chunks").rglob("*") if p.is_file()
    )
    assert again.bytes == on_disk == 3 * allocated(64 + 1000)
    digest = key(0).digest(NAMESPACE)
    assert again.policy.access_count(digest) == 5  # from the snapshot
    assert again.policy.access_count(key(7).digest(NAMESPACE)) == 1
    assert again.get(key(7)) == b"n" * 1000 and again.get(key(1)) == b"\x01" * 1000


def test_a_restart_without_a_snapshot_indexes_every_chunk_file(tmp_path: Path) -> None:
    tier = open_tier(tmp_path, max_size=1 << 20)
    for i in range(5):
        tier.put(key(i), b"z" * 1000, level=None)
    crash(tier)
    (tmp_path / "chunks" / "ab").mkdir(exist_ok=True)
    (tmp_path / "chunks" / "ab" / "not-a-chunk").write_bytes(b"junk")  # never indexed
    again = open_tier(tmp_path, max_size=1 << 20)
    assert {i for i in range(5) if again.known_to_hold(key(i))} == set(range(5))
    assert again.bytes == 5 * allocated(64 + 1000)
