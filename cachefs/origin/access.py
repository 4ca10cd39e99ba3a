"""Blocking I/O on the origin directory.

Every method here blocks and is meant to run in a worker thread (see
``fs.CacheFS._io``). Paths are *relative* byte strings ('' is the origin root)
and every call goes through a directory file descriptor with the ``*at()``
family, so the daemon never builds ``origin + path`` strings: paths near
PATH_MAX keep working and a path component that is a symlink is never
followed by accident.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from cachefs.common.libc import libc

# Longest relative path handed to one *at() call. Longer ones are resolved by
# walking directory fds component group by component group.
_MAX_AT_PATH = 2048

# Flags that make no sense (or fail) when re-opening the origin file.
_STRIPPED_OPEN_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | getattr(os, "O_DIRECT", 0)

# renameat2 flags are passed through; EXCHANGE changes what cachefs must forget.
RENAME_EXCHANGE = 2

_renameat2 = getattr(libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    _renameat2.restype = ctypes.c_int


class StatLike(Protocol):
    """What FileVersion needs of a stat: os.stat_result or metadata.StatInfo."""

    @property
    def st_ino(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...


class FileVersion(NamedTuple):
    """What identifies one version of one origin file's content.

    A chunk key contains it, so a change at the origin makes every old chunk
    unreachable: a new size, a new mtime, a new file under the same name, and
    any write at all through ``st_ctime_ns``, which the kernel sets on every
    change and no user can set back (taggers and ``rsync --times`` restore the
    mtime of a same-size overwrite). The device number is left out: a NAS or
    USB disk remounted gets a new one, and with ctime it adds no safety. A
    named tuple: chunk keys are hashed and compared on every cache lookup, and
    tuples do that in C.
    """

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: StatLike) -> FileVersion:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class HandleReleased(OSError):
    """The handle an origin call was made for is gone (closed by the application)."""

    def __init__(self) -> None:
        super().__init__(errno.EBADF, "the file handle was released")


class OriginFile:
    """One open origin file descriptor, shared by everything that reads or writes
    through one handle: foreground reads, read-ahead, writes, fsync.

    The fd is closed only after the last use of it has returned, never under a
    call still running in a worker thread: the kernel gives a closed number to
    the next file the daemon opens, and a read through the old number would
    return that file's bytes. A lazily opened handle (opened from cached
    metadata) has no fd until first use; *opener* makes it then.

    ``use`` blocks (it may open the file) and runs in worker threads;
    ``release`` never blocks, so the trio thread may call it.
    """

    def __init__(self, fd: int | None, opener: Callable[[], int] | None = None) -> None:
        self._fd = fd
        self._opener = opener
        self._users = 0
        self._released = False
        self._lock = threading.Lock()  # guards the three fields above; held briefly
        self._open_lock = threading.Lock()  # one lazy open at a time (worker threads only)

    @property
    def opened(self) -> bool:
        return self._fd is not None

    @contextlib.contextmanager
    def use(self) -> Iterator[int]:
        """Blocking: the fd, held open until the block ends; HandleReleased once released."""
        with self._lock:
            if self._released:
                raise HandleReleased()
            self._users += 1
            fd = self._fd
        try:
            yield fd if fd is not None else self._open()
        finally:
            with self._lock:
                self._users -= 1
                orphan = self._take_if_unused()
            if orphan is not None:
                os.close(orphan)

    def pread_versioned(self, length: int, offset: int) -> tuple[bytes, FileVersion]:
        """Blocking: *length* bytes at *offset*, and the file's version once they were read
        (the version the bytes belong to only if it is the one they were asked for)."""
        with self.use() as fd:
            data = os.pread(fd, length, offset)
            return data, FileVersion.of(os.fstat(fd))

    def _open(self) -> int:
        with self._open_lock:
            if self._fd is None:
                if self._opener is None:
                    raise HandleReleased()
                fd = self._opener()
                with self._lock:
                    self._fd = fd
            return self._fd

    def release(self) -> int | None:
        """No more uses may start. Returns the fd for the caller to close if nothing
        uses it now; otherwise the last user closes it."""
        with self._lock:
            self._released = True
            return self._take_if_unused()

    def _take_if_unused(self) -> int | None:
        """The fd, detached, once released and unused (lock held)."""
        if not self._released or self._users or self._fd is None:
            return None
        fd, self._fd = self._fd, None
        return fd


def open_flags_for_origin(flags: int) -> int:
    """Flags to reopen an origin file with: O_DIRECT gives EINVAL on many origins."""
    return (flags & ~_STRIPPED_OPEN_FLAGS) | os.O_CLOEXEC


def is_mountpoint(path: str) -> bool:
    """True when *path* is the root of a mounted file system (a NAS share, a USB disk)."""
    st = os.stat(path)
    parent = os.stat(os.path.join(path, ".."))
    return st.st_dev != parent.st_dev or st.st_ino == parent.st_ino


class Origin:
    """The slow directory cachefs is mounted over.

    *expect_mountpoint*: the origin was a mount point when last seen (a NAS or
    USB disk). If the path is a plain directory now, the share is not mounted:
    an empty mount point must never be taken for an origin whose files all
    vanished, so it counts as unreachable.
    """

    def __init__(self, root: str, expect_mountpoint: bool = False) -> None:
        self.root = os.path.abspath(root)
        self.expect_mountpoint = expect_mountpoint
        self.root_fd = -1  # until reconnect() succeeds: every call fails with ENOTCONN
        self.root_ino = 0
        self._retired: list[int] = []  # earlier root fds hung threads may still use

    def reconnect(self) -> None:
        """Blocking: (re)open the origin root; OSError (ENOTCONN if not mounted) if it is gone."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if self.expect_mountpoint and not is_mountpoint(self.root):
                raise OSError(errno.ENOTCONN, f"{self.root} is not mounted")
            # A dead NAS may open its root from cache but cannot read it.
            with os.scandir(fd) as entries:
                next(entries, None)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if self.root_fd >= 0:
            self._retired.append(self.root_fd)
        self.root_fd, self.root_ino = fd, st.st_ino

    def check_same(self) -> None:
        """Blocking: OSError unless the origin path still leads to the file system whose
        root cachefs holds, and that file system answers.

        ``umount -l`` detaches a share but leaves cachefs's fd working on it; another
        disk may even be mounted at the path. Either way the path now names
        something else, and what cachefs serves must not silently differ from it.
        """
        if self.root_fd < 0:
            raise OSError(errno.ENOTCONN, f"origin {self.root} is not connected")
        held = os.fstat(self.root_fd)
        os.fstatvfs(self.root_fd)  # a request the file system must answer (NFS: the server)
        now = os.stat(self.root)
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            raise OSError(
                errno.ENOTCONN,
                f"{self.root} no longer leads to the file system cachefs opened "
                "(unmounted, or another one mounted there)",
            )

    def close(self) -> None:
        for fd in [self.root_fd, *self._retired]:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.root_fd, self._retired = -1, []

    # -- path resolution -------------------------------------------------

    @contextlib.contextmanager
    def at(self, relpath: bytes) -> Iterator[tuple[int, bytes]]:
        """Yield ``(dir_fd, name)`` naming *relpath* for an ``*at()`` call."""
        if self.root_fd < 0:
            raise OSError(errno.ENOTCONN, f"origin {self.root} is not connected")
        if not relpath:
            yield self.root_fd, b"."
            return
        if len(relpath) <= _MAX_AT_PATH:
            yield self.root_fd, relpath
            return
        parent, _, name = relpath.rpartition(b"/")
        fd = self._open_dir_walking(parent)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def _open_dir_walking(self, relpath: bytes) -> int:
        """Open a (long) directory path piece by piece, never following symlinks."""
        fd = os.dup(self.root_fd)
        parts = relpath.split(b"/")
        while parts:
            group: list[bytes] = []
            while parts and len(b"/".join([*group, parts[0]])) <= _MAX_AT_PATH:
                group.append(parts.pop(0))
            if not group:  # a single component longer than the limit
                group.append(parts.pop(0))
            try:
                nfd = os.open(
                    b"/".join(group),
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=fd,
                )
            finally:
                os.close(fd)
            fd = nfd
        return fd

    @contextlib.contextmanager
    def proc_path(self, relpath: bytes) -> Iterator[bytes]:
        """A path usable by calls that take no dir_fd (xattrs), valid inside the block."""
        with self.at(relpath) as (dir_fd, name):
            yield b"/proc/self/fd/%d/%s" % (dir_fd, name)

    # -- metadata ---------------------------------------------------------

    def lstat(self, relpath: bytes) -> os.stat_result:
        with self.at(relpath) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)

    def listdir(self, relpath: bytes) -> list[tuple[bytes, os.stat_result]]:
        """Entries of a directory with their lstat, skipping ones that vanish."""
        with self.at(relpath) as (fd, name):
            dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        try:
            entries = []
            for name_b in os.listdir(dfd):
                try:
                    st = os.stat(os.fsencode(name_b), dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                entries.append((os.fsencode(name_b), st))
            return entries
        finally:
            os.close(dfd)

    def readlink(self, relpath: bytes) -> bytes:
        with self.at(relpath) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def statvfs(self) -> os.statvfs_result:
        with self.at(b"") as (fd, _):
            return os.statvfs(fd)

    def chmod(self, relpath: bytes, mode: int) -> None:
        with self.at(relpath) as (fd, name):
            os.chmod(name, mode, dir_fd=fd)

    def chown(self, relpath: bytes, uid: int, gid: int) -> None:
        with self.at(relpath) as (fd, name):
            os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)

    def utime(self, relpath: bytes, atime_ns: int, mtime_ns: int) -> None:
        with self.at(relpath) as (fd, name):
            os.utime(name, ns=(atime_ns, mtime_ns), dir_fd=fd, follow_symlinks=False)

    def truncate(self, relpath: bytes, size: int) -> None:
        with self.at(relpath) as (fd, name):
            ffd = os.open(name, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=fd)
        try:
            os.ftruncate(ffd, size)
        finally:
            os.close(ffd)

    # -- namespace changes ------------------------------------------------

    def open(self, relpath: bytes, flags: int, mode: int = 0o666) -> int:
        with self.at(relpath) as (fd, name):
            return os.open(name, flags, mode, dir_fd=fd)

    def mkdir(self, relpath: bytes, mode: int) -> None:
        with self.at(relpath) as (fd, name):
            os.mkdir(name, mode, dir_fd=fd)

    def mknod(self, relpath: bytes, mode: int, rdev: int) -> None:
        with self.at(relpath) as (fd, name):
            os.mknod(name, mode, rdev, dir_fd=fd)

    def symlink(self, target: bytes, relpath: bytes) -> None:
        with self.at(relpath) as (fd, name):
            os.symlink(target, name, dir_fd=fd)

    def link(self, src: bytes, dst: bytes) -> None:
        with self.at(src) as (sfd, sname), self.at(dst) as (dfd, dname):
            os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

    def unlink(self, relpath: bytes) -> None:
        with self.at(relpath) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def rmdir(self, relpath: bytes) -> None:
        with self.at(relpath) as (fd, name):
            os.rmdir(name, dir_fd=fd)

    def rename(self, src: bytes, dst: bytes, flags: int = 0) -> None:
        with self.at(src) as (sfd, sname), self.at(dst) as (dfd, dname):
            if not flags:
                os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
                return
            if _renameat2 is None:
                raise OSError(errno.EINVAL, "renameat2 is not available")
            if _renameat2(sfd, sname, dfd, dname, flags) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))

    # -- extended attributes ----------------------------------------------

    def getxattr(self, relpath: bytes, name: bytes) -> bytes:
        with self.proc_path(relpath) as path:
            return os.getxattr(path, name, follow_symlinks=not self._is_link(relpath))

    def setxattr(self, relpath: bytes, name: bytes, value: bytes) -> None:
        with self.proc_path(relpath) as path:
            os.setxattr(path, name, value, follow_symlinks=not self._is_link(relpath))

    def listxattr(self, relpath: bytes) -> list[bytes]:
        with self.proc_path(relpath) as path:
            names = os.listxattr(path, follow_symlinks=not self._is_link(relpath))
        return [os.fsencode(n) for n in names]

    def removexattr(self, relpath: bytes, name: bytes) -> None:
        with self.proc_path(relpath) as path:
            os.removexattr(path, name, follow_symlinks=not self._is_link(relpath))

    def _is_link(self, relpath: bytes) -> bool:
        # /proc/self/fd/N/name resolves the directory fd, then `name` normally;
        # for a symlink we must act on the link itself, not its target.
        return bool(relpath) and stat.S_ISLNK(self.lstat(relpath).st_mode)
