"""A slow one-head origin for tests: a read-only FUSE passthrough of a directory that
serves reads one at a time, each after a fixed delay, and logs every open and read.

Run by :func:`serve` (a context manager) as its own process, so cachefs reads it
as it would a NAS. Reads are direct_io (the kernel keeps no page of the origin,
so each of cachefs's preads is seen), and several worker tasks take requests off
the kernel's queue as they come, so a read's *arrival* is logged when cachefs
sent it, then it waits its turn on a fair lock (the one head) and is *served*.

The log has one line a request, with CLOCK_MONOTONIC seconds (time.monotonic()
is comparable across processes)::

    open FH FLAGS PATH
    read FH OFFSET LENGTH ARRIVED STARTED ENDED

Usage: python tests/logged_origin.py SOURCE MOUNTPOINT LOG [--delay-ms 3]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyfuse3
import trio

TIMEOUT = 1.0  # seconds the kernel keeps entries and attributes
MOUNT_TIMEOUT = 20.0


class LoggedOrigin(pyfuse3.Operations):
    def __init__(self, source: str, log: IO[str], delay: float) -> None:
        super().__init__()
        self.source, self.log, self.delay = source, log, delay
        self.root_ino = os.lstat(source).st_ino
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}
        self.fds: dict[int, int] = {}
        self.fh_ids = itertools.count(1)
        self.head = trio.Lock()  # fair: requests are served in the order they came

    def _inode(self, st: os.stat_result) -> int:
        return pyfuse3.ROOT_INODE if st.st_ino == self.root_ino else st.st_ino

    def _attrs(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        attrs = pyfuse3.EntryAttributes()
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks"):
            setattr(attrs, name, getattr(st, name))
        attrs.st_ino = self._inode(st)
        attrs.st_blksize = 4096
        attrs.st_atime_ns, attrs.st_mtime_ns = st.st_atime_ns, st.st_mtime_ns
        attrs.st_ctime_ns = st.st_ctime_ns
        attrs.attr_timeout = attrs.entry_timeout = TIMEOUT
        self.paths[attrs.st_ino] = path
        return attrs

    def _path(self, inode: int) -> str:
        try:
            return self.paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attrs(os.path.join(self._path(parent_inode), os.fsdecode(name)))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs(self._path(inode))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        path = self._path(fh)
        names = sorted(os.listdir(path))
        for index in range(start_id, len(names)):
            attrs = self._attrs(os.path.join(path, names[index]))
            if not pyfuse3.readdir_reply(token, os.fsencode(names[index]), attrs, index + 1):
                break

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.ENODATA)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return []

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.source)
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files"):
            setattr(data, name, getattr(st, name))
        data.f_namemax = st.f_namemax
        return data

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        path = self._path(inode)
        fh = next(self.fh_ids)
        self.fds[fh] = os.open(path, os.O_RDONLY)
        relpath = os.path.relpath(path, self.source)
        self.log.write(f"open {fh} {flags} {relpath}\n")
        self.log.flush()
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        arrived = time.monotonic()
        async with self.head:
            started = time.monotonic()
            await trio.sleep(self.delay)
            data = os.pread(self.fds[fh], size, off)
            ended = time.monotonic()
        self.log.write(f"read {fh} {off} {len(data)} {arrived} {started} {ended}\n")
        self.log.flush()
        return data

    async def release(self, fh: int) -> None:
        os.close(self.fds.pop(fh))


async def _run() -> None:
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_signal)
        await pyfuse3.main(min_tasks=4, max_tasks=32)
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("log")
    parser.add_argument("--delay-ms", type=float, default=3.0)
    args = parser.parse_args()
    with open(args.log, "a") as log:
        fs = LoggedOrigin(os.path.abspath(args.source), log, args.delay_ms / 1000)
        options = {"fsname=logged-origin", "ro", "allow_other", "default_permissions"}
        pyfuse3.init(fs, args.mountpoint, options)
        try:
            trio.run(_run)
        finally:
            pyfuse3.close(unmount=True)


# -- what the tests use -------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    fh: int
    offset: int
    length: int
    arrived: float
    started: float
    ended: float


@dataclass(frozen=True)
class Log:
    opens: dict[int, tuple[int, str]]  # fh -> (open flags, path relative to the source)
    reads: list[Read]  # in the order they were served


def read_log(path: Path) -> Log:
    opens: dict[int, tuple[int, str]] = {}
    reads = []
    for line in path.read_text().splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "open":
            fh, flags, relpath = rest.split(" ", 2)
            opens[int(fh)] = (int(flags), relpath)
        else:
            fh, offset, length, arrived, started, ended = rest.split()
            reads.append(
                Read(
                    int(fh), int(offset), int(length), float(arrived), float(started), float(ended)
                )
            )
    return Log(opens, sorted(reads, key=lambda r: r.started))


def _mounted(mountpoint: Path) -> bool:
    target = os.fsencode(os.path.abspath(mountpoint)).replace(b" ", b"\\040")
    with open("/proc/self/mounts", "rb") as mounts:
        return any(line.split()[1] == target for line in mounts)


@contextlib.contextmanager
def serve(source: Path, mountpoint: Path, log: Path, delay_ms: float) -> Iterator[Path]:
    """The logged origin of *source* mounted at *mountpoint* for the block's length."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    args = [str(source), str(mountpoint), str(log), f"--delay-ms={delay_ms}"]
    proc = subprocess.Popen([sys.executable, __file__, *args])
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not _mounted(mountpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the logged origin did not mount (exit {proc.poll()})")
            time.sleep(0.02)
        yield mountpoint
    finally:
        if _mounted(mountpoint):
            subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if _mounted(mountpoint):
            subprocess.run(["fusermount3", "-uz", str(mountpoint)], capture_output=True)


if __name__ == "__main__":
    main()
