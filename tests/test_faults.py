"""The fault suite: each guarantee, tried the way it breaks. Every case is bounded in
time and checks bytes exactly.

Never wrong: short-lived handles with read-ahead in flight, kill -9 under load,
corrupt and swapped chunk files. Never stuck: a hung origin under writers and
readers. Never stale: see test_coherence_matrix.py.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cachefs.app.check import check_tier
from cachefs.stats.counters import mount_prefix

from .conftest import (
    DEFAULT_TEST_OPTIONS,
    Mounted,
    MountFactory,
    RedisServer,
    read_direct,
    run_cachefs,
    tier_dir,
    wait_until_on_disk,
)
from .test_offline import (
    OUTER_OPTIONS,
    TIMEOUT,
    assert_back_online,
    make_library,
    mount_nas,
    stopped,
    unmount_stack,
    wait_for_state,
    warm,
)
from .test_origin_changes import walk_lstat
from .test_stats import redis_options

T = TypeVar("T")
RESIDENCY = "user.cachefs.residency"

MiB = 1024 * 1024


def file_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_short_lived_handles_with_read_ahead_read_only_their_own_bytes(
    origin: Path, mount_factory: MountFactory
) -> None:
    """Readers open, read a few MiB sequentially (so read-ahead runs) and close
    at once, many at a time: every byte is the file's own."""
    files = {f"Movies/m{i}.mkv": file_bytes(i, 12 * MiB) for i in range(6)}
    for rel, data in files.items():
        (origin / rel).parent.mkdir(exist_ok=True)
        (origin / rel).write_bytes(data)
    m = mount_factory(origin, ["tiers.ram.max_size=16MiB", "stats.backend=embedded"])
    names = sorted(files)
    wrong: list[str] = []
    reads = [0]
    stop = time.monotonic() + 6.0

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop and not wrong:
            rel = rng.choice(names)
            start = rng.randrange(0, 10 * MiB)
            length = rng.randrange(128 * 1024, 2 * MiB)
            with open(m.mnt / rel, "rb") as f:
                f.seek(start)
                got = f.read(length)
            reads[0] += 1
            if got != files[rel][start : start + length]:
                wrong.append(f"{rel} [{start}, +{length})")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not wrong, wrong
    assert reads[0] > 50
    deadline = time.monotonic() + 5  # the kernel sends RELEASE after close() returns
    while m.stats()["open_files"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert m.stats()["open_files"] == 0


# -- never stuck: a hung origin --------------------------------------------------------


def within(seconds: float, fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in a thread: its result, or a failure if it is still blocked after
    *seconds* (a process stuck in a FUSE request cannot be interrupted)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"{getattr(fn, '__name__', fn)}{args} blocked for {seconds}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def daemon_threads(m: Mounted) -> int:
    return len(os.listdir(f"/proc/{m.proc.pid}/task"))


def test_a_hung_origin_under_writers_never_blocks_cached_answers(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """Writers fsync-ing into an origin that hangs hold every thread they may; cached
    reads, stat, ls and the control xattrs still answer, the origin is marked
    offline, queued changes fail with EROFS, and it all recovers by itself.

    The writers' files exist before the hang: a create caught by it would keep its
    directory locked in the kernel until the origin answers (changes are never cut
    short), which no file system below the kernel can undo."""
    files = make_library(origin)
    nas = mount_nas(mount_factory, origin, tmp_path)
    m = mount_factory(nas.mnt, [*OUTER_OPTIONS, "mount.max_threads=4"])
    warm(m, files)
    stop = threading.Event()
    failures: list[int] = []
    for i in range(12):
        (m.mnt / f"w{i}.bin").write_bytes(b"")

    def writer(i: int) -> None:
        while not stop.is_set():
            try:
                with open(m.mnt / f"w{i}.bin", "wb") as f:
                    f.write(bytes([i]) * 65536)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                failures.append(exc.errno or 0)
                time.sleep(0.05)

    writers = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(12)]
    for t in writers:
        t.start()
    time.sleep(0.3)
    with stopped(nas.proc):
        time.sleep(TIMEOUT + 0.3)  # past revalidate_after too: lookups must ask the origin
        for rel, data in files.items():
            if rel != "uncached.bin":
                assert within(2, read_direct, m.mnt / rel) == data
        assert within(2, os.stat, m.mnt / "Show" / "episode.nfo").st_size == len(
            files["Show/episode.nfo"]
        )
        assert sorted(within(2, os.listdir, m.mnt / "Show")) == ["episode.nfo", "poster.jpg"]
        within(2, os.getxattr, m.mnt / "cached.bin", "user.cachefs.residency")
        deadline = time.monotonic() + TIMEOUT + 2
        while within(2, m.stats)["origin_state"] != "offline":
            assert time.monotonic() < deadline, "a hung origin was never marked offline"
            time.sleep(0.1)
        took = time.monotonic()
        with pytest.raises(OSError) as refused:
            within(2, (m.mnt / "Show" / "late.txt").write_bytes, b"x")
        assert refused.value.errno == errno.EROFS and time.monotonic() - took < 1
    wait_for_state(m, "online")
    stop.set()
    for t in writers:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in writers)
    assert set(failures) <= {errno.EROFS, errno.EIO}
    for i in range(12):
        path = origin / f"w{i}.bin"
        assert not path.exists() or path.read_bytes() in (b"", bytes([i]) * 65536)
    assert_back_online(m, origin, files)


def test_probes_of_a_hung_origin_never_pile_up_threads(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """Every probe of a hung origin times out; none may leave another thread behind,
    and the control xattrs keep answering without the origin."""
    files = make_library(origin)
    nas = mount_nas(mount_factory, origin, tmp_path)
    options = [*DEFAULT_TEST_OPTIONS, "origin.timeout=200ms", "origin.probe_interval=50ms"]
    m = mount_factory(nas.mnt, options)
    warm(m, files)
    with stopped(nas.proc):
        wait_for_state(m, "offline")
        before = daemon_threads(m)
        time.sleep(3.0)  # about 12 probes, each timing out
        assert daemon_threads(m) - before <= 2
        residency = json.loads(within(1, os.getxattr, m.mnt / "cached.bin", RESIDENCY))
        assert residency["uncached"] == 0
        within(1, os.setxattr, m.mnt / "cached.bin", "user.cachefs.pin", b"ssd")
        assert within(1, os.getxattr, m.mnt / "cached.bin", "user.cachefs.pin") == b"ssd"
        assert within(1, m.stats)["origin_state"] == "offline"
    wait_for_state(m, "online")


def test_a_lazily_unmounted_origin_is_an_outage_and_its_successor_is_served(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """`umount -l` leaves cachefs's fds working on the detached share; the path now
    leads elsewhere. cachefs must notice, and serve what is mounted there next."""
    make_library(origin)
    nas = mount_nas(mount_factory, origin, tmp_path)
    m = mount_factory(nas.mnt, OUTER_OPTIONS)
    assert read_direct(m.mnt / "cached.bin")
    subprocess.run(["fusermount3", "-uz", str(nas.mnt)], check=True)
    wait_for_state(m, "offline", timeout=TIMEOUT + 3)
    assert "no longer leads" in m.stats()["origin_offline_reason"]
    successor = tmp_path / "origin2"
    successor.mkdir()
    (successor / "cached.bin").write_bytes(b"the disk mounted there now")
    options = [
        *DEFAULT_TEST_OPTIONS,
        f"tiers.ssd.path={tmp_path / 'nas2-cache/ssd'}",
        f"tiers.hdd.path={tmp_path / 'nas2-cache/hdd'}",
    ]
    mount_factory(successor, options, mnt=nas.mnt)
    wait_for_state(m, "online")
    assert read_direct(m.mnt / "cached.bin") == b"the disk mounted there now"
    assert sorted(os.listdir(m.mnt)) == ["cached.bin"]
    mount_factory.unmount(m)
    nas.proc.kill()  # the detached share's daemon; nothing uses it any more


def test_an_origin_remounted_on_a_new_device_number_keeps_its_cache(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    files = make_library(origin)
    nas = mount_nas(mount_factory, origin, tmp_path)
    m = mount_factory(nas.mnt, OUTER_OPTIONS)
    warm(m, files)
    cached = [rel for rel in files if rel != "uncached.bin"]
    residency = {rel: wait_until_on_disk(m, rel) for rel in cached}
    device = os.stat(nas.mnt).st_dev
    nas.proc.kill()
    nas.proc.wait()
    wait_for_state(m, "offline")
    subprocess.run(["fusermount3", "-uz", str(nas.mnt)], check=True)
    mount_factory.unmount(nas)
    nas = mount_nas(mount_factory, origin, tmp_path)
    assert os.stat(nas.mnt).st_dev != device
    wait_for_state(m, "online")
    walk_lstat(m.mnt)  # every entry revalidated against the remounted share
    read_before = m.stats()["origin_bytes_read"]
    for rel in cached:
        assert read_direct(m.mnt / rel) == files[rel]
        assert m.residency(rel) == residency[rel]
    assert m.stats()["origin_bytes_read"] == read_before
    unmount_stack(mount_factory, m)


def test_offline_ls_l_and_df_answer_from_the_cache(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """`ls -l` asks every file for its xattrs, `df` for statfs: while the origin is
    down both answer from what was seen (no attribute: ENODATA, never EIO per file),
    also when nothing asked for statfs before the outage."""
    files = make_library(origin)
    os.setxattr(origin / "cached.bin", "user.rating", b"5")
    nas = mount_nas(mount_factory, origin, tmp_path)
    m = mount_factory(nas.mnt, OUTER_OPTIONS)
    warm(m, files)
    assert os.getxattr(m.mnt / "cached.bin", "user.rating") == b"5"
    listed = subprocess.run(["ls", "-l", str(m.mnt / "Show")], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    with stopped(nas.proc):
        time.sleep(TIMEOUT + 0.3)
        with pytest.raises(OSError):
            within(TIMEOUT + 2, read_direct, m.mnt / "uncached.bin")
        wait_for_state(m, "offline")
        assert within(2, os.getxattr, m.mnt / "cached.bin", "user.rating") == b"5"
        assert "user.rating" in within(2, os.listxattr, m.mnt / "cached.bin")
        with pytest.raises(OSError) as never_asked:
            within(2, os.getxattr, m.mnt / "uncached.bin", "user.rating")
        assert never_asked.value.errno == errno.ENODATA
        for ls in (["ls", "-l", str(m.mnt / "Show")], ["ls", "-l", str(m.mnt)]):
            listed = within(
                5, functools.partial(subprocess.run, capture_output=True, text=True), ls
            )
            assert listed.returncode == 0 and not listed.stderr, listed.stderr
        df = within(2, os.statvfs, m.mnt)
        assert df.f_blocks > 0 and df.f_bsize > 0
    wait_for_state(m, "online")


# -- never wrong: crashes and damaged chunk files ----------------------------------------


def make_mixed_library(origin: Path) -> dict[str, bytes]:
    """Media (1 MiB chunks, HDD tier), user data (SSD tier) and small metadata files."""
    rng = random.Random(3)
    files = {f"Movies/m{i}.mkv": rng.randbytes(rng.randint(2, 6) * MiB + i) for i in range(3)}
    files |= {f"docs/d{i}.bin": rng.randbytes(rng.randint(1, 3) * MiB) for i in range(3)}
    files |= {f"Shows/s{i}.nfo": rng.randbytes(rng.randint(100, 9000)) for i in range(8)}
    for rel, data in files.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(data)
    return files


def verify_everything(m: Mounted, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert read_direct(m.mnt / rel) == data, rel


def test_kill_9_under_concurrent_reads_leaves_a_cache_that_verifies(
    origin: Path, mount_factory: MountFactory
) -> None:
    files = make_mixed_library(origin)
    names = sorted(files)
    rng = random.Random(4)
    for round_ in range(3):
        m = mount_factory(origin)
        wrong: list[str] = []

        def reader(seed: int, mnt: Path = m.mnt, wrong: list[str] = wrong) -> None:
            pick = random.Random(seed)
            while True:
                rel = pick.choice(names)
                try:
                    got = read_direct(mnt / rel)
                except OSError:
                    return  # the daemon is gone
                if got != files[rel]:
                    wrong.append(rel)

        threads = [threading.Thread(target=reader, args=(round_ * 10 + i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 1.5))  # fills, stores and evictions in flight
        m.proc.kill()
        m.proc.wait()
        for t in threads:
            t.join(timeout=10)
        assert not wrong, wrong
        options = m.options
        mount_factory.unmount(m)
        for tier in ("ssd", "hdd"):  # the crash left no chunk file that fails to verify
            assert check_tier(tier_dir(options, tier)).bad == []
        m = mount_factory(origin, options)
        verify_everything(m, files)
        assert m.stats()["corrupt_chunks"] == 0
        mount_factory.unmount(m)
        result = run_cachefs("check", str(tier_dir(options, "ssd")), str(tier_dir(options, "hdd")))
        assert result.returncode == 0, result.stdout + result.stderr


def damage(paths: list[Path], how: str) -> None:
    """Damage every chunk file one way."""
    if how == "swapped":  # each file gets another valid chunk file's bytes
        blobs = [p.read_bytes() for p in paths]
        for path, blob in zip(paths, blobs[1:] + blobs[:1], strict=True):
            path.write_bytes(blob)
        return
    for path in paths:
        blob = bytearray(path.read_bytes())
        if how == "flipped":
            for offset in (5, len(blob) // 2, len(blob) - 1):
                blob[offset] ^= 0x5A
        elif how == "truncated":
            del blob[len(blob) // 2 :]
        elif how == "empty":
            blob.clear()
        path.write_bytes(bytes(blob))


@pytest.mark.parametrize("how", ["flipped", "truncated", "empty", "swapped"])
def test_every_damaged_chunk_file_is_caught_and_counted(
    origin: Path, mount_factory: MountFactory, how: str
) -> None:
    files = make_mixed_library(origin)
    m = mount_factory(origin)
    verify_everything(m, files)
    for rel in files:
        wait_until_on_disk(m, rel)
    options = m.options
    mount_factory.unmount(m)
    chunks = [p for t in ("ssd", "hdd") for p in sorted(tier_dir(options, t).glob("chunks/*/*"))]
    assert len(chunks) > 20
    damage(chunks, how)
    m = mount_factory(origin, options)
    verify_everything(m, files)  # byte-exact: every damaged chunk came from the origin again
    stats = m.stats()
    assert stats["corrupt_chunks"] == len(chunks)
    assert stats["origin_bytes_read"] == sum(len(d) for d in files.values())


# -- a stats backend that hangs ----------------------------------------------------------


def test_a_hung_redis_never_slows_a_read_and_its_counts_catch_up(
    origin: Path, mount_factory: MountFactory, redis_server: RedisServer
) -> None:
    files = make_mixed_library(origin)
    m = mount_factory(origin, redis_options(redis_server))
    verify_everything(m, files)
    r = redis_server.client()
    key = f"{mount_prefix(str(m.mnt))}counters"
    deadline = time.monotonic() + 10
    while not r.hget(key, "fuse_reads") and time.monotonic() < deadline:
        time.sleep(0.1)
    threads = daemon_threads(m)
    with stopped(redis_server.proc):
        started = time.monotonic()
        for _ in range(3):  # from the RAM tier: each round takes milliseconds
            verify_everything(m, files)
        assert time.monotonic() - started < 2.0  # a flush waits up to 2 s on Redis: not us
        time.sleep(2.5)  # flushes time out meanwhile
        verify_everything(m, files)
        assert within(1, m.stats)["stats_pending_files"] > 0
        assert daemon_threads(m) - threads <= 2
    reads = m.stats()["fuse_reads"]
    deadline = time.monotonic() + 15
    while int(r.hget(key, "fuse_reads") or 0) < reads and time.monotonic() < deadline:
        time.sleep(0.2)
    assert int(r.hget(key, "fuse_reads")) >= reads
