"""A one-file FUSE filesystem that makes a fast image file behave like a slow disk.

It exposes ``disk.img`` (backed by a real image file) and a tiny ``stats.json``.
Every read/write of ``disk.img`` is delayed by a simple HDD/NAS model:

    service time = (seek_latency if the request is not sequential else 0) + bytes / bandwidth

and requests are served strictly one at a time.  The file is opened with
``direct_io`` so the kernel never caches its pages: a loop device on top of it
(and the ext4 on that loop device) pays the delay on every cache miss, including
after ``echo 3 > /proc/sys/vm/drop_caches``.

Started and stopped by ``slow_origin.py``; can also be run by hand::

    python bench/delayfs.py IMAGE MOUNTPOINT [--latency-ms 8] [--mbps 80] [--rw]
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

import pyfuse3
import trio

log = logging.getLogger("delayfs")
T = TypeVar("T")

DISK_INODE = pyfuse3.ROOT_INODE + 1
STATS_INODE = pyfuse3.ROOT_INODE + 2
NAMES = {b"disk.img": DISK_INODE, b"stats.json": STATS_INODE}

# A drive (or NAS) keeps reading ahead while the host is between two requests
# of a sequential stream, so up to this much idle time before a sequential
# request counts as transfer already done.  Without it the ~3 ms round trip
# ext4 -> loop -> FUSE -> this process between 1 MiB readahead requests would
# cut an 80 MB/s stream to ~65 MB/s.  A stream still never exceeds the
# configured bandwidth: the device clock only ever advances by service times.
READAHEAD_CREDIT_S = 0.010


@dataclass
class Stats:
    """Counters exposed through stats.json so benchmarks can verify the model."""

    requests: int = 0
    seeks: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    busy_s: float = 0.0  # simulated device time handed out


class SlowDisk:
    """Single-spindle timing model: one request at a time, seek unless sequential."""

    def __init__(self, latency_s: float, bytes_per_s: float) -> None:
        self.latency_s = latency_s
        self.bytes_per_s = bytes_per_s
        self.stats = Stats()
        # One global lock: a real disk head (or a NAS with one outstanding
        # request) serves requests strictly one after another.
        self._lock = trio.Lock()
        self._next_offset = -1  # where the "head" is after the previous request
        self._busy_until = 0.0  # trio clock time at which the device goes idle

    async def access(self, offset: int, length: int, io: Callable[[], T]) -> T:
        """Run ``io`` (the real pread/pwrite) as if it were served by the slow device.

        The real I/O overlaps the modelled service time, so a cold backing image
        (after drop_caches) does not make the device slower than configured.
        """
        async with self._lock:
            now = trio.current_time()
            sequential = offset == self._next_offset
            log.debug(
                "off=%d len=%d seq=%d idle=%.6f", offset, length, sequential, now - self._busy_until
            )
            if sequential:
                start = max(self._busy_until, now - READAHEAD_CREDIT_S)
            else:
                start = max(self._busy_until, now)
            service = (0.0 if sequential else self.latency_s) + length / self.bytes_per_s
            self._busy_until = start + service
            self._next_offset = offset + length
            self.stats.requests += 1
            self.stats.seeks += not sequential
            self.stats.busy_s += service
            result = io()
            await sleep_until(self._busy_until)
            return result


async def sleep_until(deadline: float) -> None:
    """trio.sleep_until() with sub-millisecond accuracy.

    epoll timeouts are rounded up to whole milliseconds, which would add up to
    1 ms to every 8 ms seek; the last stretch is slept with time.sleep(), which
    blocks the event loop briefly but nothing else may run meanwhile anyway.
    """
    await trio.sleep_until(deadline - 0.0015)
    remaining = deadline - trio.current_time()
    if remaining > 0:
        time.sleep(remaining)


class DelayFS(pyfuse3.Operations):
    """Read-only directory with disk.img (delayed, direct_io) and stats.json."""

    def __init__(self, image: str, disk: SlowDisk, writable: bool) -> None:
        super().__init__()
        self.disk = disk
        self.writable = writable
        self.fd = os.open(image, os.O_RDWR if writable else os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size
        self.mtime_ns = os.fstat(self.fd).st_mtime_ns

    # -- metadata ---------------------------------------------------------

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            attr.st_mode = stat.S_IFDIR | 0o755
            attr.st_nlink = 2
        elif inode == DISK_INODE:
            attr.st_mode = stat.S_IFREG | (0o644 if self.writable else 0o444)
            attr.st_nlink = 1
            attr.st_size = self.size
        elif inode == STATS_INODE:
            attr.st_mode = stat.S_IFREG | 0o444
            attr.st_nlink = 1
            attr.st_size = 4096  # upper bound; direct_io makes the real length count
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attr.st_uid = attr.st_gid = 0
        attr.st_blksize = 4096
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.mtime_ns
        return attr

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name not in NAMES:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(NAMES[name])

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = list(NAMES.items())
        for index in range(start_id, len(entries)):
            name, inode = entries[index]
            if not pyfuse3.readdir_reply(token, name, self._attr(inode), index + 1):
                break

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_blocks = self.size // 4096
        data.f_namemax = 255
        return data

    # -- data -------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode not in (DISK_INODE, STATS_INODE):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY and (inode == STATS_INODE or not self.writable):
            raise pyfuse3.FUSEError(errno.EROFS)
        # direct_io: the kernel must not keep pages of disk.img, otherwise a
        # re-read after drop_caches of the ext4 above could still hit memory.
        return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        if fh == STATS_INODE:
            return json.dumps(asdict(self.disk.stats)).encode()[off : off + size]
        size = max(0, min(size, self.size - off))
        if not size:
            return b""
        self.disk.stats.bytes_read += size
        return await self.disk.access(off, size, lambda: os.pread(self.fd, size, off))

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if off + len(buf) > self.size:
            raise pyfuse3.FUSEError(errno.ENOSPC)  # a disk does not grow
        self.disk.stats.bytes_written += len(buf)
        return await self.disk.access(off, len(buf), lambda: os.pwrite(self.fd, buf, off))

    async def fsync(self, fh: int, datasync: bool) -> None:
        if fh == DISK_INODE and self.writable:
            os.fdatasync(self.fd)

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        pass


async def run(fs: DelayFS) -> None:
    """Serve until unmounted or until SIGTERM/SIGINT (then unmount cleanly)."""
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal %d: terminating", signum)
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_signal)
        # One worker task: requests are taken from the kernel queue in FIFO
        # order, so "sequential" is judged on arrival order.  With several
        # workers trio's deliberately shuffled scheduling would reorder a
        # readahead stream and charge it spurious seeks.
        await pyfuse3.main(min_tasks=1, max_tasks=1)
        nursery.cancel_scope.cancel()


def is_mounted(mountpoint: str) -> bool:
    target = os.path.abspath(mountpoint).replace(" ", "\\040")
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == target for line in info)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="real image file to serve as disk.img")
    parser.add_argument("mountpoint")
    parser.add_argument("--latency-ms", type=float, default=8.0, help="non-sequential penalty")
    parser.add_argument("--mbps", type=float, default=80.0, help="transfer rate, MB/s (10^6)")
    parser.add_argument("--rw", action="store_true", help="allow writes (default read-only)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # DELAYFS_TRACE=1 logs every request (offset, length, sequential, idle time).
    level = logging.DEBUG if os.environ.get("DELAYFS_TRACE") else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s delayfs %(message)s")
    disk = SlowDisk(args.latency_ms / 1000.0, args.mbps * 1e6)
    fs = DelayFS(args.image, disk, writable=args.rw)
    options = {"fsname=slow-origin", "subtype=delayfs", "allow_other", "default_permissions"}
    if not args.rw:
        options.add("ro")
    pyfuse3.init(fs, args.mountpoint, options)
    log.info(
        "serving %s at %s: %.1f ms seek, %.1f MB/s, %s",
        args.image,
        args.mountpoint,
        args.latency_ms,
        args.mbps,
        "rw" if args.rw else "ro",
    )
    start = time.monotonic()
    try:
        trio.run(run, fs)
    finally:
        # After `fusermount3 -u` the kernel has unmounted us already.  (Checked
        # via mountinfo: stat() on our own mount point would hang, nobody serves it.)
        pyfuse3.close(unmount=is_mounted(args.mountpoint))
        log.info("stopped after %.0f s; stats %s", time.monotonic() - start, asdict(disk.stats))


if __name__ == "__main__":
    main()
