"""Long kernel timeouts under a watch, and the coherence promises with them, on a real mount.

With an inotify watch (``metadata.watch = "auto"`` on this local origin) the
kernel keeps entries and attributes for ``mount.watched_timeout`` (1 h): a warm
``stat`` never reaches the daemon. A change made on the origin is still seen
through the mount at once, because cachefs invalidates the kernel's copies as
the watch reports it; when a watch stops vouching for a subtree (its directory
moved away), the kernel's copies below it go and the ``revalidate_after``
promise holds again. Without a watch the replies keep the short timeouts: the
kernel asks again after a second.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from .conftest import DEFAULT_TEST_OPTIONS, Mounted, MountFactory

EVENT_TRIP = 0.3  # an inotify event's way through the daemon to the kernel
PROMISE = 1.0  # metadata.revalidate_after, mount.attr_timeout, mount.entry_timeout
SLACK = 0.7
PAST_SHORT = 1.5  # longer than the short timeouts, far below watched_timeout


def make_library(origin: Path) -> None:
    for rel, data in {
        "show/a.nfo": b"A" * 3000,
        "show/b.nfo": b"bbb",
        "show/gone.jpg": b"x" * 100,
        "show/renamed.txt": b"old name",
        "show/sub/deep.txt": b"deep",
        "show/held.txt": b"held open",
        "other/x.txt": b"x",
        "top.cfg": b"x=1\n",
    }.items():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        (origin / rel).write_bytes(data)


def every_path(root: Path) -> list[Path]:
    return [Path(d) / n for d, dirs, names in os.walk(root) for n in dirs + names]


def warm(m: Mounted) -> list[Path]:
    """Walk and read everything through the mount; returns the paths.

    A read the daemon answers makes the kernel drop the file's atime
    (fuse_invalidate_atime), so the next stat asks once: the stat after the read
    is that one, as in a second scan, whose reads come from the page cache."""
    paths = every_path(m.mnt)
    for path in paths:
        if path.is_file():
            path.read_bytes()
        path.lstat()
    return paths


def settle(m: Mounted) -> list[Path]:
    """Warm, and again once the short timeouts of the first round have passed: the
    scan right after mounting may beat the watch reader's start (its replies are
    short then); the second round's replies are what the kernel holds."""
    warm(m)
    time.sleep(PAST_SHORT)
    return warm(m)


def asks(m: Mounted) -> int:
    """How often the daemon was asked for attributes or listings so far."""
    stats = m.stats()
    return stats["metadata_hits"] + stats["metadata_revalidations"]


def test_a_watch_lets_the_kernel_answer_a_warm_stat(
    origin: Path, mount_factory: MountFactory
) -> None:
    make_library(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "metadata.watch=inotify"])
    paths = settle(m)
    time.sleep(PAST_SHORT)
    before = asks(m)
    for path in paths:
        path.lstat()
    assert asks(m) == before  # the kernel answered every one of them


def test_without_a_watch_the_kernel_asks_again_after_the_short_timeout(
    origin: Path, mount_factory: MountFactory
) -> None:
    """The control: with polling or no watch the kernel keeps nothing past a second."""
    make_library(origin)
    for watch in ("poll", "off"):
        m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, f"metadata.watch={watch}"])
        paths = warm(m)
        time.sleep(PAST_SHORT)
        before = asks(m)
        for path in paths:
            path.lstat()
        assert asks(m) >= before + len(paths), watch
        m.proc.terminate()


