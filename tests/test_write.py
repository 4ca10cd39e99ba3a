"""Changes made through the mount reach the origin and read back correctly."""

from __future__ import annotations

import errno
import mmap
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DEFAULT_TEST_OPTIONS, Mounted, MountFactory, read_direct, wait_until_on_disk


def test_write_goes_through_to_origin(origin: Path, mounted: Mounted) -> None:
    (mounted.mnt / "new.txt").write_bytes(b"hello world")
    assert (origin / "new.txt").read_bytes() == b"hello world"
    assert (mounted.mnt / "new.txt").read_bytes() == b"hello world"


def test_overwrite_in_the_middle_of_a_cached_file(origin: Path, mounted: Mounted) -> None:
    data = bytearray(os.urandom(3 * 1024 * 1024))
    (origin / "m.mkv").write_bytes(data)
    assert (mounted.mnt / "m.mkv").read_bytes() == data  # now cached
    with open(mounted.mnt / "m.mkv", "r+b") as f:
        f.seek(1024 * 1024 - 10)
        f.write(b"X" * 100)
    data[1024 * 1024 - 10 : 1024 * 1024 + 90] = b"X" * 100
    assert (origin / "m.mkv").read_bytes() == data
    fd = os.open(mounted.mnt / "m.mkv", os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.pread(fd, len(data), 0) == data  # the cache, not the page cache
    finally:
        os.close(fd)


def test_append(origin: Path, mounted: Mounted) -> None:
    (origin / "log.txt").write_bytes(b"one\n")
    assert (mounted.mnt / "log.txt").read_bytes() == b"one\n"
    with open(mounted.mnt / "log.txt", "ab") as f:
        f.write(b"two\n")
    assert (origin / "log.txt").read_bytes() == b"one\ntwo\n"
    assert (mounted.mnt / "log.txt").read_bytes() == b"one\ntwo\n"


def test_truncate(origin: Path, mounted: Mounted) -> None:
    (origin / "t.bin").write_bytes(b"a" * 100_000)
    assert len((mounted.mnt / "t.bin").read_bytes()) == 100_000
    os.truncate(mounted.mnt / "t.bin", 10)
    assert (origin / "t.bin").read_bytes() == b"a" * 10
    assert (mounted.mnt / "t.bin").read_bytes() == b"a" * 10
    os.truncate(mounted.mnt / "t.bin", 20)
    assert (mounted.mnt / "t.bin").read_bytes() == b"a" * 10 + b"\0" * 10


def test_rename_and_rename_over_existing(origin: Path, mounted: Mounted) -> None:
    (mounted.mnt / "a").write_bytes(b"A")
    (mounted.mnt / "b").write_bytes(b"B")
    assert (mounted.mnt / "b").read_bytes() == b"B"
    os.rename(mounted.mnt / "a", mounted.mnt / "c")
    assert sorted(os.listdir(origin)) == ["b", "c"]
    os.rename(mounted.mnt / "c", mounted.mnt / "b")
    assert (mounted.mnt / "b").read_bytes() == b"A"
    assert (origin / "b").read_bytes() == b"A"
    assert not (mounted.mnt / "c").exists()


def test_rename_directory_keeps_children_reachable(origin: Path, mounted: Mounted) -> None:
    (mounted.mnt / "d1" / "sub").mkdir(parents=True)
    (mounted.mnt / "d1" / "sub" / "f").write_bytes(b"deep")
    f = open(mounted.mnt / "d1" / "sub" / "f", "rb")  # noqa: SIM115
    os.rename(mounted.mnt / "d1", mounted.mnt / "d2")
    assert (mounted.mnt / "d2" / "sub" / "f").read_bytes() == b"deep"
    (mounted.mnt / "d2" / "sub" / "g").write_bytes(b"new")
    assert (origin / "d2" / "sub" / "g").read_bytes() == b"new"
    assert f.read() == b"deep"
    f.close()


def test_unlink_while_open(origin: Path, mounted: Mounted) -> None:
    (mounted.mnt / "gone").write_bytes(b"still here")
    with open(mounted.mnt / "gone", "r+b") as f:
        os.unlink(mounted.mnt / "gone")
        assert not (origin / "gone").exists()
        assert f.read() == b"still here"
        f.write(b"!")
        f.flush()
        assert os.fstat(f.fileno()).st_size == 11
        f.seek(0)
        assert f.read() == b"still here!"


def test_mkdir_rmdir_and_errnos(origin: Path, mounted: Mounted) -> None:
    os.mkdir(mounted.mnt / "dir", 0o750)
    assert stat.S_IMODE(os.stat(origin / "dir").st_mode) == 0o750
    (mounted.mnt / "dir" / "x").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.rmdir(mounted.mnt / "dir")
    assert exc.value.errno == errno.ENOTEMPTY
    os.unlink(mounted.mnt / "dir" / "x")
    os.rmdir(mounted.mnt / "dir")
    assert not (origin / "dir").exists()
    with pytest.raises(OSError) as exc:
        os.mkdir(mounted.mnt / ("n" * 256))
    assert exc.value.errno == errno.ENAMETOOLONG


def test_a_name_too_long_is_enametoolong_even_where_the_listing_is_cached(
    origin: Path, mounted: Mounted
) -> None:
    """pjdfstest's chown/02.t failed now and then: with the directory's listing
    cached (another test had listed it), a lookup of a 256-byte name was answered
    ENOENT from the listing instead of the origin's ENAMETOOLONG."""
    (origin / "d").mkdir()
    (origin / "d" / "f").write_bytes(b"")
    assert os.listdir(mounted.mnt / "d") == ["f"]  # the listing is cached and fresh now
    for call in (os.lstat, os.stat, lambda p: os.chown(p, 0, 0, follow_symlinks=False)):
        with pytest.raises(OSError) as exc:
            call(mounted.mnt / "d" / ("n" * 256))
        assert exc.value.errno == errno.ENAMETOOLONG
    with pytest.raises(FileNotFoundError):  # a name within the limit is still just absent
        os.lstat(mounted.mnt / "d" / ("n" * 255))


def test_symlink_and_hard_link(origin: Path, mounted: Mounted) -> None:
    (mounted.mnt / "target").write_bytes(b"T")
    os.symlink("target", mounted.mnt / "sym")
    assert os.readlink(origin / "sym") == "target"
    assert os.readlink(mounted.mnt / "sym") == "target"
    assert (mounted.mnt / "sym").read_bytes() == b"T"
    os.link(mounted.mnt / "target", mounted.mnt / "hard")
    st_a, st_b = os.stat(mounted.mnt / "target"), os.stat(mounted.mnt / "hard")
    assert st_a.st_ino == st_b.st_ino == os.stat(origin / "target").st_ino
    assert st_b.st_nlink == 2
    os.unlink(mounted.mnt / "target")
    assert (mounted.mnt / "hard").read_bytes() == b"T"
    assert os.stat(mounted.mnt / "hard").st_nlink == 1


def test_chmod_chown_utimens(origin: Path, mounted: Mounted) -> None:
    (mounted.mnt / "f").write_bytes(b"x")
    os.chmod(mounted.mnt / "f", 0o604)
    assert stat.S_IMODE(os.stat(origin / "f").st_mode) == 0o604
    os.chown(mounted.mnt / "f", 1234, 5678)
    assert (os.stat(origin / "f").st_uid, os.stat(origin / "f").st_gid) == (1234, 5678)
    os.utime(mounted.mnt / "f", ns=(1_000_000_000_123, 2_000_000_000_456))
    st = os.stat(origin / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000_123, 2_000_000_000_456)
    assert os.stat(mounted.mnt / "f").st_mtime_ns == 2_000_000_000_456


def test_fifo_and_statfs(origin: Path, mounted: Mounted) -> None:
    os.mkfifo(mounted.mnt / "fifo", 0o600)
    assert stat.S_ISFIFO(os.stat(origin / "fifo").st_mode)
    assert os.statvfs(mounted.mnt).f_blocks == os.statvfs(origin).f_blocks


def test_user_xattrs_pass_through(origin: Path, mounted: Mounted) -> None:
    (mounted.mnt / "f").write_bytes(b"x")
    os.setxattr(mounted.mnt / "f", "user.note", b"hi")
    assert os.getxattr(origin / "f", "user.note") == b"hi"
    assert "user.note" in os.listxattr(mounted.mnt / "f")
    os.removexattr(mounted.mnt / "f", "user.note")
    assert "user.note" not in os.listxattr(origin / "f")


def test_deep_paths_beyond_the_at_limit(origin: Path, mounted: Mounted) -> None:
    path = mounted.mnt
    for i in range(20):  # 20 * 200 bytes: longer than one *at() path allows
        path = path / (f"{i:03d}" + "d" * 197)
        os.mkdir(path)
    (path / "leaf").write_bytes(b"leaf")
    assert (path / "leaf").read_bytes() == b"leaf"
    assert os.listdir(path) == ["leaf"]


@pytest.fixture
def public_mountpoint(mount_factory: MountFactory) -> Iterator[Path]:
    """A mount point other users can reach (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cachefs-mnt-"))
    path.chmod(0o755)
    yield path
    mount_factory.close()
    path.rmdir()


def test_created_files_belong_to_the_caller(
    origin: Path, mount_factory: MountFactory, public_mountpoint: Path
) -> None:
    os.chmod(origin, 0o777)
    mounted = mount_factory(
        origin, ["allow_other", "stats.backend=embedded"], mnt=public_mountpoint
    )
    pid = os.fork()
    if pid == 0:  # the child becomes an ordinary user and creates things
        try:
            os.setgid(4321)
            os.setuid(1234)
            (mounted.mnt / "mine").write_bytes(b"x")
            os.mkdir(mounted.mnt / "mydir")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for name in ("mine", "mydir"):
        st = os.stat(origin / name)
        assert (st.st_uid, st.st_gid) == (1234, 4321)


def closes(mnt: Path, count: int) -> None:
    for i in range(count):
        (mnt / f"closed{i}.txt").write_bytes(b"x")  # create, write, close
        (mnt / f"closed{i}.txt").read_bytes()  # open, read, close


def test_flush_is_forwarded_only_where_close_can_fail(
    origin: Path, mount_factory: MountFactory, tmp_path: Path
) -> None:
    """Write-through on ext4: close() cannot report a write error, so the kernel is told
    (once) to stop sending FLUSH. With queued writes (the default) close() waits for
    them and reports their errors; on a FUSE origin (like NFS or SMB) every close
    reaches the origin."""
    from .test_offline import mount_nas

    through = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, "mount.write_buffer=0"])
    closes(through.mnt, 5)
    assert through.stats()["fuse_flushes"] == 1  # answered ENOSYS once, never sent again
    mount_factory.unmount(through)
    queued = mount_factory(origin)
    closes(queued.mnt, 5)
    assert queued.stats()["fuse_flushes"] >= 10
    mount_factory.unmount(queued)
    nas = mount_nas(mount_factory, origin, tmp_path)
    over_fuse = mount_factory(
        nas.mnt,
        [
            *DEFAULT_TEST_OPTIONS,
            f"tiers.ssd.path={tmp_path}/o/ssd",
            f"tiers.hdd.path={tmp_path}/o/hdd",
        ],
    )
    closes(over_fuse.mnt, 5)
    assert over_fuse.stats()["fuse_flushes"] >= 10
    assert (origin / "closed4.txt").read_bytes() == b"x"
    mount_factory.unmount(over_fuse)


def rss_mib(m: Mounted) -> float:
    with open(f"/proc/{m.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_file_being_written_is_read_right_and_cached_only_once_closed(
    origin: Path, mount_factory: MountFactory
) -> None:
    """While a writer holds the file, every write makes a new version: reads go to the
    origin (right bytes, nothing cached); once the last writer closes, reads cache."""
    m = mount_factory(origin)
    data = bytearray(os.urandom(2 * 1024 * 1024))
    (origin / "grow.bin").write_bytes(data)
    assert read_direct(m.mnt / "grow.bin") == data  # cached before the writer comes
    with open(m.mnt / "grow.bin", "r+b", buffering=0) as writer:
        for i in range(8):
            offset = i * 250_000
            writer.seek(offset)
            writer.write(b"%08d" % i * 512)
            data[offset : offset + 4096] = b"%08d" % i * 512
            assert read_direct(m.mnt / "grow.bin") == data  # another handle sees it
            assert m.residency("grow.bin")["uncached"] == m.residency("grow.bin")["chunks"]
    assert (origin / "grow.bin").read_bytes() == data
    assert read_direct(m.mnt / "grow.bin") == data
    assert wait_until_on_disk(m, "grow.bin")["uncached"] == 0  # closed: cached again
    assert read_direct(m.mnt / "grow.bin") == data


def test_many_small_writes_keep_memory_bounded(origin: Path, mount_factory: MountFactory) -> None:
    """Each write used to queue a pass over every chunk key of the whole file."""
    m = mount_factory(origin, ["tiers.ram.max_size=1MiB", "stats.backend=embedded"])
    before = rss_mib(m)
    block = os.urandom(4096)
    with open(m.mnt / "big.bin", "wb", buffering=0) as f:
        for _ in range(8192):  # 32 MiB in 4 KiB writes
            f.write(block)
    assert (origin / "big.bin").stat().st_size == 32 * 1024 * 1024
    assert rss_mib(m) - before < 64


@pytest.mark.parametrize("writeback", [False, True])
def test_writes_are_on_the_origin_at_close_and_fsync(
    origin: Path, mount_factory: MountFactory, writeback: bool
) -> None:
    m = mount_factory(origin, [*DEFAULT_TEST_OPTIONS, f"mount.writeback_cache={writeback}"])
    with open(m.mnt / "doc.txt", "wb") as f:
        f.write(b"first\n")
        f.flush()
        os.fsync(f.fileno())
        assert (origin / "doc.txt").read_bytes() == b"first\n"  # fsync: on the origin
        f.write(b"second\n")
    assert (origin / "doc.txt").read_bytes() == b"first\nsecond\n"  # close: on the origin
    with open(m.mnt / "doc.txt", "ab") as f:  # O_APPEND appends, whoever keeps the offset
        f.write(b"third\n")
    assert (origin / "doc.txt").read_bytes() == b"first\nsecond\nthird\n"
    with open(m.mnt / "doc.txt", "r+b") as f:  # a partial page written, the rest kept
        f.seek(2)
        f.write(b"R")
    assert (origin / "doc.txt").read_bytes() == b"fiRst\nsecond\nthird\n"
    assert (m.mnt / "doc.txt").read_bytes() == b"fiRst\nsecond\nthird\n"
    (origin / "mapped.bin").write_bytes(bytes(8192))
    with open(m.mnt / "mapped.bin", "r+b") as f, mmap.mmap(f.fileno(), 8192) as mem:
        mem[4090:4100] = b"0123456789"
        mem.flush()
    assert (origin / "mapped.bin").read_bytes()[4090:4100] == b"0123456789"
