"""Every kind of origin change x every way of noticing it: seen within its promise.

The kinds: an overwrite of the same size, the same with its mtime put back (as
taggers and ``rsync --times`` do), an append, a truncate, a replace by rename, a
delete and a create. The ways: the defaults (revalidate_after 1 s, inotify on
this local origin), a long revalidate_after with inotify, a long one with
polling, polling with the defaults, and a change made while unmounted. Every
file was read before the change, so its old chunks are in the RAM and disk
tiers and the kernel's page cache: a stale byte anywhere fails the test.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    DEFAULT_TEST_OPTIONS,
    Mounted,
    MountFactory,
    is_mounted,
    run_cachefs,
    unmount,
)

LONG = "metadata.revalidate_after=1h"
# name: (options, seconds within which a change must show)
MODES = {
    "defaults": ([], 1.0),
    "inotify-long": (["metadata.watch=inotify", LONG], 0.3),
    "poll-long": (["metadata.watch=poll", LONG, "metadata.poll_interval=1s"], 2.0),
    "poll-defaults": (["metadata.watch=poll"], 1.0),
}
SLACK = 0.7


def make_library(origin: Path) -> dict[str, bytes]:
    rng = random.Random(11)
    files = {
        "same_size.nfo": rng.randbytes(3000),
        "mtime_restored.mkv": rng.randbytes(3 * 1024 * 1024),
        "append.log": b"one\n",
        "truncate.bin": rng.randbytes(600_000),
        "replaced.json": b'{"v": 1}',
        "deleted.jpg": rng.randbytes(20_000),
    }
    (origin / "lib").mkdir()
    for name, data in files.items():
        (origin / "lib" / name).write_bytes(data)
    return files


def read_everything(mnt: Path) -> None:
    for path in sorted((mnt / "lib").iterdir()):
        path.read_bytes()
        path.read_bytes()  # the second from the cache


def change_everything(origin: Path, files: dict[str, bytes]) -> dict[str, bytes | None]:
    lib = origin / "lib"
    rng = random.Random(12)
    expected: dict[str, bytes | None] = {}

    new = rng.randbytes(3000)
    (lib / "same_size.nfo").write_bytes(new)
    expected["same_size.nfo"] = new

    before = (lib / "mtime_restored.mkv").stat()
    new = rng.randbytes(len(files["mtime_restored.mkv"]))
    with open(lib / "mtime_restored.mkv", "r+b") as f:
        f.write(new)
    os.utime(lib / "mtime_restored.mkv", ns=(before.st_atime_ns, before.st_mtime_ns))
    after = (lib / "mtime_restored.mkv").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    expected["mtime_restored.mkv"] = new

    with open(lib / "append.log", "ab") as f:
        f.write(b"two\n")
    expected["append.log"] = b"one\ntwo\n"

    os.truncate(lib / "truncate.bin", 1000)
    expected["truncate.bin"] = files["truncate.bin"][:1000]

    (lib / "replaced.json.tmp").write_bytes(b'{"v": 2}')
    os.rename(lib / "replaced.json.tmp", lib / "replaced.json")
    expected["replaced.json"] = b'{"v": 2}'

    (lib / "deleted.jpg").unlink()
    expected["deleted.jpg"] = None

    (lib / "created.srt").write_bytes(b"1\n00:00:01,000 --> 00:00:02,000\nhi\n")
    expected["created.srt"] = (lib / "created.srt").read_bytes()
    return expected


def differences(mnt: Path, expected: dict[str, bytes | None]) -> list[str]:
    wrong = []
    for name, data in expected.items():
        path = mnt / "lib" / name
        if data is None:
            if path.exists():
                wrong.append(f"{name}: still there")
            continue
        try:
            size, got = path.stat().st_size, path.read_bytes()
        except OSError as exc:
            wrong.append(f"{name}: {exc}")
            continue
        if size != len(data) or got != data:
            wrong.append(f"{name}: stale (size {size}, want {len(data)})")
    listed = sorted(os.listdir(mnt / "lib"))
    want = sorted(n for n, d in expected.items() if d is not None)
    if listed != want:
        wrong.append(f"listing {listed} != {want}")
    return wrong


def wait_until_seen(m: Mounted, expected: dict[str, bytes | None], promise: float) -> None:
    """Poll until the mount shows every change; fail if that takes past the promise."""
    deadline = time.monotonic() + promise + SLACK
    while True:
        wrong = differences(m.mnt, expected)
        if not wrong:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {promise}s (+{SLACK}s): {wrong}\n{m.log()}")
        time.sleep(0.05)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_change_is_seen_within_its_promise(
    origin: Path, mount_factory: MountFactory, mode: str
) -> None:
    options, promise = MODES[mode]
    files = make_library(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, *options])
    read_everything(m.mnt)
    expected = change_everything(origin, files)
    wait_until_seen(m, expected, promise)


def test_changes_made_while_unmounted_are_seen_at_once_after_the_remount(
    origin: Path, mount_factory: MountFactory
) -> None:
    """A long revalidate_after must not make the metadata store's entries trusted:
    they are revalidated before their first use."""
    files = make_library(origin)
    options = [*DEFAULT_TEST_OPTIONS, LONG]
    m = mount_factory(origin, options)
    read_everything(m.mnt)
    mount_factory.unmount(m)
    expected = change_everything(origin, files)
    m = mount_factory(origin, options)
    assert differences(m.mnt, expected) == []


def test_the_control_a_long_revalidate_after_without_a_watch_keeps_old_answers(
    origin: Path, mount_factory: MountFactory
) -> None:
    """Without a watch or a poller nothing can notice, so the cache answers: this is
    what makes the cases above prove something."""
    files = make_library(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "metadata.watch=off", LONG])
    read_everything(m.mnt)
    expected = change_everything(origin, files)
    time.sleep(1.5)
    assert differences(m.mnt, expected)


# Takes every inotify instance this user may have, and keeps taking any that
# another process gives back, until killed.
HOG = """
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
while libc.inotify_init1(0) >= 0:
    pass
