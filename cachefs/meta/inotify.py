"""Linux inotify on origin directories, usable from trio without blocking the loop.

The kernel API is reached through ctypes on libc, so there is no dependency.
One :class:`Inotify` holds many directory watches, each under a key the caller
chooses (an origin-relative path). ``add`` may block on path lookup and is meant
for a worker thread; ``read_events`` waits for the non-blocking descriptor with
trio and returns whole batches.

inotify only reports changes that go through this kernel, so it is only a
coherence signal for local file systems: :func:`cachefs.origin.fstypes.supports_inotify`
says whether a path lives on one. On NFS, SMB, FUSE and the like a change made on another
machine produces no event at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import trio

from cachefs.common.libc import libc as _libc

log = logging.getLogger(__name__)

# Event bits, from <sys/inotify.h>.
IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
# Only ever reported, never requested.
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
# Flags for inotify_add_watch.
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
# Flags for inotify_init1: the kernel defines them as O_NONBLOCK / O_CLOEXEC,
# whose values differ between architectures.
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCH_MASK = (
    IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)
_GONE_MASK = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED

# struct inotify_event { int wd; uint32_t mask, cookie, len; char name[len]; }
_EVENT_HEADER = struct.Struct("=iIII")
# Far more than one event (16 + NAME_MAX + 1 bytes), so a read never fails with EINVAL.
_READ_SIZE = 64 * 1024
# One batch stops here even if a flood keeps the queue non-empty; the rest is
# still readable on the next call, and the caller gets to process in between.
_MAX_BATCH = 16 * _READ_SIZE
# How many recently dead watch descriptors are remembered (see Inotify._dead).
_DEAD_MEMORY = 4096
_MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"

_inotify_init1 = _libc.inotify_init1
_inotify_init1.argtypes = [ctypes.c_int]
_inotify_init1.restype = ctypes.c_int
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_inotify_add_watch.restype = ctypes.c_int
_inotify_rm_watch = _libc.inotify_rm_watch
_inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_inotify_rm_watch.restype = ctypes.c_int


def _errno_error(*filenames: bytes) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), *filenames)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One inotify event, with its watch descriptor translated to the caller's key."""

    key: bytes | None  # the key the directory was watched under; None for a queue overflow
    name: bytes  # entry name inside the directory; b"" for events about the directory itself
    mask: int

    @property
    def overflow(self) -> bool:
        """Events were lost: nothing watched can be trusted any more."""
        return bool(self.mask & IN_Q_OVERFLOW)

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)

    @property
    def directory_gone(self) -> bool:
        """The watched directory was deleted, moved or unmounted, or its watch removed."""
        return bool(self.mask & _GONE_MASK)


