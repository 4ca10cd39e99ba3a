"""The floor under the write workloads: a pyfuse3 file system that does (almost) nothing.

Run as root: ``.venv/bin/python bench/write_floor.py [--reps 5] [--origin DIR]``.

A 4 KiB write() through FUSE without the writeback cache is two synchronous
round trips (the kernel asks for security.capability before every write, then
sends the WRITE), whatever the file system does with them. This mounts a
one-file pyfuse3 + trio file system (cachefs's busy poll, security.capability
answered from memory) over a file in *origin* (a tmpfs by default; give the
slow write origin, bench/write_origin.py, to see its fsync too) and times the
bench's writers (bench/workloads.py, 64 MiB, fsync at close) through it, the
WRITE handler

* ``noop``   -- replying at once (the bytes go nowhere): the round trips alone;
* ``inline`` -- pwrite + fstat on the origin file on the trio thread;
* ``thread`` -- pwrite + fstat in a trio worker thread;

each with the writeback cache off (``wt``) and on (``wb``); FSYNC fsyncs the
origin file (but in ``noop``). With ``--cachefs`` a cachefs mount of this tree
over *origin* (bench/systems.py's settings) runs in the same rounds. Everything
alternates; it prints medians, beside the origin file written directly.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads as w

HERE = Path(__file__).resolve().parent

MiB = 1024 * 1024


def serve(mode: str, writeback: bool, backing: str, mountpoint: str) -> None:
    """The one-file file system (a child process): /f is *backing*."""
    import pyfuse3
    import trio

    sys.path.insert(0, str(HERE.parent))
    from cachefs.fuse import loop as fuseloop

    file_inode = pyfuse3.ROOT_INODE + 1

    class Floor(pyfuse3.Operations):
        supports_dot_lookup = False
        enable_writeback_cache = writeback

        def __init__(self) -> None:
            super().__init__()
            self.fd = os.open(backing, os.O_RDWR | os.O_CREAT, 0o644)
            self.limiter = trio.CapacityLimiter(16)
            self.size = 0  # what the file would hold: noop writes store nothing

        def resize(self, size: int) -> None:
            self.size = size
            os.ftruncate(self.fd, size)

        def attrs(self, inode: int) -> pyfuse3.EntryAttributes:
            a = pyfuse3.EntryAttributes()
            a.st_ino = inode
            if inode == pyfuse3.ROOT_INODE:
                a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
            else:
                st = os.fstat(self.fd)
                a.st_mode, a.st_nlink, a.st_size = stat.S_IFREG | 0o644, 1, self.size
                a.st_mtime_ns = a.st_ctime_ns = st.st_mtime_ns
            a.st_blksize = 4096
            a.entry_timeout = a.attr_timeout = 1.0
            return a

        async def getattr(self, inode, ctx):
            return self.attrs(inode)

        async def lookup(self, parent, name, ctx):
            if name not in (b"f",):
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self.attrs(file_inode)

        async def create(self, parent, name, mode, flags, ctx):
            self.resize(0)
            return pyfuse3.FileInfo(fh=file_inode), self.attrs(file_inode)

        async def getxattr(self, inode, name, ctx):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

        async def open(self, inode, flags, ctx):
            if flags & os.O_TRUNC:
                self.resize(0)
            return pyfuse3.FileInfo(fh=inode)

        async def read(self, fh, off, size):
            return os.pread(self.fd, size, off)

        async def write(self, fh, off, buf):
            self.size = max(self.size, off + len(buf))
            if mode == "noop":
                return len(buf)

            def work() -> int:
                written = os.pwrite(self.fd, buf, off)
                os.fstat(self.fd)
                return written

            if mode == "inline":
                return work()
            return await trio.to_thread.run_sync(work, limiter=self.limiter)

        async def setattr(self, inode, attr, fields, fh, ctx):
            if fields.update_size:
                self.resize(attr.st_size)
            return self.attrs(inode)

        async def fsync(self, fh, datasync):
            if mode != "noop":  # the bytes are at the origin: make them durable there
                os.fsync(self.fd)

        async def flush(self, fh):
            raise pyfuse3.FUSEError(errno.ENOSYS)

        async def release(self, fh):
            pass

    async def main() -> None:
        fuseloop.install(50e-6)
        await pyfuse3.main(min_tasks=2, max_tasks=64)

    pyfuse3.init(Floor(), mountpoint, {"fsname=write-floor", "default_permissions"})
    try:
        trio.run(main)
    finally:
        pyfuse3.close(unmount=True)


def measure(target: Path, size: int) -> dict[str, float]:
    """1 MiB sequential MiB/s and 4 KiB random IOPS (fsync at close) of *target*."""
    seq = w.sequential_write(target, size, 60.0)
    rand = w.random_write(target, 4096, 60.0)  # over the file the sequential write left
    return {"seq_mib_s": float(seq["mib_s"]), "rand4k_iops": float(rand["iops"])}


def through_floor(mode: str, writeback: bool, origin: Path, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="write-floor-") as tmp:
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        args = [mode, "1" if writeback else "", str(origin / "floor.bin"), str(mnt)]
        proc = subprocess.Popen([sys.executable, __file__, "--serve", *args])
        try:
            deadline = time.monotonic() + 20
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the floor file system did not mount")
                time.sleep(0.05)
            return measure(mnt / "f", size)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            proc.wait(timeout=30)


def through_cachefs(origin: Path, size: int) -> dict[str, float]:
    """The same writers through a cachefs mount of this tree over *origin*."""
    from systems import Cachefs

    with tempfile.TemporaryDirectory(prefix="write-floor-cachefs-") as tmp:
        system = Cachefs(origin, Path(tmp), Path(tmp) / "logs")
        system.extra_options = "tiers.ram.max_size=64MiB"  # as run.py's write workloads
        system.reset()
        try:
            return measure(system.root / "cachefs.bin", size)
        finally:
            system.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--origin", type=Path, help="directory of the backing file (default tmpfs)")
    parser.add_argument("--cachefs", action="store_true", help="measure cachefs too")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        mode, writeback, backing, mountpoint = args.serve
        serve(mode, bool(writeback), backing, mountpoint)
        return
    size = args.mib * MiB
    with tempfile.TemporaryDirectory(prefix="write-floor-origin-") as tmp:
        origin = args.origin or Path(tmp)
        if args.origin is None:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", tmp], check=True)
        try:
            runs: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.reps):
                runs.setdefault("direct", []).append(measure(origin / "direct.bin", size))
                if args.cachefs:
                    runs.setdefault("cachefs", []).append(through_cachefs(origin, size))
                for writeback in (False, True):
                    for mode in ("noop", "inline", "thread"):
                        name = f"{mode}-{'wb' if writeback else 'wt'}"
                        runs.setdefault(name, []).append(
                            through_floor(mode, writeback, origin, size)
                        )
        finally:
            if args.origin is None:
                subprocess.run(["umount", "-l", tmp], check=False)
    summary = {
        name: {key: statistics.median(r[key] for r in found) for key in found[0]}
        for name, found in runs.items()
    }
    print(json.dumps({"reps": args.reps, "mib": args.mib, "medians": summary}, indent=1))


if __name__ == "__main__":
    main()