def test_changes_at_the_origin_show_at_once_despite_long_timeouts(
    origin: Path, mount_factory: MountFactory
) -> None:
    make_library(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "metadata.watch=inotify"])
    settle(m)
    time.sleep(PAST_SHORT)  # what the kernel holds now, it holds for watched_timeout
    show, mshow = origin / "show", m.mnt / "show"
    other_before = (m.mnt / "other").lstat()
    held = open(mshow / "b.nfo", "rb")  # noqa: SIM115
    # Open and read, so the daemon holds its origin file: a getattr of its inode
    # would still answer from it once the name is gone at the origin.
    deleted = open(mshow / "held.txt", "rb")  # noqa: SIM115
    try:
        assert held.read() == b"bbb"
        assert deleted.read() == b"held open"
        st = (show / "a.nfo").stat()
        (show / "a.nfo").write_bytes(b"Z" * 3000)  # same size, new bytes
        os.utime(show / "a.nfo", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
        with open(show / "b.nfo", "ab") as f:
            f.write(b"+more")
        os.chmod(origin / "top.cfg", 0o600)
        (show / "gone.jpg").unlink()
        (show / "held.txt").unlink()
        os.rename(show / "renamed.txt", show / "new_name.txt")
        (show / "fresh.nfo").write_bytes(b"<new/>")
        os.chmod(show / "sub", 0o700)  # a directory's own attributes
        (origin / "other" / "inner").mkdir()  # a directory's link count and mtime
        time.sleep(EVENT_TRIP)

        assert (mshow / "a.nfo").read_bytes() == b"Z" * 3000
        assert (mshow / "a.nfo").stat().st_mtime_ns == (show / "a.nfo").stat().st_mtime_ns
        assert (mshow / "b.nfo").stat().st_size == 8
        assert held.read() == b"+more"  # through the handle opened before the change
        assert stat.S_IMODE((m.mnt / "top.cfg").lstat().st_mode) == 0o600
        assert not (mshow / "gone.jpg").exists()
        assert not (mshow / "held.txt").exists()  # its name went, whatever is open
        assert not (mshow / "renamed.txt").exists()
        assert (mshow / "new_name.txt").read_bytes() == b"old name"
        assert (mshow / "fresh.nfo").read_bytes() == b"<new/>"
        assert stat.S_IMODE((mshow / "sub").lstat().st_mode) == 0o700
        other = (m.mnt / "other").lstat()
        assert other.st_nlink == other_before.st_nlink + 1
        assert other.st_mtime_ns == (origin / "other").stat().st_mtime_ns
        assert (mshow / "sub" / "deep.txt").read_bytes() == b"deep"  # its subtree stands
        assert sorted(os.listdir(mshow)) == sorted(os.listdir(show))
    finally:
        held.close()
        deleted.close()


def test_a_moved_directory_no_longer_vouches_for_what_the_kernel_holds(
    origin: Path, mount_factory: MountFactory
) -> None:
    """Its watch is gone (IN_MOVE_SELF): a change inside it produces no event, so the
    kernel's long copies below it must go, and the revalidate_after promise holds."""
    make_library(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "metadata.watch=inotify"])
    settle(m)
    time.sleep(PAST_SHORT)
    # Held open: the kernel keeps its entry when the directory's is dropped, and
    # finds it again under the new name (the same directory inode).
    with open(m.mnt / "show" / "b.nfo", "rb") as held:
        os.rename(origin / "show", origin / "moved")
        time.sleep(EVENT_TRIP)  # the move is seen; the directory has no watch now
        os.chmod(origin / "moved" / "b.nfo", 0o600)
        (origin / "moved" / "b.nfo").write_bytes(b"changed")
        time.sleep(PROMISE + SLACK)
        assert not (m.mnt / "show").exists()
        st = (m.mnt / "moved" / "b.nfo").lstat()
        assert (stat.S_IMODE(st.st_mode), st.st_size) == (0o600, len(b"changed"))
        assert (m.mnt / "moved" / "b.nfo").read_bytes() == b"changed"
        assert held.read() == b"changed"
    assert (m.mnt / "moved" / "sub" / "deep.txt").read_bytes() == b"deep"


def test_a_forget_drops_the_kernels_long_copies_below_it(
    origin: Path, mount_factory: MountFactory
) -> None:
    """``user.cachefs.forget`` on a directory: what the kernel holds below it goes too
    (the next stat of a file deep in it reaches the daemon)."""
    make_library(origin)
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "metadata.watch=inotify"])
    settle(m)
    time.sleep(PAST_SHORT)
    # Held open, so the kernel keeps its entry when the directory's is dropped.
    with open(m.mnt / "show" / "sub" / "deep.txt", "rb") as held:
        os.setxattr(m.mnt / "show", "user.cachefs.forget", b"1")
        time.sleep(EVENT_TRIP)
        before = asks(m)
        os.fstat(held.fileno())  # its inode's attributes, no name looked up
        assert asks(m) > before  # the kernel asked again: its copy was dropped
