"""Open files, open directories and what cachefs knows of a file while the kernel knows it."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from cachefs.config import ContentTypeConfig
from cachefs.data.chunks import ChunkKey
from cachefs.meta.cache import StatInfo
from cachefs.origin.access import FileVersion, OriginFile


@dataclass
class FileState:
    """What cachefs knows about one regular file's content while the kernel knows it."""

    version: FileVersion | None = None
    chunk_size: int = 0  # of the last handle opened: to find old chunks to delete
    # Bumped around every write so a fetch racing a write is never cached.
    write_generation: int = 0
    handles: set[int] = field(default_factory=set)
    # The origin said the content changed (a watch event, the poller): the next
    # read asks the origin for the version before it trusts cached chunks.
    recheck: bool = False
    # Handles that may write, and whether one has written since the first of
    # them opened. While *written*, nothing of the file is cached (the next
    # write would make it stale at once), so no version it passes through has
    # chunks to look for when it is replaced.
    writers: int = 0
    written: bool = False
    # A version with no chunks in the disk tiers (made while *written*, or
    # dropped already): replacing it costs no pass over the file's chunk keys.
    no_chunks: FileVersion | None = None
    # The chunks of a prefetched head stored in the kernel's page cache
    # (cachefs.fuse.kernelcache), until an open keeps or drops them.
    handed: list[ChunkKey] | None = None
    # The kernel asks for security.capability before every write() (to clear
    # it); answered from here while the origin was seen without one, for this
    # version, within attr_timeout (the age cached attributes may have).
    no_caps: FileVersion | None = None
    no_caps_until: float = -math.inf


@dataclass(eq=False)  # hashed by identity: the read-ahead of each handle is its own
class OpenFile:
    """One open file handle: its origin file plus what the read path needs.

    A read-only handle opened from fresh cached metadata has no origin fd
    until a read misses every tier (``file`` opens it then): opening a cached
    file costs the origin nothing.
    """

    file: OriginFile
    inode: int
    state: FileState
    policy: ContentTypeConfig
    relpath: str  # origin-relative path at open time, for per-file stats
    pin: str | None = None  # the tier a pin keeps this file in (pins.py)
    # where a sequential reader reads next; none before its first read: one read
    # is no pattern (a scan reads each file's head once, and a read-ahead of the
    # rest would cost an origin request per file)
    next_offset: int = -1
    writable: bool = False
    # Told (on the trio thread) when a fetch finds the origin file changed.
    on_origin_change: Callable[[FileVersion], None] | None = None

    @property
    def version(self) -> FileVersion:
        assert self.state.version is not None
        return self.state.version

    @property
    def chunk_size(self) -> int:
        return self.policy.chunk_size

    @property
    def write_generation(self) -> int:
        return self.state.write_generation

    @property
    def cacheable(self) -> bool:
        return not self.state.written  # being written: see FileState

    def fetch(self, key: ChunkKey) -> tuple[bytes, FileVersion]:
        return self.file.pread_versioned(key.expected_length, key.offset)

    def origin_changed(self, version: FileVersion) -> None:
        if self.on_origin_change is not None:
            self.on_origin_change(version)


@dataclass
class DirHandle:
    inode: int
    entries: list[tuple[bytes, StatInfo]] | None = None
    # Set while the listing opendir started is read (trio.Event): the first
    # readdir waits for it and takes its entries (None if it failed).
    ahead: trio.Event | None = None


def close_a_duplicate(file: OriginFile) -> None:
    """What close() of a duplicate reports: deferred write errors (NFS, SMB, FUSE)."""
    with file.use() as fd:
        os.close(os.dup(fd))


def sync_file(file: OriginFile, datasync: bool) -> None:
    with file.use() as fd:
        (os.fdatasync if datasync else os.fsync)(fd)


def open_now(file: OriginFile) -> None:
    with file.use():
        pass


def fstat_file(file: OriginFile) -> os.stat_result:
    with file.use() as fd:
        return os.fstat(fd)
