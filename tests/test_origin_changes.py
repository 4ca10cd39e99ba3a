"""Changes made directly on the origin are seen through the mount within the promise.

With ``metadata.revalidate_after = 1s`` a change on the origin (overwrite,
append, truncate, replace by rename, delete, new file) is visible through the
mount within about a second, also to files opened afterwards; with an inotify
watch at once. The metadata cache answers a warm walk without asking the
origin anything.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from .conftest import DEFAULT_TEST_OPTIONS, Mounted, MountFactory

# revalidate_after is 1 s; the check runs a little later so a slow CI box keeps the promise.
PROMISE = 1.0
SLACK = 0.5


def make_tree(origin: Path) -> dict[str, bytes]:
    files = {
        "show/overwrite.nfo": b"A" * 5000,
        "show/append.txt": b"first line\n",
        "show/truncate.bin": os.urandom(200_000),
        "show/replace.json": b'{"v": 1}',
        "show/delete.me": b"bye",
        "top.cfg": b"x=1\n",
    }
    for rel, data in files.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(data)
    return files


def warm(mnt: Path) -> None:
    """What a media server does: list everything, stat it, read every file."""
    for dirpath, _dirs, names in os.walk(mnt):
        for name in names:
            path = Path(dirpath) / name
            path.lstat()
            path.read_bytes()


def change_everything(origin: Path) -> dict[str, bytes | None]:
    """Each kind of change, made on the origin directly; returns what the mount must show."""
    show = origin / "show"
    st = (show / "overwrite.nfo").stat()
    (show / "overwrite.nfo").write_bytes(b"B" * 5000)  # same size, new bytes
    os.utime(show / "overwrite.nfo", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with open(show / "append.txt", "ab") as f:
        f.write(b"second line\n")
    os.truncate(show / "truncate.bin", 1000)
    (show / "replace.json.tmp").write_bytes(b'{"v": 2, "new": true}')
    os.rename(show / "replace.json.tmp", show / "replace.json")
    (show / "delete.me").unlink()
    (show / "new.nfo").write_bytes(b"<new/>")
    return {
        "show/overwrite.nfo": b"B" * 5000,
        "show/append.txt": b"first line\nsecond line\n",
        "show/truncate.bin": (origin / "show/truncate.bin").read_bytes(),
        "show/replace.json": b'{"v": 2, "new": true}',
        "show/delete.me": None,
        "show/new.nfo": b"<new/>",
    }


def assert_mount_shows(mnt: Path, expected: dict[str, bytes | None]) -> None:
    for rel, data in expected.items():
        path = mnt / rel
        if data is None:
            assert not path.exists(), f"{rel} still visible"
            continue
        assert path.stat().st_size == len(data), rel
        assert path.read_bytes() == data, rel
    names = sorted(os.listdir(mnt / "show"))
    assert names == sorted(n.split("/")[1] for n, d in expected.items() if d is not None)


@pytest.mark.parametrize("watch", ["inotify", "poll", "off"])
def test_origin_changes_are_seen_within_the_promise(
    origin: Path, mount_factory: MountFactory, watch: str
) -> None:
    make_tree(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, f"metadata.watch={watch}"])
    assert m.stats()["change_detection"] == watch
    warm(m.mnt)
    warm(m.mnt)  # now from the caches
    # An open handle, as a player would hold one across the change.
    held = open(m.mnt / "show/append.txt", "rb")  # noqa: SIM115
    try:
        expected = change_everything(origin)
        time.sleep(PROMISE + SLACK)
        assert_mount_shows(m.mnt, expected)
        assert held.read() == expected["show/append.txt"]  # reads through an open handle too
    finally:
        held.close()


def test_inotify_sees_changes_at_once(origin: Path, mount_factory: MountFactory) -> None:
    """With a watch, cached entries stay fresh past revalidate_after and changes land at once."""
    make_tree(origin)
    options = [*DEFAULT_TEST_OPTIONS, "metadata.watch=inotify", "metadata.revalidate_after=1h"]
    m = mount_factory(origin, options)
    warm(m.mnt)
    expected = change_everything(origin)
    time.sleep(0.3)  # the event's trip through the daemon; far below revalidate_after
    assert_mount_shows(m.mnt, expected)


def test_without_a_watch_revalidate_after_is_the_only_promise(
    origin: Path, mount_factory: MountFactory
) -> None:
    """The control for the test above: with no watch and a long revalidate_after the
    mount keeps answering from its cache (so the inotify test proves something)."""
    make_tree(origin)
    options = [*DEFAULT_TEST_OPTIONS, "metadata.watch=off", "metadata.revalidate_after=1h"]
    options += ["mount.attr_timeout=1h", "mount.entry_timeout=1h"]
    m = mount_factory(origin, options)
    warm(m.mnt)
    (origin / "show/new.nfo").write_bytes(b"<new/>")
    (origin / "show/delete.me").unlink()
    time.sleep(0.3)
    assert not (m.mnt / "show/new.nfo").exists()
    assert (m.mnt / "show/delete.me").exists()


def walk_lstat(mnt: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry's (mode, size, mtime), as a library scan would see it."""
    seen = {}
    for dirpath, dirs, names in os.walk(mnt):
        for name in dirs + names:
            st = (Path(dirpath) / name).lstat()
            rel = os.path.relpath(os.path.join(dirpath, name), mnt)
            seen[rel] = (
                stat.S_IFMT(st.st_mode) | stat.S_IMODE(st.st_mode),
                st.st_size,
                st.st_mtime_ns,
            )
    return seen