print("full", flush=True)
while True:
    while libc.inotify_init1(0) >= 0:
        pass
    time.sleep(0.005)
"""


@pytest.fixture
def inotify_exhausted() -> Iterator[None]:
    """Every inotify instance this user may have is held by another process."""
    hog = subprocess.Popen(
        [sys.executable, "-c", HOG], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert hog.stdout is not None
        hog.stdout.readline()
        yield
    finally:
        hog.kill()
        hog.wait()


def test_watch_inotify_without_an_instance_refuses_to_mount(
    origin: Path, tmp_path: Path, inotify_exhausted: None
) -> None:
    make_library(origin)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_cachefs(
        "mount",
        str(origin),
        str(mnt),
        "-o",
        f"metadata.watch=inotify,stats.backend=embedded,tiers.ssd.path={tmp_path}/c/ssd,"
        f"tiers.hdd.path={tmp_path}/c/hdd",
    )
    mounted = is_mounted(mnt)
    if mounted:
        unmount(mnt, None)
    assert result.returncode != 0 and not mounted
    assert "metadata.watch = inotify" in result.stderr
    assert "max_user_instances" in result.stderr
    assert "nothing mounted" in result.stderr


def test_auto_without_an_instance_polls_says_why_and_still_sees_changes(
    origin: Path, mount_factory: MountFactory, inotify_exhausted: None
) -> None:
    files = make_library(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, LONG, "metadata.poll_interval=1s"])
    stats = m.stats()
    assert stats["change_detection"] == "poll"
    assert "max_user_instances" in stats["change_detection_reason"]
    assert "falls back to polling" in m.log()
    read_everything(m.mnt)
    expected = change_everything(origin, files)
    wait_until_seen(m, expected, MODES["poll-long"][1])
