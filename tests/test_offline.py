"""Offline mode: the origin hangs, dies, or is not mounted, and the mount keeps serving.

The "NAS" here is a second cachefs mount (a real FUSE file system in its own
process): SIGSTOP makes every call on it hang, SIGKILL makes it answer
ENOTCONN, unmounting it leaves an empty mount point. Cached files must keep
reading byte-exact, uncached reads must fail with EIO within origin.timeout +
1 s, changes with EROFS, and the mount must come back by itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DEFAULT_TEST_OPTIONS, Mounted, MountFactory, read_direct, wait_until_on_disk
from .test_origin_changes import walk_lstat

TIMEOUT = 1.0  # origin.timeout in these tests
OUTER_OPTIONS = [
    *DEFAULT_TEST_OPTIONS,
    f"origin.timeout={TIMEOUT}s",
    "origin.probe_interval=250ms",
    # "uncached.bin" must stay uncached: the prefetcher would fetch it as the
    # sibling after "cached.bin" (test_prefetch.py tests that)
    "prediction.max_prefetch_size=0",
]


def make_library(origin: Path) -> dict[str, bytes]:
    rng = random.Random(6)
    files = {
        "cached.bin": rng.randbytes(300_000),
        "uncached.bin": rng.randbytes(300_000),
        "Show/episode.nfo": b"<episodedetails/>",
        "Show/poster.jpg": rng.randbytes(20_000),
    }
    for rel, data in files.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(data)
    return files


def mount_nas(mount_factory: MountFactory, origin: Path, tmp_path: Path) -> Mounted:
    """The stand-in NAS: cachefs over *origin*, with tier directories of its own."""
    options = [
        *DEFAULT_TEST_OPTIONS,
        f"tiers.ssd.path={tmp_path / 'nas-cache/ssd'}",
        f"tiers.hdd.path={tmp_path / 'nas-cache/hdd'}",
    ]
    return mount_factory(origin, options, mnt=tmp_path / "nas")


def wait_for_state(m: Mounted, state: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while m.stats()["origin_state"] != state:
        if time.monotonic() > deadline:
            raise AssertionError(f"origin never became {state}: {m.stats()}\n{m.log()}")
        time.sleep(0.1)


def assert_errno(expected: int, fn, *args) -> float:  # type: ignore[no-untyped-def]
    """Call fn(*args), expect OSError(expected); return how long it took."""
    start = time.monotonic()
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == expected, info.value
    return time.monotonic() - start


def warm(m: Mounted, files: dict[str, bytes]) -> None:
    """Metadata of everything, content of everything but uncached.bin."""
    walk_lstat(m.mnt)
    for rel, data in files.items():
        if rel != "uncached.bin":
            assert read_direct(m.mnt / rel) == data


def assert_serves_offline(m: Mounted, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        if rel != "uncached.bin":
            assert read_direct(m.mnt / rel) == data  # byte-exact from the cache
    assert sorted(os.listdir(m.mnt / "Show")) == ["episode.nfo", "poster.jpg"]
    assert (m.mnt / "uncached.bin").stat().st_size == len(files["uncached.bin"])
    took = assert_errno(errno.EIO, read_direct, m.mnt / "uncached.bin")
    assert took < TIMEOUT + 1
    assert_errno(errno.EROFS, (m.mnt / "new.txt").write_bytes, b"lost?")
    assert_errno(errno.EROFS, os.mkdir, m.mnt / "newdir")
    assert_errno(errno.EROFS, os.unlink, m.mnt / "Show/episode.nfo")
    assert m.stats()["origin_state"] == "offline"


def assert_back_online(m: Mounted, origin: Path, files: dict[str, bytes]) -> None:
    wait_for_state(m, "online")
    assert read_direct(m.mnt / "uncached.bin") == files["uncached.bin"]
    (m.mnt / "new.txt").write_bytes(b"after the outage")
    assert (origin / "new.txt").read_bytes() == b"after the outage"


def unmount_stack(mount_factory: MountFactory, m: Mounted) -> None:
    """The mount first, then the NAS under it (which is busy while cachefs holds it)."""
    mount_factory.unmount(m)
    mount_factory.close()


def warm_stack(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> tuple[dict[str, bytes], Mounted, Mounted]:
    """A library on the stand-in NAS, cachefs over it, and the cache warmed."""
    files = make_library(origin)
    nas = mount_nas(mount_factory, origin, tmp_path)
    m = mount_factory(nas.mnt, OUTER_OPTIONS)
    warm(m, files)
    return files, nas, m


def warmed_then_unmounted(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> tuple[dict[str, bytes], Mounted, dict[str, tuple[int, int, int]]]:
    """warm_stack, its cached files on disk and its tree walked, then cachefs unmounted
    (the NAS stays): the files, the NAS and the tree as the walk saw it."""
    files, nas, m = warm_stack(origin, mount_factory, tmp_path)
    tree = walk_lstat(m.mnt)
    for rel in files:
        if rel != "uncached.bin":
            wait_until_on_disk(m, rel)
    mount_factory.unmount(m)
    return files, nas, tree


@contextlib.contextmanager
def stopped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def test_hung_origin_goes_offline_and_recovers(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    files, nas, m = warm_stack(origin, mount_factory, tmp_path)
    with stopped(nas.proc):
        time.sleep(1.2)  # past revalidate_after: the next lookup asks the hung origin
        took = assert_errno(errno.EIO, read_direct, m.mnt / "uncached.bin")
        assert took < TIMEOUT + 1
        assert_serves_offline(m, files)
        assert "is offline" in m.log()
    assert_back_online(m, origin, files)
    assert m.stats()["origin_outages"] == 1


def test_dead_origin_remounted_is_picked_up_without_remount(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    files, nas, m = warm_stack(origin, mount_factory, tmp_path)
    nas.proc.kill()  # the NAS connection dies: ENOTCONN from now on
    nas.proc.wait()
    time.sleep(1.2)
    assert_serves_offline(m, files)
    # The share is gone; its mount point is an empty directory again.
    subprocess.run(["fusermount3", "-uz", str(nas.mnt)], check=True)
    mount_factory.unmount(nas)
    time.sleep(0.6)  # a probe or two must not take the empty directory for the origin
    assert m.stats()["origin_state"] == "offline"
    mount_nas(mount_factory, origin, tmp_path)  # the share comes back
    assert_back_online(m, origin, files)
    unmount_stack(mount_factory, m)


def test_mounts_offline_from_the_metadata_store(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """Boot with the NAS down: the library is still there, read-only, from the cache."""
    files, nas, tree = warmed_then_unmounted(origin, mount_factory, tmp_path)
    mount_factory.unmount(nas)  # nothing mounted at the origin path now
    m = mount_factory(nas.mnt, OUTER_OPTIONS)
    assert "mounting offline" in m.log()
    assert os.statvfs(m.mnt).f_namemax == 255  # df works too
    assert walk_lstat(m.mnt) == tree  # the whole walk, with no origin at all
    assert_serves_offline(m, files)
    mount_nas(mount_factory, origin, tmp_path)
    assert_back_online(m, origin, files)
    unmount_stack(mount_factory, m)


def test_a_store_read_while_serving_is_served_when_the_origin_hangs_later(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """Online at mount, the metadata store is read after the mount answers (in
    batches, between requests). Once read, it is the offline tree as much as a
    store read before mounting: a hang that follows finds the whole library. With
    watch = off nothing re-lists the restored directories, so what answers is the
    store and only the store."""
    files, nas, tree = warmed_then_unmounted(origin, mount_factory, tmp_path)
    m = mount_factory(nas.mnt, [*OUTER_OPTIONS, "metadata.watch=off"])
    deadline = time.monotonic() + 15
    while "metadata store: " not in m.log() or "entries restored in" not in m.log():
        assert time.monotonic() < deadline, m.log()
        time.sleep(0.05)
    assert "mounting offline" not in m.log()
    with stopped(nas.proc):
        time.sleep(1.2)  # past revalidate_after: every lookup would ask the hung origin
        assert walk_lstat(m.mnt) == tree
        assert_serves_offline(m, files)
    unmount_stack(mount_factory, m)


def test_no_cache_and_no_origin_is_a_clear_error(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """A dead NAS and nothing cached: refused, naming the dead mount and the fix.

    Which check sees it depends on time: within the kernel's attribute timeout
    (1 s) of the NAS's last answer the pre-mount stat() of the origin still
    succeeds from the kernel's cache, and the connect that follows reports it
    (adding that there is no cached metadata); later the stat() itself fails.
    Both name the dead mount and how to unmount it, and mount nothing."""
    nas = mount_nas(mount_factory, origin, tmp_path)
    nas.proc.kill()
    nas.proc.wait()
    with pytest.raises(RuntimeError, match=r"is a dead FUSE mount .*fusermount3 -u") as refused:
        mount_factory(nas.mnt, OUTER_OPTIONS)
    assert "(nothing mounted)" in str(refused.value)
    time.sleep(1.5)  # past the attribute timeout: the pre-mount check sees it now
    with pytest.raises(RuntimeError, match=r"is a dead FUSE mount .*fusermount3 -u"):
        mount_factory(nas.mnt, OUTER_OPTIONS)


def test_kill_9_while_the_store_is_written_leaves_a_store_that_is_revalidated(
    origin: Path, mount_factory: MountFactory
) -> None:
    rng = random.Random(9)
    for d in range(20):
        (origin / f"d{d}").mkdir()
        for f in range(100):
            (origin / f"d{d}" / f"f{f}.nfo").write_bytes(b"v1")
    for attempt in range(3):
        m = mount_factory(origin)
        store = m.tier_dir("ssd") / "metadata.sqlite"
        walk_lstat(m.mnt)  # 2,000 new or revalidated entries for the saver to write
        time.sleep(rng.uniform(0.0, 1.5))  # the saver writes about once a second
        m.proc.kill()
        m.proc.wait()
        mount_factory.unmount(m)
        with contextlib.closing(sqlite3.connect(store)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # Changed while no daemon ran: the restored entries must not be trusted.
        changed = origin / f"d{attempt}" / "f0.nfo"
        changed.write_bytes(b"version 2, longer")
        (origin / f"d{attempt}" / "f1.nfo").unlink()
        m = mount_factory(origin)
        assert (m.mnt / changed.relative_to(origin)).stat().st_size == len(b"version 2, longer")
        assert (m.mnt / changed.relative_to(origin)).read_bytes() == b"version 2, longer"
        assert not (m.mnt / f"d{attempt}" / "f1.nfo").exists()
        mount_factory.unmount(m)