def origin_lookups(m: Mounted) -> int:
    stats = m.stats()
    return stats["metadata_revalidations"] + stats["metadata_listings"]


def drop_kernel_caches() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@pytest.mark.parametrize(("watch", "asks_origin"), [("inotify", False), ("off", True)])
def test_warm_walk_after_drop_caches(
    origin: Path, mount_factory: MountFactory, watch: str, asks_origin: bool
) -> None:
    """After the kernel forgets everything, a watched tree is walked from the cache alone;
    without a watch, entries older than revalidate_after are asked again."""
    for d in range(5):
        for f in range(20):
            (origin / f"dir{d}").mkdir(exist_ok=True)
            (origin / f"dir{d}" / f"file{f}.nfo").write_bytes(b"x" * (d * 100 + f))
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, f"metadata.watch={watch}"])
    first = walk_lstat(m.mnt)
    assert first == walk_lstat(origin)
    time.sleep(PROMISE + SLACK)  # past revalidate_after: only a watch keeps entries fresh
    drop_kernel_caches()
    before = origin_lookups(m)
    assert walk_lstat(m.mnt) == first
    assert (origin_lookups(m) > before) == asks_origin


def test_the_poller_revalidates_recently_read_directories_in_the_background(
    origin: Path, mount_factory: MountFactory
) -> None:
    """On an origin without inotify the poller re-lists what was read, so lookups
    find fresh entries instead of waiting on the origin, and sees changes itself."""
    make_tree(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "metadata.watch=poll"])
    warm(m.mnt)
    listings = m.stats()["metadata_listings"]
    (origin / "show/new.nfo").write_bytes(b"<new/>")
    time.sleep(PROMISE + SLACK + 0.5)  # nothing touches the mount meanwhile
    assert m.stats()["metadata_listings"] > listings  # the poller listed on its own
    drop_kernel_caches()  # so the lookups below reach the daemon
    before = m.stats()["metadata_revalidations"]
    assert os.listdir(m.mnt / "show").count("new.nfo") == 1
    (m.mnt / "show/overwrite.nfo").stat()
    assert m.stats()["metadata_revalidations"] == before  # answered from fresh entries


def test_after_a_restart_restored_listings_are_revalidated_in_the_background(
    origin: Path, mount_factory: MountFactory
) -> None:
    """The first scan after a reboot finds the tree confirmed (and watched), not a
    store to check file by file; what changed while unmounted shows."""
    make_tree(origin)
    options = [*DEFAULT_TEST_OPTIONS, "metadata.watch=inotify"]
    m = mount_factory(origin, options)
    first = walk_lstat(m.mnt)
    mount_factory.unmount(m)
    (origin / "show/new.nfo").write_bytes(b"<new/>")  # while nothing is mounted
    first["show/new.nfo"] = walk_lstat(origin)["show/new.nfo"]
    first["show"] = walk_lstat(origin)["show"]
    m = mount_factory(origin, options)
    deadline = time.monotonic() + 10
    while "restored directories revalidated" not in m.log():
        assert time.monotonic() < deadline, m.log()
        time.sleep(0.05)
    time.sleep(PROMISE + SLACK)  # past revalidate_after: only the watches keep entries fresh
    before = origin_lookups(m)
    assert walk_lstat(m.mnt) == first
    assert origin_lookups(m) == before
