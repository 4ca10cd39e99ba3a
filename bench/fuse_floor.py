"""The floor under (f'): a pyfuse3 file system that does nothing, against cachefs.

Run as root: ``.venv/bin/python bench/fuse_floor.py [--reps 5]``.

Opening a cached small file after ``drop_caches`` costs four synchronous FUSE
requests (LOOKUP, OPEN, READ, FLUSH) whatever the file system does. This
measures the same open + 4 KiB read + close loop, in the same run, on

* ``floor``: a pyfuse3 + trio file system answering every request from a dict
  (no cache, no stats, no origin): the least any pyfuse3 file system can cost;
* ``cachefs``: cachefs over a local directory holding the same tree, warmed
  first, so every answer comes from its metadata cache and RAM tier.

and prints the medians and their ratio. ``floor`` is also what the (f') target
in docs/benchmarks.md is compared with.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIRS, FILES_PER_DIR = 50, 50
SAMPLE_EVERY = 8  # (f') reads a sample: 350 of the 2,500 files


def content(index: int) -> bytes:
    return b"<x>" * (100 + index * 30)


def serve_floor(mountpoint: str) -> None:
    """The no-op file system (runs in a child process)."""
    import pyfuse3
    import trio

    class Floor(pyfuse3.Operations):
        def __init__(self) -> None:
            super().__init__()
            self.names: dict[tuple[int, bytes], int] = {}
            self.data: dict[int, bytes | None] = {}
            ino = pyfuse3.ROOT_INODE + 1
            for d in range(DIRS):
                parent, ino = ino, ino + 1
                self.names[pyfuse3.ROOT_INODE, b"d%d" % d] = parent
                self.data[parent] = None
                for f in range(FILES_PER_DIR):
                    self.names[parent, b"f%d.nfo" % f] = ino
                    self.data[ino], ino = content(f), ino + 1

        def attrs(self, ino: int) -> pyfuse3.EntryAttributes:
            a = pyfuse3.EntryAttributes()
            data = self.data.get(ino)
            a.st_ino, a.st_nlink, a.st_blksize = ino, 1, 4096
            a.entry_timeout = a.attr_timeout = 1.0
            a.st_mode = stat.S_IFDIR | 0o755 if data is None else stat.S_IFREG | 0o644
            a.st_size = len(data or b"")
            return a

        async def lookup(self, parent: int, name: bytes, ctx: object) -> pyfuse3.EntryAttributes:
            ino = self.names.get((parent, name))
            if ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self.attrs(ino)

        async def getattr(self, ino: int, ctx: object) -> pyfuse3.EntryAttributes:
            return self.attrs(ino)

        async def open(self, ino: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
            return pyfuse3.FileInfo(fh=ino)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return (self.data[fh] or b"")[off : off + size]

        async def flush(self, fh: int) -> None:
            return None

        async def release(self, fh: int) -> None:
            return None

    pyfuse3.init(Floor(), mountpoint, {"fsname=floor", "default_permissions"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close()


def wait_mounted(mnt: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not os.path.ismount(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{mnt} did not mount")
        time.sleep(0.05)


def head(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 4096)
    finally:
        os.close(fd)


def heads_p50(root: Path) -> float:
    """drop_caches, then open + 4 KiB + close of the sample; median in ms."""
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    latencies = []
    for d in range(DIRS):
        for f in range(0, FILES_PER_DIR, SAMPLE_EVERY):
            start = time.perf_counter()
            head(root / f"d{d}" / f"f{f}.nfo")
            latencies.append((time.perf_counter() - start) * 1000)
    return statistics.median(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (mounts, drop_caches)")
    work = Path(tempfile.mkdtemp(prefix="cachefs-floor-"))
    origin, floor_mnt, cachefs_mnt = work / "origin", work / "floor", work / "cachefs"
    for d in range(DIRS):
        (origin / f"d{d}").mkdir(parents=True)
        for f in range(FILES_PER_DIR):
            (origin / f"d{d}" / f"f{f}.nfo").write_bytes(content(f))
    floor_mnt.mkdir()
    cachefs_mnt.mkdir()
    repo = Path(__file__).resolve().parents[1]
    opts = f"tiers.ssd.path={work}/ssd,tiers.hdd.path={work}/hdd,stats.backend=embedded"
    mount = [sys.executable, "-m", "cachefs.cli", "mount", "-f", str(origin), str(cachefs_mnt)]
    procs = {
        floor_mnt: subprocess.Popen([sys.executable, __file__, "--serve", str(floor_mnt)]),
        cachefs_mnt: subprocess.Popen(
            [*mount, "-o", opts], cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ),
    }
    try:
        for mnt, proc in procs.items():
            wait_mounted(mnt, proc)
        for path in cachefs_mnt.rglob("*.nfo"):  # warm: metadata and RAM tier
            path.read_bytes()
        results: dict[str, list[float]] = {"floor": [], "cachefs": []}
        for _ in range(args.reps):  # alternate, so both see the same machine
            results["floor"].append(heads_p50(floor_mnt))
            results["cachefs"].append(heads_p50(cachefs_mnt))
        floor, ours = (statistics.median(results[k]) for k in ("floor", "cachefs"))
        for name, values in results.items():
            print(
                f"{name:8} open+4KiB p50 median {statistics.median(values):.3f} ms "
                f"(runs: {', '.join(f'{v:.3f}' for v in values)})"
            )
        print(f"cachefs / floor: {ours / floor:.2f}x")
    finally:
        for mnt, proc in procs.items():
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve_floor(sys.argv[2])
    else:
        main()
