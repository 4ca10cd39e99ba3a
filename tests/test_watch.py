"""inotify watches on real directories: the right events under the right keys, and fs detection."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from cachefs.meta import inotify as watch
from cachefs.meta.inotify import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_ISDIR,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
    WatchEvent,
    parse_events,
)
from cachefs.origin import fstypes
from cachefs.origin.fstypes import filesystem_type_name, supports_inotify

Triple = tuple[bytes | None, bytes, int]
TIMEOUT = 5.0
SETTLE = 0.1  # how long to keep listening for events that should not come


@pytest.fixture
def ino() -> Iterator[Inotify]:
    with Inotify() as instance:
        yield instance


def b(path: Path) -> bytes:
    return os.fsencode(path)


def triples(events: list[WatchEvent]) -> list[Triple]:
    return [(e.key, e.name, e.mask) for e in events]


def collect(ino: Inotify, count: int) -> list[WatchEvent]:
    """At least *count* events (failing after TIMEOUT), plus any that follow within SETTLE."""

    async def main() -> list[WatchEvent]:
        events: list[WatchEvent] = []
        with trio.fail_after(TIMEOUT):
            while len(events) < count:
                events += await ino.read_events()
        with trio.move_on_after(SETTLE):
            while True:
                events += await ino.read_events()
        return events

    return trio.run(main)


def expect(ino: Inotify, action: Callable[[], object], expected: list[Triple]) -> list[WatchEvent]:
    action()
    events = collect(ino, len(expected))
    assert triples(events) == expected
    return events


def by_key(events: list[WatchEvent]) -> dict[bytes | None, list[tuple[bytes, int]]]:
    """Events per key, in order; the kernel orders events of different watches as it likes."""
    grouped: dict[bytes | None, list[tuple[bytes, int]]] = {}
    for e in events:
        grouped.setdefault(e.key, []).append((e.name, e.mask))
    return grouped


def kernel_watches(ino: Inotify) -> dict[int, int]:
    """wd -> event mask of every watch the kernel holds for *ino* (from /proc fdinfo, in hex)."""
    info = Path(f"/proc/self/fdinfo/{ino.fileno()}").read_text()
    found = re.findall(r"inotify wd:([0-9a-f]+) .*? mask:([0-9a-f]+)", info)
    return {int(wd, 16): int(mask, 16) for wd, mask in found}


def create(path: Path, data: bytes = b"") -> None:
    with open(path, "xb") as f:
        f.write(data)


def append(path: Path, data: bytes = b"more") -> None:
    with open(path, "ab") as f:
        f.write(data)


# --- events in one directory ------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path: Path, ino: Inotify) -> tuple[Path, Path]:
    """A watched directory (key b"w", holding file "f") and an unwatched one beside it."""
    watched, outside = tmp_path / "watched", tmp_path / "outside"
    watched.mkdir()
    outside.mkdir()
    create(watched / "f", b"data")
    create(outside / "g", b"data")
    assert ino.add(b"w", b(watched)) is True
    return watched, outside


def test_watch_mask_and_descriptor_flags(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    # IN_ONLYDIR and IN_DONT_FOLLOW only steer the lookup; the kernel keeps the rest.
    expected = (
        IN_CREATE
        | IN_DELETE
        | IN_MOVED_FROM
        | IN_MOVED_TO
        | IN_MODIFY
        | IN_ATTRIB
        | IN_CLOSE_WRITE
        | IN_DELETE_SELF
        | IN_MOVE_SELF
        | watch.IN_EXCL_UNLINK
    )
    assert list(kernel_watches(ino).values()) == [expected]
    flags = os.get_blocking(ino.fileno()), os.get_inheritable(ino.fileno())
    assert flags == (False, False)


def test_create_empty_file(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, _ = dirs
    expect(
        ino,
        lambda: create(watched / "new"),
        [(b"w", b"new", IN_CREATE), (b"w", b"new", IN_CLOSE_WRITE)],
    )


def test_create_file_with_data(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, _ = dirs
    expect(
        ino,
        lambda: create(watched / "new", b"x"),
        [(b"w", b"new", IN_CREATE), (b"w", b"new", IN_MODIFY), (b"w", b"new", IN_CLOSE_WRITE)],
    )


def test_append(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, _ = dirs
    expect(
        ino,
        lambda: append(watched / "f"),
        [(b"w", b"f", IN_MODIFY), (b"w", b"f", IN_CLOSE_WRITE)],
    )


def test_chmod(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, _ = dirs
    expect(ino, lambda: os.chmod(watched / "f", 0o600), [(b"w", b"f", IN_ATTRIB)])


def test_delete(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, _ = dirs
    expect(ino, lambda: os.unlink(watched / "f"), [(b"w", b"f", IN_DELETE)])


def test_rename_in(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, outside = dirs
    expect(ino, lambda: os.rename(outside / "g", watched / "g2"), [(b"w", b"g2", IN_MOVED_TO)])


def test_rename_out(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, outside = dirs
    expect(ino, lambda: os.rename(watched / "f", outside / "f"), [(b"w", b"f", IN_MOVED_FROM)])


def test_rename_inside(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, _ = dirs
    expect(
        ino,
        lambda: os.rename(watched / "f", watched / "f2"),
        [(b"w", b"f", IN_MOVED_FROM), (b"w", b"f2", IN_MOVED_TO)],
    )


def test_mkdir_and_rmdir(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, _ = dirs
    [made] = expect(ino, lambda: (watched / "sub").mkdir(), [(b"w", b"sub", IN_CREATE | IN_ISDIR)])
    assert made.is_dir and not made.directory_gone and not made.overflow
    [gone] = expect(ino, lambda: (watched / "sub").rmdir(), [(b"w", b"sub", IN_DELETE | IN_ISDIR)])
    assert gone.is_dir and not gone.directory_gone


def test_file_events_are_not_directory_events(ino: Inotify, dirs: tuple[Path, Path]) -> None:
    watched, _ = dirs
    events = expect(ino, lambda: os.unlink(watched / "f"), [(b"w", b"f", IN_DELETE)])
    assert not events[0].is_dir and not events[0].directory_gone and not events[0].overflow


def test_reading_inside_the_directory_gives_no_events(
    ino: Inotify, dirs: tuple[Path, Path]
) -> None:
    watched, _ = dirs
    (watched / "f").read_bytes()
    os.listdir(watched)
    # Something to wait for, so that "nothing else came" is a real observation.
    expect(ino, lambda: os.chmod(watched / "f", 0o640), [(b"w", b"f", IN_ATTRIB)])


# --- several directories and keys -------------------------------------------------------


def test_two_directories_keep_their_own_keys(tmp_path: Path, ino: Inotify) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert ino.add(b"a", b(tmp_path / "a"))
    assert ino.add(b"b", b(tmp_path / "b"))
    assert ino.count() == 2

    def action() -> None:
        os.mkdir(tmp_path / "a" / "x")
        os.mkdir(tmp_path / "b" / "y")
        os.rename(tmp_path / "a" / "x", tmp_path / "b" / "z")

    expect(
        ino,
        action,
        [
            (b"a", b"x", IN_CREATE | IN_ISDIR),
            (b"b", b"y", IN_CREATE | IN_ISDIR),
            (b"a", b"x", IN_MOVED_FROM | IN_ISDIR),
            (b"b", b"z", IN_MOVED_TO | IN_ISDIR),
        ],
    )


def test_deleted_directory_is_gone(tmp_path: Path, ino: Inotify) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    assert ino.add(b"", b(tmp_path))
    assert ino.add(b"sub", b(sub))
    sub.rmdir()
    events = collect(ino, 3)
    assert by_key(events) == {
        b"sub": [(b"", IN_DELETE_SELF), (b"", IN_IGNORED)],
        b"": [(b"sub", IN_DELETE | IN_ISDIR)],
    }
    assert [e.directory_gone for e in events if e.key == b"sub"] == [True, True]
    # IN_IGNORED means the kernel dropped the watch: so do the maps.
    assert not ino.watched(b"sub")
    assert ino.watched(b"")
    assert ino.count() == 1


def test_moved_directory_is_gone_until_added_under_its_new_key(
    tmp_path: Path, ino: Inotify
) -> None:
    (tmp_path / "old").mkdir()
    assert ino.add(b"", b(tmp_path))
    assert ino.add(b"old", b(tmp_path / "old"))
    os.rename(tmp_path / "old", tmp_path / "new")
    events = collect(ino, 3)
    assert by_key(events) == {
        b"": [(b"old", IN_MOVED_FROM | IN_ISDIR), (b"new", IN_MOVED_TO | IN_ISDIR)],
        b"old": [(b"", IN_MOVE_SELF)],
    }
    [moved] = [e for e in events if e.key == b"old"]
    assert moved.directory_gone and not moved.is_dir
    # A move keeps the watch; the same directory added again gets the same wd.
    assert ino.watched(b"old")
    assert ino.add(b"new", b(tmp_path / "new"))
    assert not ino.watched(b"old")
    assert ino.watched(b"new")
    assert ino.count() == 2
    expect(
        ino,
        lambda: create(tmp_path / "new" / "f"),
        [(b"new", b"f", IN_CREATE), (b"new", b"f", IN_CLOSE_WRITE)],
    )
    # Forgetting the stale key must not touch the watch that now belongs to the new one.
    ino.remove(b"old")
    expect(ino, lambda: os.chmod(tmp_path / "new" / "f", 0o600), [(b"new", b"f", IN_ATTRIB)])


def test_same_directory_through_another_path_moves_to_the_new_key(
    tmp_path: Path, ino: Inotify
) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    assert ino.add(b"first", b(sub))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert ino.add(b"second", f"/proc/self/fd/{fd}/sub".encode())
    finally:
        os.close(fd)
    assert ino.count() == 1
    assert not ino.watched(b"first")
    expect(
        ino,
        lambda: create(sub / "f"),
        [(b"second", b"f", IN_CREATE), (b"second", b"f", IN_CLOSE_WRITE)],
    )


def test_key_given_another_directory_leaves_the_old_one(tmp_path: Path, ino: Inotify) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    assert ino.add(b"k", b(one))
    assert ino.add(b"k", b(two))
    assert ino.count() == 1
    assert len(kernel_watches(ino)) == 1

    def action() -> None:
        create(one / "ignored")
        create(two / "seen")

    # Neither events of "one" nor the IN_IGNORED of its removed watch come through.
    expect(ino, action, [(b"k", b"seen", IN_CREATE), (b"k", b"seen", IN_CLOSE_WRITE)])


def test_adding_the_same_key_and_directory_again_changes_nothing(
    tmp_path: Path, ino: Inotify
) -> None:
    assert ino.add(b"k", b(tmp_path))
    assert ino.add(b"k", b(tmp_path))
    assert ino.count() == 1
    expect(
        ino, lambda: create(tmp_path / "f"), [(b"k", b"f", IN_CREATE), (b"k", b"f", IN_CLOSE_WRITE)]
    )


def test_concurrent_remove_and_add_of_one_directory_leave_a_live_watch(
    tmp_path: Path, ino: Inotify
) -> None:
    """add(new key) and remove(old key) of one directory race from two threads.

    Both calls can touch the same wd; whatever the interleaving, the new key must
    end up with a live watch, not one the kernel dropped under it.
    """

    async def until_created(name: bytes) -> list[WatchEvent]:
        events: list[WatchEvent] = []
        with trio.fail_after(TIMEOUT):
            while not any(e.key == b"new" and e.name == name for e in events):
                events += await ino.read_events()
        return events

    def add_new(barrier: threading.Barrier, added: list[bool]) -> None:
        barrier.wait()
        added.append(ino.add(b"new", b(tmp_path)))

    def remove_old(barrier: threading.Barrier) -> None:
        barrier.wait()
        ino.remove(b"old")

    for i in range(1000):
        assert ino.add(b"old", b(tmp_path))
        barrier = threading.Barrier(2)
        added: list[bool] = []
        threads = [
            threading.Thread(target=add_new, args=(barrier, added)),
            threading.Thread(target=remove_old, args=(barrier,)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert added == [True]
        name = f"f{i}".encode()
        create(tmp_path / name.decode())
        events = trio.run(until_created, name)
        assert not [e for e in events if e.key == b"new" and e.directory_gone], i
        assert ino.watched(b"new") and not ino.watched(b"old") and ino.count() == 1
        assert len(kernel_watches(ino)) == 1
        ino.remove(b"new")
    assert kernel_watches(ino) == {}


def test_remove_stops_events(tmp_path: Path, ino: Inotify) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert ino.add(b"a", b(tmp_path / "a"))
    assert ino.add(b"b", b(tmp_path / "b"))
    ino.remove(b"a")
    assert not ino.watched(b"a")
    assert ino.count() == 1
    assert len(kernel_watches(ino)) == 1
    ino.remove(b"a")  # not watched any more: no error
    ino.remove(b"never watched")

    def action() -> None:
        create(tmp_path / "a" / "f")
        create(tmp_path / "b" / "f")

    # inotify keeps one queue in order, so had "a" still been watched its events came first.
    expect(ino, action, [(b"b", b"f", IN_CREATE), (b"b", b"f", IN_CLOSE_WRITE)])


def test_watch_through_proc_self_fd(tmp_path: Path, ino: Inotify) -> None:
    (tmp_path / "sub").mkdir()
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # IN_DONT_FOLLOW: the bare magic link is not a directory, its "." is.
        with pytest.raises(NotADirectoryError):
            ino.add(b"", f"/proc/self/fd/{fd}".encode())
        assert ino.add(b"", f"/proc/self/fd/{fd}/.".encode())
        assert ino.add(b"sub", f"/proc/self/fd/{fd}/sub".encode())
    finally:
        os.close(fd)
    assert ino.count() == 2

    def action() -> None:
        create(tmp_path / "top")
        os.chmod(tmp_path / "top", 0o600)
        create(tmp_path / "sub" / "low")
        os.chmod(tmp_path / "sub" / "low", 0o600)

    expect(
        ino,
        action,
        [
            (b"", b"top", IN_CREATE),
            (b"", b"top", IN_CLOSE_WRITE),
            (b"", b"top", IN_ATTRIB),
            (b"sub", b"low", IN_CREATE),
            (b"sub", b"low", IN_CLOSE_WRITE),
            (b"sub", b"low", IN_ATTRIB),
        ],
    )


# --- errors, limits, overflow, closing --------------------------------------------------


def test_add_errors_propagate_and_unwatch_the_key(tmp_path: Path, ino: Inotify) -> None:
    create(tmp_path / "file")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    assert ino.add(b"k", b(tmp_path / "dir"))
    with pytest.raises(FileNotFoundError):
        ino.add(b"k", b(tmp_path / "missing"))
    assert not ino.watched(b"k")
    with pytest.raises(NotADirectoryError):
        ino.add(b"k", b(tmp_path / "file"))
    with pytest.raises(NotADirectoryError):  # IN_DONT_FOLLOW: a symlink is not followed
        ino.add(b"k", b(tmp_path / "link"))
    assert ino.count() == 0
    assert kernel_watches(ino) == {}


def test_queue_overflow_has_no_key(tmp_path: Path, ino: Inotify) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 100_000:
        pytest.skip(f"max_queued_events is {limit}: too many events to generate")
    assert ino.add(b"k", b(tmp_path))
    target = tmp_path / "f"
    create(target)
    fd = os.open(target, os.O_WRONLY)
    try:
        # Alternating kinds, so the kernel cannot merge them with the previous event.
        for i in range(limit // 2 + 10):
            os.write(fd, b"x")
            os.chmod(target, 0o600 | (i & 1) << 5)
    finally:
        os.close(fd)

    async def until_overflow() -> list[WatchEvent]:
        events: list[WatchEvent] = []
        with trio.fail_after(TIMEOUT):
            while not any(e.overflow for e in events):
                events += await ino.read_events()
        return events

    events = trio.run(until_overflow)
    assert triples(events[-1:]) == [(None, b"", IN_Q_OVERFLOW)]
    assert not events[-1].directory_gone
    assert len(events) == limit + 1
    assert {e.mask for e in events[:-1]} == {IN_CREATE, IN_CLOSE_WRITE, IN_MODIFY, IN_ATTRIB}


def test_watch_limit_returns_false_and_warns_once(tmp_path: Path) -> None:
    """In a user namespace of our own, whose inotify watch limit we may lower."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    if subprocess.run(["unshare", "-Ur", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a user namespace here")
    for name in "abcd":
        (tmp_path / name).mkdir()
    script = textwrap.dedent(
        """
        import logging, sys
        from pathlib import Path
        Path("/proc/sys/user/max_inotify_watches").write_text("2")
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        from cachefs.meta.inotify import Inotify
        root = Path(sys.argv[1])
        with Inotify() as ino:
            print([ino.add(n.encode(), str(root / n).encode()) for n in "abcd"], ino.count())
            print(ino.watched(b"b"), ino.watched(b"c"))
        """
    )
    done = subprocess.run(
        ["unshare", "-Ur", sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[True, True, False, False] 2", "True False"]
    warnings = done.stderr.splitlines()
    assert len(warnings) == 1, done.stderr
    assert warnings[0].startswith("WARNING ") and "fs.inotify.max_user_watches" in warnings[0]


def test_close_is_idempotent_and_ends_reading(ino: Inotify) -> None:
    assert ino.fileno() >= 0
    ino.close()
    ino.close()
    with pytest.raises(trio.ClosedResourceError):
        trio.run(ino.read_events)


def test_close_wakes_a_waiting_reader(tmp_path: Path) -> None:
    ino = Inotify()
    assert ino.add(b"k", b(tmp_path))

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(closer)
                with pytest.raises(trio.ClosedResourceError):
                    await ino.read_events()

    async def closer() -> None:
        await trio.sleep(0.05)
        ino.close()

    trio.run(main)
    assert ino.count() == 0


def test_parse_events_handles_padding_and_several_records() -> None:
    def record(wd: int, mask: int, cookie: int, name: bytes, padded: int) -> bytes:
        return struct.pack("=iIII", wd, mask, cookie, padded) + name.ljust(padded, b"\0")

    data = record(1, IN_CREATE, 0, b"abc", 16) + record(-1, IN_Q_OVERFLOW, 0, b"", 0)
    data += record(7, IN_MOVED_TO | IN_ISDIR, 42, b"x" * 16, 32)
    assert list(parse_events(data)) == [
        (1, IN_CREATE, b"abc"),
        (-1, IN_Q_OVERFLOW, b""),
        (7, IN_MOVED_TO | IN_ISDIR, b"x" * 16),
    ]


def test_constants_match_linux_headers() -> None:
    header = Path("/usr/include/linux/inotify.h")
    if not header.exists():
        pytest.skip("no kernel headers")
    defined = dict(re.findall(r"#define\s+(IN_\w+)\s+(0x[0-9a-fA-F]+)", header.read_text()))
    ours = {n: getattr(watch, n) for n in dir(watch) if n.startswith("IN_")}
    checked = set(ours) & set(defined)
    assert len(checked) >= 18
    assert {n: ours[n] for n in checked} == {n: int(defined[n], 16) for n in checked}


# --- file system types ------------------------------------------------------------------


def mount_fstype(path: Path) -> str:
    """The file system type /proc/self/mountinfo gives for the mount holding *path*."""
    best, fstype = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount_point = fields[4].replace("\\040", " ")
        inside = str(path) == mount_point or str(path).startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, fstype = mount_point, fields[fields.index("-") + 1]
    return fstype


LOCAL_MOUNT_TYPES = {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "bcachefs"}
REMOTE_MOUNT_TYPES = {"nfs", "nfs4", "cifs", "smb3", "9p", "virtiofs", "ceph"}


def test_supports_inotify_for_tmp_path(tmp_path: Path) -> None:
    fstype = mount_fstype(tmp_path.resolve())
    if fstype in LOCAL_MOUNT_TYPES:
        assert supports_inotify(tmp_path)
        assert supports_inotify(b(tmp_path))
    elif fstype in REMOTE_MOUNT_TYPES or fstype.startswith("fuse"):
        assert not supports_inotify(tmp_path)
    else:
        pytest.skip(f"tmp_path is on {fstype!r}")


def test_filesystem_type_name_for_tmp_path(tmp_path: Path) -> None:
    fstype = mount_fstype(tmp_path.resolve())
    expected = {"ext2": "ext2/3/4", "ext3": "ext2/3/4", "ext4": "ext2/3/4", "tmpfs": "tmpfs"}
    if fstype not in expected:
        pytest.skip(f"tmp_path is on {fstype!r}")
    assert filesystem_type_name(tmp_path) == expected[fstype]


def test_tmpfs_is_supported() -> None:
    if mount_fstype(Path("/dev/shm")) != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    assert supports_inotify("/dev/shm")
    assert filesystem_type_name("/dev/shm") == "tmpfs"
    assert filesystem_type_name(b"/dev/shm") == "tmpfs"


def test_missing_path_is_not_supported(tmp_path: Path) -> None:
    assert not supports_inotify(tmp_path / "missing")
    assert filesystem_type_name(tmp_path / "missing") == "unknown"


def test_unlisted_type_is_not_supported_and_named_by_magic() -> None:
    assert not supports_inotify("/proc")
    assert filesystem_type_name("/proc") == "unknown 0x9fa0"  # PROC_SUPER_MAGIC


MAGIC_MACROS = {
    "EXT4_SUPER_MAGIC": ("ext2/3/4", True),
    "XFS_SUPER_MAGIC": ("xfs", True),
    "BTRFS_SUPER_MAGIC": ("btrfs", True),
    "TMPFS_MAGIC": ("tmpfs", True),
    "RAMFS_MAGIC": ("ramfs", True),
    "F2FS_SUPER_MAGIC": ("f2fs", True),
    "REISERFS_SUPER_MAGIC": ("reiserfs", True),
    "MSDOS_SUPER_MAGIC": ("vfat", True),
    "EXFAT_SUPER_MAGIC": ("exfat", True),
    "NILFS_SUPER_MAGIC": ("nilfs", True),
    "UDF_SUPER_MAGIC": ("udf", True),
    "ISOFS_SUPER_MAGIC": ("iso9660", True),
    "SQUASHFS_MAGIC": ("squashfs", True),
    "EROFS_SUPER_MAGIC_V1": ("erofs", True),
    "OVERLAYFS_SUPER_MAGIC": ("overlayfs", True),
    "NFS_SUPER_MAGIC": ("nfs", False),
    "CIFS_SUPER_MAGIC": ("cifs", False),
    "SMB2_SUPER_MAGIC": ("smb2", False),
    "SMB_SUPER_MAGIC": ("smb", False),
    "FUSE_SUPER_MAGIC": ("fuse", False),
    "CEPH_SUPER_MAGIC": ("ceph", False),
    "V9FS_MAGIC": ("9p", False),
    "AFS_SUPER_MAGIC": ("afs", False),
    "AFS_FS_MAGIC": ("afs", False),
    "CODA_SUPER_MAGIC": ("coda", False),
    "OCFS2_SUPER_MAGIC": ("ocfs2", False),
}


def test_magic_numbers_match_linux_headers() -> None:
    header = Path("/usr/include/linux/magic.h")
    if not header.exists():
        pytest.skip("no kernel headers")
    defined = dict(re.findall(r"#define\s+(\w+)\s+(0x[0-9a-fA-F]+)", header.read_text()))
    table = fstypes._FILESYSTEMS
    assert {m: table.get(int(defined[m], 16)) for m in MAGIC_MACROS} == MAGIC_MACROS