def parse_events(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(wd, mask, name) for each struct inotify_event in *data*."""
    offset = 0
    while offset + _EVENT_HEADER.size <= len(data):
        wd, mask, _cookie, length = _EVENT_HEADER.unpack_from(data, offset)
        offset += _EVENT_HEADER.size
        # The name is NUL-terminated and padded with more NULs to an alignment.
        name = data[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        yield wd, mask, name


class Inotify:
    """One inotify instance; directories are watched under a caller-chosen key.

    Keys are typically origin-relative paths. The kernel names each watch by a
    descriptor (wd) and gives the same wd back when the same directory is added
    again, whatever path reached it. So keys and wds are kept one-to-one: the
    newest key a directory was added under wins.
    """

    def __init__(self) -> None:
        fd = _inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise _errno_error()
        self._fd = fd
        self._lock = threading.Lock()  # guards everything below
        self._wd_key: dict[int, bytes] = {}
        self._key_wd: dict[bytes, int] = {}
        # Watches the kernel has dropped (IN_IGNORED read, or inotify_rm_watch
        # called), in insertion order. A thread in add() can be handed such a
        # wd just before it dies; seeing it here tells add() to ask again.
        # wds are allocated cyclically, so a dead number is not reissued soon.
        self._dead: dict[int, None] = {}
        self._limit_warned = False

    def __enter__(self) -> Inotify:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def fileno(self) -> int:
        return self._fd

    def add(self, key: bytes, path: bytes) -> bool:
        """Watch directory *path* under *key*; False if the kernel's watch limit is reached.

        *path* may go through ``/proc/self/fd/N/``, but must not be just
        ``/proc/self/fd/N``: with IN_DONT_FOLLOW that names the link itself and
        fails with ENOTDIR; use ``/proc/self/fd/N/.`` for the directory of fd N.

        Blocks on the path lookup, so call it from a worker thread. Errors other
        than the limit (ENOENT, ENOTDIR, EACCES...) propagate. After any failure
        *key* is no longer watched: the caller asked for *path*, not the old one.
        """
        for _attempt in range(2):
            wd = _inotify_add_watch(self._fd, path, WATCH_MASK)
            if wd < 0:
                error = _errno_error(path)
                self.remove(key)
                if error.errno == errno.ENOSPC:
                    self._warn_watch_limit()
                    return False
                raise error
            with self._lock:
                if wd not in self._dead:
                    self._bind(key, wd)
                    return True
            # The watch died between the syscall and here (removed or its
            # directory deleted by then): try again for the current state.
        self.remove(key)
        raise OSError(errno.EAGAIN, "inotify watch kept disappearing", path)

    def remove(self, key: bytes) -> None:
        """Stop watching *key*; nothing happens if it is not watched."""
        with self._lock:
            wd = self._key_wd.pop(key, None)
            if wd is not None:
                self._unwatch(wd)

    def watched(self, key: bytes) -> bool:
        with self._lock:
            return key in self._key_wd

    def count(self) -> int:
        """The number of directories watched."""
        with self._lock:
            return len(self._key_wd)

    async def read_events(self) -> list[WatchEvent]:
        """Wait for events and return all that are available (never an empty list)."""
        while True:
            if self._fd < 0:
                raise trio.ClosedResourceError("the inotify instance is closed")
            await trio.lowlevel.wait_readable(self._fd)
            events = self._translate(self._read_available())
            if events:
                return events

    def pending_events(self) -> list[WatchEvent]:
        """The events the kernel has queued already, without waiting (maybe none)."""
        if self._fd < 0:
            return []
        return self._translate(self._read_available())

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
            self._wd_key.clear()
            self._key_wd.clear()
        if fd < 0:
            return
        # Wakes a task blocked in read_events with ClosedResourceError instead
        # of leaving it waiting on a reused descriptor number. Outside trio
        # (RuntimeError) nobody can be waiting.
        with contextlib.suppress(RuntimeError):
            trio.lowlevel.notify_closing(fd)
        os.close(fd)

    def _bind(self, key: bytes, wd: int) -> None:
        """Map *key* <-> *wd*, dropping whatever either was mapped to before. Lock held."""
        old_key = self._wd_key.get(wd)
        if old_key is not None and old_key != key:
            # The same directory reached by a new path (it was renamed): the old key is stale.
            del self._key_wd[old_key]
        old_wd = self._key_wd.get(key)
        if old_wd is not None and old_wd != wd:
            self._unwatch(old_wd)
        self._wd_key[wd] = key
        self._key_wd[key] = wd

    def _unwatch(self, wd: int) -> None:
        """Remove watch *wd* from the kernel; its IN_IGNORED will find no key. Lock held."""
        self._wd_key.pop(wd, None)
        self._remember_dead(wd)
        # EINVAL here only means the kernel dropped the watch already.
        _inotify_rm_watch(self._fd, wd)

    def _remember_dead(self, wd: int) -> None:
        self._dead[wd] = None
        if len(self._dead) > _DEAD_MEMORY:
            del self._dead[next(iter(self._dead))]

    def _read_available(self) -> bytes:
        """Every whole event the kernel has queued (up to _MAX_BATCH bytes)."""
        chunks: list[bytes] = []
        total = 0
        while total < _MAX_BATCH:
            try:
                chunk = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)

    def _translate(self, data: bytes) -> list[WatchEvent]:
        """Events with keys instead of wds; events of unknown wds are dropped."""
        events: list[WatchEvent] = []
        with self._lock:
            for wd, mask, name in parse_events(data):
                if mask & IN_Q_OVERFLOW:
                    events.append(WatchEvent(None, b"", mask))
                    continue
                key = self._wd_key.get(wd)
                if mask & IN_IGNORED:
                    # The kernel has dropped this watch for good.
                    self._remember_dead(wd)
                    if key is not None:
                        del self._wd_key[wd]
                        del self._key_wd[key]
                if key is not None:
                    events.append(WatchEvent(key, name, mask))
        return events

    def _warn_watch_limit(self) -> None:
        with self._lock:
            if self._limit_warned:
                return
            self._limit_warned = True
        log.warning(
            "inotify watch limit reached (sysctl fs.inotify.max_user_watches = %s): "
            "further origin directories are not watched, changes in them are found "
            "by revalidation only; raise fs.inotify.max_user_watches to watch them all",
            _max_user_watches(),
        )


def _max_user_watches() -> str:
    try:
        with open(_MAX_USER_WATCHES) as f:
            return f.read().strip()
    except OSError:
        return "unknown"
